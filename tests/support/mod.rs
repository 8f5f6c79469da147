//! Test substrate: real PostgreSQL, a simulated Kubernetes API server, and the moto RDS emulator,
//! so that everything pgplan does to a cluster or to RDS is tested end to end with real data
//! moving. How it differs from the real things: `docs/testing.md`.
//!
//! # Kubernetes: [`sim::SimCluster`]
//!
//! ```ignore
//! let cluster = SimCluster::start();                              // empty: default ns, node1/node2
//! let cluster = SimCluster::with_scenario(Scenario::Healthcare);  // pods Ready, data seeded
//! let cluster = SimCluster::start_with(SimOptions { nodes, scenario, ready_timeout,
//!     absent_api_groups,        // CRD groups not installed: plain-text 404 under them
//!     snapshot_controller,      // false: nothing sets VolumeSnapshot status
//!     stalled_resize_classes,   // expansions stop at FileSystemResizePending
//!     ..SimOptions::default() })?;
//!
//! cluster.kubeconfig_path() -> &Path          // KUBECONFIG for a pgplan subprocess
//! cluster.url() -> String                     // http://127.0.0.1:PORT
//! cluster.client().await -> kube::Client      // the unmodified kube client, from the kubeconfig
//! cluster.requests() -> &RequestLog           // .count("patch", "statefulsets"), .counts(),
//!                                             // .mutations(), .all(), .clear(), .summary()
//! cluster.faults() -> Faults                  // .fail_nth(verb, resource, n, code) -> FaultId,
//!                                             // .fail_nth_with(.., times, code, msg),
//!                                             // .fail_with(.., times, ApiError), .fired(id),
//!                                             // .add_latency(verb?, resource?, d), .clear(),
//!                                             // .hang(verb, resource): never answered,
//!                                             // .keep_pvc_unbound(ns, pvc), .release_pvc(..),
//!                                             // .delete_pod(ns, pod), .crash_pod(ns, pod),
//!                                             // .unpullable_image(image),
//!                                             // .fail_readiness(ns, pod, output), .pass_readiness(..)
//! cluster.get::<Pod>(ns, name) -> Option<Pod> // straight from the store, nothing logged
//! cluster.list::<Pod>(Some(ns)) -> Vec<Pod>
//! cluster.get_json("backstages", ns, name) -> Option<Value>
//! cluster.list_json("replicasets", Some(ns)) -> Vec<Value>, cluster.serves(&kind) -> bool
//! cluster.create_json(value) -> Result<Value, ApiError>   // setup without a client
//! cluster.wait_until(timeout, "what", |c| ..)             // sync; panics with a description
//! cluster.wait_until_async(timeout, "what", |c| ..).await // in #[tokio::test]
//! cluster.wait_for(timeout, |c| ..) -> Result<(), ()>
//! cluster.pod_ready(ns, pod) -> bool, cluster.pod_names(ns, "app=postgres") -> Vec<String>
//! cluster.workloads_ready(ns) -> bool, cluster.describe(ns) -> String
//! cluster.pod_postgres(ns, pod) -> Option<PgEndpoint>    // port, socket_dir, superuser, data_dir
//! cluster.psql(ns, pod, db, sql) -> String               // real psql, superuser, local socket
//! cluster.try_psql(..) -> Result<String, PsqlError>, cluster.query(..) -> Vec<Vec<String>>
//! cluster.pv_dir(pv) -> Option<PathBuf>, cluster.dir() -> &Path
//! ```
//!
//! Scenario names and values are constants in [`sim::scenario::healthcare`] and
//! [`sim::scenario::backstage`] (passwords, object names, patients, databases, row counts).
//!
//! # PostgreSQL: [`pg::LocalPostgres`]
//!
//! ```ignore
//! let pg = LocalPostgres::start();                        // superuser postgres, random password
//! let pg = LocalPostgres::start_with(PgOptions { superuser, password, databases, ..PgOptions::default() })?;
//! pg.host(), pg.port(), pg.socket_dir(), pg.superuser(), pg.password(), pg.url(db), pg.env()
//! pg.psql(db, sql) -> String, pg.try_psql(..) -> Result<..>, pg.query(db, sql) -> rows
//! pg.create_database(name), pg.crash_and_restart()
//! ```
//!
//! # RDS: [`moto::Moto`]
//!
//! ```ignore
//! let account = Moto::shared().account();   // a fresh, isolated AWS account in moto
//! let rds = account.rds_client();           // aws_sdk_rds::Client with the endpoint override
//! account.env()                             // AWS_ENDPOINT_URL, keys, region for a subprocess
//! // moto's endpoints are fake: stand a LocalPostgres behind the instance with pgplan's
//! // `connect: {host, port}` override, using the instance's master user and password.
//! ```
//!
//! A `pgplan` subprocess gets `KUBECONFIG=cluster.kubeconfig_path()` and `account.env()`; the
//! cluster serves it from its own thread whatever the test's runtime. Two facts of the client
//! stack worth knowing: kube retries 429/503/504 answers by itself (an injected 503 shows in the
//! request log, not to the caller), and with both kube (ring) and the AWS SDK (aws-lc-rs) linked,
//! rustls needs a process-wide crypto provider installed before a kube client is built
//! (`sim::install_crypto_provider()` does it for the tests; the `pgplan` binary needs the same).
//!
//! Every process started here dies with the test process, runs unprivileged when the tests run
//! as root, and every directory lives under `$TMPDIR/pgplan-test-{pid}-…` and is removed on drop
//! (`scripts/test` checks that none is left).

pub mod moto;
pub mod pg;
pub mod proc;
pub mod scratch;
pub mod sim;

#[allow(unused_imports)]
pub use moto::{Moto, MotoAccount};
#[allow(unused_imports)]
pub use pg::{LocalPostgres, PgOptions};
#[allow(unused_imports)]
pub use sim::{Scenario, SimCluster, SimOptions};
