{{- define "logsift.labels" -}}
app.kubernetes.io/name: logsift
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
