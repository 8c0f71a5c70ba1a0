//! Real shipper daemons from Debian's packages forwarding to logsift with the configurations
//! shipped in `deploy/shippers/`: rsyslog over TCP (RFC 5424 octet-counted, newline-framed)
//! and over TLS (RFC 5425, both certificates verified), and syslog-ng over TCP (its syslog()
//! and network() drivers). Messages enter the daemons from `logger`, as they would from a
//! host's applications.
//!
//! syslog-ng cannot be installed beside rsyslog (both provide system-log-daemon), so
//! `tests/run-all.sh` unpacks Debian's syslog-ng-core into a private prefix:
//! `LOGSIFT_SYSLOG_NG`, default `~/.cache/logsift-syslog-ng`.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::{make_pki, tls_section};
use common::{run_tool, Server};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// A shipper daemon, killed when the test ends however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file of deploy/shippers with its placeholders replaced.
fn shipped(name: &str, substitutions: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/shippers")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (from, to) in substitutions {
        assert!(text.contains(from), "{name} has no {from}");
        text = text.replace(from, to);
    }
    text
}

/// rsyslogd in the foreground in `dir`, reading UDP on a free port (returned) and forwarding
/// with `forward` (a shipped config, substituted).
fn rsyslog(dir: &Path, forward: &str) -> (Daemon, u16) {
    assert!(
        Path::new(RSYSLOGD).exists(),
        "{RSYSLOGD} is missing: run `bash tests/run-all.sh` (or `apt-get install rsyslog rsyslog-gnutls`)"
    );
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{}\")\nmodule(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\")\n{forward}",
            work.display()
        ),
    )
    .unwrap();
    let check = Command::new(RSYSLOGD)
        .args(["-N1", "-f"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "rsyslog rejects the shipped config (the TLS one needs rsyslog-gnutls: run `bash tests/run-all.sh`):\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(RSYSLOGD)
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rsyslog.log")).unwrap())
        .spawn()
        .expect("start rsyslogd");
    let daemon = Daemon(child);
    // rsyslog has no readiness signal here: wait until its UDP port is bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not bind UDP {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, port)
}

/// The prefix that run-all.sh unpacked syslog-ng-core into.
fn syslog_ng_root() -> PathBuf {
    let root = std::env::var_os("LOGSIFT_SYSLOG_NG")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/logsift-syslog-ng"))
        })
        .expect("LOGSIFT_SYSLOG_NG or HOME");
    assert!(
        root.join("usr/sbin/syslog-ng").exists(),
        "no syslog-ng in {}: run `bash tests/run-all.sh` (it unpacks Debian's syslog-ng-core there with `apt-get download` and `dpkg -x`)",
        root.display()
    );
    root
}

