//! What is live: Kubernetes objects, RDS instances and snapshots, and the
//! inventory of each PostgreSQL server. Plain data, saved to and loaded from
//! the snapshot file (`pgplan observe --out live.yaml`, `--live-state`).
//!
//! Kubernetes objects are kept as manifests (JSON values) rather than typed
//! structs: the planner reads a handful of fields, and the renderers diff
//! whole manifests. Secrets are observed as keys and fingerprints only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::error::{SourceFile, SpecError, SpecErrors};
use crate::yaml::{self, Span};

pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Annotation on Secrets in a snapshot (and on Secrets pgplan writes): a
/// fingerprint of the data, which itself is never observed or stored.
pub const FINGERPRINT_ANNOTATION: &str = "pgplan.dev/fingerprint";

/// Fingerprint of a Secret's data: a truncated SHA-256 over the sorted keys
/// and values. It tells "changed" from "unchanged" without storing values;
/// like any unsalted hash it must not be published for guessable passwords.
pub fn secret_fingerprint<'a, I>(data: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    use sha2::{Digest, Sha256};
    let mut entries: Vec<(&str, &[u8])> = data.into_iter().collect();
    entries.sort();
    let mut h = Sha256::new();
    h.update(b"pgplan-secret-v1\n");
    for (k, v) in entries {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v);
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(&h.finalize()[..8]))
}

/// Everything pgplan saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observed {
    pub format_version: u32,
    /// Where it was observed from (context and API server), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default)]
    pub kubernetes: KubeState,
    #[serde(default)]
    pub rds: RdsState,
    /// One entry per PostgreSQL server pgplan looked into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerInventory>,
    /// Applies the live state shows as running or left unfinished (their
    /// Lease, pgplan's bookkeeping on objects); empty when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<UnfinishedApply>,
}

/// What the live state shows of an apply of one placement that is running
/// or did not finish: its lock and what pgplan's own bookkeeping says it
/// left stopped or changed. A placement with one is not planned: a plan of
/// a world in the middle of a change means nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnfinishedApply {
    pub placement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<ApplyLock>,
    /// Consumers pgplan scaled down (they carry `pgplan.dev/quiesced-replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_consumers: Vec<StoppedConsumer>,
    /// Servers still running on the loading settings (`ALTER SYSTEM`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuned_servers: Vec<TunedServer>,
}

impl UnfinishedApply {
    pub fn is_empty(&self) -> bool {
        self.lock.is_none() && self.stopped_consumers.is_empty() && self.tuned_servers.is_empty()
    }
    /// True when another apply is running now (its lock is live): waiting
    /// for it makes sense; anything else needs `--resume` or a person.
    pub fn is_running(&self) -> bool {
        self.lock
            .as_ref()
            .is_some_and(|l| l.state == LockState::Running)
    }
}

/// A placement's Lease (`pgplan-{placement}`), as an apply left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyLock {
    /// The Lease's address.
    pub lease: String,
    /// The lock ID of the apply (`host:pid:random`).
    pub holder: String,
    pub state: LockState,
    /// What the holder was doing: `planning`, `applying`, `rolling-back`
    /// or `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When the lock was taken, as the Lease says (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed: Option<String>,
    /// Where the holder's journal is (`host:path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// The command that continues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// Whether the holder of a lock is still at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    /// Renewed within its duration by a holder that may be alive.
    Running,
    /// The holder ended with the apply unfinished and said so.
    Stopped,
    /// Expired, or its holder's process is gone (killed).
    Abandoned,
}

impl LockState {
    pub fn as_str(self) -> &'static str {
        match self {
            LockState::Running => "running",
            LockState::Stopped => "stopped",
            LockState::Abandoned => "abandoned",
        }
    }
}

/// A consumer an apply scaled down and has not started again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoppedConsumer {
    /// Its address (`k8s/{ns}/{Kind}/{name}`).
    pub object: String,
    /// Replicas now.
    pub replicas: u64,
    /// Replicas before pgplan stopped it.
    pub quiesced_from: u64,
}

