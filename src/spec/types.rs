//! The shape of a `pgplan.yaml` document: serde + schemars types.
//!
//! These types are both the file format (the JSON Schema in `schemas/` is
//! generated from them, and the doc comments become its descriptions) and,
//! once `spec::load` has checked them, the validated model the planner reads.
//! Validation that the type system cannot express (names, sizes, globs,
//! contradictions) lives in `spec::validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "pgplan.dev/v1alpha1";
pub const KIND: &str = "Placement";

/// Patterns of the JSON Schema, for editors: they catch in the editor what
/// `spec::validate` reports on load (with a reason; the structural check in
/// `spec::check` does not read `pattern`, `format`, `minItems`, `minimum`
/// beyond the integer type's own range, …). A value with a `${VAR}`
/// reference is only checked once expanded, so each pattern also accepts
/// any string containing `${` (the `|\$\{` alternative).
pub mod patterns {
    /// A DNS-1123 label (namespaces, StatefulSets, Services, placements).
    pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$|\$\{";
    /// A DNS-1123 subdomain (Deployments, Secrets, PVs, StorageClasses, nodes).
    pub const DNS_SUBDOMAIN: &str =
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$|\$\{";
    /// A Kubernetes quantity such as `5Gi`, `500Mi`, `10G`.
    pub const QUANTITY: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$|\$\{";
    /// An absolute path.
    pub const ABSOLUTE_PATH: &str = r"^/|\$\{";
    /// Something other than blanks.
    pub const NOT_BLANK: &str = r"\S";
    /// One word (an image reference).
    pub const WORD: &str = r"^\S+$|\$\{";
    /// A whole `${VAR}` reference, nothing else (passwords).
    pub const ENV_REFERENCE: &str = r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$";
    /// An AWS region code such as `us-east-1`.
    pub const AWS_REGION: &str = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$|\$\{";
    /// An RDS instance identifier: a letter, then letters, digits and single hyphens.
    pub const RDS_IDENTIFIER: &str = r"^[A-Za-z](-?[A-Za-z0-9])*$|\$\{";
    /// A PostgreSQL engine version such as `15.4` or `16`.
    pub const ENGINE_VERSION: &str = r"^[0-9]+(\.[0-9]+)?$|\$\{";
    /// A DB instance class such as `db.t3.medium`.
    pub const INSTANCE_CLASS: &str = r"^db\.[^.]+\.[^.]+$|\$\{";
    /// A database name or glob.
    pub const DATABASE: &str = r"^[A-Za-z0-9_$*?!\[\]-]+$|\$\{";
    /// A Kubernetes kind (CamelCase).
    pub const KIND: &str = r"^[A-Z]|\$\{";
    /// `v1` or `group/version`.
    pub const API_VERSION: &str = r"^(v1|.+/.+)$|\$\{";
    /// A cron schedule of five fields.
    pub const CRON: &str = r"^\s*\S+(\s+\S+){4}\s*$|\$\{";
    /// An http(s) URL with a host.
    pub const HTTP_URL: &str = r"^https?://[^\s/]+(/\S*)?$|\$\{";
}

use patterns as pat;

/// An access mode of the data volumes' claims.
// Only the schema's enum: the model keeps the strings it writes into manifests.
#[derive(JsonSchema)]
#[allow(dead_code, clippy::enum_variant_names)]
enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

/// One placement: where one PostgreSQL server's databases should live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "pgplan Placement")]
pub struct PlacementDoc {
    /// Always `pgplan.dev/v1alpha1`.
    #[schemars(extend("const" = "pgplan.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `Placement`.
    #[schemars(extend("const" = "Placement"))]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PlacementSpec,
}

/// Identifies the placement in plans, journals and locks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique name of the placement in the file (a DNS-1123 label).
    #[schemars(pattern(pat::DNS_LABEL))]
    pub name: String,
    /// Free-form labels, copied onto the objects pgplan creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The desired state of one placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Where the database lives now.
    pub source: Source,
    /// Where the database should live.
    pub target: Target,
    /// Logins pgplan uses. Passwords must be `${VAR}` references.
    #[serde(default)]
    pub credentials: Credentials,
    /// Databases to move: exact names or globs (`backstage_plugin_*`).
    #[schemars(length(min = 1), inner(pattern(pat::DATABASE)))]
    pub databases: Vec<String>,
    /// Applications that use the database: stopped during the move,
    /// reconfigured after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// What must hold after the data is restored.
    #[serde(default)]
    pub verify: Verify,
    /// Where dumps go and how backups are kept.
    #[serde(default)]
    pub backup: Backup,
    /// What may be removed once the target is verified.
    #[serde(default)]
    pub cleanup: Cleanup,
    /// Objects that Helm, Argo CD or Flux keep in sync with a repository.
    #[serde(default, skip_serializing_if = "GitOps::is_empty")]
    pub gitops: GitOps,
    /// Preflight findings this placement accepts: still listed in the plan,
    /// no longer blocking apply (docs/preflight.md).
    #[serde(default, skip_serializing_if = "Preflight::is_empty")]
    pub preflight: Preflight,
    /// Per-environment overrides (`--env NAME`), merged over this spec: mappings
    /// merge key by key, anything else replaces, `null` removes. Choosing a
    /// different kind of `source` or `target` replaces that section.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(
        with = "BTreeMap<String, BTreeMap<String, serde_json::Value>>",
        extend("propertyNames" = {"pattern": pat::DNS_LABEL})
    )]
    pub environments: BTreeMap<String, serde_json::Value>,
}

/// Where the database lives now. Exactly one of the keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Source {
    /// A Postgres workload in the cluster.
    Kubernetes(KubeSource),
    /// A server outside the cluster, reached directly.
    External(ExternalServer),
}

