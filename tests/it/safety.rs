//! Apply safety on the simulated cluster (issues 23 and 14): an apply that
//! waited for the lock runs nothing when the world moved meanwhile; a plan
//! or apply never says "No changes" over a half-finished apply; damaged
//! journals are refused, never trusted in part, and `pgplan status` shows
//! what was left; journals and backups are private; an interrupt stops the
//! apply cleanly and `--resume` finishes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apply::{
    apply, assert_moved, assert_original_topology, json_of, ok, patients, pgplan_in, restart_spec,
    spec, step_addresses, text,
};
use crate::cli::pgplan_bin;
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

/// `pgplan` (or `program`, a shell running pgplan) against the cluster, in
/// the runner's environment: no test hook inherited.
fn command(cluster: &SimCluster, program: &str) -> Command {
    let mut cmd = Command::new(program);
    crate::run::clean_env(&mut cmd);
    cmd.env("KUBECONFIG", cluster.kubeconfig_path());
    cmd
}

/// A pgplan process running in the background, its output going to files.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    fn start(cluster: &SimCluster, state: &Path, args: &[&str], extra: &[(&str, &str)]) -> Running {
        let logs = tempfile::Builder::new()
            .prefix("pgplan-logs")
            .tempdir()
            .unwrap()
            .keep();
        let (out, err) = (logs.join("stdout"), logs.join("stderr"));
        let mut cmd = command(cluster, pgplan_bin());
        cmd.args(args)
            .arg("--state-dir")
            .arg(state)
            .current_dir(state)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Running {
            child: cmd.spawn().expect("start pgplan"),
            out,
            err,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait until stdout holds `needle`.
    fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.stdout().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "no `{needle}` in:\n{}\nstderr:\n{}",
                self.stdout(),
                std::fs::read_to_string(&self.err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Exit code, stdout, stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let out = self.stdout();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let _ = std::fs::remove_dir_all(self.out.parent().unwrap());
        (status.code(), out, err)
    }
}

fn wait_file(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn release(dir: &Path, what: &str) {
    std::fs::write(dir.join(format!("release-{what}")), b"").unwrap();
}

/// What an apply could change, to compare before and after one that must
/// change nothing: the workloads, the Service, the API's replicas, the
/// volumes and the Lease.
fn world(cluster: &SimCluster) -> Value {
    let strip = |v: Option<Value>| {
        v.map(|mut v| {
            // Status and bookkeeping move on their own.
            v["status"] = Value::Null;
            v["metadata"]["managedFields"] = Value::Null;
            v["metadata"]["resourceVersion"] = Value::Null;
            v["metadata"]["generation"] = Value::Null;
            v["spec"]["renewTime"] = Value::Null;
            v
        })
    };
    serde_json::json!({
        "deployment": strip(json_of(cluster, "deployments", hc::DEPLOYMENT)),
        "statefulset": strip(json_of(cluster, "statefulsets", "postgres")),
        "service": strip(json_of(cluster, "services", hc::SERVICE)),
        "api": strip(json_of(cluster, "deployments", hc::API_DEPLOYMENT)),
        "pv": strip(cluster.get_json("persistentvolumes", "", hc::PV)),
        "pv0": strip(cluster.get_json("persistentvolumes", "", "postgres-pv-0")),
        "lease": strip(cluster.get_json("leases", hc::NAMESPACE, "pgplan-healthcare")),
    })
}

/// Every file under a directory.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

const LONG: Duration = Duration::from_secs(240);

/// Issue 23.1: the second apply planned the move before the first took the
/// lock, then waited for it while the first moved the database. Once it
/// has the lock it plans again, sees the world moved, and stops having
/// changed nothing — it does not run its stale plan (which recreated the
/// old Deployment beside the new StatefulSet).
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn an_apply_that_waited_for_the_lock_runs_nothing_when_the_world_moved() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let (a, b, holds) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let before = patients(&cluster);
    let apply_args = [
        "apply",
        "-f",
        &spec(),
        "--auto-approve",
        "--lock-timeout",
        "240s",
    ];
    // B plans, then is held before it takes the lock.
    let hold_b = format!("lock:{}", holds.path().display());
    let second = Running::start(
        &cluster,
        b.path(),
        &apply_args,
        &[("PGPLAN_TEST_HOLD", &hold_b)],
    );
    wait_file(&holds.path().join("held-lock"), LONG);
    // A takes the lock and is held at its first step.
    let hold_a = format!("step:1:{}", holds.path().display());
    let first = Running::start(
        &cluster,
        a.path(),
        &apply_args,
        &[("PGPLAN_TEST_HOLD", &hold_a)],
    );
    wait_file(&holds.path().join("held-1"), LONG);
    // B goes for the lock and waits for A.
    release(holds.path(), "lock");
    second.wait_for_output("Waiting for the lock of healthcare, held by", LONG);
    release(holds.path(), "1");
    let (code, out, err) = first.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let moved = world(&cluster);

    let (code, out, err) = second.finish();
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("the live state changed while waiting for the lock (held by"),
        "{err}"
    );
    // What moved, named.
    assert!(
        err.contains("k8s/default/Deployment/postgres changed"),
        "{err}"
    );
    assert!(
        err.contains("step k8s/default/Deployment/postgres would no longer run"),
        "{err}"
    );
    assert!(
        !out.contains("No changes") && !err.contains("No changes"),
        "{out}{err}"
    );
    // Nothing of B: the world is A's, B took no backup and began no journal.
    assert_eq!(world(&cluster), moved);
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    assert!(files(b.path()).is_empty(), "{:?}", files(b.path()));
    assert!(
        json_of(&cluster, "leases", "pgplan-healthcare").is_none(),
        "B gave its lock back"
    );
}

