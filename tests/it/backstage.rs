//! Seed 004 end to end (issue 6): Backstage's six plugin databases move
//! from the operator's in-cluster Postgres to an RDS instance (moto for the
//! API, a local PostgreSQL behind the instance through `connect:`), the
//! knex locks are released, the Backstage CR is pointed at RDS with its
//! connection and CA Secrets, and the local database is removed only after
//! everything is verified.

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use serde_json::Value;

use crate::apply::{ok, text};
use crate::cli::repo;
use crate::support::sim::scenario::backstage as bs;
use crate::support::{LocalPostgres, Moto, MotoAccount, PgOptions, Scenario, SimCluster};

pub const MASTER_PASSWORD: &str = "rds-master-canary-5d2e81";

/// The endpoint moto gives the example's instance.
const ENDPOINT: &str = "backstage-prod.aaaaaaaaaa.us-east-1.rds.amazonaws.com";

/// The world of one test: the cluster, an AWS account, the server behind RDS.
pub struct World {
    pub cluster: SimCluster,
    pub aws: MotoAccount,
    pub rds_pg: LocalPostgres,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World::with_cluster(SimCluster::with_scenario(Scenario::Backstage))
    }

    /// A world whose kubelet speaks only `v4.channel.k8s.io` (before Kubernetes 1.30).
    pub fn v4() -> World {
        World::with_cluster(SimCluster::with_scenario_v4(Scenario::Backstage))
    }

    /// A world whose server behind RDS stands at the instance's endpoint as
    /// pods see it: moto's endpoint name resolves inside pods only, to an
    /// address outside every pod network where the server listens on 5432.
    /// This machine resolves nothing of it, so pgplan reaches the instance
    /// from a pod or not at all.
    pub fn endpoint_in_pods_only() -> World {
        let cluster = SimCluster::with_scenario(Scenario::Backstage);
        let addr = cluster.outside_address();
        cluster.add_pod_host(ENDPOINT, addr);
        World::serving(cluster, Some((addr, 5432)))
    }

    fn with_cluster(cluster: SimCluster) -> World {
        World::serving(cluster, None)
    }

    fn serving(cluster: SimCluster, listen: Option<(std::net::Ipv4Addr, u16)>) -> World {
        let rds_pg = LocalPostgres::start_with(PgOptions {
            superuser: "postgres".into(),
            password: MASTER_PASSWORD.into(),
            databases: Vec::new(),
            // RDS's pg_hba.conf: md5, which takes SCRAM and MD5 verifiers.
            host_auth: "md5".into(),
            listen,
        })
        .expect("the server standing behind RDS");
        World {
            cluster,
            aws: Moto::shared().account(),
            rds_pg,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The example spec pointed at the local server, with TLS as it can do.
    pub fn spec(&self, edit: impl Fn(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(repo().join("examples/backstage-to-rds/pgplan.yaml"))
            .unwrap()
            .replace(
                "      tls:\n        mode: verify-full\n        caFile: rds-ca.pem\n",
                &format!(
                    "      tls:\n        mode: prefer\n        caFile: rds-ca.pem\n      connect:\n        host: 127.0.0.1\n        port: {}\n",
                    self.rds_pg.port()
                ),
            );
        let path = self.dir.path().join("pgplan.yaml");
        std::fs::write(&path, edit(text)).unwrap();
        std::fs::copy(
            repo().join("examples/backstage-to-rds/rds-ca.pem"),
            self.dir.path().join("rds-ca.pem"),
        )
        .unwrap();
        path
    }

    pub fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = crate::run::pgplan_command();
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("KUBECONFIG", self.cluster.kubeconfig_path())
            .env("RDS_MASTER_PASSWORD", MASTER_PASSWORD);
        for (k, v) in self.aws.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().expect("run pgplan")
    }

    pub fn apply(&self, spec: &Path, extra: &[(&str, &str)]) -> Output {
        self.run(
            &[
                "apply",
                "-f",
                spec.to_str().unwrap(),
                "--auto-approve",
                "--state-dir",
                ".pgplan",
            ],
            extra,
        )
    }

    fn source(&self, db: &str, sql: &str) -> String {
        self.cluster
            .psql(bs::NAMESPACE, bs::POD, db, sql)
            .trim()
            .to_string()
    }

    fn target(&self, db: &str, sql: &str) -> String {
        self.rds_pg.psql(db, sql).trim().to_string()
    }

    fn cr(&self) -> Value {
        self.cluster
            .get_json("backstages", bs::NAMESPACE, bs::CR)
            .expect("the Backstage CR")
    }

    fn secret(&self, name: &str) -> Option<Value> {
        self.cluster.get_json("secrets", bs::NAMESPACE, name)
    }

    fn instance(&self) -> Option<aws_sdk_rds::types::DbInstance> {
        let client = self.aws.rds_client();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            client
                .describe_db_instances()
                .db_instance_identifier("backstage-prod")
                .send()
                .await
                .ok()
                .and_then(|r| r.db_instances.and_then(|mut v| v.pop()))
        })
    }
}

