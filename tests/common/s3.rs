//! A real S3-protocol server for the object storage tests: `s3s-fs` (from crates.io; `bash
//! tests/run-all.sh` installs it and sets `LOGSIFT_S3S_FS`), on a loopback port, keeping its
//! objects as files under a temporary directory, so a test can look at or damage them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "logsift-test";
pub const SECRET_KEY: &str = "logsift-test-secret";

pub struct S3 {
    child: Option<Child>,
    pub root: PathBuf,
    pub addr: SocketAddr,
}

fn binary() -> PathBuf {
    std::env::var_os("LOGSIFT_S3S_FS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("s3s-fs is missing; `bash tests/run-all.sh` installs it (cargo install s3s-fs --version 0.14.1 --features binary)")
        })
}

impl S3 {
    /// A server on a free port over `root`, with `bucket` made.
    pub fn start(root: &Path, bucket: &str) -> S3 {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s3 = S3 {
            child: None,
            root: root.to_path_buf(),
            addr,
        };
        s3.resume();
        s3
    }

    /// The `[storage]` section that points logsift at `s3://bucket/prefix` here.
    pub fn storage_config(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[storage]\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"http://{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n",
            self.addr
        )
    }

    /// Stops the server (objects stay on disk): the object store is down.
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn resume(&mut self) {
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The segment objects stored under `bucket/prefix/index/`, as files.
    pub fn segments(&self, bucket: &str, prefix: &str, index: &str) -> Vec<PathBuf> {
        let dir = self.root.join(bucket).join(prefix).join(index);
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        out.retain(|p| p.extension().is_some_and(|e| e == "lsseg"));
        out.sort();
        out
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.pause();
    }
}
