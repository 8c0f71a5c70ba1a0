//! Talking to a running server: one HTTP client for every client command, errors turned into
//! messages that say what to do, and server-sent events read line by line.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Which server a client command talks to, and as whom (flattened into each command's
/// arguments).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Server to talk to.
    #[arg(long, default_value = "http://127.0.0.1:9480", env = "LOGSIFT_SERVER")]
    pub server: String,
    /// API token, sent as Bearer; needed once the server has tokens. One with the command's
    /// role will do: search for search and tail, ingest for import, export for export.
    #[arg(long, env = "LOGSIFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    pub fn api(&self) -> anyhow::Result<Api> {
        Api::new(&self.server, self.token.as_deref())
    }
}

/// Which indexes and what time range a command reads.
#[derive(Debug, clap::Args)]
pub struct ScopeArgs {
    /// Index to read (repeat or comma-separate for several) [default: all].
    #[arg(long)]
    pub index: Vec<String>,
    /// Start of the time range: RFC 3339, epoch seconds, or relative like now-15m.
    #[arg(long)]
    pub start: Option<String>,
    /// End of the time range (exclusive), same forms as --start.
    #[arg(long)]
    pub end: Option<String>,
}

impl ScopeArgs {
    /// The scope as the API's `index`, `start` and `end` parameters (those given).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let index = (!self.index.is_empty()).then(|| ("index", self.index.join(",")));
        let start = self.start.clone().map(|s| ("start", s));
        let end = self.end.clone().map(|e| ("end", e));
        [index, start, end].into_iter().flatten().collect()
    }
}

/// A `logsift serve` at `base` (`http://127.0.0.1:9480`).
pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(server: &str, token: Option<&str>) -> anyhow::Result<Api> {
        // No overall timeout on the client: streams (tail) stay open as long as they follow.
        let http = reqwest::blocking::Client::builder()
            .timeout(None)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building HTTP client")?;
        Ok(Api {
            base: server.trim_end_matches('/').to_string(),
            http,
            token: token.filter(|t| !t.is_empty()).map(String::from),
        })
    }

    fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let mut request = self.http.get(self.url(path)).query(query);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        self.send(path, request)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` (to `path`) with the token; a non-2xx answer is an error with its
    /// message.
    fn send(
        &self,
        path: &str,
        mut request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().with_context(|| {
            format!(
                "cannot reach {}; is `logsift serve` running?",
                self.url(path)
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("{path} failed ({status}): {message}; pass --token or set LOGSIFT_TOKEN");
            }
            bail!("{path} failed ({status}): {message}");
        }
        Ok(response)
    }

    /// `GET path?query`, answered as JSON; a non-2xx answer is an error with its message.
    pub fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.get(path, query, Some(timeout))?
            .json()
            .with_context(|| format!("reading the answer of {}{path}", self.base))
    }

    /// `POST path` with a JSON body, answered as a stream of bytes (exports); a non-2xx answer
    /// is an error with its message.
    pub fn post_stream(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        self.send(path, self.http.post(self.url(path)).json(body))
    }

    /// `GET path` as raw bytes.
    pub fn get_bytes(&self, path: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get(path, &[], Some(timeout))?
            .read_to_end(&mut out)
            .with_context(|| format!("reading {}{path}", self.base))?;
        Ok(out)
    }

    /// `GET path?query` as a stream of server-sent events.
    pub fn events(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<EventStream> {
        let response = self.get(path, query, None)?;
        Ok(EventStream {
            lines: BufReader::new(Box::new(response)),
        })
    }
}

/// One server-sent event: its name (`message` when unnamed) and data.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Reads events as the SSE format frames them: `field: value` lines, a blank line ends an
/// event, `:` starts a comment (keep-alives), several `data` lines join with newlines.
pub struct EventStream {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl EventStream {
    #[cfg(test)]
    fn from_reader(r: impl Read + Send + 'static) -> EventStream {
        EventStream {
            lines: BufReader::new(Box::new(r)),
        }
    }

    /// The next event, or `None` when the server ended the stream.
    pub fn next_event(&mut self) -> anyhow::Result<Option<SseEvent>> {
        let mut event = String::new();
        let mut data: Option<String> = None;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .lines
                .read_line(&mut line)
                .context("reading the event stream")?;
            if n == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(data) = data.take() {
                    let event = if event.is_empty() {
                        "message".to_string()
                    } else {
                        std::mem::take(&mut event)
                    };
                    return Ok(Some(SseEvent { event, data }));
                }
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_string(),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_like_the_sse_format() {
        let text = ": keep-alive\n\nevent: record\ndata: {\"a\":1}\n\ndata: x\ndata: y\r\n\r\nevent: dropped\ndata:gone\n\nevent: half";
        let mut s = EventStream::from_reader(std::io::Cursor::new(text.as_bytes().to_vec()));
        let next = |s: &mut EventStream| s.next_event().unwrap();
        assert_eq!(
            next(&mut s),
            Some(SseEvent {
                event: "record".into(),
                data: "{\"a\":1}".into()
            })
        );
        assert_eq!(
            next(&mut s),
            Some(SseEvent {
                event: "message".into(),
                data: "x\ny".into()
            })
        );
        assert_eq!(
            next(&mut s),
            Some(SseEvent {
                event: "dropped".into(),
                data: "gone".into()
            })
        );
        // An event cut off by the end of the stream is not delivered.
        assert_eq!(next(&mut s), None);
    }
}