/// A Postgres workload in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSource {
    /// Namespace of the workload.
    #[serde(default = "default_namespace")]
    #[schemars(pattern(pat::DNS_LABEL))]
    pub namespace: String,
    /// The Deployment or StatefulSet running Postgres.
    pub workload: WorkloadRef,
    /// Container running Postgres, when the pod has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A workload, by name or by label selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    /// Name of the workload. Give either this or `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Labels that select exactly one workload of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1))]
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

/// A Postgres server reached over the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalServer {
    #[schemars(pattern(pat::NOT_BLANK))]
    pub host: String,
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    #[serde(default)]
    pub tls: Tls,
    /// Reach the server through another address (a tunnel or port-forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
}

/// Where the database should live. Exactly one of the keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Target {
    /// A StatefulSet in the cluster with a stable volume per pod.
    Kubernetes(KubeTarget),
    /// An AWS RDS for PostgreSQL instance.
    Rds(RdsTarget),
}

/// A StatefulSet target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeTarget {
    /// Namespace of the StatefulSet; defaults to the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_LABEL))]
    pub namespace: Option<String>,
    pub stateful_set: StatefulSetTarget,
}

/// The StatefulSet pgplan creates or keeps in shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatefulSetTarget {
    /// Name of the StatefulSet; pods are `{name}-{ordinal}`.
    #[schemars(pattern(pat::DNS_LABEL))]
    pub name: String,
    /// Name of the headless Service; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_LABEL))]
    pub service_name: Option<String>,
    /// Number of servers. Only 1 is accepted until pgplan sets up standbys:
    /// more would be independent, writable servers behind one Service
    /// (`pgplan::spec::replicas-without-standbys`).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: u32,
    /// Container image; defaults to the source workload's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::WORD))]
    pub image: Option<String>,
    pub storage: Storage,
    /// How the freshly created server is tuned while the databases are
    /// loaded into it, and put back before it is verified.
    #[serde(default)]
    pub load_tuning: LoadTuningMode,
}

