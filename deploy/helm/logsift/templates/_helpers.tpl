{{- define "logsift.labels" -}}
app.kubernetes.io/name: logsift
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A name of their own: the indexer's selectors (immutable in a StatefulSet) must not
     match searcher pods. */}}
{{- define "logsift.searcherLabels" -}}
app.kubernetes.io/name: logsift-searcher
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}


{{/* The searchers' per-pod URLs (stable names from their headless Service), as TOML. */}}
{{- define "logsift.searcherUrls" -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.searchers.replicas) -}}
{{- $urls = append $urls (printf "\"http://%s-logsift-searcher-%d.%s-logsift-searcher:9480\"" $.Release.Name $i $.Release.Name) -}}
{{- end -}}
[{{ join ", " $urls }}]
{{- end -}}
