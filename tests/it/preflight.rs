//! Preflight findings (issue 22) on the simulated cluster: a client that is
//! not a listed consumer, connected to the healthcare source from its own
//! pod (the pod's own address: the simulated pod network), is named in the
//! plan with its pod and workload and blocks apply; accepting it in the spec
//! lets the plan through (still listed); listing it as a consumer, or
//! stopping it, makes the finding go.

use std::time::Duration;

use serde_json::{json, Value};

use crate::apply::{pgplan_in, spec, text};
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

const CODE: &str = "pgplan::preflight::unlisted-client";

/// A Deployment `reporting` whose pod holds a session on the healthcare
/// database over the Service, as an application would.
fn reporting(cluster: &SimCluster) {
    cluster
        .create_json(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reporting", "namespace": hc::NAMESPACE},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "reporting"}},
                "template": {"metadata": {"labels": {"app": "reporting"}}, "spec": {
                    "containers": [{"name": "report", "image": "postgres:15",
                        // An idle session, as a connection pool holds one (a busy one
                        // would outlive its client until the query ends, as on a real server).
                        "command": ["sh", "-c",
                            format!("sleep 600 | psql -h {} -d {}", hc::SERVICE, hc::DATABASE)],
                        "env": [
                            {"name": "PGUSER", "value": hc::USER},
                            {"name": "PGAPPNAME", "value": "nightly-report"},
                            {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                                "name": hc::SECRET, "key": "POSTGRES_PASSWORD"}}}]}]}}}}))
        .expect("the reporting Deployment");
}

fn network_sessions(cluster: &SimCluster, pod: &str) -> usize {
    cluster
        .psql(
            hc::NAMESPACE,
            pod,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr IS NOT NULL AND datname = 'healthcare'",
        )
        .trim()
        .parse()
        .unwrap_or(0)
}

fn spec_with(dir: &std::path::Path, extra: &str) -> String {
    let text = std::fs::read_to_string(spec()).expect("the example");
    let changed = text.replace("  verify:\n", &format!("{extra}  verify:\n"));
    assert!(extra.is_empty() || changed != text);
    let path = dir.join(format!("pgplan-{}.yaml", extra.len()));
    std::fs::write(&path, changed).expect("write the spec");
    path.display().to_string()
}

#[test]
fn an_unlisted_client_is_named_with_its_pod_blocks_apply_and_goes_when_listed_or_stopped() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let db = crate::apply::db_pod(&cluster);
    let state = tempfile::tempdir().expect("state");
    let plain = spec_with(state.path(), "");
    // Without the client: no finding.
    let quiet = pgplan_in(&cluster, state.path(), &["plan", "-f", &plain], &[]);
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet.stderr));
    assert!(!text(&quiet.stdout).contains("Preflight"));

    reporting(&cluster);
    cluster.wait_until(Duration::from_secs(60), "the client is connected", |c| {
        network_sessions(c, &db) == 1
    });
    let client = cluster.pod_names(hc::NAMESPACE, "app=reporting").remove(0);

    let out = pgplan_in(&cluster, state.path(), &["plan", "-f", &plain], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "error {CODE} (healthcare) Deployment/reporting: pod {}/{client} (Deployment reporting) is connected to `healthcare` as `{}` (nightly-report) and is not a listed consumer",
            hc::NAMESPACE,
            hc::USER
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("help: list its workload under `consumers`"),
        "{stdout}"
    );
    assert!(stderr.contains("pgplan::preflight::blocked"), "{stderr}");
    assert!(stderr.contains("preflight: 1 error"), "{stderr}");

    let json = pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &plain, "--format", "json"],
        &[],
    );
    let doc: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(doc["findings"][0]["code"], CODE);
    assert_eq!(doc["findings"][0]["severity"], "error");
    assert_eq!(doc["findings"][0]["object"], "Deployment/reporting");
    assert_eq!(doc["findings"][0]["blocks_apply"], true);
    let md = pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &plain, "--format", "markdown"],
        &[],
    );
    let md = text(&md.stdout);
    assert!(md.contains("> Preflight: 1 finding blocks apply."), "{md}");
    assert!(
        md.contains(&format!("| error | `{CODE}` | Deployment/reporting |")),
        "{md}"
    );

    // Apply refuses before it changes anything.
    let before = cluster.requests().mutations().len();
    let refused = pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &plain, "--auto-approve"],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("pgplan::preflight::blocked"));
    let real: Vec<_> = cluster.requests().mutations()[before..]
        .iter()
        // Reading the source's inventory execs psql (`create pods/exec`): not a change.
        .filter(|r| !r.dry_run && r.resource != "pods/exec")
        .cloned()
        .collect();
    assert!(real.is_empty(), "apply changed something: {real:?}");
    assert!(crate::apply::json_of(&cluster, "deployments", "postgres").is_some());

    // Accepted: listed, not blocking.
    let accepted = spec_with(
        state.path(),
        "  preflight:\n    accept:\n      - code: unlisted-client\n        object: Deployment/reporting\n",
    );
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &accepted, "--detailed-exitcode"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "accepted error {CODE} (healthcare) Deployment/reporting"
        )),
        "{}",
        text(&out.stdout)
    );
    // Accepting another object does not.
    let other = spec_with(
        state.path(),
        "  preflight:\n    accept:\n      - code: unlisted-client\n        object: Deployment/something-else\n",
    );
    let out = pgplan_in(&cluster, state.path(), &["plan", "-f", &other], &[]);
    assert_eq!(out.status.code(), Some(1));

    // Listed as a consumer (pgplan stops it around the move): no finding.
    let listed = std::fs::read_to_string(&plain).expect("spec").replace(
        "    - kind: Deployment\n      name: healthcare-api\n",
        "    - kind: Deployment\n      name: healthcare-api\n    - kind: Deployment\n      name: reporting\n",
    );
    assert!(listed.contains("name: reporting"));
    let listed_path = state.path().join("listed.yaml");
    std::fs::write(&listed_path, listed).expect("write");
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", listed_path.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("Preflight"));

    // Stopped: gone.
    assert!(cluster.delete_json("deployments", hc::NAMESPACE, "reporting"));
    cluster.wait_until(Duration::from_secs(60), "the client is gone", |c| {
        network_sessions(c, &db) == 0
    });
    let out = pgplan_in(&cluster, state.path(), &["plan", "-f", &plain], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("Preflight"));
}