/// A server still tuned for loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunedServer {
    /// The pod's address.
    pub pod: String,
    /// `name=value` of each loading setting still in `postgresql.auto.conf`.
    pub settings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Origin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeState {
    /// The API group versions the cluster serves (`v1`, `apps/v1`,
    /// `snapshot.storage.k8s.io/v1`, …), from discovery. `None` when not
    /// known (a snapshot written before pgplan recorded them, or discovery
    /// refused): nothing is then concluded from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_apis: Option<Vec<String>>,
    /// Namespaces the spec names that the cluster says do not exist (a
    /// namespace pgplan may not read is not listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_namespaces: Vec<String>,
    /// Manifests as the API server returned them (managedFields dropped).
    #[serde(default)]
    pub objects: Vec<Value>,
}

impl KubeState {
    /// Whether the cluster serves `api_version` (`apps/v1`); `None` when
    /// unknown. The core group (`v1`) is always served.
    pub fn serves(&self, api_version: &str) -> Option<bool> {
        if api_version == "v1" {
            return Some(true);
        }
        self.served_apis
            .as_ref()
            .map(|s| s.iter().any(|a| a == api_version))
    }
}

/// Identifies one Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind: kind.into(),
            namespace: if is_cluster_scoped(kind) {
                String::new()
            } else {
                namespace.into()
            },
            name: name.into(),
        }
    }
    pub fn of(manifest: &Value) -> Option<Self> {
        let kind = manifest.get("kind")?.as_str()?;
        let md = manifest.get("metadata")?;
        let name = md.get("name")?.as_str()?;
        let ns = md.get("namespace").and_then(Value::as_str).unwrap_or("");
        Some(ObjectKey::new(kind, ns, name))
    }
    /// The plan address of the object: `k8s/{namespace}/{Kind}/{name}`, or
    /// `k8s/{Kind}/{name}` for cluster-scoped kinds.
    pub fn address(&self) -> String {
        crate::addr::Locator::k8s(&self.namespace, &self.kind, &self.name).to_string()
    }
}

pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "PersistentVolume" | "StorageClass" | "Namespace" | "Node" | "VolumeSnapshotClass"
    )
}

/// RDS as seen through DescribeDBInstances and DescribeDBSnapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<RdsInstance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<RdsSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsInstance {
    pub region: String,
    pub identifier: String,
    pub engine: String,
    pub engine_version: String,
    pub instance_class: String,
    pub allocated_storage: u32,
    pub storage_encrypted: bool,
    pub deletion_protection: bool,
    #[serde(default)]
    pub multi_az: bool,
    #[serde(default)]
    pub publicly_accessible: bool,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_username: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl RdsInstance {
    pub fn address(&self) -> String {
        crate::addr::Locator::rds(&self.region, &self.identifier).to_string()
    }
    pub fn managed_by_pgplan(&self) -> bool {
        self.tags.get("managed-by").map(String::as_str) == Some("pgplan")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsSnapshot {
    pub region: String,
    pub identifier: String,
    pub instance_identifier: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<String>,
}

/// One PostgreSQL server and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerInventory {
    /// Which server: `k8s/{ns}/{Kind}/{workload}`, `rds/{region}/{id}` or
    /// `external/{host}:{port}`.
    pub locator: String,
    /// `server_version` as the server reports it.
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub databases: Vec<DatabaseInventory>,
    /// Client sessions over the network (`pg_stat_activity` with a client
    /// address), for preflight: who would still write during a move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<Session>,
    /// Transactions open for a while (from [`TRANSACTIONS_FROM`] seconds,
    /// any client) and prepared ones, for preflight: what holds locks the
    /// dump waits for, or writes that come after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transactions: Vec<OpenTransaction>,
}

/// The age from which observe reads an open transaction.
pub const TRANSACTIONS_FROM: u64 = 1;

/// A transaction open on a server: in a session (`pg_stat_activity`'s
/// `xact_start`) or prepared (`pg_prepared_xacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTransaction {
    pub database: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub application: String,
    /// The client's address; empty over the local socket and when prepared.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Seconds since it began (or was prepared), when observed.
    pub age_seconds: u64,
    /// A prepared transaction (`PREPARE TRANSACTION`), by its `gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<String>,
}