/// Issue 14.2 and 23.1: an apply that sees another running goes to the lock
/// and waits (never "No changes"); when it gets the lock the apply it saw
/// has ended, so what it approved is not what it would run: it stops.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn an_apply_that_sees_another_running_waits_at_the_lock_and_never_says_no_changes() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let (a, b, holds) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let hold_a = format!("step:4:{}", holds.path().display());
    let first = Running::start(
        &cluster,
        a.path(),
        &["apply", "-f", &spec(), "--auto-approve"],
        &[("PGPLAN_TEST_HOLD", &hold_a)],
    );
    wait_file(&holds.path().join("held-4"), LONG);

    // A plan meanwhile: the apply in progress, its holder, what is stopped.
    let plan = pgplan_in(
        &cluster,
        b.path(),
        &["plan", "-f", &spec(), "--detailed-exitcode"],
        &[],
    );
    let (out, err) = (text(&plan.stdout), text(&plan.stderr));
    assert_eq!(plan.status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("Not planned: an apply of healthcare is in progress (lock held by"),
        "{out}"
    );
    assert!(
        out.contains("stopped: k8s/default/Deployment/healthcare-api at 0 replicas (2 before pgplan stopped it)"),
        "{out}"
    );
    assert!(!out.contains("No changes"), "{out}");
    assert!(err.contains("pgplan::plan::unfinished"), "{err}");

    let second = Running::start(
        &cluster,
        b.path(),
        &[
            "apply",
            "-f",
            &spec(),
            "--auto-approve",
            "--lock-timeout",
            "240s",
        ],
        &[],
    );
    second.wait_for_output("Waiting for the lock of healthcare, held by", LONG);
    release(holds.path(), "4");
    let (code, out, err) = first.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (code, out, err) = second.finish();
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("the live state changed while waiting for the lock"),
        "{err}"
    );
    assert!(
        err.contains("an apply of healthcare is in progress") && err.contains("no longer"),
        "{err}"
    );
    assert!(
        !out.contains("No changes") && !err.contains("No changes"),
        "{out}{err}"
    );
    assert!(files(b.path()).is_empty(), "{:?}", files(b.path()));
    assert_moved(&cluster);
}