/// `plan` of an example against its live snapshot, with `from` replaced by `to` in the spec.
fn plan_variant(example: &str, from: &str, to: &str) -> (Option<i32>, String, String) {
    plan_variants(example, &[(from, to)])
}

fn plan_variants(example: &str, changes: &[(&str, &str)]) -> (Option<i32>, String, String) {
    plan_edited(example, changes, &[])
}

/// The example planned with `changes` to its spec and `live_changes` to its
/// snapshot.
fn plan_edited(
    example: &str,
    changes: &[(&str, &str)],
    live_changes: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let root = crate::run::repo().join("examples").join(example);
    let original = std::fs::read_to_string(root.join("pgplan.yaml")).expect("spec");
    let mut changed = original.clone();
    for (from, to) in changes {
        let next = changed.replace(from, to);
        assert!(
            from == to || next != changed,
            "{from} not in the {example} spec"
        );
        changed = next;
    }
    // The files the spec names (a CA bundle) are beside it.
    for e in std::fs::read_dir(&root).expect("the example").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
        }
    }
    let spec = dir.path().join("pgplan.yaml");
    std::fs::write(&spec, changed).expect("write");
    let mut live_text = std::fs::read_to_string(root.join("live.yaml")).expect("snapshot");
    for (from, to) in live_changes {
        let next = live_text.replace(from, to);
        assert!(next != live_text, "{from} not in the {example} snapshot");
        live_text = next;
    }
    let live = dir.path().join("live.yaml");
    std::fs::write(&live, live_text).expect("write");
    let out = crate::run::run(
        &[
            "plan",
            "-f",
            spec.to_str().unwrap(),
            "--live-state",
            live.to_str().unwrap(),
        ],
        &[],
    );
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_target_older_than_the_source_is_refused_and_a_newer_one_is_said() {
    // RDS: the source runs 15.18.
    let (code, stdout, stderr) = plan_variant(
        "backstage-to-rds",
        "engineVersion: \"15.4\"",
        "engineVersion: \"14.10\"",
    );
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("error pgplan::preflight::target-older-major (backstage) DBInstance/backstage-prod: the target (engineVersion \"14.10\") is PostgreSQL 14, older than the source's 15 (15.18)"),
        "{stdout}"
    );
    assert!(stderr.contains("pgplan::preflight::blocked"), "{stderr}");
    let (code, stdout, _) = plan_variant(
        "backstage-to-rds",
        "engineVersion: \"15.4\"",
        "engineVersion: \"16.4\"",
    );
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("warning pgplan::preflight::target-newer-major (backstage) DBInstance/backstage-prod: the target (engineVersion \"16.4\") is PostgreSQL 16, the source 15 (15.18): the move is also a major upgrade"),
        "{stdout}"
    );
    let (code, stdout, _) = plan_variant("backstage-to-rds", "x", "x");
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("Preflight"), "{stdout}");

    // A StatefulSet target's image.
    let image = "        replicas: 1\n";
    let (code, stdout, _) = plan_variant(
        "healthcare",
        image,
        "        replicas: 1\n        image: postgres:14-alpine\n",
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("error pgplan::preflight::target-older-major (healthcare) StatefulSet/postgres: the target (image postgres:14-alpine) is PostgreSQL 14"),
        "{stdout}"
    );
    let (code, stdout, _) = plan_variant(
        "healthcare",
        image,
        "        replicas: 1\n        image: postgres:15.6\n",
    );
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("Preflight"), "{stdout}");
    // Accepted by code and object: listed, not blocking.
    let (code, stdout, _) = plan_variants(
        "healthcare",
        &[
            (image, "        replicas: 1\n        image: postgres:14-alpine\n"),
            (
                "  verify:\n",
                "  preflight:\n    accept:\n      - code: pgplan::preflight::target-older-major\n        object: StatefulSet/postgres\n  verify:\n",
            ),
        ],
    );
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("accepted error pgplan::preflight::target-older-major (healthcare) StatefulSet/postgres"),
        "{stdout}"
    );
}

