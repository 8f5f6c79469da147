//! Real PostgreSQL servers from the machine's own binaries: finding the binaries, initialising a
//! data directory, running a postmaster, asking it questions with `psql`, and the `LocalPostgres`
//! fixture that tests (and the simulated kubelet) use.
//!
//! Servers run with `fsync=off` and `full_page_writes=off`: the tests kill processes, never the
//! machine, so the page cache keeps every write and crash recovery still works. Commits stay
//! synchronous (WAL is written before a commit returns), so a killed server loses nothing that
//! was committed, as with the images' defaults. `initdb` runs once per superuser
//! name per test process into a template that is then copied (`cp -a`), which is several times
//! faster than a fresh `initdb` for every server.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::proc::{self, ChildGuard, SpawnOptions};
use super::scratch::{self, Scratch};

/// The directory holding `initdb`, `postgres`, `pg_dump`, `psql`… of one PostgreSQL version.
/// `PGPLAN_TEST_PG_BIN` wins; then the directory `initdb` on `PATH` resolves to; then the newest
/// `/usr/lib/postgresql/N/bin` (where Debian puts the server binaries, off `PATH`).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PGPLAN_TEST_PG_BIN") {
            return PathBuf::from(dir);
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join("initdb");
                if candidate.is_file() {
                    if let Some(parent) = fs::canonicalize(&candidate)
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                    {
                        return parent;
                    }
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, p)| p).unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: install them (Debian: apt-get install -y \
                 postgresql) or set PGPLAN_TEST_PG_BIN"
            )
        })
    })
}

/// The path of one PostgreSQL binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// `PATH` for children: the PostgreSQL binaries first, so `pg_dump` matches the server.
pub fn child_path() -> OsString {
    let mut dirs = vec![bin_dir().to_path_buf()];
    dirs.extend(
        ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(PathBuf::from),
    );
    std::env::join_paths(dirs).expect("plain directory names join into PATH")
}

/// The major version of the binaries, e.g. `15`.
pub fn major_version() -> u32 {
    static V: OnceLock<u32> = OnceLock::new();
    *V.get_or_init(|| {
        let out = Command::new(bin("postgres"))
            .arg("--version")
            .output()
            .expect("run postgres --version");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.split('.').next()?.parse().ok())
            .expect("postgres --version prints a version")
    })
}

const PG_HBA: &str = "\
# Written by the pgplan test substrate, like the official image: trust on the local socket,
# passwords (scram-sha-256) over TCP.
local all all trust
host all all 127.0.0.0/8 scram-sha-256
host all all ::1/128 scram-sha-256
";

/// Rewrites a data directory's pg_hba.conf with `method` for TCP connections (trust stays on
/// the local socket), as the official image does from `POSTGRES_HOST_AUTH_METHOD`: `md5`
/// accepts MD5 and SCRAM verifiers, `scram-sha-256` only SCRAM ones.
pub fn set_host_auth(data_dir: &Path, method: &str) -> io::Result<()> {
    let path = data_dir.join("pg_hba.conf");
    fs::write(
        &path,
        format!(
            "# Written by the pgplan test substrate: trust on the local socket, {method} over TCP.\n\
             local all all trust\nhost all all 127.0.0.0/8 {method}\nhost all all ::1/128 {method}\n"
        ),
    )?;
    proc::give_to_unprivileged(&path)
}

struct Templates {
    root: Scratch,
    by_superuser: HashMap<String, PathBuf>,
}

static TEMPLATES: OnceLock<Mutex<Option<Templates>>> = OnceLock::new();

extern "C" fn remove_templates() {
    if let Some(lock) = TEMPLATES.get() {
        if let Ok(mut guard) = lock.try_lock() {
            guard.take();
        }
    }
}

