//! Moving a database, three ways, timed side by side on one machine:
//! `cargo bench --bench copy` (or `scripts/bench-copy`).
//!
//! Two source databases are generated on a local server: a pgbench database
//! (`pgbench -i -s 70`, one large table) and a "mixed" one (30 tables of
//! sizes falling geometrically, with indexes), each about 1 GB. Each is then
//! copied into a fresh server (a new data directory, default settings, so
//! fsync on) by:
//!
//! - (a) the runbooks' path: `pg_dump > backup.sql`, then `psql -f`;
//! - (b) `pg_dump -Fd -j2`, then `pg_restore -j2`;
//! - (c) pgplan's data path with the tools on this machine (the Local
//!   runner): backup (streamed, sha256, read back, `pg_restore --list`,
//!   rows/checksums/sequences in the dump's snapshot, durable manifest) →
//!   prepare → tune → `pg_restore -j2` + ANALYZE → untune (CHECKPOINT,
//!   sync) → verify recomputes rows, checksums and sequences on the target.
//!   Default options: a directory archive dumped with `-j2`, uncompressed,
//!   and `loadTuning: auto`, which at these sizes means minimal WAL: the
//!   target is restarted before the restore and after it (the restarts are
//!   in (c)'s time).
//!
//! Wall time covers dump to verified copy; servers are started beforehand.
//! Peak memory is each client process's maximum RSS (wait4); path (c) runs
//! in a child process so pgplan's own peak is its alone. The last line is
//! `speedup: X`, (a)'s time over (c)'s on the mixed database.
//!
//! Knobs: `PGPLAN_BENCH_LOAD=auto|restart|reload|off` for (c)'s `loadTuning`;
//! `--quick` (or `PGPLAN_BENCH_SCALE=0.2`) for ~200 MB databases;
//! `PGPLAN_BENCH_SCALE=F` for F × 1 GB; `PGPLAN_BENCH_FORMAT=custom|directory`
//! for (c)'s archive format (custom by default, as the spec's default);
//! `PGPLAN_BENCH_PATHS=a,b,c`, `PGPLAN_BENCH_DATASETS=pgbench,mixed` and
//! `PGPLAN_BENCH_ROUNDS=N` to run less or more; `PGPLAN_BENCH_STATEMENTS=MS`
//! prints (c)'s target log with every statement of MS or more, timestamped.
//! Servers run as an unprivileged user when the bench runs as root, the way
//! the test substrate runs them (its modules are included below).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgplan::pgtools::tune::wal_level;
use pgplan::pgtools::{
    backup, make_durable, prepare_target, restore, tune_for_loading, untune, verify,
    wait_accepting, BackupOptions, ConnInfo, LoadTuning, Progress, RestoreOptions, Runner,
};
use pgplan::plan::VerifyChecks;
use pgplan::spec::DumpFormat;

#[path = "measure.rs"]
#[allow(dead_code)] // each bench reads part of what a run gives
mod measure;
#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use measure::{mb, reap, run};

use support::pg;
use support::proc::{ChildGuard, SpawnOptions};
use support::scratch::{self, Scratch};

const PASSWORD: &str = "bench-password";

/// A server with default settings in its own scratch directory.
struct Server {
    guard: ChildGuard,
    port: u16,
    socket: PathBuf,
    data: PathBuf,
    log: PathBuf,
    settings: Vec<String>,
    // Dropped after the guard: the server stops before its files go.
    _dir: Scratch,
}

impl Server {
    fn start(label: &str) -> Server {
        Server::start_with(label, &[])
    }