/// syslog-ng in the foreground in `dir`, with Debian's local source `s_src` as a unix datagram
/// socket (returned) the way /dev/log is, and `forward` (a shipped config, substituted).
/// Its control socket, persist file, pid file and disk buffers all stay in `dir`.
fn syslog_ng(dir: &Path, forward: &str) -> (Daemon, PathBuf) {
    let root = syslog_ng_root();
    let lib = root.join("usr/lib/syslog-ng");
    // Modules live in a directory named after the version (3.38 in bookworm).
    let modules = std::fs::read_dir(&lib)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("libafsocket.so").exists())
        .unwrap_or_else(|| panic!("no syslog-ng module directory in {}", lib.display()));
    let socket = dir.join("log.sock");
    let conf = dir.join("syslog-ng.conf");
    std::fs::write(
        &conf,
        format!(
            "@version: 3.38\nsource s_src {{ unix-dgram(\"{}\"); }};\n{forward}",
            socket.display()
        ),
    )
    .unwrap();
    let command = |extra: &[&str]| {
        let mut c = Command::new(root.join("usr/sbin/syslog-ng"));
        c.env("LD_LIBRARY_PATH", &lib)
            .arg(format!("--module-path={}", modules.display()))
            .arg("--cfgfile")
            .arg(&conf)
            .arg("--persist-file")
            .arg(dir.join("syslog-ng.persist"))
            .arg("--control")
            .arg(dir.join("syslog-ng.ctl"))
            .arg("--pidfile")
            .arg(dir.join("syslog-ng.pid"))
            // It reads no kernel log and binds no privileged port, so it needs no capabilities
            // and should not manage them whether run as root (CI) or not.
            .arg("--no-caps")
            .args(extra);
        c
    };
    // Without --stderr, warnings (an option ignored, say) are not printed at all.
    let check = command(&["--syntax-only", "--stderr"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && !stderr.contains("WARNING"),
        "syslog-ng rejects or warns about the shipped config:\n{stderr}"
    );
    let child = command(&["--foreground", "--stderr"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("syslog-ng.log")).unwrap())
        .spawn()
        .expect("start syslog-ng");
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "syslog-ng did not create {}; its log:\n{}",
            socket.display(),
            std::fs::read_to_string(dir.join("syslog-ng.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, socket)
}

fn hostname() -> String {
    String::from_utf8(run_tool("hostname", &[], None).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// Sends 20 messages tagged `tag` with `logger` and the given way of reaching the daemon
/// (`-d -n 127.0.0.1 -P PORT`, or `-u SOCKET`); every fourth is user.err, the rest user.info.
fn send_with_logger(to: &[&str], tag: &str, what: &str) {
    for i in 0..20u32 {
        let mut args = to.to_vec();
        let message = format!("forwarded by {what} n{i} of {tag}");
        args.extend([
            "-t",
            tag,
            "-p",
            if i.is_multiple_of(4) {
                "user.err"
            } else {
                "user.info"
            },
            &message,
        ]);
        run_tool("logger", &args, None);
    }
}

/// The 20 messages of [`send_with_logger`] are searchable once each, with the host, app,
/// message and severity they were sent with.
fn assert_forwarded(s: &Server, tag: &str, what: &str) {
    let body = s.wait_total(tag, &[("limit", "100")], 20);
    let host = hostname();
    let prefix = format!("forwarded by {what} n");
    for h in body["hits"].as_array().unwrap() {
        assert_eq!(h["app"], tag, "{h}");
        assert!(h["parse_error"].is_null(), "{h}");
        let message = h["message"].as_str().unwrap();
        let n: u32 = message
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&format!(" of {tag}")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("message {message:?} is not as sent: {h}"));
        let severity = if n.is_multiple_of(4) { "error" } else { "info" };
        assert_eq!(h["severity"], severity, "{h}");
        assert_eq!(h["facility"], "user", "{h}");
        // Shippers may send the short name of a host whose name is fully qualified.
        assert!(
            h["host"]
                .as_str()
                .is_some_and(|v| !v.is_empty() && host.starts_with(v)),
            "host {host}: {h}"
        );
    }
    s.wait_total(&format!("{tag} AND severity:error"), &[("limit", "0")], 5);
    let (_, one) = s.search(&format!("n7 AND {tag}"), &[]);
    assert_eq!(one["total"], 1, "{one}");
}

fn rsyslog_forwards_through(shipped_file: &str, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start();
    let port = s.syslog_tcp.port().to_string();
    let forward = shipped(
        shipped_file,
        &[("LOGSIFT_HOST", "127.0.0.1"), ("LOGSIFT_PORT", &port)],
    );
    let (_rsyslog, udp) = rsyslog(dir.path(), &forward);
    let udp = udp.to_string();
    send_with_logger(&["-d", "-n", "127.0.0.1", "-P", &udp], tag, "rsyslog");
    assert_forwarded(&s, tag, "rsyslog");
}

#[test]
fn rsyslog_forwards_rfc5424_octet_counted() {
    rsyslog_forwards_through("rsyslog.conf", "rsysoctet");
}

#[test]
fn rsyslog_forwards_newline_framed() {
    rsyslog_forwards_through("rsyslog-newline.conf", "rsysnewline");
}

/// logsift with a syslog TLS listener that requires a client certificate from the test CA,
/// and rsyslog-tls.conf substituted to reach it with the CA's files and `tls_name`.
fn rsyslog_over_tls(tls_name: &str) -> (tempfile::TempDir, Server, Daemon, u16) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let s = Server::start_in(
        dir.path(),
        &format!(
            "{}[syslog]\ntls = \"127.0.0.1:0\"\nclient_cert = \"required\"\n",
            tls_section(&pki)
        ),
    );
    let port = s
        .syslog_tls
        .expect("syslog-tls in the ready line")
        .port()
        .to_string();
    let pki_dir = format!("{}/", pki.dir.display());
    let forward = shipped(
        "rsyslog-tls.conf",
        &[
            ("LOGSIFT_HOST", "127.0.0.1"),
            ("LOGSIFT_PORT", &port),
            ("LOGSIFT_TLS_NAME", tls_name),
            ("/etc/ssl/logsift/", &pki_dir),
        ],
    );
    let rsyslog_dir = dir.path().join("rsyslog");
    std::fs::create_dir_all(&rsyslog_dir).unwrap();
    let (daemon, udp) = rsyslog(&rsyslog_dir, &forward);
    (dir, s, daemon, udp)
}

#[test]
fn rsyslog_forwards_over_tls_with_both_certificates_verified() {
    // The test CA's server certificate names localhost (and 127.0.0.1, which rsyslog's
    // x509/name does not look at: it matches DNS names and the CN only).
    let (_dir, s, _rsyslog, udp) = rsyslog_over_tls("localhost");
    let udp = udp.to_string();
    send_with_logger(&["-d", "-n", "127.0.0.1", "-P", &udp], "rsystls", "rsyslog");
    assert_forwarded(&s, "rsystls", "rsyslog");
    let (_, body) = s.search("rsystls", &[("limit", "1")]);
    assert!(
        body["hits"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("syslog-tls "),
        "{body}"
    );
}

/// Pins that the shipped config verifies logsift's certificate: with a name the certificate
/// does not carry, rsyslog must refuse to send.
#[test]
fn rsyslog_over_tls_refuses_a_certificate_for_another_name() {
    let (dir, s, _rsyslog, udp) = rsyslog_over_tls("logs.example");
    let udp = udp.to_string();
    send_with_logger(
        &["-d", "-n", "127.0.0.1", "-P", &udp],
        "rsysimpostor",
        "rsyslog",
    );
    // rsyslog checks the name after the TLS handshake, which logsift sees succeed; so what
    // shows the refusal is rsyslog's own error.
    let log = dir.path().join("rsyslog/rsyslog.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("peer name not authorized") {
            assert!(text.contains("DNSname: localhost"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog did not refuse the certificate; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give a wrongly accepted connection the time to deliver before looking.
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = s.search("rsysimpostor", &[("limit", "0")]);
    assert_eq!(body["total"], 0, "{body}");
}

fn syslog_ng_forwards_through(shipped_file: &str, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start();
    let port = s.syslog_tcp.port().to_string();
    let buffers = dir.path().display().to_string();
    let forward = shipped(
        shipped_file,
        &[
            ("LOGSIFT_HOST", "127.0.0.1"),
            ("LOGSIFT_PORT", &port),
            ("/var/lib/syslog-ng", &buffers),
        ],
    );
    let (_syslog_ng, socket) = syslog_ng(dir.path(), &forward);
    let socket = socket.display().to_string();
    send_with_logger(&["-u", &socket, "--socket-errors=on"], tag, "syslog-ng");
    assert_forwarded(&s, tag, "syslog-ng");
}

#[test]
fn syslog_ng_forwards_rfc5424_octet_counted() {
    syslog_ng_forwards_through("syslog-ng.conf", "sngoctet");
}

#[test]
fn syslog_ng_forwards_newline_framed() {
    syslog_ng_forwards_through("syslog-ng-newline.conf", "sngnewline");
}
