//! TLS for syslog (RFC 5425) and the HTTP API, with a throwaway CA (tests/common/pki.rs): real
//! handshakes with rustls, `curl`, `openssl s_client` and grpcio (OTLP/gRPC), with and without client
//! certificates.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::pki::{make_pki, tls_section, Pki};
use common::{run_python, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn client_config(pki: &Pki, identity: Option<&str>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pki.read("ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(&pki.read(&format!("{name}.pem"))).unwrap()],
                PrivateKeyDer::from_pem_slice(&pki.read(&format!("{name}.key"))).unwrap(),
            )
            .unwrap(),
    })
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Tls {
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends RFC 5425 frames and reads until the server closes; Err when the server refused the
/// handshake (with TLS 1.3 the client learns that at its first read).
fn send_frames(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    messages: &[&str],
) -> std::io::Result<()> {
    let mut s = connect(addr, cfg);
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    s.write_all(&out)?;
    s.flush()?;
    s.conn.send_close_notify();
    s.flush()?;
    s.sock.shutdown(std::net::Shutdown::Write).ok();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map(|_| ())
}

fn https_get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<String> {
    let mut s = connect(addr, cfg);
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        // Some servers close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&answer).to_string())
}

/// A server with HTTPS on (`[http] tls`) asking for client certificates as `client_cert`
/// says, its PKI in `dir`, and the HTTPS address.
fn https_server(dir: &std::path::Path, client_cert: &str) -> (Pki, Server, SocketAddr) {
    let pki = make_pki(dir);
    let s = Server::start_in(
        dir,
        &format!(
            "{}[http]\ntls = true\nclient_cert = \"{client_cert}\"\n",
            tls_section(&pki)
        ),
    );
    assert!(s.http.starts_with("https://"), "{}", s.http);
    let addr: SocketAddr = s.http.trim_start_matches("https://").parse().unwrap();
    (pki, s, addr)
}

#[test]
fn syslog_over_tls_needs_a_client_certificate_from_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let s = Server::start_in(
        tmp.path(),
        &format!(
            "{}[syslog]\ntls = \"127.0.0.1:0\"\nclient_cert = \"required\"\n",
            tls_section(&pki)
        ),
    );
    let addr = s.syslog_tls.expect("syslog-tls in the ready line");

    send_frames(
        addr,
        client_config(&pki, Some("client")),
        &[
            "<34>1 2024-05-01T10:00:00Z web-01 sshd 42 - - first over tls",
            "<34>1 2024-05-01T10:00:01Z web-01 sshd 42 - - second over tls\nwith a newline inside",
        ],
    )
    .expect("a shipper with a certificate from the CA is served");
    let found = s.wait_total("\"over tls\"", &[], 2);
    assert!(found["hits"][0]["source"]
        .as_str()
        .unwrap()
        .starts_with("syslog-tls "));

    for identity in [None, Some("stranger")] {
        let refused = send_frames(
            addr,
            client_config(&pki, identity),
            &["<34>1 - h a - - - must not land"],
        );
        assert!(refused.is_err(), "handshake with {identity:?} must fail");
    }
    // A real client: openssl s_client with the shipper's certificate.
    let frame = "<34>1 2024-05-01T10:00:02Z web-02 app - - - via s_client";
    let out = common::run_tool(
        "openssl",
        &[
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
            pki.path("ca.pem").to_str().unwrap(),
            "-cert",
            pki.path("client.pem").to_str().unwrap(),
            "-key",
            pki.path("client.key").to_str().unwrap(),
        ],
        Some(format!("{} {frame}", frame.len()).as_bytes()),
    );
    assert!(out.status.success());
    s.wait_total("\"via s_client\"", &[], 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.search("\"must not land\"", &[]).1["total"], 0);
    assert!(s.metric("logsift_tls_handshake_failures_total") >= 2.0);
}

#[test]
fn https_api_with_and_without_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _server, addr) = https_server(tmp.path(), "required");

    let answer = https_get(addr, client_config(&pki, Some("client")), "/health/live").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(https_get(addr, client_config(&pki, None), "/health/live").is_err());
    assert!(https_get(addr, client_config(&pki, Some("stranger")), "/health/live").is_err());
    // Plain HTTP on the TLS port gets nothing useful.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // curl, as a shipper would: ingest over HTTPS with its certificate, then search.
    let url = |path: &str| format!("https://localhost:{}{path}", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
            .arg(pki.path("ca.pem"))
            .args(args)
            .output()
            .expect("curl")
    };
    let cert = pki.path("client.pem");
    let key = pki.path("client.key");
    let with_cert = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let ingest_url = url("/api/v1/logs/ingest");
    let mut args = with_cert.to_vec();
    args.extend([
        "--data-binary",
        "{\"msg\":\"shipped over https\"}",
        &ingest_url,
    ]);
    let out = curl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"accepted\":1"));
    let search_url = url("/api/v1/search?q=%22shipped%20over%20https%22");
    let mut found = false;
    for _ in 0..100 {
        let mut args = with_cert.to_vec();
        args.push(&search_url);
        let out = curl(&args);
        if String::from_utf8_lossy(&out.stdout).contains("\"total\":1") {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        found,
        "the record ingested over HTTPS is searchable over HTTPS"
    );
    let out = curl(&[&url("/health/live")]);
    assert!(
        !out.status.success(),
        "curl without a client certificate must be refused"
    );
}

#[test]
fn optional_client_certificates_verify_what_is_presented() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _server, addr) = https_server(tmp.path(), "optional");
    for identity in [None, Some("client")] {
        let answer = https_get(addr, client_config(&pki, identity), "/health/live").unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{identity:?}: {answer}");
    }
    // Presented, it must be one the CA signed.
    assert!(https_get(addr, client_config(&pki, Some("stranger")), "/health/live").is_err());
}

/// OTLP/gRPC through grpcio over TLS, and what it prints: the status of each call.
const GRPC_TLS_SCRIPT: &str = r#"
import sys, grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.common.v1 import common_pb2

target, pki = sys.argv[1], sys.argv[2]
read = lambda name: open(f"{pki}/{name}", "rb").read()
record = logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value="grpc over tls"), severity_number=9)
request = logs_service_pb2.ExportLogsServiceRequest(
    resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])])
for label, creds in [
    ("client certificate", grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"), read("client.pem"))),
    ("no client certificate", grpc.ssl_channel_credentials(read("ca.pem"))),
]:
    stub = logs_service_pb2_grpc.LogsServiceStub(grpc.secure_channel(target, creds))
    try:
        stub.Export(request, timeout=20)
        print(label, "OK")
    except grpc.RpcError as e:
        print(label, e.code().name)
"#;

#[test]
fn otlp_grpc_over_tls_with_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, s, addr) = https_server(tmp.path(), "required");
    // grpcio checks the certificate's name and negotiates h2 by ALPN.
    let target = format!("localhost:{}", s.otlp_grpc.port());
    let out = run_python(GRPC_TLS_SCRIPT, &[&target, pki.dir.to_str().unwrap()]);
    assert!(out.contains("client certificate OK\n"), "{out}");
    assert!(out.contains("no client certificate UNAVAILABLE\n"), "{out}");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = https_get(
            addr,
            client_config(&pki, Some("client")),
            "/api/v1/search?q=%22grpc%20over%20tls%22",
        )
        .unwrap();
        if answer.contains("\"total\":1") {
            assert!(answer.contains("\"severity\":\"info\""), "{answer}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stored: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