/// A client session on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Session {
    /// The client's address (`client_addr`).
    pub address: String,
    pub database: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub application: String,
}

/// A role of a server and what a copy must reproduce of it: its
/// attributes, settings and memberships, and what kind of password it has.
/// The password itself (its verifier) is never observed: it is read from
/// the source only while applying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub superuser: bool,
    #[serde(default)]
    pub login: bool,
    #[serde(default)]
    pub create_db: bool,
    #[serde(default)]
    pub create_role: bool,
    /// INHERIT (the default): the privileges of the roles it is a member of apply to it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub inherit: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub replication: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub bypass_rls: bool,
    /// CONNECTION LIMIT; -1 for none.
    #[serde(default = "no_limit", skip_serializing_if = "is_no_limit")]
    pub connection_limit: i32,
    /// VALID UNTIL, as the server prints it (`infinity`, an ISO 8601 time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// `ALTER ROLE … SET` settings for every database, as `name=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<String>,
    /// What kind of password the role has (never the password).
    #[serde(default)]
    pub password: PasswordKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// The roles of `member_of` it holds WITH ADMIN OPTION.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_of: Vec<String>,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            name: String::new(),
            superuser: false,
            login: false,
            create_db: false,
            create_role: false,
            inherit: true,
            replication: false,
            bypass_rls: false,
            connection_limit: -1,
            valid_until: None,
            config: Vec::new(),
            password: PasswordKind::Unknown,
            member_of: Vec::new(),
            admin_of: Vec::new(),
        }
    }
}