/// Issue 14.2: killed after tuning the target for loading (consumer at 0,
/// nothing restored yet, postgres-0 on fsync=off). A plan from another
/// directory — online, and offline on an `observe` snapshot — reports the
/// interrupted apply (holder, since when, what is stopped and tuned) and
/// exits 1, with `--detailed-exitcode` too; an apply from another
/// directory refuses at it; `--resume` from the first finishes the move.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn an_interrupted_apply_is_reported_by_plan_and_refused_by_another_apply() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let before = patients(&cluster);
    let spec_file = restart_spec(a.path());
    let steps = step_addresses(Some(&spec_file));
    let tune = steps
        .iter()
        .position(|s| s.ends_with("/tune-for-loading"))
        .expect("a tuning step")
        + 1;
    let crash = format!("after:{tune}");
    let out = crate::apply::apply_spec(
        &cluster,
        a.path(),
        &spec_file,
        &[("PGPLAN_TEST_CRASH", &crash)],
    );
    assert_eq!(out.status.code(), None, "{}", text(&out.stderr));

    for args in [
        vec!["plan", "-f", spec_file.as_str()],
        vec!["plan", "-f", spec_file.as_str(), "--detailed-exitcode"],
    ] {
        let plan = pgplan_in(&cluster, b.path(), &args, &[]);
        let (out, err) = (text(&plan.stdout), text(&plan.stderr));
        assert_eq!(plan.status.code(), Some(1), "{args:?}\n{out}\n{err}");
        assert!(
            out.contains("Not planned: an apply of healthcare was interrupted (lock held by"),
            "{out}"
        );
        assert!(out.contains(" since 20"), "since when: {out}");
        assert!(
            out.contains("stopped: k8s/default/Deployment/healthcare-api at 0 replicas (2 before pgplan stopped it)"),
            "{out}"
        );
        assert!(
            out.contains("tuned for loading: k8s/default/Pod/postgres-0 still runs with")
                && out.contains("fsync=off"),
            "{out}"
        );
        assert!(out.contains("--resume"), "{out}");
        assert!(!out.contains("No changes"), "{out}");
    }
    let json = pgplan_in(
        &cluster,
        b.path(),
        &["plan", "-f", &spec_file, "--format", "json"],
        &[],
    );
    assert_eq!(json.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&json.stdout).expect("a JSON plan");
    let u = &v["unfinished_applies"][0];
    assert_eq!(u["placement"], "healthcare");
    assert_eq!(u["lock"]["state"], "abandoned");
    assert_eq!(u["lock"]["phase"], "applying");
    assert!(u["lock"]["holder"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(u["stopped_consumers"][0]["quiesced_from"], 2);
    assert!(!v["summary"]["line"]
        .as_str()
        .unwrap()
        .contains("No changes"));

    // The snapshot carries it: an offline plan reports it too.
    let snap = b.path().join("live.yaml");
    ok(&pgplan_in(
        &cluster,
        b.path(),
        &["observe", "-f", &spec_file, "--out", snap.to_str().unwrap()],
        &[],
    ));
    let offline = pgplan_in(
        &cluster,
        b.path(),
        &[
            "plan",
            "-f",
            &spec_file,
            "--live-state",
            snap.to_str().unwrap(),
            "--detailed-exitcode",
        ],
        &[],
    );
    assert_eq!(offline.status.code(), Some(1), "{}", text(&offline.stdout));
    assert!(
        text(&offline.stdout).contains("was interrupted"),
        "{}",
        text(&offline.stdout)
    );

    // Another directory's apply stops at it, having changed nothing.
    let seen = world(&cluster);
    let other = crate::apply::apply_spec(&cluster, b.path(), &spec_file, &[]);
    let (out, err) = (text(&other.stdout), text(&other.stderr));
    assert_eq!(other.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("was interrupted") && err.contains("--resume"),
        "{err}"
    );
    assert!(
        !out.contains("No changes") && !err.contains("No changes"),
        "{out}{err}"
    );
    assert_eq!(world(&cluster), seen);
    assert!(!b.path().join("journal").exists());

    ok(&pgplan_in(
        &cluster,
        a.path(),
        &["apply", "-f", &spec_file, "--auto-approve", "--resume"],
        &[],
    ));
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    let again = pgplan_in(
        &cluster,
        b.path(),
        &["plan", "-f", &spec_file, "--detailed-exitcode"],
        &[],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
}

/// The journal of a run, in `state`.
fn journal_path(state: &Path) -> PathBuf {
    state.join("journal").join("healthcare.jsonl")
}

/// Resume, expecting a refusal that names `line` and says `what`, having
/// changed nothing: neither the world nor the journal. A fresh apply in the
/// same directory is refused the same way.
fn assert_refused(cluster: &SimCluster, state: &Path, line: usize, what: &[&str]) {
    let seen = world(cluster);
    let journal = std::fs::read(journal_path(state)).unwrap();
    for args in [
        vec!["apply", "-f", &spec(), "--auto-approve", "--resume"],
        vec!["apply", "-f", &spec(), "--auto-approve"],
    ] {
        let out = pgplan_in(cluster, state, &args, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("pgplan::journal::damaged"), "{err}");
        assert!(
            err.contains(&format!("is damaged at line {line}:")),
            "line {line}: {err}"
        );
        for w in what {
            assert!(err.contains(w), "`{w}` in: {err}");
        }
        assert!(
            err.contains("pgplan status") && err.contains("docs/recovery.md"),
            "{err}"
        );
        assert!(!err.contains("nothing to resume"), "{err}");
        assert_eq!(world(cluster), seen, "{args:?} changed the world");
        assert_eq!(std::fs::read(journal_path(state)).unwrap(), journal);
    }
}

/// Issue 23.2: a journal damaged at its first line, in the middle (a
/// changed record, a removed one) is refused with the line and what to do,
/// and nothing is changed; `pgplan status` shows from the cluster alone
/// what the apply left; the intact journal then resumes.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_damaged_journal_is_refused_and_status_shows_what_was_left() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    // Killed once the source Deployment is deleted (step 5).
    let out = apply(&cluster, state.path(), &[("PGPLAN_TEST_CRASH", "after:5")]);
    assert_eq!(out.status.code(), None, "{}", text(&out.stderr));
    let path = journal_path(state.path());
    let intact = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = intact.lines().collect();
    assert!(lines.len() >= 10, "{intact}");
    let write = |lines: &[String]| {
        std::fs::write(
            &path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap()
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    // The first line overwritten.
    let mut damaged = owned.clone();
    damaged[0].replace_range(0..12, "############");
    write(&damaged);
    assert_refused(
        &cluster,
        state.path(),
        1,
        &[
            "not a journal record",
            "Not even the plan it applied can be read",
        ],
    );

    // A record in the middle changed (still valid JSON).
    let mid = lines.len() / 2;
    let mut damaged = owned.clone();
    let changed = damaged[mid]
        .replacen("k8s/", "k9s/", 1)
        .replacen("pg/", "pq/", 1);
    assert_ne!(changed, damaged[mid]);
    damaged[mid] = changed;
    write(&damaged);
    assert_refused(
        &cluster,
        state.path(),
        mid + 1,
        &["checksum does not match"],
    );

    // A record in the middle removed.
    let mut damaged = owned.clone();
    damaged.remove(mid);
    write(&damaged);
    assert_refused(
        &cluster,
        state.path(),
        mid + 1,
        &["records were removed or reordered"],
    );

    // The recovery path: what pgplan left where, from the cluster.
    let status = ok(&pgplan_in(
        &cluster,
        state.path(),
        &[
            "status",
            "-f",
            &spec(),
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
        &[],
    ));
    for expected in [
        "lock: k8s/default/Lease/pgplan-healthcare held by",
        "(abandoned, applying, since",
        "source: Deployment default/postgres — absent",
        "Deployment default/healthcare-api — 0 replicas; stopped by pgplan, 2 before",
        "PersistentVolume postgres-pv — reclaim Retain",
        "created by pgplan (label pgplan.dev/placement=healthcare): ",
        "PersistentVolume postgres-pv-0",
        "/healthcare/healthcare.dump (",
        "resume with: cd ",
        "cannot be trusted: the journal",
    ] {
        assert!(status.contains(expected), "`{expected}` in:\n{status}");
    }

    // The intact journal resumes and finishes the move.
    std::fs::write(&path, &intact).unwrap();
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &spec(), "--auto-approve", "--resume"],
        &[],
    ));
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
}

/// Issue 23.2: once a rollback has begun nothing goes forward again. Killed
/// while rolling back (the StatefulSet failed; killed after undoing the
/// Service): a damaged rollback record is refused, saying a rollback had
/// begun; with the rollback's records cut off the end (which no checksum
/// can tell from a crash before they were written) the Lease still says a
/// rollback began, and `--resume` finishes the rollback, not the move.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_journal_damaged_at_its_rollback_never_lets_resume_go_forward() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    let steps = step_addresses(None);
    let service = steps
        .iter()
        .position(|a| a == "k8s/default/Service/postgres")
        .unwrap()
        + 1;
    let crash = format!("undone:{service}");
    let out = apply(
        &cluster,
        state.path(),
        &[
            ("PGPLAN_TEST_FAIL", "k8s/default/StatefulSet/postgres"),
            ("PGPLAN_TEST_CRASH", &crash),
        ],
    );
    assert_eq!(out.status.code(), None, "{}", text(&out.stderr));
    let path = journal_path(state.path());
    let intact = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = intact.lines().map(str::to_string).collect();
    let rollback = lines
        .iter()
        .position(|l| l.contains("\"type\":\"rollback_started\""))
        .expect("a rollback record");
    assert!(
        rollback + 1 < lines.len(),
        "a compensation after it: {intact}"
    );

    // The rollback record torn in the middle.
    let mut damaged = lines.clone();
    let half = damaged[rollback].len() / 2;
    damaged[rollback].truncate(half);
    std::fs::write(
        &path,
        damaged.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    assert_refused(
        &cluster,
        state.path(),
        rollback + 1,
        &["A rollback had begun", "never the move"],
    );

    // The rollback's records gone from the end: a valid journal that says
    // only that a step failed.
    let cut: String = lines[..rollback].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, cut).unwrap();
    let lease = json_of(&cluster, "leases", "pgplan-healthcare").expect("the lock is kept");
    assert!(lease["metadata"]["annotations"]["pgplan.dev/rollback-begun"].is_string());
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &spec(), "--auto-approve", "--resume"],
        &[],
    );
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{err}");
    assert!(stdout.contains("Resuming the rollback"), "{stdout}");
    assert!(
        err.contains("Rolled back to the original topology"),
        "{err}"
    );
    assert_original_topology(&cluster);
    assert_eq!(patients(&cluster), before);
}