/// Tuning of a fresh target server for the restore (as CloudNativePG's
/// import does). The server holds nothing but the restore in progress, which
/// is redone from the backup if it crashes; everything is put back and made
/// durable before the data is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LoadTuningMode {
    /// `restart` when the databases to load hold at least 256 MiB, else `off`: below that,
    /// tuning and putting the settings back cost more than they save.
    #[default]
    Auto,
    /// Also minimal WAL (`wal_level = minimal`, `max_wal_senders = 0`): postgres-0 is
    /// restarted before the restore and again after it.
    Restart,
    /// Only settings a reload applies: fsync, full-page writes, synchronous commit and
    /// autovacuum off, larger WAL and maintenance memory.
    Reload,
    /// Load with the server's own settings.
    Off,
}

/// The per-pod volume of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Storage {
    /// Requested size, a Kubernetes quantity such as `5Gi`.
    #[schemars(pattern(pat::QUANTITY))]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub storage_class_name: Option<String>,
    /// Name of the volumeClaimTemplate; PVCs are `{template}-{statefulset}-{ordinal}`.
    #[serde(default = "default_claim_template")]
    #[schemars(pattern(pat::DNS_LABEL))]
    pub volume_claim_template: String,
    #[serde(default = "default_access_modes")]
    #[schemars(with = "Vec<AccessMode>")]
    pub access_modes: Vec<String>,
    /// Mount path of the data volume in the Postgres container.
    #[serde(default = "default_data_path")]
    #[schemars(pattern(pat::ABSOLUTE_PATH))]
    pub mount_path: String,
    /// Pre-created PersistentVolumes, one per replica (ordinal order), used
    /// when the StorageClass has no provisioner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_volumes: Vec<StaticVolume>,
}

/// A local PersistentVolume pinned to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticVolume {
    /// PV name; defaults to `{statefulset}-pv-{ordinal}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Node (`kubernetes.io/hostname`) holding the directory.
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub node: String,
    /// Directory on the node.
    #[schemars(pattern(pat::ABSOLUTE_PATH))]
    pub path: String,
    #[serde(default = "default_retain")]
    pub reclaim_policy: ReclaimPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReclaimPolicy {
    Retain,
    Delete,
}

/// An AWS RDS for PostgreSQL instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdsTarget {
    /// AWS region, e.g. `us-east-1`.
    #[schemars(pattern(pat::AWS_REGION))]
    pub region: String,
    /// DB instance identifier.
    #[schemars(pattern(pat::RDS_IDENTIFIER), length(max = 63))]
    pub instance_identifier: String,
    /// Engine version, e.g. `15.4`.
    #[schemars(pattern(pat::ENGINE_VERSION))]
    pub engine_version: String,
    /// Instance class, e.g. `db.t3.medium`.
    #[schemars(pattern(pat::INSTANCE_CLASS))]
    pub instance_class: String,
    /// Allocated storage in GiB.
    #[schemars(range(min = 20, max = 65536))]
    pub allocated_storage: u32,
    #[serde(default = "default_true")]
    pub storage_encrypted: bool,
    #[serde(default = "default_true")]
    pub deletion_protection: bool,
    #[serde(default)]
    pub multi_az: bool,
    #[serde(default)]
    pub publicly_accessible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_subnet_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_security_group_ids: Vec<String>,
    /// Extra tags; pgplan adds `managed-by: pgplan` and `pgplan.dev/placement`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Use an existing instance not created by pgplan instead of refusing.
    #[serde(default)]
    pub adopt: bool,
    /// Take a DB snapshot of an existing instance before any destructive step.
    #[serde(default = "default_true")]
    pub snapshot_before_changes: bool,
    #[serde(default)]
    pub tls: Tls,
    /// Reach the instance through another address (a tunnel or port-forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
}