/// The target's storage against the data: an RDS instance smaller than the
/// data is refused, one without room for the restore's WAL and indexes is
/// said, one with room says nothing; a StatefulSet volume the same.
#[test]
fn a_target_without_room_for_the_data_is_refused_or_said() {
    let code = "pgplan::preflight::target-capacity";
    // Backstage: six databases, one made 30 GiB, onto 20 GiB.
    let sized = |bytes: u64| {
        (
            "  - name: backstage_plugin_app\n    owner: postgres\n    encoding: UTF8\n    sizeBytes: 7789927\n",
            format!("  - name: backstage_plugin_app\n    owner: postgres\n    encoding: UTF8\n    sizeBytes: {bytes}\n"),
        )
    };
    let (from, to) = sized(30 << 30);
    let big = (from, to.as_str());
    let small = ("allocatedStorage: 100", "allocatedStorage: 20");
    let (status, stdout, stderr) = plan_edited("backstage-to-rds", &[small], &[big]);
    assert_eq!(status, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("error {code} (backstage) DBInstance/backstage-prod: the target (allocatedStorage 20 GiB) is smaller than the 30 GiB of data it must take")),
        "{stdout}"
    );
    assert!(
        stdout.contains("give the target at least 37 GiB"),
        "{stdout}"
    );
    // 20 GiB holds 17 GiB, but not its WAL and index builds too.
    let (from, to) = sized(17 << 30);
    let (status, stdout, _) = plan_edited("backstage-to-rds", &[small], &[(from, to.as_str())]);
    assert_eq!(status, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("warning {code} (backstage) DBInstance/backstage-prod: the target (allocatedStorage 20 GiB) leaves")),
        "{stdout}"
    );
    // 100 GiB: nothing to say.
    let (status, stdout, _) = plan_edited("backstage-to-rds", &[], &[big]);
    assert_eq!(status, Some(0), "{stdout}");
    assert!(!stdout.contains(code), "{stdout}");
    // Healthcare: 4.5 GiB onto the 5Gi volume is tight; 1 GiB is not.
    let (status, stdout, _) = plan_edited(
        "healthcare",
        &[],
        &[("sizeBytes: 7724391", "sizeBytes: 4831838208")],
    );
    assert_eq!(status, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("warning {code} (healthcare) StatefulSet/postgres: the target (storage.size 5Gi) leaves 512 MiB beside the 4.5 GiB of data")),
        "{stdout}"
    );
    let (_, stdout, _) = plan_edited(
        "healthcare",
        &[],
        &[("sizeBytes: 7724391", "sizeBytes: 1073741824")],
    );
    assert!(!stdout.contains(code), "{stdout}");
}

