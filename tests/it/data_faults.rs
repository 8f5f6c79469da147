//! A full disk and a frozen server during the data path (issue 14.9): the
//! step fails, in bounded time, saying which (the directory and what is
//! free there; or how long nothing moved on which server), and the apply
//! rolls back. Disks are real small tmpfs mounts (the tests run as root);
//! frozen servers are real SIGSTOPs of PostgreSQL's process group.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgplan::pgtools::stall::{guard, Watch};
use pgplan::pgtools::{backup, no_progress, BackupOptions, ConnInfo, PgError, Progress, Runner};
use pgplan::spec::DumpFormat;

use crate::apply::{patients, spec};
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{LocalPostgres, Scenario, SimCluster};

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "these tests need to mount a small tmpfs (root with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it to the last byte.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .stderr(Stdio::null())
            .status();
        assert_eq!(pgplan::pgtools::free_bytes(self.path()).unwrap(), 0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn local(pg: &LocalPostgres) -> Runner<'static> {
    Runner::Local {
        conn: ConnInfo {
            host: pg.host().to_string(),
            port: pg.port(),
            user: pg.superuser().to_string(),
            password: Some(pg.password().to_string()),
            sslmode: "disable".into(),
            sslrootcert: None,
        },
    }
}

/// A database of `rows` rows of 512 random bytes: its dump (hex text)
/// is about twice its tables' size.
fn random_rows(pg: &LocalPostgres, rows: u32) {
    pg.create_database("blobs");
    pg.psql(
        "blobs",
        &format!(
            "CREATE TABLE b (id int PRIMARY KEY, data bytea);
             INSERT INTO b SELECT i, decode((SELECT string_agg(md5(random()::text || i || g), '')
                 FROM generate_series(1, 32) g), 'hex') FROM generate_series(1, {rows}) i;"
        ),
    );
}

fn uncompressed() -> BackupOptions {
    BackupOptions {
        format: DumpFormat::Custom,
        directory_when_local: false,
        jobs: 2,
        compression: Some(0),
    }
}

/// The dump outgrows the disk: its tables (about 2.2 MiB) fit the 3 MiB
/// free, so the check before the dump lets it start, and the dump (about
/// 4 MiB) runs out of space. pg_dump, whose output is no longer read, is
/// stopped at once; before, the backup waited for it forever.
#[tokio::test]
async fn a_dump_that_fills_the_disk_fails_at_once_naming_the_directory() {
    let source = LocalPostgres::start();
    random_rows(&source, 4000);
    let disk = Tmpfs::mount("3m");
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        backup(
            &local(&source),
            disk.path(),
            "p",
            "blobs",
            &uncompressed(),
            &no_progress,
        ),
    )
    .await
    .expect("the backup ends instead of hanging");
    let err = r.expect_err("the disk is too small for the dump");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let PgError::NoSpace { dir, free, .. } = &err else {
        panic!("not a full disk: {err}");
    };
    assert_eq!(dir, &disk.path().join("p"));
    assert!(*free < 64 << 10, "{free}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "the backup directory {} is full (",
            disk.path().join("p").display()
        )),
        "{text}"
    );
    assert!(text.contains("No space left on device"), "{text}");
    // Nothing half-written is left, no manifest claims a backup.
    let left: Vec<_> = std::fs::read_dir(disk.path().join("p"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Too little room to begin with: refused before pg_dump starts.
#[tokio::test]
async fn a_disk_without_room_for_the_tables_is_refused_before_the_dump() {
    let source = LocalPostgres::start();
    random_rows(&source, 4000);
    let disk = Tmpfs::mount("1m");
    let err = backup(
        &local(&source),
        disk.path(),
        "p",
        "blobs",
        &uncompressed(),
        &no_progress,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("the dump of blobs needs about 2."), "{text}");
    let help = miette::Diagnostic::help(&err)
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert!(
        help.contains("`backup.directory`") && help.contains("(about 2."),
        "{help}"
    );
    assert!(!disk.path().join("p/blobs.dump.partial").exists());
}

/// The server freezes in the middle of the dump (SIGSTOP: established
/// connections, no error, no byte): the guard fails it after the stall
/// timeout, naming the server and what had moved.
#[tokio::test]
async fn a_server_frozen_mid_dump_is_a_stall_not_a_hang() {
    let source = LocalPostgres::start();
    random_rows(&source, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let watch = Watch::default();
    let pid = source.pid();
    let frozen = std::sync::atomic::AtomicBool::new(false);
    let progress = |p: &Progress| {
        watch.saw(p);
        if matches!(p, Progress::Bytes { done, .. } if *done >= 1 << 20)
            && !frozen.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            assert!(crate::support::proc::freeze_tree(pid), "postgres stopped");
        }
    };
    let runner = local(&source);
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        guard(
            backup(
                &runner,
                dir.path(),
                "p",
                "blobs",
                &uncompressed(),
                &progress,
            ),
            &watch,
            Duration::from_secs(2),
            &runner,
            Some("blobs"),
        ),
    )
    .await;
    crate::support::proc::thaw_tree(pid);
    let err = r
        .expect("the guard ends it")
        .expect_err("a frozen server cannot finish");
    let took = started.elapsed();
    assert!(frozen.load(std::sync::atomic::Ordering::SeqCst));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "{took:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "no progress for 2 s from 127.0.0.1:{} (last progress: ",
            source.port()
        )),
        "{text}"
    );
    assert!(text.contains("dumped)"), "{text}");
}