impl Role {
    /// The attributes as `CREATE ROLE` spells them, in a fixed order:
    /// `NOSUPERUSER LOGIN NOCREATEDB … CONNECTION LIMIT 5 VALID UNTIL '…'`.
    pub fn attributes(&self) -> String {
        let flag = |on: bool, yes: &str| {
            if on {
                yes.to_string()
            } else {
                format!("NO{yes}")
            }
        };
        let mut out = vec![
            flag(self.superuser, "SUPERUSER"),
            flag(self.login, "LOGIN"),
            flag(self.create_db, "CREATEDB"),
            flag(self.create_role, "CREATEROLE"),
            flag(self.inherit, "INHERIT"),
            flag(self.replication, "REPLICATION"),
            flag(self.bypass_rls, "BYPASSRLS"),
            format!("CONNECTION LIMIT {}", self.connection_limit),
        ];
        if let Some(v) = &self.valid_until {
            out.push(format!("VALID UNTIL '{}'", v.replace('\'', "''")));
        }
        out.join(" ")
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn no_limit() -> i32 {
    -1
}
fn is_no_limit(n: &i32) -> bool {
    *n == -1
}

/// What kind of password a role has. Observing it needs read access to
/// `pg_authid` (a superuser); elsewhere (RDS, a login without it) it is
/// `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordKind {
    /// No password: the role cannot log in with one.
    None,
    /// A SCRAM-SHA-256 verifier.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// An MD5 hash (deprecated since PostgreSQL 14's default of SCRAM).
    Md5,
    /// Not observed: the server did not let pgplan read `pg_authid`.
    #[default]
    Unknown,
}

impl PasswordKind {
    /// Whether there is a verifier that can be carried as it is.
    pub fn carried(self) -> bool {
        matches!(self, PasswordKind::ScramSha256 | PasswordKind::Md5)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PasswordKind::None => "none",
            PasswordKind::ScramSha256 => "scram-sha-256",
            PasswordKind::Md5 => "md5",
            PasswordKind::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseInventory {
    pub name: String,
    pub owner: String,
    #[serde(default = "default_encoding")]
    pub encoding: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Extension>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<Table>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<Sequence>,
    /// Every `%knex_migrations_lock` table and whether it is locked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knex_locks: Vec<KnexLock>,
}

fn default_encoding() -> String {
    "UTF8".into()
}

impl DatabaseInventory {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
    /// A digest of what a copy must reproduce (tables, row counts,
    /// sequences), used to notice that a database moved since a plan.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for t in &self.tables {
            h.update(format!("t {}.{} {}\n", t.schema, t.name, t.rows));
        }
        for s in &self.sequences {
            h.update(format!("s {}.{} {}\n", s.schema, s.name, s.last_value));
        }
        hex::encode(&h.finalize()[..8])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extension {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnexLock {
    pub schema: String,
    pub table: String,
    pub locked: bool,
}

/// Read-only lookups over an [`Observed`], built once per plan.
pub struct Index<'a> {
    pub observed: &'a Observed,
    objects: HashMap<ObjectKey, &'a Value>,
}

impl<'a> Index<'a> {
    pub fn new(observed: &'a Observed) -> Self {
        let objects = observed
            .kubernetes
            .objects
            .iter()
            .filter_map(|o| ObjectKey::of(o).map(|k| (k, o)))
            .collect();
        Index { observed, objects }
    }
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&'a Value> {
        self.objects
            .get(&ObjectKey::new(kind, namespace, name))
            .copied()
    }
    /// Every object, in file order.
    pub fn all(&self) -> impl Iterator<Item = &'a Value> + 'a {
        self.observed.kubernetes.objects.iter()
    }
    /// Objects of a kind in a namespace (`""` for cluster-scoped), in file order.
    pub fn list(&self, kind: &str, namespace: &str) -> Vec<&'a Value> {
        let ns = if is_cluster_scoped(kind) {
            ""
        } else {
            namespace
        };
        self.observed
            .kubernetes
            .objects
            .iter()
            .filter(|o| ObjectKey::of(o).is_some_and(|k| k.kind == kind && k.namespace == ns))
            .collect()
    }
    pub fn server(&self, locator: &str) -> Option<&'a ServerInventory> {
        self.observed.servers.iter().find(|s| s.locator == locator)
    }
    pub fn rds_instance(&self, region: &str, id: &str) -> Option<&'a RdsInstance> {
        self.observed
            .rds
            .instances
            .iter()
            .find(|i| i.region == region && i.identifier == id)
    }
}

/// Fields every manifest reader needs, without a typed model.
pub fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    at(v, path)?.as_str()
}

pub fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) if cur.is_array() => cur.get(i)?,
            _ => cur.get(*p)?,
        };
    }
    Some(cur)
}