/// A role RDS cannot give SUPERUSER (or REPLICATION, BYPASSRLS) is said,
/// by role; the master user, which is the instance's own, is not.
#[test]
fn roles_rds_cannot_take_as_they_are_are_said() {
    let code = "pgplan::preflight::role-attributes-dropped";
    let ops = (
        "  roles:\n  - name: postgres\n",
        "  roles:\n  - name: ops\n    superuser: true\n    login: true\n    replication: true\n    password: scram-sha-256\n  - name: postgres\n",
    );
    let (status, stdout, _) = plan_edited("backstage-to-rds", &[], &[ops]);
    assert_eq!(status, Some(0), "a warning: {stdout}");
    assert!(
        stdout.contains(&format!("warning {code} (backstage) Role/ops: role ops is SUPERUSER, REPLICATION on the source; RDS lets no one grant that")),
        "{stdout}"
    );
    assert!(stdout.contains("GRANT rds_superuser TO ops"), "{stdout}");
    assert_eq!(
        stdout.matches(code).count(),
        1,
        "postgres, the master user, is not said: {stdout}"
    );
    // Without such a role: nothing.
    let (_, stdout, _) = plan_edited("backstage-to-rds", &[], &[]);
    assert!(!stdout.contains(code), "{stdout}");
    // Accepted: still listed.
    let (_, stdout, _) = plan_edited(
        "backstage-to-rds",
        &[(
            "  cleanup:\n",
            "  preflight:\n    accept:\n      - code: role-attributes-dropped\n        object: Role/ops\n  cleanup:\n",
        )],
        &[ops],
    );
    assert!(
        stdout.contains(&format!("accepted warning {code} (backstage) Role/ops")),
        "{stdout}"
    );
}

/// Transactions on the source: a prepared one blocks, one open for half an
/// hour is said with who holds it, a young one is not; read from a
/// snapshot the inventory wrote.
#[test]
fn prepared_and_long_transactions_on_the_source_are_found() {
    let at = "  version: '15.18'\n";
    let with = |transactions: &str| format!("  version: '15.18'\n  transactions:\n{transactions}");
    let long = "  - database: healthcare\n    user: healthcare_user\n    application: nightly-report\n    address: 127.2.0.9\n    ageSeconds: 1800\n";
    let young = "  - database: healthcare\n    user: healthcare_user\n    ageSeconds: 5\n";
    let prepared = "  - database: healthcare\n    user: healthcare_user\n    ageSeconds: 7200\n    prepared: tx-42\n";
    let all = with(&format!("{long}{young}{prepared}"));
    let (status, stdout, _) = plan_edited("healthcare", &[], &[(at, &all)]);
    assert_eq!(status, Some(1), "the prepared transaction blocks: {stdout}");
    assert!(
        stdout.contains("error pgplan::preflight::prepared-transaction (healthcare) PreparedTransaction/tx-42: prepared transaction `tx-42` on `healthcare` (owner healthcare_user) has waited 120 min for its COMMIT PREPARED"),
        "{stdout}"
    );
    assert!(stdout.contains("ROLLBACK PREPARED 'tx-42'"), "{stdout}");
    assert!(
        stdout.contains("warning pgplan::preflight::long-transaction (healthcare) Database/healthcare: a transaction of healthcare_user (nightly-report) from 127.2.0.9 on `healthcare` has been open for 30 min"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("long-transaction").count(),
        1,
        "once per database: {stdout}"
    );
    // A young transaction alone is nothing to say.
    let (status, stdout, _) = plan_edited("healthcare", &[], &[(at, &with(young))]);
    assert_eq!(status, Some(0), "{stdout}");
    assert!(!stdout.contains("transaction"), "{stdout}");
}

/// The inventory reads an open transaction with its age and who holds it
/// (what the findings above are made from), on the simulated cluster.
#[test]
fn observe_reads_a_transaction_held_open_on_the_source() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let pod = crate::apply::db_pod(&cluster);
    // A session that opens a transaction and keeps it, from the pod itself.
    let ep = cluster
        .pod_postgres(hc::NAMESPACE, &pod)
        .expect("the server");
    let mut holder = std::process::Command::new(crate::support::pg::bin("psql"))
        .args(["-X", "-q", "-h"])
        .arg(&ep.socket_dir)
        .args([
            "-p",
            &ep.port.to_string(),
            "-U",
            &ep.superuser,
            "-d",
            hc::DATABASE,
        ])
        .env("PGAPPNAME", "holder")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    use std::io::Write;
    holder
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"BEGIN; SELECT count(*) FROM patients;\n")
        .expect("write");
    std::thread::sleep(Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("live.yaml");
    let observed = pgplan_in(
        &cluster,
        dir.path(),
        &[
            "observe",
            "-f",
            &spec(),
            "--out",
            out.to_str().expect("utf-8"),
        ],
        &[],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(observed.status.success(), "{}", text(&observed.stderr));
    let live: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&out).expect("the snapshot"))
            .expect("yaml");
    let open = &live["servers"][0]["transactions"];
    let held = open
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["application"] == "holder"))
        .unwrap_or_else(|| panic!("the held transaction in {open}"));
    assert_eq!(held["database"], hc::DATABASE);
    assert!(held["ageSeconds"].as_u64().unwrap_or(0) >= 2, "{held}");
    assert!(held.get("prepared").is_none(), "{held}");
}