/// Runs pgplan for at most `limit`; its stdout lines go to `each_line`
/// as they come. Returns the exit code (None: killed at the limit), stdout,
/// stderr and how long it ran.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    mut each_line: impl FnMut(&str),
) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgplan");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let code = loop {
        while let Ok(line) = rx.try_recv() {
            each_line(&line);
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        out.push_str(&line);
        out.push('\n');
    }
    (
        code,
        out,
        err_reader.join().unwrap_or_default(),
        started.elapsed(),
    )
}

/// The healthcare example with its backups in `directory` and a stall
/// timeout (`None`: the default).
fn spec_with(state: &Path, directory: &Path, stall: Option<&str>) -> PathBuf {
    let text = std::fs::read_to_string(spec()).unwrap();
    let stall = stall
        .map(|s| format!("    stallTimeout: {s}\n"))
        .unwrap_or_default();
    let changed = text.replace(
        "  backup:\n    directory: .pgplan/backups/healthcare\n",
        &format!("  backup:\n    directory: {}\n{stall}", directory.display()),
    );
    assert_ne!(changed, text);
    let path = state.join("pgplan.yaml");
    std::fs::write(&path, changed).unwrap();
    path
}

fn apply_command(cluster: &SimCluster, state: &Path, spec: &Path) -> Command {
    let mut cmd = crate::run::pgplan_command();
    cmd.args(["apply", "-f"])
        .arg(spec)
        .args(["--auto-approve", "--json", "--state-dir"])
        .arg(state)
        .current_dir(state)
        .env("KUBECONFIG", cluster.kubeconfig_path());
    cmd
}

/// The consumers run again and the data is where it was.
fn rolled_back(cluster: &SimCluster, before: &(String, String), stderr: &str) {
    assert!(
        stderr.contains("Rolled back to the original topology"),
        "{stderr}"
    );
    cluster.wait_until(Duration::from_secs(60), "the API back at 2 replicas", |c| {
        c.get_json("deployments", hc::NAMESPACE, hc::API_DEPLOYMENT)
            .is_some_and(|d| d["spec"]["replicas"] == hc::API_REPLICAS)
            && c.workloads_ready(hc::NAMESPACE)
    });
    assert!(cluster
        .get_json("deployments", hc::NAMESPACE, hc::DEPLOYMENT)
        .is_some());
    assert_eq!(&patients(cluster), before);
}