pub fn labels(v: &Value) -> BTreeMap<String, String> {
    at(v, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// What of a snapshot a spec's plan reads: the objects of the namespaces
/// its placements use (sources, targets, consumers), every cluster-scoped
/// object, and the servers in those namespaces or outside the cluster.
/// It is what an online plan reads (`cluster::observe`), so a plan made
/// from a scoped snapshot is the plan made online.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    namespaces: BTreeSet<String>,
}

impl Scope {
    pub fn of(spec: &crate::spec::Spec) -> Self {
        use crate::spec::{Source, Target};
        let mut namespaces = BTreeSet::new();
        for p in &spec.placements {
            let s = p.spec();
            let src = match &s.source {
                Source::Kubernetes(k) => k.namespace.clone(),
                Source::External(_) => "default".to_string(),
            };
            if let Target::Kubernetes(t) = &s.target {
                namespaces.insert(t.namespace.clone().unwrap_or_else(|| src.clone()));
            }
            for c in &s.consumers {
                namespaces.insert(c.namespace.clone().unwrap_or_else(|| src.clone()));
            }
            namespaces.insert(src);
        }
        Scope { namespaces }
    }

    /// Whether an object is read: cluster-scoped, in a namespace of the
    /// scope, or not an object at all (so that loading still checks it).
    pub fn keeps(&self, object: &Value) -> bool {
        match ObjectKey::of(object) {
            Some(k) => k.namespace.is_empty() || self.namespaces.contains(&k.namespace),
            None => true,
        }
    }

    /// Whether a server's inventory is read: `k8s/{ns}/…` in the scope,
    /// RDS and external servers always.
    pub fn keeps_server(&self, locator: &str) -> bool {
        match locator.strip_prefix("k8s/") {
            Some(rest) => rest
                .split('/')
                .next()
                .is_some_and(|ns| self.namespaces.contains(ns)),
            None => true,
        }
    }
}

/// Load a snapshot file, with located errors for a broken one.
pub fn load_snapshot(name: &str, bytes: &[u8]) -> Result<Observed, SpecErrors> {
    load_snapshot_in(name, bytes, None)
}

/// Load what of a snapshot file a plan reads ([`Scope`]), or all of it.
///
/// The file is read straight into the model (no tree, no intermediate
/// JSON), an object at a time, and what is out of scope is dropped as soon
/// as it is read, so that a large snapshot costs about its own size; the
/// text is copied for diagnostics only when there is one to make.
pub fn load_snapshot_in(
    name: &str,
    bytes: &[u8],
    scope: Option<&Scope>,
) -> Result<Observed, SpecErrors> {
    read_snapshot(name, bytes, scope)
        .map_err(|e| e.with_title(format!("{name} is not a valid pgplan snapshot")))
}

fn read_snapshot(name: &str, bytes: &[u8], scope: Option<&Scope>) -> Result<Observed, SpecErrors> {
    let text = match yaml::check_text(bytes) {
        Ok(t) => t,
        Err(e) => {
            let file = SourceFile::new(name, String::from_utf8_lossy(bytes).into_owned());
            return Err(SpecErrors::new(&file, vec![SpecError::from_yaml(&file, e)]));
        }
    };
    let one = |code: &'static str, message: String, span: Span, help: &str| {
        let file = SourceFile::new(name, text);
        SpecErrors::new(
            &file,
            vec![SpecError::new(&file, code, message, span).help(help)],
        )
    };
    let read = match yaml::from_str_seed(text, ObservedSeed { scope }) {
        Ok(r) => r,
        Err(yaml::ReadError::Yaml(e)) => {
            let file = SourceFile::new(name, text);
            return Err(SpecErrors::new(&file, vec![SpecError::from_yaml(&file, e)]));
        }
        Err(yaml::ReadError::Empty) => {
            return Err(one(
                "pgplan::snapshot::empty",
                "the snapshot file is empty".into(),
                Span::new(0, 0),
                "write one with `pgplan observe -f pgplan.yaml --out live.yaml`",
            ))
        }
        Err(yaml::ReadError::Data {
            message,
            path,
            span,
        }) => return Err(one(
            "pgplan::snapshot::invalid",
            format!("not a pgplan snapshot: `{path}`: {message}"),
            span,
            "snapshots are written by `pgplan observe`; regenerate it rather than editing by hand",
        )),
    };
    let mut observed = read.value;
    // Secrets are keys and fingerprints only, even in a hand-edited snapshot.
    for o in observed.kubernetes.objects.iter_mut() {
        crate::redact::hide_secret_data(o);
    }
    if observed.format_version != SNAPSHOT_FORMAT_VERSION {
        let span = read
            .top_level
            .iter()
            .find(|(k, _)| k == "formatVersion")
            .map_or(Span::new(0, 0), |(_, s)| *s);
        return Err(one(
            "pgplan::snapshot::version",
            format!(
                "snapshot format {} is not supported (this pgplan reads format {SNAPSHOT_FORMAT_VERSION})",
                observed.format_version
            ),
            span,
            "regenerate it with this version's `pgplan observe`",
        ));
    }
    Ok(observed)
}

/// What a snapshot file holds in place of each value of a Secret's `data`:
/// base64 of the marker `(sensitive)`. It is valid base64, as a real API
/// server and kubectl insist, decodes to the marker (recognisable, and no
/// value pgplan ever read: it never reads them), and loads back as the
/// marker, so plans from a snapshot equal plans online.
pub const SNAPSHOT_PLACEHOLDER: &str = "KHNlbnNpdGl2ZSk=";