/// Issue 23.4: with a umask of 000 the journal, its history and every
/// backup directory and file are still private (0700 and 0600).
#[test]
fn journals_and_backups_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cmd = command(&cluster, pgplan_bin());
    cmd.args(["apply", "-f", &spec(), "--auto-approve", "--state-dir"])
        .arg(&state)
        .current_dir(dir.path());
    // SAFETY: umask is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    ok(&cmd.output().unwrap());
    let mut dirs = vec![dir.path().join("state")];
    let mut seen_files = Vec::new();
    while let Some(d) = dirs.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
                seen_files.push(p);
            }
        }
        if d == dir.path().join("state") {
            dirs.push(dir.path().join(".pgplan"));
        }
    }
    let names: Vec<String> = seen_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("healthcare-") && n.ends_with(".jsonl")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "healthcare.dump"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "healthcare.manifest.json"),
        "{names:?}"
    );
}

/// The resume command an interrupted apply printed.
fn resume_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Resume with: "))
        .unwrap_or_else(|| panic!("no resume command in:\n{out}"))
        .to_string()
}

fn run_shell(cluster: &SimCluster, resume: &str) -> std::process::Output {
    let line = resume.replacen("pgplan apply", &format!("{} apply", pgplan_bin()), 1);
    command(cluster, "sh").args(["-c", &line]).output().unwrap()
}

