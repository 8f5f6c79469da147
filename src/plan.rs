//! The plan: an ordered list of steps, each with an action, a risk class,
//! its dependencies, what it shows (before/after) and what apply does
//! (the operation). Also the saved plan file.
//!
//! A plan in memory holds real values (an image or host name may come from
//! `${VAR}`); everything written out goes through `redact::Redactor` first.
//! The saved plan file therefore cannot be executed by itself: it carries
//! the spec's text (references only) and apply recomputes the plan and
//! refuses unless the result equals the saved one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::addr::{Address, Journey, Locator, Phase};
use crate::spec::{Connect, DumpFormat, SslMode};

pub const PLAN_FORMAT_VERSION: &str = "1.0";

/// Annotation apply writes on a consumer it scales down, so that a later
/// plan (after a crash, even without the journal) knows the replica count
/// to return to.
pub const QUIESCED_ANNOTATION: &str = "pgplan.dev/quiesced-replicas";

/// What a step does to its object; doubles as the rendered symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// Delete then create (an immutable field changes).
    Replace,
    /// Run something (backup, restore, verify) without owning an object.
    Run,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Replace => "-/+",
            Action::Run => ">",
        }
    }
    /// The JSON form: replace is written as `["delete","create"]`.
    pub fn json_actions(self) -> Vec<&'static str> {
        match self {
            Action::Create => vec!["create"],
            Action::Update => vec!["update"],
            Action::Delete => vec!["delete"],
            Action::Replace => vec!["delete", "create"],
            Action::Run => vec!["run"],
        }
    }
    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Replace => "replace",
            Action::Run => "run",
        }
    }
}

/// How much a step can hurt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Changes nothing users notice.
    Safe,
    /// Causes downtime; no data can be lost.
    Disruptive,
    /// Can lose data if run at the wrong time.
    Destructive,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Safe => "safe",
            Risk::Disruptive => "disruptive",
            Risk::Destructive => "destructive",
        }
    }
}

/// A Kubernetes object an operation acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        let namespace = if crate::observed::is_cluster_scoped(kind) {
            String::new()
        } else {
            namespace.to_string()
        };
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace,
            name: name.into(),
        }
    }
    pub fn of(manifest: &Value) -> Option<Self> {
        let api_version = manifest.get("apiVersion")?.as_str()?;
        let key = crate::observed::ObjectKey::of(manifest)?;
        Some(ObjectRef::new(
            api_version,
            &key.kind,
            &key.namespace,
            &key.name,
        ))
    }
    /// Where the object is (`k8s/{namespace}/{kind}/{name}`).
    pub fn locator(&self) -> Locator {
        Locator::k8s(&self.namespace, &self.kind, &self.name)
    }
    /// The address of the step that creates, changes or deletes the object.
    pub fn address(&self) -> String {
        Address::of(&self.locator()).into()
    }
    /// The address of a step that does `phase` to the object.
    pub fn address_at(&self, phase: Phase) -> String {
        Address::at(&self.locator(), phase).into()
    }
    /// `kind namespace/name` as kubectl users read it.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How apply reaches a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "via")]
pub enum ServerRef {
    /// Tools run inside a pod of the workload (exec), as the container's user.
    Pod {
        /// The workload that owns the pods (its plan address identifies the server).
        workload: ObjectRef,
        /// Labels selecting its pods.
        selector: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// A server reached over the network (RDS or external), tools run locally.
    Direct {
        /// `rds/{region}/{id}` or `external/{host}:{port}`.
        locator: Locator,
        /// Known host (external) — RDS endpoints are resolved at apply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connect: Option<Connect>,
        user: String,
        /// Name of the environment variable holding the password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_var: Option<String>,
        sslmode: SslMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
        /// With `backup.dataPath: cluster`: the tools run in a pod in the
        /// cluster that reaches the server, never on the machine running
        /// pgplan (which needs no route to it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_cluster: Option<Box<InCluster>>,
    },
}

/// How the tools reach a server outside the cluster from inside it: a
/// client pod in `namespace` running `image`, whose libpq settings come by
/// reference from the connection Secret pgplan writes for the consumers
/// (`POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD`),
/// with the CA bundle's Secret mounted as `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InCluster {
    pub namespace: String,
    pub image: String,
    pub login_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    pub sslmode: SslMode,
}

/// A key of a Secret in the namespace at hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

impl ServerRef {
    pub fn locator(&self) -> Locator {
        match self {
            ServerRef::Pod { workload, .. } => workload.locator(),
            ServerRef::Direct { locator, .. } => locator.clone(),
        }
    }
}

/// Why a consumer is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalePurpose {
    Quiesce,
    Resume,
}