    /// A server with extra `-c name=value` settings.
    fn start_with(label: &str, settings: &[String]) -> Server {
        let dir = Scratch::new(label).expect("scratch directory");
        let data = dir.path().join("data");
        pg::init_data_dir(&data, "postgres").expect("initdb");
        let socket = dir.path().join("s");
        scratch::make_dir_for_postgres(&socket, 0o755).expect("socket directory");
        let log = dir.path().join("log");
        let port = pg::free_port().expect("a free port");
        let guard = spawn_postgres(&data, &socket, port, &log, settings);
        let s = Server {
            guard,
            port,
            socket,
            data,
            log,
            settings: settings.to_vec(),
            _dir: dir,
        };
        s.wait_ready();
        s.psql(
            "postgres",
            &format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"),
        );
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pg::pg_isready(&self.socket, self.port) {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown) and starts it again on the same
    /// data directory and port: what deleting postgres-0 does to its server.
    fn restart(&mut self) {
        self.guard.stop(libc::SIGINT, Duration::from_secs(60));
        self.guard = spawn_postgres(
            &self.data,
            &self.socket,
            self.port,
            &self.log,
            &self.settings,
        );
        self.wait_ready();
    }
    fn psql(&self, db: &str, sql: &str) -> String {
        pg::run_psql(&self.socket, self.port, "postgres", db, sql)
            .unwrap_or_else(|e| panic!("psql on {db}: {e}\n{sql}"))
    }

    fn libpq(&self, cmd: &mut Command) {
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", PASSWORD);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.guard.stop(libc::SIGINT, Duration::from_secs(30));
    }
}

fn spawn_postgres(
    data: &Path,
    socket: &Path,
    port: u16,
    log: &Path,
    settings: &[String],
) -> ChildGuard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new(pg::bin("postgres"));
    cmd.arg("-D")
        .arg(data)
        .arg("-k")
        .arg(socket)
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "logging_collector=off"])
        .args(
            settings
                .iter()
                .flat_map(|kv| ["-c".to_string(), kv.clone()]),
        )
        .env_clear()
        .env("PATH", pg::child_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    ChildGuard::spawn(cmd, SpawnOptions::UNPRIVILEGED).expect("start postgres")
}

fn tool(server: &Server, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(pg::bin(program));
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    server.libpq(&mut cmd);
    cmd
}

/// Row counts of every table, to check a copy is complete (not timed).
fn row_counts(server: &Server, db: &str) -> String {
    server.psql(
        db,
        "SELECT string_agg(relname || '=' || n, ',' ORDER BY relname) FROM ( \
           SELECT c.relname, (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', \
             n.nspname, c.relname), false, true, '')))[1]::text AS n \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind = 'r' AND n.nspname = 'public') t",
    )
}

/// The mixed database: 30 tables of three shapes, sizes falling by 0.72 per
/// table from 1.6 M rows (× scale), each with a primary key and one or two
/// secondary indexes; the last holds a geometric column (hashed as text).
fn mixed_sql(scale: f64) -> Vec<String> {
    (0..30)
        .map(|i| {
            let n = ((1_600_000.0 * scale * 0.72f64.powi(i)).round() as u64).max(10);
            let t = format!("t{i:02}");
            match (i == 29, i % 3) {
                (true, _) => format!(
                    "CREATE TABLE {t} (id int PRIMARY KEY, spot point, note text); \
                     INSERT INTO {t} SELECT i, point(i, i / 3.0), 'note ' || i FROM generate_series(1, {n}) i;"
                ),
                (false, 0) => format!(
                    "CREATE TABLE {t} (id bigint PRIMARY KEY, account int NOT NULL, name text, \
                       amount numeric(12,2), created timestamptz, flag bool); \
                     INSERT INTO {t} SELECT i, i % 10007, md5(i::text), (i % 100000) / 100.0, \
                       '2024-01-01'::timestamptz + i * interval '1 second', i % 3 = 0 \
                       FROM generate_series(1, {n}) i; \
                     CREATE INDEX ON {t} (account); CREATE INDEX ON {t} (created);"
                ),
                (false, 1) => format!(
                    "CREATE TABLE {t} (id bigint PRIMARY KEY, doc jsonb, ref uuid, score float8); \
                     INSERT INTO {t} SELECT i, jsonb_build_object('k', i, 'tag', 'tag' || (i % 50), \
                       'ok', i % 2 = 0), md5(i::text || 'r')::uuid, i * 0.37 \
                       FROM generate_series(1, {n}) i; \
                     CREATE INDEX ON {t} (ref);"
                ),
                _ => format!(
                    "CREATE TABLE {t} (id int PRIMARY KEY, label varchar(64), body text, day date); \
                     INSERT INTO {t} SELECT i, 'label-' || (i % 1000), repeat(md5(i::text), 3), \
                       '2020-01-01'::date + (i % 2000) FROM generate_series(1, {n}) i; \
                     CREATE INDEX ON {t} (label);"
                ),
            }
        })
        .collect()
}