/// TLS towards a server outside the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// libpq sslmode.
    #[serde(default = "default_sslmode")]
    pub mode: SslMode,
    /// CA bundle used to verify the server (`verify-ca`/`verify-full`); it is
    /// also what the CA Secret for consumers holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::NOT_BLANK))]
    pub ca_file: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            mode: default_sslmode(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A host/port override for reaching a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connect {
    #[schemars(pattern(pat::NOT_BLANK))]
    pub host: String,
    #[schemars(range(min = 1))]
    pub port: u16,
}

/// Logins pgplan uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credentials {
    /// Login on the source server. In the cluster pgplan runs the tools inside
    /// the pod and uses the workload's own `POSTGRES_USER` when this is omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Login>,
    /// Login on the target server (for RDS, the master user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Login>,
    /// Passwords for roles pgplan creates on the target, by role name. A
    /// role's password is otherwise carried from the source as it is (its
    /// SCRAM or MD5 verifier), which needs a superuser on the source; give it
    /// here where the source does not allow that (RDS, an external server
    /// reached without one), or to replace it. Stored on the target as a
    /// SCRAM-SHA-256 verifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleSecret>,
}

/// The password of one role pgplan creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSecret {
    /// Must be a `${VAR}` reference: literal passwords would end up in plans.
    pub password: String,
}

/// A user name and a password reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Login {
    #[schemars(pattern(pat::NOT_BLANK))]
    pub username: String,
    /// Must be a `${VAR}` reference: literal passwords would end up in plans.
    #[schemars(pattern(pat::ENV_REFERENCE))]
    pub password: String,
}

impl Consumer {
    /// Deployments and StatefulSets; anything else is a custom resource.
    pub fn is_workload(&self) -> bool {
        matches!(self.kind.as_str(), "Deployment" | "StatefulSet")
    }
    pub fn is_backstage(&self) -> bool {
        self.kind == "Backstage"
            && self.api_version.as_deref().is_some_and(|v| {
                v.starts_with("rhdh.redhat.com/") || v.starts_with("janus-idp.io/")
            })
    }
    /// The field scaled to quiesce a custom resource.
    pub fn replicas_field(&self) -> Option<&str> {
        match &self.replicas_field {
            Some(f) => Some(f),
            None if self.is_backstage() => Some("spec.application.replicas"),
            None => None,
        }
    }
}

/// An application that uses the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Consumer {
    /// `Deployment`, `StatefulSet`, or the kind of a custom resource.
    #[schemars(pattern(pat::KIND))]
    pub kind: String,
    /// Needed for custom resources, e.g. `rhdh.redhat.com/v1alpha3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::API_VERSION))]
    pub api_version: Option<String>,
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub name: String,
    /// Defaults to the source's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_LABEL))]
    pub namespace: Option<String>,
    /// Scale to zero while data moves.
    #[serde(default = "default_true")]
    pub quiesce: bool,
    /// For custom resources: the dotted path of the replicas field used to
    /// quiesce, e.g. `spec.application.replicas` (the default for a Backstage CR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_field: Option<String>,
    /// How to point the consumer at the target once it is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconfigure: Option<Reconfigure>,
}

/// How a consumer is pointed at the new server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reconfigure {
    /// Secret with POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER and POSTGRES_PASSWORD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub connection_secret: Option<String>,
    /// Secret holding the server's CA certificate (from `tls.caFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKey>,
    /// Plain environment variables to set on a Deployment or StatefulSet consumer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// JSON merge patch for a custom resource. For a Backstage CR the default
    /// is `spec.database.enableLocalDb: false` plus the two Secrets as
    /// `extraEnvs` and `extraFiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_patch: Option<serde_json::Value>,
}

/// A key in a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKey {
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub name: String,
    #[serde(default = "default_ca_key")]
    pub key: String,
}