/// Per-table row count and checksum of every plugin database, read with
/// SQL; the knex lock tables are left out (pgplan changes them on purpose).
fn fingerprint(read: impl Fn(&str, &str) -> String) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for db in bs::DATABASES {
        let tables = read(
            db,
            "select string_agg(format('%I.%I', schemaname, tablename), ' ' order by schemaname, tablename) \
             from pg_tables where schemaname = 'public' and tablename not like '%knex_migrations_lock'",
        );
        for t in tables.split_whitespace() {
            let sum = read(db, &format!("select count(*) || ':' || coalesce(md5(string_agg(x::text, '|' order by x::text)), '') from {t} x"));
            out.push((db.to_string(), t.to_string(), sum));
        }
    }
    out
}

fn locked(read: impl Fn(&str, &str) -> String) -> (String, String) {
    (
        read(
            bs::LOCKED_DB,
            "select coalesce(sum(is_locked), 0) from knex_migrations_lock",
        ),
        read(
            bs::TASKS_LOCK_DB,
            &format!(
                "select coalesce(sum(is_locked), 0) from {}",
                bs::TASKS_LOCK_TABLE
            ),
        ),
    )
}

fn decode(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

#[test]
fn the_plugin_databases_move_to_rds_and_backstage_follows() {
    move_to_rds(World::new());
}

/// The same through a kubelet that speaks only v4: the dumps of the six
/// databases, their listings and the measuring sessions end with their
/// exit status.
#[test]
fn the_plugin_databases_move_to_rds_over_exec_v4() {
    move_to_rds(World::v4());
}

fn move_to_rds(w: World) {
    let spec = w.spec(|s| s);
    let before = fingerprint(|db, sql| w.source(db, sql));
    assert_eq!(
        locked(|db, sql| w.source(db, sql)),
        ("1".into(), "1".into()),
        "the seed's stuck locks"
    );

    let out = w.apply(&spec, &[]);
    let stdout = ok(&out);

    // Data: every table, every row, the same.
    assert_eq!(fingerprint(|db, sql| w.target(db, sql)), before);
    assert_eq!(before.len(), 14, "{before:?}");
    // The locks are released on RDS (and the report says which).
    assert_eq!(
        locked(|db, sql| w.target(db, sql)),
        ("0".into(), "0".into())
    );
    assert!(stdout.contains(bs::TASKS_LOCK_TABLE), "{stdout}");

    // The instance: encrypted, deletion-protected, tagged.
    let i = w.instance().expect("the RDS instance exists");
    assert_eq!(i.storage_encrypted, Some(true));
    assert_eq!(i.deletion_protection, Some(true));
    assert!(i
        .tag_list()
        .iter()
        .any(|t| t.key() == Some("managed-by") && t.value() == Some("pgplan")));

    // Backstage points at RDS with both Secrets.
    let cr = w.cr();
    assert_eq!(cr["spec"]["database"]["enableLocalDb"], false);
    assert_eq!(
        cr["spec"]["application"]["extraEnvs"]["secrets"][0]["name"],
        "backstage-rds-credentials"
    );
    assert_eq!(
        cr["spec"]["application"]["extraFiles"]["secrets"][0]["name"],
        "backstage-rds-ca"
    );
    assert_eq!(
        cr["spec"]["application"]["replicas"], 1,
        "Backstage is running again"
    );
    let conn = w
        .secret("backstage-rds-credentials")
        .expect("the connection Secret");
    let endpoint = i
        .endpoint()
        .and_then(|e| e.address())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        decode(&conn, "POSTGRES_HOST"),
        endpoint,
        "consumers get the real endpoint, not the tunnel"
    );
    assert_eq!(decode(&conn, "POSTGRES_PORT"), "5432");
    assert_eq!(decode(&conn, "POSTGRES_USER"), "postgres");
    assert_eq!(decode(&conn, "POSTGRES_PASSWORD"), MASTER_PASSWORD);
    let ca = w.secret("backstage-rds-ca").expect("the CA Secret");
    assert!(decode(&ca, "postgres-crt.pem").starts_with("-----BEGIN CERTIFICATE-----"));

    // The local database is gone, its retained claim too.
    assert!(w
        .cluster
        .get_json("statefulsets", bs::NAMESPACE, bs::STATEFUL_SET)
        .is_none());
    assert!(w
        .cluster
        .get_json("persistentvolumeclaims", bs::NAMESPACE, bs::PVC)
        .is_none());

    // The secret appears in no output: not the apply's, not a plan's, not the journal.
    assert!(!stdout.contains(MASTER_PASSWORD) && !text(&out.stderr).contains(MASTER_PASSWORD));
    for entry in walk(&w.dir.path().join(".pgplan")) {
        let content = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&content).contains(MASTER_PASSWORD),
            "the password is in {}",
            entry.display()
        );
    }

    // A rerun after success plans no changes.
    let again = w.run(
        &["plan", "-f", spec.to_str().unwrap(), "--detailed-exitcode"],
        &[],
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    assert!(
        text(&again.stdout).contains("No changes"),
        "{}",
        text(&again.stdout)
    );
    assert!(!text(&again.stdout).contains(MASTER_PASSWORD));
}