/// Reads an [`Observed`] as its derived `Deserialize` does, keeping only
/// what is in scope of the objects and servers, one element at a time.
struct ObservedSeed<'s> {
    scope: Option<&'s Scope>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ObservedSeed<'_> {
    type Value = Observed;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Observed, D::Error> {
        d.deserialize_struct("Observed", OBSERVED_FIELDS, self)
    }
}

/// Every field of [`Observed`]; the streamed reader must read them all.
const OBSERVED_FIELDS: &[&str] = &[
    "formatVersion",
    "origin",
    "kubernetes",
    "rds",
    "servers",
    "unfinished",
];

impl<'de> serde::de::Visitor<'de> for ObservedSeed<'_> {
    type Value = Observed;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a pgplan snapshot (a mapping with formatVersion, kubernetes, rds, servers)")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Observed, A::Error> {
        use serde::de::Error;
        let mut format_version = None;
        let mut out = Observed::default();
        while let Some(key) = map.next_key_seed(Field(OBSERVED_FIELDS))? {
            match key.as_str() {
                "formatVersion" => format_version = Some(map.next_value()?),
                "origin" => out.origin = map.next_value()?,
                "kubernetes" => out.kubernetes = map.next_value_seed(KubeStateSeed(self.scope))?,
                "rds" => out.rds = map.next_value()?,
                "unfinished" => out.unfinished = map.next_value()?,
                "servers" => {
                    out.servers = map.next_value_seed(Filtered {
                        keep: |s: &ServerInventory| {
                            self.scope.is_none_or(|sc| sc.keeps_server(&s.locator))
                        },
                        marker: std::marker::PhantomData,
                    })?
                }
                _ => unreachable!("Field admits only these"),
            }
        }
        out.format_version =
            format_version.ok_or_else(|| A::Error::missing_field("formatVersion"))?;
        Ok(out)
    }
}

/// Every field of [`KubeState`]; the streamed reader must read them all.
const KUBE_STATE_FIELDS: &[&str] = &["servedApis", "missingNamespaces", "objects"];

struct KubeStateSeed<'s>(Option<&'s Scope>);

impl<'de> serde::de::DeserializeSeed<'de> for KubeStateSeed<'_> {
    type Value = KubeState;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<KubeState, D::Error> {
        d.deserialize_struct("KubeState", KUBE_STATE_FIELDS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for KubeStateSeed<'_> {
    type Value = KubeState;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mapping with `servedApis`, `missingNamespaces` and `objects`")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KubeState, A::Error> {
        let mut out = KubeState::default();
        while let Some(key) = map.next_key_seed(Field(KUBE_STATE_FIELDS))? {
            match key.as_str() {
                "servedApis" => out.served_apis = map.next_value()?,
                "missingNamespaces" => out.missing_namespaces = map.next_value()?,
                "objects" => {
                    out.objects = map.next_value_seed(Filtered {
                        keep: |o: &Value| self.0.is_none_or(|s| s.keeps(o)),
                        marker: std::marker::PhantomData,
                    })?
                }
                _ => unreachable!("Field admits only these"),
            }
        }
        Ok(out)
    }
}

/// A key that must be one of the fields: refused as it is read, so that
/// the error points at it (as a derived `deny_unknown_fields` does).
struct Field(&'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for Field {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        if self.0.contains(&key.as_str()) {
            Ok(key)
        } else {
            Err(serde::de::Error::unknown_field(&key, self.0))
        }
    }
}

/// A list read an element at a time, keeping those `keep` accepts.
struct Filtered<T, F> {
    keep: F,
    marker: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>, F: Fn(&T) -> bool> serde::de::DeserializeSeed<'de>
    for Filtered<T, F>
{
    type Value = Vec<T>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>, F: Fn(&T) -> bool> serde::de::Visitor<'de> for Filtered<T, F> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if (self.keep)(&item) {
                out.push(item);
            }
        }
        Ok(out)
    }
}