/// What must hold after restore before anything is cleaned up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    /// Row count of every table equals the backup manifest.
    #[serde(default = "default_true")]
    pub row_counts: bool,
    /// Per-table checksums equal the source's.
    #[serde(default = "default_true")]
    pub checksums: bool,
    /// Sequence values equal the source's.
    #[serde(default = "default_true")]
    pub sequences: bool,
    /// Delete pod 0 after restore and check the data survives (StatefulSet targets).
    #[serde(default)]
    pub self_heal: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sql: Vec<SqlProbe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpCheck>,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            row_counts: true,
            checksums: true,
            sequences: true,
            self_heal: false,
            sql: Vec::new(),
            http: Vec::new(),
        }
    }
}

/// A query whose first column of the first row must equal `expect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SqlProbe {
    pub name: String,
    pub database: String,
    #[schemars(pattern(pat::NOT_BLANK))]
    pub query: String,
    pub expect: String,
}

/// An HTTP endpoint of a consumer that must answer once it is resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheck {
    pub name: String,
    #[schemars(url, pattern(pat::HTTP_URL))]
    pub url: String,
    #[serde(default = "default_http_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: u16,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

/// Backups taken by the move, and the scheduled backups kept afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backup {
    /// Where the move's dumps are made and kept. `local` (the default for
    /// now): the tools stream the data through the machine running pgplan
    /// into `directory`. `cluster`: a short-lived pod in the target's
    /// namespace runs them next to the servers and keeps the archives on the
    /// backup claim (`storageSize`); only commands and small results cross
    /// the API server. Towards RDS the tools reach the instance from a pod,
    /// with the consumers' connection Secret by reference.
    #[serde(default, skip_serializing_if = "DataPath::is_local")]
    pub data_path: DataPath,
    /// Local directory for the move's dumps and manifests (`dataPath: local`).
    #[serde(default = "default_backup_dir")]
    #[schemars(pattern(pat::NOT_BLANK))]
    pub directory: String,
    #[serde(default)]
    pub format: DumpFormat,
    /// Parallel jobs for restore (and for dumps where the transport allows).
    #[serde(default = "default_jobs")]
    #[schemars(range(min = 1, max = 64))]
    pub jobs: u32,
    /// Cron schedule of a backup CronJob next to the target (e.g. `0 2 * * *`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pat::CRON))]
    pub schedule: Option<String>,
    /// Days a scheduled backup is kept.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Size of the backup PVC used by the CronJob.
    #[serde(default = "default_backup_storage")]
    #[schemars(pattern(pat::QUANTITY))]
    pub storage_size: String,
    /// VolumeSnapshots of the target's volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<Snapshots>,
    /// How long a data step (backup, prepare, restore, verify) may go without
    /// progress (bytes moved, tables measured, or the server at work on
    /// pgplan's statements) before it fails and the apply rolls back: `90s`,
    /// `5m`, `1h`. A frozen server or a network partition looks like this.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: String,
}

impl Backup {
    /// The stall timeout in seconds (validated: it parses).
    pub fn stall_seconds(&self) -> u64 {
        crate::quantity::parse_seconds(&self.stall_timeout).unwrap_or(300)
    }
}

/// Where the data of a move passes and its backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// Through the machine running pgplan, into `backup.directory`.
    #[default]
    Local,
    /// In the cluster: tools pods beside the servers, archives on the backup claim.
    Cluster,
}

impl DataPath {
    pub fn is_local(&self) -> bool {
        *self == DataPath::Local
    }
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            data_path: DataPath::default(),
            directory: default_backup_dir(),
            format: DumpFormat::default(),
            jobs: default_jobs(),
            schedule: None,
            retention_days: default_retention_days(),
            storage_size: default_backup_storage(),
            snapshots: None,
            stall_timeout: default_stall_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    /// `pg_dump -Fc`: one compressed, restorable-in-parallel archive.
    #[default]
    Custom,
    /// `pg_dump -Fd`: a directory archive, dumped in parallel.
    Directory,
}