/// `backup.dataPath: cluster` towards RDS: the instance is reachable only
/// from pods (its endpoint resolves nowhere else, and the spec has no
/// `connect:`), so every dump, restore, verify and the next plan's inventory
/// of the instance run in pods; the data arrives whole and nothing of it is
/// on the runner.
#[test]
fn the_plugin_databases_move_to_rds_from_inside_the_cluster() {
    let w = World::endpoint_in_pods_only();
    use std::net::ToSocketAddrs;
    assert!(
        (ENDPOINT, 5432).to_socket_addrs().is_err(),
        "the endpoint resolves outside the pods"
    );
    let example = std::fs::read_to_string(repo().join("examples/backstage-to-rds/pgplan.yaml"))
        .expect("the example");
    // The server behind the fake endpoint has no TLS: prefer, the CA still
    // handed to the tools.
    let spec_text = example.replace("        mode: verify-full\n", "        mode: prefer\n")
        + "  backup:\n    dataPath: cluster\n";
    assert!(!spec_text.contains("connect:") && spec_text.contains("mode: prefer"));
    let spec = w.dir.path().join("pgplan.yaml");
    std::fs::write(&spec, spec_text).expect("write the spec");
    std::fs::copy(
        repo().join("examples/backstage-to-rds/rds-ca.pem"),
        w.dir.path().join("rds-ca.pem"),
    )
    .expect("the CA bundle");
    let before = fingerprint(|db, sql| w.source(db, sql));

    w.cluster.requests().clear();
    let out = w.apply(&spec, &[]);
    let stdout = ok(&out);
    let streamed = w.cluster.requests().stream_bytes();
    let endpoint = w
        .instance()
        .and_then(|i| i.endpoint().and_then(|e| e.address()).map(str::to_string));
    assert_eq!(endpoint.as_deref(), Some(ENDPOINT), "moto's endpoint name");

    assert_eq!(fingerprint(|db, sql| w.target(db, sql)), before);
    assert_eq!(before.len(), 14, "{before:?}");
    assert_eq!(
        locked(|db, sql| w.target(db, sql)),
        ("0".into(), "0".into())
    );
    assert!(
        stdout.contains("claim backstage/backstage-backup:"),
        "the backups are on the claim: {stdout}"
    );
    let on_runner: Vec<PathBuf> = walk(w.dir.path())
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains(".dump") || s.contains(".manifest.json") || s.contains(".roles.json")
        })
        .collect();
    assert!(
        on_runner.is_empty(),
        "nothing of the data on the runner: {on_runner:?}"
    );
    eprintln!("api bytes: {streamed}");
    assert!(
        streamed < 1_000_000,
        "{streamed} bytes crossed the API server"
    );
    let tools = |w: &World| {
        w.cluster
            .pod_names(bs::NAMESPACE, "app.kubernetes.io/component=tools")
    };
    assert!(
        tools(&w).is_empty(),
        "tools and client pods are gone: {:?}",
        tools(&w)
    );
    assert!(!stdout.contains(MASTER_PASSWORD) && !text(&out.stderr).contains(MASTER_PASSWORD));

    // The next plan takes the instance's inventory from a pod, and finds
    // nothing to do.
    let again = w.run(
        &["plan", "-f", spec.to_str().unwrap(), "--detailed-exitcode"],
        &[],
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    assert!(
        text(&again.stdout).contains("No changes"),
        "{}",
        text(&again.stdout)
    );
    assert!(
        tools(&w).is_empty(),
        "the plan's client pod is gone: {:?}",
        tools(&w)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_none_or(|x| x != "dump") {
                out.push(p);
            }
        }
    }
    out
}