fn template_for(superuser: &str) -> io::Result<PathBuf> {
    let lock = TEMPLATES.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn; it only touches a static.
        unsafe {
            libc::atexit(remove_templates);
        }
        Mutex::new(None)
    });
    let mut guard = lock.lock().map_err(|_| io::Error::other("template lock"))?;
    if guard.is_none() {
        *guard = Some(Templates {
            root: Scratch::new("templates")?,
            by_superuser: HashMap::new(),
        });
    }
    let templates = guard.as_mut().expect("set just above");
    if let Some(path) = templates.by_superuser.get(superuser) {
        return Ok(path.clone());
    }
    let dir = templates
        .root
        .path()
        .join(format!("t{}", templates.by_superuser.len()));
    scratch::make_dir_for_postgres(&dir, 0o700)?;
    let mut cmd = Command::new(bin("initdb"));
    cmd.arg("-D")
        .arg(&dir)
        .arg(format!("--username={superuser}"))
        .args(["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        .env_clear()
        .env("PATH", child_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = proc::spawn(cmd, SpawnOptions::UNPRIVILEGED)?.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    fs::write(dir.join("pg_hba.conf"), PG_HBA)?;
    proc::give_to_unprivileged(&dir.join("pg_hba.conf"))?;
    templates
        .by_superuser
        .insert(superuser.to_string(), dir.clone());
    Ok(dir)
}

/// Whether `data_dir` already holds a cluster (what the official image checks before `initdb`).
pub fn is_initialised(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").is_file()
}

/// Initialises a cluster in `data_dir` (which must be absent or empty) with `superuser`.
/// Authentication: trust on the local socket, scram-sha-256 over TCP; set passwords afterwards
/// with `ALTER ROLE`.
pub fn init_data_dir(data_dir: &Path, superuser: &str) -> io::Result<()> {
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        return Err(io::Error::other(format!(
            "initdb: error: directory \"{}\" exists but is not empty",
            data_dir.display()
        )));
    }
    let template = template_for(superuser)?;
    scratch::make_dir_for_postgres(data_dir, 0o700)?;
    let mut src = template.into_os_string();
    src.push("/.");
    let status = proc::spawn(
        {
            let mut c = Command::new("cp");
            c.arg("-a").arg(src).arg(data_dir).stdin(Stdio::null());
            c
        },
        SpawnOptions::AS_IS,
    )?
    .wait()?;
    if !status.success() {
        return Err(io::Error::other("copying the initdb template failed"));
    }
    Ok(())
}

/// A running postmaster. Dropping it kills the server's process group.
#[derive(Debug)]
pub struct PgServer {
    child: ChildGuard,
    port: u16,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgServer {
    /// Starts `postgres` on an initialised `data_dir`, listening on 127.0.0.1:`port` and in
    /// `socket_dir`, logging to `log`. Returns at once; see [`PgServer::wait_ready`].
    pub fn spawn(
        data_dir: &Path,
        socket_dir: &Path,
        port: u16,
        log: &Path,
    ) -> io::Result<PgServer> {
        PgServer::spawn_at(Ipv4Addr::LOCALHOST, data_dir, socket_dir, port, log)
    }

    /// [`PgServer::spawn`] listening on `addr` (a simulated pod's loopback address).
    pub fn spawn_at(
        addr: Ipv4Addr,
        data_dir: &Path,
        socket_dir: &Path,
        port: u16,
        log: &Path,
    ) -> io::Result<PgServer> {
        scratch::make_dir_for_postgres(socket_dir, 0o755)?;
        let log_file = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(bin("postgres"));
        cmd.arg("-D")
            .arg(data_dir)
            .arg("-k")
            .arg(socket_dir)
            .arg("-p")
            .arg(port.to_string());
        cmd.arg("-c").arg(format!("listen_addresses={addr}"));
        for setting in [
            "fsync=off",
            "full_page_writes=off",
            "shared_buffers=16MB",
            "max_connections=40",
            "dynamic_shared_memory_type=mmap",
            "max_wal_size=256MB",
            "logging_collector=off",
            "unix_socket_permissions=0777",
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.env_clear()
            .env("PATH", child_path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = ChildGuard::spawn(cmd, SpawnOptions::UNPRIVILEGED)?;
        Ok(PgServer {
            child,
            port,
            socket_dir: socket_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// One `pg_isready` probe.
    pub fn is_ready(&self) -> bool {
        pg_isready(&self.socket_dir, self.port)
    }

    /// Waits until `pg_isready` succeeds; fails early, with the server log, if postgres exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait() {
                return Err(io::Error::other(format!(
                    "postgres exited ({status}) during startup:\n{}",
                    self.log_tail()
                )));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "postgres not ready after {timeout:?}:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `Some(status)` once the postmaster has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait()
    }

    /// Fast shutdown (SIGINT, what the official image's STOPSIGNAL sends), then SIGKILL after
    /// `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.child.stop(libc::SIGINT, grace);
    }

    /// Kills the server hard, like a container crash or the OOM killer.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Runs SQL as `user` over the local socket; see [`run_psql`].
    pub fn psql(&self, user: &str, db: &str, sql: &str) -> Result<String, PsqlError> {
        run_psql(&self.socket_dir, self.port, user, db, sql)
    }
}

/// One `pg_isready` probe against a socket directory and port.
pub fn pg_isready(socket_dir: &Path, port: u16) -> bool {
    let mut cmd = Command::new(bin("pg_isready"));
    cmd.arg("-q")
        .arg("-h")
        .arg(socket_dir)
        .arg("-p")
        .arg(port.to_string())
        .args(["-t", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    proc::spawn(cmd, SpawnOptions::AS_IS)
        .and_then(|mut c| c.wait())
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A failed `psql` run.
#[derive(Debug, Clone)]
pub struct PsqlError {
    pub code: Option<i32>,
    pub stderr: String,
}

impl std::fmt::Display for PsqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "psql failed ({:?}): {}", self.code, self.stderr.trim())
    }
}

impl std::error::Error for PsqlError {}

/// The column separator of [`run_psql`]'s output (the ASCII unit separator).
pub const FIELD_SEP: char = '\u{1f}';

/// Runs `sql` (any number of statements, stopping at the first error) with
/// `psql -X -A -t -v ON_ERROR_STOP=1` as `user` on `db` over the local socket. Returns stdout:
/// one line per row, columns separated by [`FIELD_SEP`].
pub fn run_psql(
    socket_dir: &Path,
    port: u16,
    user: &str,
    db: &str,
    sql: &str,
) -> Result<String, PsqlError> {
    let mut cmd = Command::new(bin("psql"));
    cmd.arg("-X")
        .arg("-q")
        .arg("-A")
        .arg("-t")
        .arg("-F")
        .arg(FIELD_SEP.to_string())
        .args(["-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(socket_dir)
        .arg("-p")
        .arg(port.to_string())
        .arg("-U")
        .arg(user)
        .arg("-d")
        .arg(db)
        .args(["-f", "-"])
        .env_clear()
        .env("PATH", child_path())
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let fail = |e: io::Error| PsqlError {
        code: None,
        stderr: e.to_string(),
    };
    let mut child = proc::spawn(cmd, SpawnOptions::AS_IS).map_err(fail)?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let sql = sql.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(sql.as_bytes());
    });
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout was piped")
        .read_to_string(&mut out)
        .map_err(fail)?;
    let status = child.wait().map_err(fail)?;
    let _ = writer.join();
    let err = err_reader.join().unwrap_or_default();
    if status.success() {
        Ok(out.trim_end_matches('\n').to_string())
    } else {
        Err(PsqlError {
            code: status.code(),
            stderr: err,
        })
    }
}

/// Splits [`run_psql`] output into rows of columns.
pub fn rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(FIELD_SEP).map(str::to_string).collect())
        .collect()
}

/// Quotes a SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// What a [`LocalPostgres`] is created with.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The superuser's name (`postgres` by default).
    pub superuser: String,
    /// The superuser's password, for TCP connections (random by default).
    pub password: String,
    /// Databases to create after start.
    pub databases: Vec<String>,
    /// The pg_hba.conf method for TCP connections (`scram-sha-256` by default; `md5`, as RDS
    /// has it, also accepts MD5 verifiers).
    pub host_auth: String,
    /// Listen on this address and port instead of a free port on 127.0.0.1 (a server outside
    /// a simulated cluster at its fake endpoint, e.g. `127.B.255.254:5432`).
    pub listen: Option<(Ipv4Addr, u16)>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            superuser: "postgres".into(),
            password: random_password(),
            databases: Vec::new(),
            host_auth: "scram-sha-256".into(),
            listen: None,
        }
    }
}