/// What a backup of one database must reproduce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseFacts {
    pub name: String,
    pub owner: String,
    pub size_bytes: u64,
    pub tables: u64,
    pub rows: u64,
    pub fingerprint: String,
}

/// The checks a verify step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyChecks {
    pub row_counts: bool,
    pub checksums: bool,
    pub sequences: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sql: Vec<crate::spec::SqlProbe>,
}

/// The settings of an RDS instance pgplan creates or converges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RdsSettings {
    pub region: String,
    pub identifier: String,
    pub engine_version: String,
    pub instance_class: String,
    pub allocated_storage: u32,
    pub storage_encrypted: bool,
    pub deletion_protection: bool,
    pub multi_az: bool,
    pub publicly_accessible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_subnet_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_security_group_ids: Vec<String>,
    pub master_username: String,
    pub password_var: String,
    pub tags: BTreeMap<String, String>,
}

/// What apply does for a step. Every operation is idempotent given its
/// precheck: it looks at the live object first and does nothing if the
/// step's effect is already there. Manifests are not repeated here: an
/// operation on an object reads the step's `before` and `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
// Steps are few (tens per plan) and built once: size over boxing.
#[allow(clippy::large_enum_variant)]
pub enum Operation {
    /// Set a consumer's replicas (Deployment/StatefulSet scale subresource,
    /// or a field of a custom resource).
    Scale {
        object: ObjectRef,
        from: u32,
        to: u32,
        purpose: ScalePurpose,
        /// Dotted path of the replicas field for custom resources.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// `pg_dump` one database into the backup directory, checksummed and
    /// checked with `pg_restore --list`, with a manifest of row counts.
    Backup {
        server: ServerRef,
        database: DatabaseFacts,
        format: DumpFormat,
        jobs: u32,
        directory: String,
        /// The backup claim the dump is made on, by a tools pod beside the
        /// servers (`backup.dataPath: cluster`); `None`: into `directory`
        /// on the machine running pgplan.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<ObjectRef>,
        /// Also read the source's role password verifiers (for prepare),
        /// kept beside the archive: on one backup of a placement.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        verifiers: bool,
    },
    /// Set a PV's reclaim policy to Retain so its data outlives its claim.
    ProtectVolume { volume: ObjectRef, from: String },
    /// Create the object in the step's `after` (and wait for it to be usable).
    Create { object: ObjectRef, wait: Wait },
    /// Delete an object; the step's `before` keeps its manifest for rollback.
    Delete { object: ObjectRef, wait: Wait },
    /// Delete the step's `before` and create its `after` (immutable fields changed).
    Replace { object: ObjectRef, wait: Wait },
    /// JSON merge patch an object (the step's `before` is the live object).
    Patch { object: ObjectRef, patch: Value },
    /// Create an RDS instance and wait until it is available. On rollback it
    /// is deleted only when the spec allows it (`cleanup.rdsInstanceOnRollback`).
    CreateRdsInstance {
        settings: RdsSettings,
        delete_on_rollback: bool,
    },
    /// Modify an existing RDS instance towards the settings.
    ModifyRdsInstance {
        settings: RdsSettings,
        changes: Vec<String>,
    },
    /// Take a DB snapshot of an instance.
    SnapshotRdsInstance {
        region: String,
        identifier: String,
        snapshot: String,
    },
    /// Create missing roles and databases on the target (ownership kept);
    /// give the roles the source's attributes, settings, memberships and
    /// passwords.
    PrepareTarget {
        server: ServerRef,
        roles: Vec<crate::observed::Role>,
        databases: Vec<(String, String)>,
        /// RDS has no superusers: roles are created without SUPERUSER
        /// (nor REPLICATION or BYPASSRLS).
        strip_superuser: bool,
        /// Passwords the spec gives (`credentials.roles`), by reference.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        passwords: Vec<RolePassword>,
        /// The backup step that read the source's password verifiers
        /// (kept beside its archive, never in the plan or the journal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verifiers_from: Option<String>,
    },
    /// Tune a target server pgplan created for loading (`ALTER SYSTEM`); with
    /// `minimal_wal`, restart `pod` so that `wal_level = minimal` takes effect.
    TuneForLoading {
        server: ServerRef,
        pod: ObjectRef,
        minimal_wal: bool,
    },
    /// Put the loading settings back (restarting `pod` when one of them needs
    /// it), then checkpoint and sync, before anything is verified.
    UntuneAfterLoading {
        server: ServerRef,
        pod: ObjectRef,
        minimal_wal: bool,
    },
    /// Restore one database from the backup taken by `backup_step`.
    Restore {
        server: ServerRef,
        database: DatabaseFacts,
        backup_step: String,
        jobs: u32,
    },
    /// Empty every locked `%knex_migrations_lock` table of a database.
    ReleaseKnexLocks {
        server: ServerRef,
        database: String,
        tables: Vec<String>,
    },
    /// Compare the restored database with the backup manifest.
    Verify {
        source: ServerRef,
        target: ServerRef,
        database: DatabaseFacts,
        backup_step: String,
        checks: VerifyChecks,
        /// The roles prepare carried, checked on the target (on the first
        /// database's verify of a placement only).
        /// Boxed: rare, and it would make every operation larger.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        roles: Option<Box<RoleChecks>>,
    },
    /// Delete a pod of the target and check the data survives its return.
    SelfHeal {
        pod: ObjectRef,
        workload: ObjectRef,
        database: String,
        expect_rows: u64,
    },
    /// An HTTP check of a resumed consumer.
    HttpCheck {
        name: String,
        url: String,
        expect_status: u16,
        contains: Option<String>,
    },
    /// A Secret whose values are resolved at apply (never in the plan).
    Secret {
        object: ObjectRef,
        contents: SecretContents,
        /// Fingerprint of the desired data, compared with the live one.
        fingerprint: String,
    },
}

/// A role's password given by the spec: the environment variable that
/// holds it (its value is read only at apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolePassword {
    pub role: String,
    pub var: String,
}