/// Issue 14.5: SIGINT (Ctrl-C) or SIGTERM (a CI cancel) during the restore:
/// the apply says which step it finishes, finishes it, journals the stop,
/// says what state the world is in and the exact resume command, and ends
/// with exit code 1. A plan meanwhile reports the stopped apply (exit 1); the printed
/// command resumes it to the end with the same rows.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn an_interrupt_during_the_restore_finishes_it_and_the_printed_command_resumes() {
    let restore = step_addresses(None)
        .iter()
        .position(|a| a.ends_with("/restore"))
        .unwrap()
        + 1;
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let (state, holds, other) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let before = patients(&cluster);
        let hold = format!("step:{restore}:{}", holds.path().display());
        let run = Running::start(
            &cluster,
            state.path(),
            &["apply", "-f", &spec(), "--auto-approve"],
            &[("PGPLAN_TEST_HOLD", &hold)],
        );
        wait_file(&holds.path().join(format!("held-{restore}")), LONG);
        run.signal(signal);
        run.wait_for_output(
            &format!("Interrupt received ({name}): finishing step {restore} (pg/healthcare/healthcare/restore); no new step starts"),
            LONG,
        );
        release(holds.path(), &restore.to_string());
        let (code, out, err) = run.finish();
        assert_eq!(code, Some(1), "{name}: {out}\n{err}");
        assert!(
            out.contains(&format!("[{restore}/12]   done")),
            "the restore finished: {out}"
        );
        assert!(
            !out.contains(&format!("[{}/12]", restore + 1)),
            "nothing started after: {out}"
        );
        assert!(
            out.contains(&format!(
                "Apply interrupted ({name}). The world is part-way:"
            )),
            "{out}"
        );
        assert!(
            out.contains(
                "consumer stopped: Deployment default/healthcare-api at 0 replicas, 2 before"
            ),
            "{out}"
        );
        assert!(
            out.contains("database down: Deployment default/postgres is deleted"),
            "{out}"
        );
        assert!(
            out.contains("backup: ") && out.contains("healthcare.dump"),
            "{out}"
        );
        let resume = resume_line(&out);
        assert!(resume.contains(&format!("-f {}", spec())), "{resume}");
        assert!(
            resume.contains(&format!("--state-dir {}", state.path().display()))
                && resume.ends_with("--resume"),
            "{resume}"
        );
        assert!(err.contains("pgplan::apply::interrupted"), "{err}");
        let journal = std::fs::read_to_string(journal_path(state.path())).unwrap();
        let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        assert_eq!(last["record"]["type"], "interrupted");
        assert_eq!(last["record"]["signal"], name);

        let plan = pgplan_in(
            &cluster,
            other.path(),
            &["plan", "-f", &spec(), "--detailed-exitcode"],
            &[],
        );
        assert_eq!(plan.status.code(), Some(1), "{}", text(&plan.stdout));
        assert!(
            text(&plan.stdout).contains("Not planned: an apply of healthcare stopped unfinished"),
            "{}",
            text(&plan.stdout)
        );

        let resumed = run_shell(&cluster, &resume);
        let out = ok(&resumed);
        assert!(out.contains("Apply complete"), "{out}");
        assert_moved(&cluster);
        assert_eq!(patients(&cluster), before, "{name}");
    }
}