#[test]
fn apply_with_a_full_backup_disk_fails_and_rolls_back() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let before = patients(&cluster);
    let state = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount("64k");
    disk.fill();
    let spec = spec_with(state.path(), disk.path(), None);
    let (code, stdout, stderr, took) = run_bounded(
        apply_command(&cluster, state.path(), &spec),
        Duration::from_secs(120),
        |_| {},
    );
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(90), "{took:?}");
    assert!(
        stderr.contains(&format!("the backup directory {}/", disk.path().display()))
            && stderr.contains("is full (0 B free): the dump of healthcare needs about "),
        "{stderr}"
    );
    assert!(
        stderr.contains("point `backup.directory` at a filesystem with room"),
        "{stderr}"
    );
    rolled_back(&cluster, &before, &stderr);
}

#[test]
fn apply_with_the_source_frozen_stalls_fails_and_rolls_back() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let before = patients(&cluster);
    let pod = cluster.pod_names(hc::NAMESPACE, "app=postgres")[0].clone();
    let state = tempfile::tempdir().unwrap();
    let spec = spec_with(state.path(), &state.path().join("backups"), Some("3s"));
    let mut froze = None;
    let (code, stdout, stderr, took) = run_bounded(
        apply_command(&cluster, state.path(), &spec),
        Duration::from_secs(120),
        |line| {
            // The backup has begun: the server freezes, as behind a partition.
            if froze.is_none()
                && line.contains("\"step_started\"")
                && line.contains(&format!("pg/healthcare/{}/backup", hc::DATABASE))
            {
                assert!(cluster.faults().freeze_pod(hc::NAMESPACE, &pod));
                froze = Some(Instant::now());
            }
        },
    );
    cluster.faults().thaw_pod(hc::NAMESPACE, &pod);
    let froze = froze.expect("the backup started");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        froze.elapsed() < Duration::from_secs(60) && took < Duration::from_secs(90),
        "{took:?}"
    );
    assert!(
        stderr.contains(&format!(
            "no progress for 3 s from pod {}/{pod}",
            hc::NAMESPACE
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("`backup.stallTimeout` sets how long"),
        "{stderr}"
    );
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"step_failed\""))
        .collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(failed[0].contains("/backup"), "{stdout}");
    // The diagnostic's code and help reach the pipeline, not only its text.
    let event: serde_json::Value = serde_json::from_str(failed[0]).unwrap();
    assert_eq!(event["code"], "pgplan::pg::stalled", "{stdout}");
    assert!(
        event["help"]
            .as_str()
            .is_some_and(|h| h.contains("backup.stallTimeout")),
        "{stdout}"
    );
    rolled_back(&cluster, &before, &stderr);
}

/// A dump's total is unknown until it ends: the progress events carry the
/// database's size from the inventory as an estimate (a bar shows it as
/// `~`), never a total of 0; the read-back knows its total.
#[test]
fn dump_progress_carries_the_database_size_as_an_estimate() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let spec = spec_with(state.path(), &state.path().join("backups"), None);
    let plan = crate::apply::pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", spec.to_str().unwrap(), "--format", "json"],
        &[],
    );
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let size = plan["placements"][0]["databases"][0]["size_bytes"]
        .as_u64()
        .expect("the database's size in the plan");
    let (code, stdout, stderr, _) = run_bounded(
        apply_command(&cluster, state.path(), &spec),
        Duration::from_secs(180),
        |_| {},
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let progress: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["event"] == "progress"
                && e["address"]
                    .as_str()
                    .is_some_and(|a| a.ends_with("/backup"))
        })
        .collect();
    let dump: Vec<&serde_json::Value> = progress.iter().filter(|e| e["total"].is_null()).collect();
    assert!(!dump.is_empty(), "{stdout}");
    assert!(dump.iter().all(|e| e["estimate"] == size), "{dump:?}");
    assert!(
        progress
            .iter()
            .any(|e| e["total"].as_u64().is_some_and(|t| t > 0) && e["estimate"].is_null()),
        "{progress:?}"
    );
}
