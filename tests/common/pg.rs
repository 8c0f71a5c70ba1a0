//! A real PostgreSQL for the metastore tests: Debian's `postgresql-15` binaries (`bash
//! tests/run-all.sh` installs them), a throwaway cluster made with `initdb` in a temporary
//! directory, listening on a loopback port. PostgreSQL refuses to run as root, so when the
//! tests run as root (CI) the cluster belongs to `nobody`.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    running: bool,
}

fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("LOGSIFT_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        dir.join("initdb").exists(),
        "PostgreSQL 15 is missing at {}; `bash tests/run-all.sh` installs it (apt-get install postgresql-15)",
        dir.display()
    );
    dir
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as `nobody` when we are root.
fn pg_command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Pg {
    /// A new cluster under `dir` (which must be empty or missing), started.
    pub fn start(dir: &Path) -> Pg {
        let bin = bin_dir();
        std::fs::create_dir_all(dir).unwrap();
        // `nobody` must reach the directory; temporary directories are 0700.
        let mut d = dir.to_path_buf();
        while let Some(parent) = d.parent() {
            if d.starts_with(std::env::temp_dir()) && d != std::env::temp_dir() {
                let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
            }
            d = parent.to_path_buf();
        }
        let data = dir.join("pgdata");
        if is_root() {
            let ok = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {}", dir.display());
        }
        let out = pg_command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "logsift", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = Pg {
            bin,
            log: dir.join("pg.log"),
            data,
            port,
            running: false,
        };
        pg.resume();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://logsift@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) cluster again on its port.
    pub fn resume(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.log.display().to_string();
        let out = self.pg_ctl(&["-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the cluster (fast shutdown): the metastore is down.
    pub fn pause(&mut self) {
        if !self.running {
            return;
        }
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        self.running = false;
    }

    /// `pg_ctl -D DATA ARGS`, as the cluster's owner.
    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// Runs one SQL statement with `psql` and returns its unaligned output.
    pub fn sql(&self, statement: &str) -> String {
        let out = pg_command(&self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "logsift",
            ])
            .args(["-d", "postgres", "-At", "-c", statement])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {statement:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.pause();
    }
}