/// What verify checks of the roles prepare carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleChecks {
    /// The roles as the target must have them.
    pub roles: Vec<crate::observed::Role>,
    /// Passwords the spec gives: checked by logging in with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passwords: Vec<RolePassword>,
}

/// What a Secret pgplan writes contains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum SecretContents {
    /// POSTGRES_HOST/PORT/USER/PASSWORD for consumers.
    Connection { server: ServerRef },
    /// The CA bundle from the target's `tls.caFile`.
    CaCertificate { key: String, ca_file: String },
}

/// What "done" means after a create, delete or replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Wait {
    #[default]
    None,
    /// Pods ready (workloads) or bound (PVCs).
    Ready,
    /// The object is gone (and its pods, for workloads).
    Gone,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Unique in the plan, e.g. `k8s/default/StatefulSet/postgres` or
    /// `pg/healthcare/healthcare/backup`. Built by the constructors of
    /// [`Address`]; read back with [`Step::addr`].
    pub address: String,
    pub placement: String,
    pub action: Action,
    pub risk: Risk,
    /// What happens, in one line.
    pub summary: String,
    /// Why the step is in the plan.
    pub reason: String,
    pub depends_on: Vec<String>,
    /// True when consumers are stopped while this step runs.
    pub in_downtime: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    pub operation: Operation,
    /// What the reviewer must know before approving this step (an object
    /// another tool keeps in sync). Absent from the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A warning attached to a step: a stable code to match on, the message,
/// and what to do about it. `blocks_apply` is set when apply refuses the
/// plan until the spec acknowledges the warning.
///
/// Plan-wide preflight findings are meant to grow from this type (a
/// severity, the object concerned); for now it belongs to one step, whose
/// address and object say what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub code: WarningCode,
    pub message: String,
    pub help: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocks_apply: bool,
}

/// The stable codes of step warnings, written as `pgplan::…` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WarningCode {
    /// The object belongs to a Helm release.
    #[serde(rename = "pgplan::gitops::helm_managed")]
    HelmManaged,
    /// The object is tracked by an Argo CD application.
    #[serde(rename = "pgplan::gitops::argocd_managed")]
    ArgoCdManaged,
    /// The object is reconciled by a Flux Kustomization or HelmRelease.
    #[serde(rename = "pgplan::gitops::flux_managed")]
    FluxManaged,
}

impl WarningCode {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningCode::HelmManaged => "pgplan::gitops::helm_managed",
            WarningCode::ArgoCdManaged => "pgplan::gitops::argocd_managed",
            WarningCode::FluxManaged => "pgplan::gitops::flux_managed",
        }
    }
}

impl std::fmt::Display for WarningCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-placement facts for the summary and the renderers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementPlan {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// What kind of change: `deployment-to-statefulset`, `statefulset-to-statefulset`,
    /// `to-rds`, `day-2`, or `none`.
    pub journey: Journey,
    pub databases: Vec<DatabaseFacts>,
    /// 1-based positions of the first and last step of the downtime window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<(usize, usize)>,
}

