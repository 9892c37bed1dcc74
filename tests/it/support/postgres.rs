//! A throwaway PostgreSQL cluster for the central-store tests.
//!
//! Uses Debian's server binaries (`/usr/lib/postgresql/<version>/bin`):
//! `initdb` into a temporary folder, `pg_ctl` on a free loopback port,
//! password (SCRAM) authentication over TCP so a wrong password is refused.
//! initdb refuses to run as root, so as root the cluster runs as `nobody`
//! through `runuser`. Dropping the cluster stops it and removes the folder.
//!
//! Without the binaries, [`PgCluster::start`] returns `None` and the test
//! says it skipped, unless LLM_AUDIT_PROXY_REQUIRE_POSTGRES_TEST=1 (CI sets
//! it), when their absence fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The superuser's password in every test cluster.
pub const PASSWORD: &str = "test-only-password";

/// The unprivileged user the cluster runs as when the tests run as root.
const RUN_AS: &str = "nobody";

/// A running (or stopped) test cluster.
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    as_root: bool,
    _dir: tempfile::TempDir,
}

impl PgCluster {
    /// A fresh cluster, started; `None` when PostgreSQL is not installed
    /// and the test may skip.
    pub async fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            assert!(
                std::env::var("LLM_AUDIT_PROXY_REQUIRE_POSTGRES_TEST").as_deref() != Ok("1"),
                "PostgreSQL server binaries are required (apt-get install postgresql)"
            );
            eprintln!("skipped: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin");
            return None;
        };
        let port = free_port().await;
        let cluster = tokio::task::spawn_blocking(move || Self::init(bin, port))
            .await
            .unwrap();
        cluster.pg_ctl_start();
        Some(cluster)
    }

    fn init(bin: PathBuf, port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("llm-audit-pg-")
            .tempdir()
            .unwrap();
        let as_root = rustix::process::geteuid().is_root();
        if as_root {
            chown(dir.path());
        }
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_root {
            chown(&pwfile);
        }
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let cluster = Self {
            bin,
            data,
            log,
            port,
            as_root,
            _dir: dir,
        };
        let out = cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        cluster
    }

    /// `postgres://` URL of the cluster with `password`.
    pub fn dsn_with_password(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn dsn(&self) -> String {
        self.dsn_with_password(PASSWORD)
    }

    /// A client for the test's own queries.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    /// Starts the server (after [`stop`](Self::stop)); waits until it
    /// accepts connections.
    pub fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.data.display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                self.log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        assert!(out.status.success(), "pg_ctl start failed: {}", text(&out));
    }

    /// Stops the server at once (open connections are cut).
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        assert!(out.status.success(), "pg_ctl stop failed: {}", text(&out));
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", RUN_AS, "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        // The server must not inherit a locale the machine lacks.
        cmd.args(args)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .output()
            .unwrap()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}

/// The newest installed server's `bin` folder.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn chown(path: &Path) {
    let out = Command::new("chown")
        .arg(RUN_AS)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown failed: {}", text(&out));
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