/// Issue 14.5: a second interrupt stops at once — the restore held in
/// flight is abandoned — and still says what state the world is in and how
/// to resume; the resume runs the abandoned restore again.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_second_interrupt_stops_at_once_and_still_says_how_to_resume() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let (state, holds) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let before = patients(&cluster);
    let restore = 9;
    assert!(step_addresses(None)[restore - 1].ends_with("/restore"));
    let hold = format!("step:{restore}:{}", holds.path().display());
    let run = Running::start(
        &cluster,
        state.path(),
        &["apply", "-f", &spec(), "--auto-approve"],
        &[("PGPLAN_TEST_HOLD", &hold)],
    );
    wait_file(&holds.path().join(format!("held-{restore}")), LONG);
    run.signal(libc::SIGINT);
    run.wait_for_output("Interrupt received (SIGINT)", LONG);
    run.signal(libc::SIGINT);
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains(&format!("Second interrupt: stopping at once; step {restore} (pg/healthcare/healthcare/restore) did not finish")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "not finished: step {restore} pg/healthcare/healthcare/restore"
        )),
        "{out}"
    );
    assert!(
        out.contains("consumer stopped: Deployment default/healthcare-api"),
        "{out}"
    );
    let resume = resume_line(&out);
    assert!(err.contains("at once (a second interrupt)"), "{err}");
    let journal = std::fs::read_to_string(journal_path(state.path())).unwrap();
    let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(last["record"]["type"], "interrupted");
    assert_eq!(
        last["record"]["running"][0],
        "pg/healthcare/healthcare/restore"
    );

    let out = ok(&run_shell(&cluster, &resume));
    assert!(
        out.contains(&format!(
            "[{restore}/12] > pg/healthcare/healthcare/restore"
        )),
        "{out}"
    );
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
}