/// A random alphanumeric password.
pub fn random_password() -> String {
    (0..20)
        .map(|_| {
            let i = rand::random_range(0..62u8);
            (match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            }) as char
        })
        .collect()
}

/// A PostgreSQL server in its own temporary directory on a free 127.0.0.1 port, with a
/// superuser that has a password (TCP) and trust on its local socket. Stopped and removed on
/// drop.
#[derive(Debug)]
pub struct LocalPostgres {
    // Field order matters: the server stops before its directory is removed.
    server: PgServer,
    addr: Ipv4Addr,
    superuser: String,
    password: String,
    dir: Scratch,
}

impl LocalPostgres {
    /// Starts a server with [`PgOptions::default`]; panics with the reason if it cannot.
    pub fn start() -> LocalPostgres {
        Self::start_with(PgOptions::default()).expect("start a LocalPostgres")
    }

    /// Starts a server with `opts`.
    pub fn start_with(opts: PgOptions) -> io::Result<LocalPostgres> {
        let dir = Scratch::new("pg")?;
        let data = dir.path().join("data");
        init_data_dir(&data, &opts.superuser)?;
        if opts.host_auth != "scram-sha-256" {
            set_host_auth(&data, &opts.host_auth)?;
        }
        let (socket, log) = (dir.path().join("s"), dir.path().join("log"));
        let server = match opts.listen {
            None => start_on_free_port(&data, &socket, &log)?,
            Some((addr, port)) => {
                let mut server = PgServer::spawn_at(addr, &data, &socket, port, &log)?;
                server.wait_ready(Duration::from_secs(30))?;
                server
            }
        };
        let pg = LocalPostgres {
            server,
            addr: opts.listen.map_or(Ipv4Addr::LOCALHOST, |(a, _)| a),
            superuser: opts.superuser,
            password: opts.password,
            dir,
        };
        let mut sql = format!(
            "ALTER ROLE {} PASSWORD {};\n",
            quote_ident(&pg.superuser),
            quote_literal(&pg.password)
        );
        for db in &opts.databases {
            sql.push_str(&format!("CREATE DATABASE {};\n", quote_ident(db)));
        }
        pg.try_psql("postgres", &sql).map_err(io::Error::other)?;
        Ok(pg)
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Fast shutdown, then the server again on the same directory and port (settings made
    /// with `ALTER SYSTEM` that need a restart take effect).
    pub fn restart(&mut self) {
        self.server.stop(Duration::from_secs(30));
        let (data, socket, port) = (
            self.server.data_dir().to_path_buf(),
            self.server.socket_dir().to_path_buf(),
            self.server.port(),
        );
        let log = self.dir.path().join("log");
        let mut server =
            PgServer::spawn_at(self.addr, &data, &socket, port, &log).expect("restart postgres");
        server
            .wait_ready(Duration::from_secs(60))
            .expect("postgres back after a restart");
        self.server = server;
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn socket_dir(&self) -> &Path {
        self.server.socket_dir()
    }

    pub fn data_dir(&self) -> &Path {
        self.server.data_dir()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://user:password@host:port/db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{db}",
            self.superuser,
            self.password,
            self.addr,
            self.port()
        )
    }

    /// libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`) for a TCP connection.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.addr.to_string()),
            ("PGPORT".into(), self.port().to_string()),
            ("PGUSER".into(), self.superuser.clone()),
            ("PGPASSWORD".into(), self.password.clone()),
        ]
    }