/// Totals for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub run: usize,
    pub databases: usize,
    pub bytes: u64,
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub placements: Vec<PlacementPlan>,
    /// In dependency order (a topological order, stable for equal inputs).
    pub steps: Vec<Step>,
    /// Live facts the plan was computed from (address → version), checked
    /// again before a saved plan is applied.
    pub fingerprints: BTreeMap<String, String>,
    pub warnings: Vec<String>,
    /// Applies the live state shows running or left unfinished. Their
    /// placements are not planned (no steps): the plan says so instead,
    /// and neither `plan` nor `apply` reports "No changes" over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<crate::observed::UnfinishedApply>,
    /// What preflight found (see `crate::preflight`); an error not accepted
    /// blocks apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// How much a preflight finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks apply (unless accepted).
    Error,
    /// Shown.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One preflight finding: a risk the live world shows before anything moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable, `pgplan::preflight::…`.
    pub code: String,
    pub severity: Severity,
    pub placement: String,
    /// What it is about: `Kind/name`, or an address.
    pub object: String,
    pub message: String,
    /// What to do.
    pub help: String,
    /// The spec accepts it (`preflight.accept`): listed, not blocking.
    #[serde(default)]
    pub accepted: bool,
}

impl Finding {
    /// An error the spec does not accept: apply refuses the plan.
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Error && !self.accepted
    }
}

impl Step {
    /// The typed address (its phase recovered as [`Address`] reads it).
    pub fn addr(&self) -> Address {
        Address::from(self.address.as_str())
    }
    /// Whether the placement is committed once this step is done: its data
    /// is verified on the target, or its consumers use the target. The
    /// planner says so in the step's typed parts (the operation, and the
    /// [`Phase::Reconfigure`] of the address it built), which a plan read
    /// back from a saved file or a journal has again (`Address: FromStr`).
    pub fn commits(&self) -> bool {
        match self.operation {
            Operation::Verify { .. } | Operation::SelfHeal { .. } => true,
            Operation::Patch { .. } => self.addr().phase() == Some(Phase::Reconfigure),
            _ => false,
        }
    }
}

impl Plan {
    /// Per placement, the position of its last commit point (see [`Step::commits`]).
    pub fn commit_positions(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.commits() {
                out.insert(s.placement.clone(), i);
            }
        }
        out
    }

    pub fn has_changes(&self) -> bool {
        !self.steps.is_empty()
    }

    /// True when an apply of one of the plan's placements is running or
    /// unfinished: nothing may be applied over it.
    pub fn is_blocked(&self) -> bool {
        !self.unfinished.is_empty()
    }

    /// The preflight findings that block apply.
    pub fn blocking_findings(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.blocks()).collect()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            match step.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
                Action::Run => s.run += 1,
            }
            if let Operation::Backup { database, .. } = &step.operation {
                s.databases += 1;
                s.bytes += database.size_bytes;
            }
        }
        s
    }

    /// Warnings apply refuses to go past, with the step each is on.
    pub fn blocking_warnings(&self) -> Vec<(usize, &Step, &Warning)> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.warnings
                    .iter()
                    .filter(|w| w.blocks_apply)
                    .map(move |w| (i + 1, s, w))
            })
            .collect()
    }

    pub fn step(&self, address: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.address == address)
    }

    /// 1-based position of a step.
    pub fn position(&self, address: &str) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.address == address)
            .map(|i| i + 1)
    }
}

/// The version of the saved-plan envelope below (the JSON plan inside it
/// has its own, [`PLAN_FORMAT_VERSION`]). 2.0: keys in snake_case like the
/// JSON plan's (1.0 wrote camelCase) and a checksum.
pub const SAVED_PLAN_FORMAT_VERSION: &str = "2.0";

/// A plan saved with `plan --out FILE`: the spec it came from (references
/// only, never values) and the redacted plan. `apply FILE` reloads the spec,
/// plans again against the live state and runs only if both plans match;
/// `show FILE` renders the plan again. Keys are snake_case, as in the JSON
/// plan; docs/output.md describes the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPlan {
    pub format_version: String,
    pub pgplan_version: String,
    pub spec_file: String,
    pub spec_text: String,
    pub environment: Option<String>,
    /// The redacted plan, exactly as `plan --format json` prints it.
    pub plan: Value,
    /// `sha256:HEX` of everything above (see [`SavedPlan::content_checksum`]).
    pub checksum: String,
}

impl SavedPlan {
    /// The checksum of the file's content: sha256 over the compact JSON of
    /// `[format_version, pgplan_version, spec_file, spec_text, environment,
    /// plan]` (key order as written). It tells a file changed since pgplan
    /// wrote it (an edited step, a reordered list, another spec file) from a
    /// live state that moved; it is not a signature — whoever can write the
    /// file can recompute it.
    pub fn content_checksum(&self) -> String {
        use sha2::{Digest, Sha256};
        let content = serde_json::json!([
            self.format_version,
            self.pgplan_version,
            self.spec_file,
            self.spec_text,
            self.environment,
            self.plan,
        ]);
        // A JSON value with string keys always serialises.
        let bytes = serde_json::to_vec(&content).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    }
}