/// Save a snapshot as YAML. Snapshots are for planning: the Secrets in
/// them hold keys, a fingerprint and [`SNAPSHOT_PLACEHOLDER`] values.
pub fn to_yaml(observed: &Observed) -> Result<String, serde_json::Error> {
    let mut written = observed.clone();
    for o in written.kubernetes.objects.iter_mut() {
        crate::redact::hide_secret_data(o);
        if o["kind"] == "Secret" {
            if let Some(Value::Object(data)) = o.get_mut("data") {
                for v in data.values_mut() {
                    *v = Value::String(SNAPSHOT_PLACEHOLDER.into());
                }
            }
        }
    }
    yaml::to_string(&written)
}

/// Reduce a live Secret to what pgplan may keep: its keys, with values
/// replaced, and a fingerprint of the data in an annotation. Applied by
/// observe before anything is stored or planned.
pub fn keys_only(secret: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(data)) = secret.get("data") else {
        return;
    };
    let decoded: Vec<(String, Vec<u8>)> = data
        .iter()
        .map(|(k, v)| {
            let bytes = v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .unwrap_or_default();
            (k.clone(), bytes)
        })
        .collect();
    let fp = secret_fingerprint(decoded.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    if let Some(md) = secret.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = md
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = ann.as_object_mut() {
            a.insert(FINGERPRINT_ANNOTATION.into(), Value::String(fp));
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    crate::redact::hide_secret_data(secret);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_reader_reads_every_field_a_snapshot_has() {
        let observed = Observed {
            format_version: SNAPSHOT_FORMAT_VERSION,
            kubernetes: KubeState {
                served_apis: Some(vec!["v1".into(), "apps/v1".into()]),
                missing_namespaces: vec!["gone".into()],
                objects: Vec::new(),
            },
            unfinished: vec![UnfinishedApply {
                placement: "healthcare".into(),
                lock: None,
                stopped_consumers: vec![StoppedConsumer {
                    object: "k8s/default/Deployment/api".into(),
                    replicas: 0,
                    quiesced_from: 2,
                }],
                tuned_servers: Vec::new(),
            }],
            ..Observed::default()
        };
        let text = to_yaml(&observed).expect("plain data");
        let read = load_snapshot("live.yaml", text.as_bytes()).expect("its own snapshot");
        assert_eq!(read, observed, "{text}");
    }

    #[test]
    fn a_scoped_snapshot_keeps_what_the_spec_reads() {
        let (spec_text, live) = crate::examples::generated(3, 2);
        let first = spec_text.split("---\n").next().unwrap();
        let lookup = |_: &str| Some("x".to_string());
        let opts = crate::spec::LoadOptions {
            environment: None,
            all_environments: false,
            lookup: &lookup,
        };
        let spec = crate::spec::load(crate::spec::SourceFile::new("s.yaml", first), &opts).unwrap();
        let scope = Scope::of(&spec);
        let all = load_snapshot("live.yaml", live.as_bytes()).unwrap();
        let some = load_snapshot_in("live.yaml", live.as_bytes(), Some(&scope)).unwrap();
        let kept: Vec<&Value> = all
            .kubernetes
            .objects
            .iter()
            .filter(|o| scope.keeps(o))
            .collect();
        assert_eq!(some.kubernetes.objects.iter().collect::<Vec<_>>(), kept);
        assert!(some.kubernetes.objects.len() < all.kubernetes.objects.len());
        assert!(some.kubernetes.objects.iter().all(|o| ObjectKey::of(o)
            .is_some_and(|k| k.namespace.is_empty() || k.namespace == "team-000")));
        assert!(some
            .kubernetes
            .objects
            .iter()
            .any(|o| o["kind"] == "PersistentVolume"));
        assert_eq!(some.servers.len(), 1);
        assert_eq!(some.servers[0].locator, "k8s/team-000/Deployment/postgres");
    }
}