fn steps(w: &World, spec: &Path) -> Vec<String> {
    let out = w.run(
        &["plan", "-f", spec.to_str().unwrap(), "--format", "json"],
        &[],
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect()
}

/// An injected failure at each step rolls back: Backstage on its local
/// database with its data, what pgplan created on RDS dropped, the
/// deletion-protected instance kept; a second apply then succeeds.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_failure_at_each_step_rolls_back() {
    let addresses = {
        let w = World::new();
        steps(&w, &w.spec(|s| s))
    };
    assert_eq!(addresses.len(), 30, "{addresses:?}");
    for address in &addresses {
        let w = World::new();
        let spec = w.spec(|s| s);
        let before = fingerprint(|db, sql| w.source(db, sql));
        let out = w.apply(&spec, &[("PGPLAN_TEST_FAIL", address)]);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{address}: {}",
            text(&out.stdout)
        );
        let post_commit = address.ends_with(":resume")
            || address.starts_with("k8s/backstage/StatefulSet")
            || address.starts_with("k8s/backstage/Service")
            || address.starts_with("k8s/backstage/PersistentVolumeClaim");
        if post_commit {
            assert!(err.contains("nothing was rolled back"), "{address}: {err}");
            ok(&w.run(
                &[
                    "apply",
                    "-f",
                    spec.to_str().unwrap(),
                    "--auto-approve",
                    "--state-dir",
                    ".pgplan",
                    "--resume",
                ],
                &[],
            ));
            assert_eq!(fingerprint(|db, sql| w.target(db, sql)), before);
            continue;
        }
        assert!(
            err.contains("Rolled back to the original topology"),
            "{address}: {err}"
        );
        // Backstage is on its local database again, with the data.
        let cr = w.cr();
        assert_ne!(cr["spec"]["database"]["enableLocalDb"], false, "{address}");
        assert_eq!(cr["spec"]["application"]["replicas"], 1, "{address}");
        assert!(
            w.secret("backstage-rds-credentials").is_none(),
            "{address}: the connection Secret is removed"
        );
        assert_eq!(
            fingerprint(|db, sql| w.source(db, sql)),
            before,
            "{address}"
        );
        // Nothing pgplan created is left on the target server.
        let leftover = w.target(
            "postgres",
            "select count(*) from pg_database where datname like 'backstage_plugin_%'",
        );
        assert_eq!(leftover, "0", "{address}");
        // The instance, deletion-protected, is kept and said to be.
        if w.instance().is_some() {
            assert!(err.contains("is kept"), "{address}: {err}");
        }
        ok(&w.apply(&spec, &[]));
        assert_eq!(
            fingerprint(|db, sql| w.target(db, sql)),
            before,
            "{address}: second apply"
        );
    }
}