fn generate(source: &Server, scale: f64) {
    let t = Instant::now();
    source.psql(
        "postgres",
        "CREATE DATABASE pgbench; CREATE DATABASE mixed;",
    );
    let s = ((70.0 * scale).round() as u32).max(1).to_string();
    // The mixed tables in two sessions, one per core, beside pgbench -i.
    let sql = mixed_sql(scale);
    let halves: Vec<String> = (0..2)
        .map(|h| {
            sql.iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == h)
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    std::thread::scope(|scope| {
        let pgbench = scope.spawn(|| {
            run(
                tool(source, "pgbench", &["-i", "-q", "-s", &s, "pgbench"]),
                "pgbench -i",
            )
        });
        let workers: Vec<_> = halves
            .iter()
            .map(|half| scope.spawn(|| source.psql("mixed", half)))
            .collect();
        for w in workers {
            w.join().expect("a generating session");
        }
        pgbench.join().expect("pgbench");
    });
    // Hint bits set and statistics made once, so no path pays for them.
    source.psql("mixed", "VACUUM (FREEZE, ANALYZE)");
    source.psql("pgbench", "VACUUM (FREEZE, ANALYZE)");
    source.psql("postgres", "CHECKPOINT");
    println!("generated in {:.0} s", t.elapsed().as_secs_f64());
}

struct Outcome {
    wall: Duration,
    /// Peak RSS per client process, labelled.
    peaks: Vec<(&'static str, u64)>,
    note: String,
}

fn path_a(source: &Server, db: &str, work: &Path) -> Outcome {
    let target = Server::start("bench-a");
    let file = work.join(format!("{db}.sql"));
    let t = Instant::now();
    let mut dump = tool(source, "pg_dump", &["-d", db]);
    dump.stdout(std::fs::File::create(&file).expect("dump file"));
    let dump = run(dump, "pg_dump > backup.sql");
    let create = format!("CREATE DATABASE {db}");
    run(
        tool(
            &target,
            "psql",
            &["-X", "-q", "-d", "postgres", "-c", &create],
        ),
        "createdb",
    );
    let load = run(
        tool(
            &target,
            "psql",
            &["-X", "-q", "-d", db, "-f", &file.to_string_lossy()],
        ),
        "psql -f",
    );
    let wall = t.elapsed();
    assert_eq!(row_counts(&target, db), row_counts(source, db));
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    std::fs::remove_file(&file).expect("remove the dump");
    Outcome {
        wall,
        peaks: vec![("pg_dump", dump.peak), ("psql", load.peak)],
        note: format!(
            "dump {:.1} s, {:.0} MB; load {:.1} s{}",
            dump.wall.as_secs_f64(),
            mb(size),
            (wall - dump.wall).as_secs_f64(),
            if load.stderr.contains("ERROR") {
                ", psql reported errors"
            } else {
                ""
            }
        ),
    }
}

fn path_b(source: &Server, db: &str, work: &Path) -> Outcome {
    let target = Server::start("bench-b");
    let dir = work.join(format!("{db}.dir"));
    let dir_s = dir.to_string_lossy().into_owned();
    let t = Instant::now();
    let dump = run(
        tool(source, "pg_dump", &["-Fd", "-j2", "-f", &dir_s, "-d", db]),
        "pg_dump -Fd -j2",
    );
    let create = format!("CREATE DATABASE {db}");
    run(
        tool(
            &target,
            "psql",
            &["-X", "-q", "-d", "postgres", "-c", &create],
        ),
        "createdb",
    );
    let restore = run(
        tool(&target, "pg_restore", &["-j2", "-d", db, &dir_s]),
        "pg_restore -j2",
    );
    let wall = t.elapsed();
    assert_eq!(row_counts(&target, db), row_counts(source, db));
    let size: u64 = std::fs::read_dir(&dir)
        .expect("dump directory")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    std::fs::remove_dir_all(&dir).expect("remove the dump");
    Outcome {
        wall,
        peaks: vec![("pg_dump", dump.peak), ("pg_restore", restore.peak)],
        note: format!(
            "dump {:.1} s, {:.0} MB; restore {:.1} s",
            dump.wall.as_secs_f64(),
            mb(size),
            (wall - dump.wall).as_secs_f64()
        ),
    }
}

/// `PGPLAN_BENCH_STATEMENTS=MS`: (c)'s target logs each statement that
/// takes MS or longer (with a timestamp), printed after (c) ends, to see
/// where its restore spends its time.
fn statement_log() -> Vec<String> {
    match std::env::var("PGPLAN_BENCH_STATEMENTS") {
        Ok(ms) if !ms.is_empty() => vec![
            format!("log_min_duration_statement={ms}"),
            "log_line_prefix=%m [%p] ".to_string(),
        ],
        _ => Vec::new(),
    }
}

/// Path (c) in a child process (this binary with `--pgplan-path`), so its
/// peak RSS is pgplan's alone. The child asks for the target's restarts
/// (minimal WAL) on its stdout and waits for the answer on its stdin; the
/// restarts count in (c)'s time, as they do in an apply.
// Reaped with wait4 (to read its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn path_c(source: &Server, db: &str, work: &Path, format: &str) -> Outcome {
    use std::io::{BufRead, Write};
    let mut target = Server::start_with("bench-c", &statement_log());
    let exe = std::env::current_exe().expect("the bench binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--pgplan-path",
        &source.port.to_string(),
        &target.port.to_string(),
        db,
        &work.to_string_lossy(),
        format,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("start pgplan's data path");
    let mut to_child = child.stdin.take().expect("child stdin");
    let from_child = std::io::BufReader::new(child.stdout.take().expect("child stdout"));
    let mut stderr = child.stderr.take().expect("child stderr");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut report = String::new();
    let mut restarts = Duration::ZERO;
    for line in from_child.lines() {
        let line = line.expect("child output");
        if line == "restart" {
            let r = Instant::now();
            target.restart();
            restarts += r.elapsed();
            writeln!(to_child, "restarted").expect("answer the child");
        } else {
            report.push_str(&line);
            report.push('\n');
        }
    }
    drop(to_child);
    let (status, _) = reap(&child);
    let wall = t.elapsed();
    let log = log.join().unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "pgplan's data path failed: {log}"
    );
    if std::env::var_os("RUST_LOG").is_some() {
        eprint!("{log}");
    }
    if !statement_log().is_empty() {
        eprint!(
            "(c)'s target log:\n{}",
            std::fs::read_to_string(&target.log).unwrap_or_default()
        );
    }
    assert_eq!(row_counts(&target, db), row_counts(source, db));
    let field = |k: &str| -> String {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    let own: u64 = field("self_peak").parse().unwrap_or(0);
    let tools: u64 = field("tools_peak").parse().unwrap_or(0);
    let baseline: u64 = field("baseline").parse().unwrap_or(0);
    let _ = std::fs::remove_dir_all(work.join("bench"));
    Outcome {
        wall,
        peaks: vec![("pgplan", own), ("its tools", tools)],
        note: format!(
            "{}; {}; pgplan RSS {:.1} MB at start, {:.1} MB peak (+{:.1} MB)",
            field("phases"),
            field("tuning"),
            mb(baseline),
            mb(own),
            mb(own.saturating_sub(baseline))
        ),
    }
    .with_restarts(restarts)
}

impl Outcome {
    fn with_restarts(mut self, restarts: Duration) -> Self {
        if !restarts.is_zero() {
            self.note.push_str(&format!(
                "; target restarts {:.1} s",
                restarts.as_secs_f64()
            ));
        }
        self
    }
}

/// Between paths (not timed): the target server is gone; flush what it and
/// the dump left in the page cache, so no path pays for an earlier one's
/// writeback.
fn settle() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The run with the median wall time, and the fastest and slowest times.
fn median(mut runs: Vec<Outcome>) -> Option<(Outcome, Duration, Duration)> {
    runs.sort_by_key(|o| o.wall);
    let low = runs.first()?.wall;
    let high = runs.last()?.wall;
    let mid = runs.len() / 2;
    Some((runs.swap_remove(mid), low, high))
}

fn rss_now() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn rusage(who: libc::c_int) -> u64 {
    // SAFETY: rusage is plain data, zero-initialised; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    u.ru_maxrss as u64 * 1024
}

/// Asks the parent to restart the target server and waits until it has.
fn request_restart() {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    writeln!(out, "restart").expect("ask for a restart");
    out.flush().expect("ask for a restart");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .expect("the restart answer");
    assert_eq!(answer.trim(), "restarted");
}

/// The child: backup → prepare → tune (restart) → restore → untune
/// (restart, checkpoint, sync) → verify, as an apply runs them.
fn pgplan_path(args: &[String]) {
    let [source_port, target_port, db, work, format] = args else {
        panic!("--pgplan-path SOURCE_PORT TARGET_PORT DB WORK FORMAT");
    };
    let conn = |port: &str| ConnInfo {
        host: "127.0.0.1".into(),
        port: port.parse().expect("port"),
        user: "postgres".into(),
        password: Some(PASSWORD.into()),
        sslmode: "disable".into(),
        sslrootcert: None,
    };
    let (format, directory_when_local) = match format.as_str() {
        "directory" => (DumpFormat::Directory, false),
        "custom" => (DumpFormat::Custom, false),
        _ => (DumpFormat::Custom, true),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let baseline = rss_now();
    let events = std::sync::atomic::AtomicU64::new(0);
    let count = |_: &Progress| {
        events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let (phases, tuning) = rt.block_on(async {
        let source = Runner::Local {
            conn: conn(source_port),
        };
        let target = Runner::Local {
            conn: conn(target_port),
        };
        // The spec's `loadTuning` (auto by default, as the planner decides it).
        let size: u64 = source
            .query("postgres", &format!("SELECT pg_database_size('{db}')"))
            .await
            .expect("size")
            .trim()
            .parse()
            .unwrap_or(0);
        let mode = std::env::var("PGPLAN_BENCH_LOAD").unwrap_or_else(|_| "auto".into());
        let minimal_wal = match mode.as_str() {
            "restart" => true,
            "reload" | "off" => false,
            _ => size >= pgplan::diff::RESTART_FROM_BYTES,
        };
        let tune = match mode.as_str() {
            "off" => false,
            "restart" | "reload" => true,
            _ => size >= pgplan::diff::RESTART_FROM_BYTES,
        };
        let mut phases = Vec::new();
        let mut t = Instant::now();
        let mut lap = |name: &str, t: &mut Instant| {
            phases.push(format!("{name} {:.1}", t.elapsed().as_secs_f64()));
            *t = Instant::now();
        };
        let options = BackupOptions {
            format,
            directory_when_local,
            jobs: 2,
            compression: std::env::var("PGPLAN_BENCH_COMPRESS")
                .ok()
                .and_then(|c| c.parse().ok()),
        };
        let (paths, manifest) = backup(&source, Path::new(work), "bench", db, &options, &count)
            .await
            .expect("backup");
        lap("backup", &mut t);
        prepare_target(&target, &[], &[(db.clone(), manifest.owner.clone())], false)
            .await
            .expect("prepare");
        lap("prepare", &mut t);
        let tuning = LoadTuning {
            parallel_maintenance_workers: std::env::var("PGPLAN_BENCH_PMW")
                .ok()
                .and_then(|n| n.parse().ok()),
            minimal_wal,
            ..LoadTuning::default()
        };
        if tune {
            let pending = tune_for_loading(&target, &tuning).await.expect("tune");
            if !pending.is_empty() {
                request_restart();
                wait_accepting(&target, Duration::from_secs(60))
                    .await
                    .expect("target back");
                assert_eq!(wal_level(&target).await.expect("wal_level"), "minimal");
            }
        }
        lap("tune", &mut t);
        restore(
            &target,
            &paths.manifest,
            &RestoreOptions {
                jobs: 2,
                ..RestoreOptions::default()
            },
            &count,
        )
        .await
        .expect("restore");
        lap("restore+analyze", &mut t);
        if tune {
            let pending = untune(&target).await.expect("untune");
            let restarted = !pending.is_empty();
            if restarted {
                request_restart();
                wait_accepting(&target, Duration::from_secs(60))
                    .await
                    .expect("target back");
            }
            // As the untune step: checkpoint, then sync beside the server
            // (it runs on this machine, so this machine's sync).
            make_durable(&target, restarted).await.expect("checkpoint");
        }
        lap("untune", &mut t);
        let checks = VerifyChecks {
            row_counts: true,
            checksums: true,
            sequences: true,
            sql: vec![],
        };
        verify(&target, &manifest, &checks, &count)
            .await
            .expect("verify");
        lap("verify", &mut t);
        let what = match (tune, minimal_wal) {
            (false, _) => "no load tuning".to_string(),
            (true, true) => format!("load tuning {mode}: minimal WAL, two restarts"),
            (true, false) => format!("load tuning {mode}: by reload"),
        };
        (phases.join(", "), what)
    });
    println!("phases=({phases} s)");
    println!("tuning={tuning}");
    println!("baseline={baseline}");
    println!("self_peak={}", rusage(libc::RUSAGE_SELF));
    println!("tools_peak={}", rusage(libc::RUSAGE_CHILDREN));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--pgplan-path") {
        pgplan_path(&args[i + 1..]);
        return;
    }
    let scale: f64 = if args.iter().any(|a| a == "--quick") {
        0.2
    } else {
        std::env::var("PGPLAN_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0)
    };
    let format = std::env::var("PGPLAN_BENCH_FORMAT").unwrap_or_else(|_| "default".into());
    let rounds: usize = std::env::var("PGPLAN_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start_load = load_average();
    let source = Server::start("bench-source");
    let version = source.psql("postgres", "SHOW server_version");
    println!(
        "pgplan copy benchmark: {cpus} CPUs, PostgreSQL {version}, scale {scale} (× ~1 GB), \
         every server with default settings (fsync on); (c) with the Local runner, {format} archive; \
         median of {rounds} rounds (fastest–slowest)"
    );
    generate(&source, scale);
    settle();
    let work = Scratch::new("bench-work").expect("work directory");

    let paths = std::env::var("PGPLAN_BENCH_PATHS").unwrap_or_else(|_| "a,b,c".into());
    let datasets =
        std::env::var("PGPLAN_BENCH_DATASETS").unwrap_or_else(|_| "pgbench,mixed".into());
    let mut mixed_speedup = None;
    let mut pgplan_peak = 0u64;
    for db in ["pgbench", "mixed"] {
        if !datasets.split(',').any(|d| d == db) {
            continue;
        }
        let size: u64 = source
            .psql("postgres", &format!("SELECT pg_database_size('{db}')"))
            .parse()
            .unwrap_or(0);
        println!();
        println!("{db}: {:.0} MB", mb(size));
        let wanted = |p: &str| paths.split(',').any(|x| x == p);
        // Rounds interleave the paths, so a slow spell of the machine
        // lands on all of them; each path's median round is reported.
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            if wanted("a") {
                a.push(path_a(&source, db, work.path()));
                settle();
            }
            if wanted("b") {
                b.push(path_b(&source, db, work.path()));
                settle();
            }
            if wanted("c") {
                c.push(path_c(&source, db, work.path(), &format));
                settle();
            }
        }
        let c_peak = c.iter().map(|o| o.peaks[0].1).max().unwrap_or(0);
        let (a, b, c) = (median(a), median(b), median(c));
        for (label, o) in [
            ("(a) pg_dump > .sql; psql -f", &a),
            ("(b) pg_dump -Fd -j2; pg_restore -j2", &b),
            ("(c) pgplan backup → restore → verify", &c),
        ] {
            let Some((o, low, high)) = o else { continue };
            let peaks: Vec<String> = o
                .peaks
                .iter()
                .map(|(who, rss)| format!("{who} {:.1} MB", mb(*rss)))
                .collect();
            println!(
                "  {label:<38} {:>6.1} s ({:.1}–{:.1})   peak RSS: {}",
                o.wall.as_secs_f64(),
                low.as_secs_f64(),
                high.as_secs_f64(),
                peaks.join(", ")
            );
            println!("  {:<38} {}", "", o.note);
        }
        let a = a.map(|(o, _, _)| o);
        let b = b.map(|(o, _, _)| o);
        let c = c.map(|(o, _, _)| o);
        let ratio = |x: &Option<Outcome>, y: &Option<Outcome>| match (x, y) {
            (Some(x), Some(y)) => Some(x.wall.as_secs_f64() / y.wall.as_secs_f64()),
            _ => None,
        };
        let show = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
        println!(
            "  (a)/(c): {}   (a)/(b): {}",
            show(ratio(&a, &c)),
            show(ratio(&a, &b))
        );
        pgplan_peak = pgplan_peak.max(c_peak);
        if db == "mixed" {
            mixed_speedup = ratio(&a, &c);
        }
    }
    println!();
    println!(
        "pgplan peak RSS {:.1} MB: {} the 64 MB budget",
        mb(pgplan_peak),
        if pgplan_peak < 64 << 20 {
            "within"
        } else {
            "OVER"
        }
    );
    println!(
        "load average (1 min) at start {start_load}, at end {}: other work on the machine skews every figure",
        load_average()
    );
    match mixed_speedup {
        Some(x) => println!("speedup: {x:.2}"),
        None => println!("speedup: - (needs paths a and c on the mixed database)"),
    }
    assert!(
        pgplan_peak < 64 << 20,
        "pgplan's peak RSS {:.1} MB is over its 64 MB budget",
        mb(pgplan_peak)
    );
}
