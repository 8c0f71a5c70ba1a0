//! A real rsyslog (Debian's package) forwarding to logsift with the configurations shipped in
//! `deploy/shippers/`: RFC 5424 octet-counted and newline-framed TCP. Messages enter rsyslog
//! over UDP from `logger`, as they would from a host's applications.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_tool, Server};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

struct Rsyslog {
    child: Child,
    port: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rsyslogd in the foreground, reading UDP on a free port and forwarding with `shipped`
/// (a file of deploy/shippers) pointed at logsift's syslog TCP listener.
fn rsyslog(dir: &Path, shipped: &str, logsift_port: u16) -> Rsyslog {
    assert!(
        Path::new(RSYSLOGD).exists(),
        "{RSYSLOGD} is missing: run `bash tests/run-all.sh` (or `apt-get install rsyslog`)"
    );
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let forward = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/shippers")
            .join(shipped),
    )
    .unwrap()
    .replace("LOGSIFT_HOST", "127.0.0.1")
    .replace("LOGSIFT_PORT", &logsift_port.to_string());
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
        "rsyslog rejects the shipped config:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(RSYSLOGD)
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    // rsyslog has no readiness signal here: wait until its UDP port is bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not bind UDP {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Rsyslog { child, port }
}

fn hostname() -> String {
    String::from_utf8(run_tool("hostname", &[], None).stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn forwards_through(shipped: &str, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start();
    let r = rsyslog(dir.path(), shipped, s.syslog_tcp.port());
    for i in 0..20 {
        let out = run_tool(
            "logger",
            &[
                "-d",
                "-n",
                "127.0.0.1",
                "-P",
                &r.port.to_string(),
                "-t",
                tag,
                "-p",
                if i % 4 == 0 { "user.err" } else { "user.info" },
                &format!("forwarded by rsyslog n{i} of {tag}"),
            ],
            None,
        );
        assert!(out.status.success());
    }
    let body = s.wait_total(tag, &[("limit", "100")], 20);
    let hits = body["hits"].as_array().unwrap();
    for h in hits {
        assert_eq!(h["app"], tag, "{h}");
        assert!(
            h["message"]
                .as_str()
                .unwrap()
                .starts_with("forwarded by rsyslog n"),
            "{h}"
        );
        assert!(h["parse_error"].is_null(), "{h}");
    }
    let host = hostname();
    assert!(
        hits.iter()
            .all(|h| h["host"].as_str().is_some_and(|v| host.starts_with(v))),
        "host {host}: {body}"
    );
    s.wait_total(&format!("{tag} AND severity:error"), &[("limit", "0")], 5);
    let (_, one) = s.search(&format!("n7 AND {tag}"), &[]);
    assert_eq!(one["total"], 1, "{one}");
}

#[test]
fn rsyslog_forwards_rfc5424_octet_counted() {
    forwards_through("rsyslog.conf", "rsysoctet");
}

#[test]
fn rsyslog_forwards_newline_framed() {
    forwards_through("rsyslog-newline.conf", "rsysnewline");
}