/// Over a v4-only kubelet: a failure at the last database's verify rolls
/// back (Backstage on its local database with its data, nothing left on
/// the target), and a second apply succeeds.
#[test]
fn over_exec_v4_a_failure_rolls_back_and_a_second_apply_succeeds() {
    let w = World::v4();
    let spec = w.spec(|s| s);
    let before = fingerprint(|db, sql| w.source(db, sql));
    let out = w.apply(
        &spec,
        &[(
            "PGPLAN_TEST_FAIL",
            "pg/backstage/backstage_plugin_search/verify",
        )],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Rolled back to the original topology"),
        "{err}"
    );
    assert_eq!(w.cr()["spec"]["application"]["replicas"], 1);
    assert_eq!(fingerprint(|db, sql| w.source(db, sql)), before);
    assert_eq!(
        w.target(
            "postgres",
            "select count(*) from pg_database where datname like 'backstage_plugin_%'",
        ),
        "0"
    );
    ok(&w.apply(&spec, &[]));
    assert_eq!(fingerprint(|db, sql| w.target(db, sql)), before);
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn rollback_deletes_the_instance_only_when_allowed() {
    let w = World::new();
    let spec = w.spec(|s| {
        s.replace(
            "    localDatabase: true\n",
            "    localDatabase: true\n    rdsInstanceOnRollback: true\n",
        )
    });
    let out = w.apply(
        &spec,
        &[(
            "PGPLAN_TEST_FAIL",
            "pg/backstage/backstage_plugin_app/verify",
        )],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("deletion protection lifted first"), "{err}");
    assert!(
        w.instance()
            .is_none_or(|i| i.db_instance_status() == Some("deleting")),
        "the instance this apply created is gone"
    );
}

/// The cutover turns the operator's local database off; its rollback turns
/// it back on, and the operator recreates the database's StatefulSet. The
/// rollback is done when that database serves again, not when the CR patch
/// is accepted: right after "Rolled back", the source answers queries.
/// Latency on the CR's patches makes the race that failed once on main
/// certain: the operator has deleted the database before the reverse
/// patch lands.
#[test]
fn a_rolled_back_cutover_ends_with_the_local_database_serving() {
    let w = World::new();
    let spec = w.spec(|s| s);
    let before = fingerprint(|db, sql| w.source(db, sql));
    w.cluster.faults().add_latency(
        Some("patch"),
        Some("backstages"),
        std::time::Duration::from_millis(1500),
    );
    let out = w.apply(
        &spec,
        &[(
            "PGPLAN_TEST_FAIL",
            "k8s/backstage/Backstage/developer-hub:reconfigure",
        )],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Rolled back to the original topology"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "StatefulSet backstage/{} serves again",
            bs::STATEFUL_SET
        )),
        "{err}"
    );
    // At once: no wait for the operator here.
    let served = w
        .cluster
        .try_psql(bs::NAMESPACE, bs::POD, "postgres", "select 1");
    assert!(
        served.is_ok(),
        "{served:?}\n{}",
        w.cluster.describe(bs::NAMESPACE)
    );
    assert_eq!(fingerprint(|db, sql| w.source(db, sql)), before);
}