/// CSI VolumeSnapshots of the data volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshots {
    /// VolumeSnapshotClass to use.
    #[schemars(pattern(pat::DNS_SUBDOMAIN))]
    pub class_name: String,
    /// Snapshot each data PVC before a step changes it.
    #[serde(default = "default_true")]
    pub before_changes: bool,
}

/// What may be removed once the target is verified. Nothing by default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cleanup {
    /// Delete the source's old PVC and PV after verify.
    #[serde(default)]
    pub old_volume: bool,
    /// Delete the in-cluster database (StatefulSet, Service, PVCs) after an
    /// RDS target is verified and consumers are reconfigured.
    #[serde(default)]
    pub local_database: bool,
    /// On rollback, delete an RDS instance this apply created (deletion
    /// protection is lifted first). Off: the instance is kept and reported.
    #[serde(default)]
    pub rds_instance_on_rollback: bool,
}

/// What the spec acknowledges about objects managed by GitOps tools.
///
/// A plan that deletes, replaces or changes an object a tool keeps in sync
/// warns on that step (`pgplan::gitops::*`), because the tool's next sync
/// would undo it (recreate the old Deployment beside the StatefulSet).
/// Apply refuses such a plan until the tool is listed here, which says the
/// chart or repository has been changed to match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitOps {
    /// Tools whose objects this placement may delete, replace or change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledge: Vec<GitOpsTool>,
}

impl GitOps {
    pub fn is_empty(&self) -> bool {
        self.acknowledge.is_empty()
    }
    pub fn acknowledges(&self, tool: GitOpsTool) -> bool {
        self.acknowledge.contains(&tool)
    }
}

/// What preflight may let through.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Preflight {
    /// Findings accepted, each by its code and the object it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept: Vec<AcceptedFinding>,
}

impl Preflight {
    pub fn is_empty(&self) -> bool {
        self.accept.is_empty()
    }
}

/// One accepted finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcceptedFinding {
    /// The finding's code: `unlisted-client`, or in full
    /// (`pgplan::preflight::unlisted-client`).
    #[schemars(length(min = 1))]
    pub code: String,
    /// The object the finding names, as the plan shows it: `Kind/name` (a
    /// client pod's workload) or an address.
    #[schemars(length(min = 1))]
    pub object: String,
}

/// A tool that keeps Kubernetes objects in sync with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GitOpsTool {
    /// Helm (`meta.helm.sh/release-name`, `app.kubernetes.io/managed-by: Helm`).
    Helm,
    /// Argo CD (`argocd.argoproj.io/*` tracking annotations and labels).
    Argocd,
    /// Flux (`kustomize.toolkit.fluxcd.io/*`, `helm.toolkit.fluxcd.io/*` labels).
    Flux,
}

impl GitOpsTool {
    pub fn as_str(self) -> &'static str {
        match self {
            GitOpsTool::Helm => "helm",
            GitOpsTool::Argocd => "argocd",
            GitOpsTool::Flux => "flux",
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_replicas() -> u32 {
    1
}
fn default_claim_template() -> String {
    "data".into()
}
fn default_access_modes() -> Vec<String> {
    vec!["ReadWriteOnce".into()]
}
fn default_data_path() -> String {
    "/var/lib/postgresql/data".into()
}
fn default_retain() -> ReclaimPolicy {
    ReclaimPolicy::Retain
}
fn default_true() -> bool {
    true
}
fn default_sslmode() -> SslMode {
    SslMode::VerifyFull
}
fn default_ca_key() -> String {
    "postgres-crt.pem".into()
}
fn default_http_status() -> u16 {
    200
}
fn default_backup_dir() -> String {
    ".pgplan/backups".into()
}
fn default_jobs() -> u32 {
    2
}
fn default_retention_days() -> u32 {
    7
}
fn default_stall_timeout() -> String {
    "5m".into()
}
fn default_backup_storage() -> String {
    "10Gi".into()
}
