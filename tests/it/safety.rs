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
    apply, assert_moved, assert_original_topology, json_of, ok, patients, pgplan_in,
    restart_spec, spec, step_addresses, text,
};
use crate::cli::pgplan_bin;
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

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
        let mut cmd = Command::new(pgplan_bin());
        cmd.args(args)
            .arg("--state-dir")
            .arg(state)
            .current_dir(state)
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("NO_COLOR", "1")
            .env_remove("PGPLAN_TEST_FAIL")
            .env_remove("PGPLAN_TEST_CRASH")
            .env_remove("PGPLAN_TEST_HOLD")
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
fn an_apply_that_waited_for_the_lock_runs_nothing_when_the_world_moved() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let (a, b, holds) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let before = patients(&cluster);
    let apply_args = ["apply", "-f", &spec(), "--auto-approve", "--lock-timeout", "240s"];
    // B plans, then is held before it takes the lock.
    let hold_b = format!("lock:{}", holds.path().display());
    let second = Running::start(&cluster, b.path(), &apply_args, &[("PGPLAN_TEST_HOLD", &hold_b)]);
    wait_file(&holds.path().join("held-lock"), LONG);
    // A takes the lock and is held at its first step.
    let hold_a = format!("step:1:{}", holds.path().display());
    let first = Running::start(&cluster, a.path(), &apply_args, &[("PGPLAN_TEST_HOLD", &hold_a)]);
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
    assert!(!out.contains("No changes") && !err.contains("No changes"), "{out}{err}");
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
    assert!(out.contains("Not planned: an apply of healthcare is in progress (lock held by"), "{out}");
    assert!(
        out.contains("stopped: k8s/default/Deployment/healthcare-api at 0 replicas (2 before pgplan stopped it)"),
        "{out}"
    );
    assert!(!out.contains("No changes"), "{out}");
    assert!(err.contains("pgplan::plan::unfinished"), "{err}");

    let second = Running::start(
        &cluster,
        b.path(),
        &["apply", "-f", &spec(), "--auto-approve", "--lock-timeout", "240s"],
        &[],
    );
    second.wait_for_output("Waiting for the lock of healthcare, held by", LONG);
    release(holds.path(), "4");
    let (code, out, err) = first.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (code, out, err) = second.finish();
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("the live state changed while waiting for the lock"), "{err}");
    assert!(
        err.contains("an apply of healthcare is in progress") && err.contains("no longer"),
        "{err}"
    );
    assert!(!out.contains("No changes") && !err.contains("No changes"), "{out}{err}");
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
    let out = crate::apply::apply_spec(&cluster, a.path(), &spec_file, &[("PGPLAN_TEST_CRASH", &crash)]);
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
            out.contains("tuned for loading: k8s/default/Pod/postgres-0 still runs with") && out.contains("fsync=off"),
            "{out}"
        );
        assert!(out.contains("--resume"), "{out}");
        assert!(!out.contains("No changes"), "{out}");
    }
    let json = pgplan_in(&cluster, b.path(), &["plan", "-f", &spec_file, "--format", "json"], &[]);
    assert_eq!(json.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&json.stdout).expect("a JSON plan");
    let u = &v["unfinished_applies"][0];
    assert_eq!(u["placement"], "healthcare");
    assert_eq!(u["lock"]["state"], "abandoned");
    assert_eq!(u["lock"]["phase"], "applying");
    assert!(u["lock"]["holder"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(u["stopped_consumers"][0]["quiesced_from"], 2);
    assert!(!v["summary"]["line"].as_str().unwrap().contains("No changes"));

    // The snapshot carries it: an offline plan reports it too.
    let snap = b.path().join("live.yaml");
    ok(&pgplan_in(&cluster, b.path(), &["observe", "-f", &spec_file, "-o", snap.to_str().unwrap()], &[]));
    let offline = pgplan_in(
        &cluster,
        b.path(),
        &["plan", "-f", &spec_file, "--live-state", snap.to_str().unwrap(), "--detailed-exitcode"],
        &[],
    );
    assert_eq!(offline.status.code(), Some(1), "{}", text(&offline.stdout));
    assert!(text(&offline.stdout).contains("was interrupted"), "{}", text(&offline.stdout));

    // Another directory's apply stops at it, having changed nothing.
    let seen = world(&cluster);
    let other = crate::apply::apply_spec(&cluster, b.path(), &spec_file, &[]);
    let (out, err) = (text(&other.stdout), text(&other.stderr));
    assert_eq!(other.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("was interrupted") && err.contains("--resume"), "{err}");
    assert!(!out.contains("No changes") && !err.contains("No changes"), "{out}{err}");
    assert_eq!(world(&cluster), seen);
    assert!(!b.path().join("journal").exists());

    ok(&pgplan_in(&cluster, a.path(), &["apply", "-f", &spec_file, "--auto-approve", "--resume"], &[]));
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    let again = pgplan_in(&cluster, b.path(), &["plan", "-f", &spec_file, "--detailed-exitcode"], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
}
