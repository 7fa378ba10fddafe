//! Throwaway PostgreSQL and MariaDB servers for tests and benchmarks (feature `testing`).
//!
//! [`TestServer::start`] runs Debian's `postgresql` or `mariadb-server` binaries (installed by
//! `scripts/install-test-deps`) on a free port of 127.0.0.1, with their data in a temporary
//! directory, and stops them by PID when dropped. Durability is switched off: these servers
//! hold test data only. PostgreSQL refuses to run as root, so as root both run as their
//! package's user (`postgres`, `mysql`; `nobody` if missing) through `setpriv`.
//! Where the binaries are missing, `start` returns `None` with a note, and panics under
//! `CI=true`: a test never passes green without its database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shared::config::SqlKind;
use sqlx::{ConnectOptions, Connection, Executor};

pub struct TestServer {
    kind: SqlKind,
    child: Child,
    port: u16,
    /// Kept until the server stopped: its data lives here.
    dir: tempfile::TempDir,
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `name` on the PATH or in one of `dirs`.
fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(dirs.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().rev().map(|(_, d)| d).collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// As root: the user to run the server as (its data directory is given to it).
fn unprivileged_user(preferred: &str) -> Option<String> {
    if !is_root() {
        return None;
    }
    let exists = |u: &str| {
        Command::new("id")
            .arg("-u")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    Some(
        if exists(preferred) {
            preferred
        } else {
            "nobody"
        }
        .to_owned(),
    )
}

/// `program args...`, as `user` when given.
fn command(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .arg("--init-groups")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Runs `work` to completion on a runtime of its own, in a thread of its own (callers may be
/// inside a runtime already).
fn block_on<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work)
    })
    .join()
    .expect("the helper thread")
}

fn missing(what: &str) -> Option<TestServer> {
    assert!(
        !ci(),
        "{what} not found: scripts/install-test-deps installs it (CI=true: failing, not skipping)"
    );
    eprintln!("SKIPPED: {what} not found; apt-get install postgresql mariadb-server");
    None
}

impl TestServer {
    /// Starts a server of `kind`; `None` when its binaries are missing (panics under CI).
    pub fn start(kind: SqlKind) -> Option<TestServer> {
        match kind {
            SqlKind::Postgres => Self::start_postgres(),
            SqlKind::MySql => Self::start_mariadb(),
        }
    }

    fn start_postgres() -> Option<TestServer> {
        let dirs = postgres_bin_dirs();
        let (Some(initdb), Some(postgres)) = (find("initdb", &dirs), find("postgres", &dirs))
        else {
            return missing("PostgreSQL (initdb, postgres)");
        };
        let user = unprivileged_user("postgres");
        let dir = Self::data_dir(user.as_deref());
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let status = command(user.as_deref(), &initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "s3balance",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .stderr(Self::log_file(&log))
            .status()
            .expect("running initdb");
        assert!(status.success(), "initdb failed: {}", Self::tail(&log));
        let port = free_port();
        let child = command(user.as_deref(), &postgres)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(Self::log_file(&log))
            .spawn()
            .expect("starting postgres");
        let server = TestServer {
            kind: SqlKind::Postgres,
            child,
            port,
            dir,
        };
        server.wait_ready(&log);
        Some(server)
    }

    fn start_mariadb() -> Option<TestServer> {
        let dirs = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
        let install = find("mariadb-install-db", &dirs).or_else(|| find("mysql_install_db", &dirs));
        let server = find("mariadbd", &dirs).or_else(|| find("mysqld", &dirs));
        let (Some(install), Some(mariadbd)) = (install, server) else {
            return missing("MariaDB (mariadb-install-db, mariadbd)");
        };
        let user = unprivileged_user("mysql");
        let dir = Self::data_dir(user.as_deref());
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        // Leaves root@127.0.0.1 with no password (the test databases' only user).
        let status = command(user.as_deref(), &install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(Self::log_file(&log))
            .stderr(Self::log_file(&log))
            .status()
            .expect("running mariadb-install-db");
        assert!(
            status.success(),
            "mariadb-install-db failed: {}",
            Self::tail(&log)
        );
        let port = free_port();
        let child = command(user.as_deref(), &mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
                "--max-connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(Self::log_file(&log))
            .spawn()
            .expect("starting mariadbd");
        let server = TestServer {
            kind: SqlKind::MySql,
            child,
            port,
            dir,
        };
        server.wait_ready(&log);
        Some(server)
    }

    fn data_dir(user: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("s3b-sql-")
            .tempdir()
            .expect("a temporary directory");
        if let Some(user) = user {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(status.success(), "chown {user} {}", dir.path().display());
        }
        dir
    }

    fn log_file(path: &Path) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    fn tail(log: &Path) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Until a real connection works (the port opens before the server accepts sessions).
    fn wait_ready(&self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = self.url(self.admin_database());
            let kind = self.kind;
            let ok = block_on(async move { Self::execute(kind, &url, "SELECT 1").await.is_ok() });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the {:?} test server did not start: {}",
                self.kind,
                Self::tail(log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn admin_database(&self) -> &'static str {
        match self.kind {
            SqlKind::Postgres => "postgres",
            SqlKind::MySql => "mysql",
        }
    }

    async fn execute(kind: SqlKind, url: &str, statement: &str) -> Result<(), sqlx::Error> {
        match kind {
            SqlKind::Postgres => {
                let mut c = url
                    .parse::<sqlx::postgres::PgConnectOptions>()?
                    .disable_statement_logging()
                    .connect()
                    .await?;
                c.execute(statement).await?;
                c.close().await
            }
            SqlKind::MySql => {
                let mut c = url
                    .parse::<sqlx::mysql::MySqlConnectOptions>()?
                    .disable_statement_logging()
                    .connect()
                    .await?;
                c.execute(statement).await?;
                c.close().await
            }
        }
    }

    pub fn kind(&self) -> SqlKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        match self.kind {
            SqlKind::Postgres => format!("postgres://s3balance@127.0.0.1:{}/{database}", self.port),
            SqlKind::MySql => format!("mysql://root@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// Creates an empty database `name` (letters, digits, `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?}"
        );
        let (kind, admin) = (self.kind, self.url(self.admin_database()));
        let statement = format!("CREATE DATABASE {name}");
        block_on(async move { Self::execute(kind, &admin, &statement).await })
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        self.url(name)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        Self::tail(&self.dir.path().join("server.log"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // PostgreSQL: SIGINT is the fast shutdown (SIGTERM would wait for clients);
        // MariaDB: SIGTERM. Then SIGKILL if it lingers. Only this child's PID is signalled.
        let signal = match self.kind {
            SqlKind::Postgres => "INT",
            SqlKind::MySql => "TERM",
        };
        let _ = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