/// Issue 14, end to end with roles: a legacy server (md5 logins, roles
/// with SCRAM and MD5 passwords, memberships) is interrupted (SIGINT)
/// during its restore; a plan from another directory then reports the
/// stopped apply (exit 1 under `--detailed-exitcode`, never "No changes");
/// the printed command resumes it, and on the new server every role logs
/// in over TCP with its old password — the passwords the first run read
/// from the source, kept beside its backup, not read again.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn an_interrupt_during_the_restore_then_resume_keeps_every_roles_login() {
    use crate::roles::statefulset::legacy_cluster;
    use crate::roles::{pod_login, BILLING_RO_PW, LEGACY_PW, OWNER_PW};
    let restore = step_addresses(None)
        .iter()
        .position(|a| a.ends_with("/restore"))
        .unwrap()
        + 1;
    let (cluster, _) = legacy_cluster();
    let (state, holds, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let before = patients(&cluster);
    let hold = format!("step:{restore}:{}", holds.path().display());
    let run = Running::start(
        &cluster,
        state.path(),
        &["apply", "-f", &spec(), "--auto-approve"],
        &[("PGPLAN_TEST_HOLD", &hold)],
    );
    wait_file(&holds.path().join(format!("held-{restore}")), LONG);
    run.signal(libc::SIGINT);
    run.wait_for_output(
        &format!("Interrupt received (SIGINT): finishing step {restore} (pg/healthcare/healthcare/restore)"),
        LONG,
    );
    release(holds.path(), &restore.to_string());
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(1), "{out}\n{err}");

    let plan = pgplan_in(
        &cluster,
        other.path(),
        &["plan", "-f", &spec(), "--detailed-exitcode"],
        &[],
    );
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan.stdout));
    assert!(
        text(&plan.stdout).contains("Not planned: an apply of healthcare stopped unfinished"),
        "{}",
        text(&plan.stdout)
    );
    assert!(!text(&plan.stdout).contains("No changes"));

    let resumed = run_shell(&cluster, &resume_line(&out));
    let resumed_out = ok(&resumed);
    assert!(resumed_out.contains("Apply complete"), "{resumed_out}");
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    let target = cluster
        .pod_postgres(hc::NAMESPACE, "postgres-0")
        .expect("postgres-0 serves");
    for (role, password) in [
        ("billing_ro", BILLING_RO_PW),
        ("legacy_app", LEGACY_PW),
        ("billing_owner", OWNER_PW),
        (hc::USER, hc::PASSWORD),
    ] {
        pod_login(&target, role, password, hc::DATABASE)
            .unwrap_or_else(|e| panic!("{role} cannot log in after the resume: {e}"));
    }
    // The check can fail: the server does ask for passwords.
    assert!(pod_login(&target, "legacy_app", "not-its-password", hc::DATABASE).is_err());
}