    /// Runs SQL as the superuser; panics with psql's stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {db} failed: {e}\nSQL: {sql}"))
    }

    /// Runs SQL as the superuser.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, PsqlError> {
        self.server.psql(&self.superuser, db, sql)
    }

    /// Rows of a query, as strings.
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<String>> {
        rows(&self.psql(db, sql))
    }

    /// Creates a database owned by the superuser.
    pub fn create_database(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// Kills the server hard and starts it again on the same data directory and port (crash
    /// recovery runs).
    pub fn crash_and_restart(&mut self) -> io::Result<()> {
        self.server.kill();
        let port = self.server.port();
        self.server = PgServer::spawn(
            &self.dir.path().join("data"),
            &self.dir.path().join("s"),
            port,
            &self.dir.path().join("log"),
        )?;
        self.server.wait_ready(Duration::from_secs(30))
    }

    /// The server's process id (the postmaster).
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.server.stop(Duration::from_secs(5));
    }
}

/// Starts a server on a free port, retrying when another process grabbed the port first.
pub fn start_on_free_port(data: &Path, socket_dir: &Path, log: &Path) -> io::Result<PgServer> {
    let mut last = None;
    for _ in 0..5 {
        let mut server = PgServer::spawn(data, socket_dir, free_port()?, log)?;
        match server.wait_ready(Duration::from_secs(30)) {
            Ok(()) => return Ok(server),
            Err(e) => {
                server.kill();
                if !e.to_string().contains("could not bind") {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}
