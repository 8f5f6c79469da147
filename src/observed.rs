//! What is live: Kubernetes objects, RDS instances and snapshots, and the
//! inventory of each PostgreSQL server. Plain data, saved to and loaded from
//! the snapshot file (`pgplan observe -o live.yaml`, `--live-state`).
//!
//! Kubernetes objects are kept as manifests (JSON values) rather than typed
//! structs: the planner reads a handful of fields, and the renderers diff
//! whole manifests. Secrets are observed as keys and fingerprints only.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::error::{SourceFile, SpecError, SpecErrors};
use crate::yaml::{self, PathSeg, Span};

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
    /// Manifests as the API server returned them (managedFields dropped).
    #[serde(default)]
    pub objects: Vec<Value>,
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
        if self.namespace.is_empty() {
            format!("k8s/{}/{}", self.kind, self.name)
        } else {
            format!("k8s/{}/{}/{}", self.namespace, self.kind, self.name)
        }
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
        format!("rds/{}/{}", self.region, self.identifier)
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

/// Load a snapshot file, with located errors for a broken one.
pub fn load_snapshot(name: &str, bytes: &[u8]) -> Result<Observed, SpecErrors> {
    let text = match yaml::check_text(bytes) {
        Ok(t) => t,
        Err(e) => {
            let file = SourceFile::new(name, String::from_utf8_lossy(bytes).into_owned());
            return Err(SpecErrors::new(&file, vec![SpecError::from_yaml(&file, e)]));
        }
    };
    let file = SourceFile::new(name, text);
    let docs = yaml::parse(text)
        .map_err(|e| SpecErrors::new(&file, vec![SpecError::from_yaml(&file, e)]))?;
    let Some(doc) = docs.into_iter().find(|d| !d.root.is_null()) else {
        return Err(SpecErrors::new(
            &file,
            vec![SpecError::new(
                &file,
                "pgplan::snapshot::empty",
                "the snapshot file is empty",
                Span::new(0, 0),
            )
            .help("write one with `pgplan observe -f pgplan.yaml -o live.yaml`")],
        ));
    };
    let value = doc.root.to_json();
    let observed: Observed = serde_path_to_error::deserialize(value).map_err(|e| {
        let path: Vec<PathSeg> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let span = doc.root.span_at(&path);
        SpecErrors::new(
            &file,
            vec![SpecError::new(
                &file,
                "pgplan::snapshot::invalid",
                format!("not a pgplan snapshot: `{}`: {}", e.path(), e.inner()),
                span,
            )
            .help("snapshots are written by `pgplan observe`; regenerate it rather than editing by hand")],
        )
    })?;
    let mut observed = observed;
    // Secrets are keys and fingerprints only, even in a hand-edited snapshot.
    for o in observed.kubernetes.objects.iter_mut() {
        crate::redact::hide_secret_data(o);
    }
    if observed.format_version != SNAPSHOT_FORMAT_VERSION {
        let span = doc.root.span_at(&[PathSeg::Key("formatVersion".into())]);
        return Err(SpecErrors::new(
            &file,
            vec![SpecError::new(
                &file,
                "pgplan::snapshot::version",
                format!(
                    "snapshot format {} is not supported (this pgplan reads format {SNAPSHOT_FORMAT_VERSION})",
                    observed.format_version
                ),
                span,
            )
            .help("regenerate it with this version's `pgplan observe`")],
        ));
    }
    Ok(observed)
}

/// Save a snapshot as YAML.
pub fn to_yaml(observed: &Observed) -> Result<String, serde_yaml_ng::Error> {
    yaml::to_string(observed)
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
