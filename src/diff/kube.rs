//! StatefulSet targets: moving a Deployment's (or another StatefulSet's)
//! database into a StatefulSet (seed 002), and day-2 changes to a
//! StatefulSet that already exists (seed 003: volume expansion, image,
//! replicas, backup CronJob, snapshots).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::consumers;
use super::data::{self, Chain};
use super::manifests::{self, covers, diff_patch, merge_patch, shown};
use super::source::{self, DataVolume, SourceFacts, SourceProblem};
use super::Ctx;
use crate::addr::{Journey, Phase};
use crate::observed::{at, str_at};
use crate::plan::{Action, ObjectRef, Operation, Risk, ServerRef, Wait};
use crate::quantity::{human_bytes, parse_bytes};
use crate::spec::{KubeTarget, LoadTuningMode, Source, StatefulSetTarget};

const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

pub(super) fn plan(cx: &mut Ctx<'_>, kt: &KubeTarget) {
    let spec = cx.p.spec();
    let t = &kt.stateful_set;
    let src_ns = match &spec.source {
        Source::Kubernetes(k) => k.namespace.clone(),
        Source::External(_) => "default".into(),
    };
    let ns = kt.namespace.clone().unwrap_or_else(|| src_ns.clone());
    let live_sts = cx.idx.get("StatefulSet", &ns, &t.name);
    match live_sts {
        Some(l) => cx.read(l),
        None => cx.read_absent(ObjectRef::new("apps/v1", "StatefulSet", &ns, &t.name).address()),
    }

    let Source::Kubernetes(src) = &spec.source else {
        cx.error(
            &["source"],
            "pgplan::plan::unsupported",
            "moving an external server into a StatefulSet is not supported yet".into(),
            "restore into the StatefulSet with pg_restore, then manage it with a `kubernetes` source",
        );
        return;
    };
    let same_object = src.workload.kind == crate::spec::WorkloadKind::StatefulSet
        && src.namespace == ns
        && src.workload.name.as_deref() == Some(t.name.as_str());

    if same_object {
        manage_in_place(cx, kt, src, &ns, live_sts);
        return;
    }

    match source::resolve(cx.idx, src) {
        Ok(facts) => {
            cx.read(facts.manifest);
            if live_sts.is_some() {
                // Both exist: a move stopped halfway, or a name clash. Never guess.
                cx.error(
                    &["target", "kubernetes", "statefulSet", "name"],
                    "pgplan::plan::both-exist",
                    format!(
                        "the source {} {}/{} still exists and the target StatefulSet {ns}/{} already exists",
                        facts.kind.as_str(),
                        facts.namespace,
                        facts.name,
                        t.name
                    ),
                    "if an apply was interrupted, run `pgplan apply --resume`; otherwise remove one of them or choose another target name",
                );
                return;
            }
            move_into_statefulset(cx, kt, &ns, &facts);
        }
        Err(SourceProblem::NotFound) => match live_sts {
            // The move happened earlier: keep the target in shape.
            Some(sts) => {
                cx.read_absent(source::absent_address(src));
                day2(cx, kt, &ns, sts)
            }
            None => {
                let (missing, help) = source::describe_missing(cx.idx, src);
                cx.error(
                    &["source", "kubernetes", "workload"],
                    "pgplan::plan::source-missing",
                    format!(
                        "the source {missing}, and the target StatefulSet {ns}/{} does not exist either: there is nothing to move",
                        t.name
                    ),
                    help,
                )
            }
        },
        Err(p @ (SourceProblem::Ambiguous(_) | SourceProblem::NoContainer { .. })) => {
            if let Some(d) = p.container_diagnosis() {
                cx.error(d.path, d.code, d.message, d.help);
            }
        }
    }
}

/// Source and target name the same StatefulSet: day-2 changes to it, or
/// an error when it does not exist.
fn manage_in_place(
    cx: &mut Ctx<'_>,
    kt: &KubeTarget,
    src: &crate::spec::KubeSource,
    ns: &str,
    live_sts: Option<&Value>,
) {
    match live_sts {
        Some(sts) => day2(cx, kt, ns, sts),
        None => {
            let (missing, help) = source::describe_missing(cx.idx, src);
            cx.error(
                &["source", "kubernetes", "workload"],
                "pgplan::plan::source-missing",
                format!("the source {missing}"),
                format!("{help}; pgplan manages an existing StatefulSet in place when source and target name it"),
            )
        }
    }
}

/// The storage class the target's PVCs get: the spec's, or the cluster default.
fn storage_class<'v>(cx: &mut Ctx<'v>, t: &StatefulSetTarget) -> Option<&'v Value> {
    match &t.storage.storage_class_name {
        Some(name) => {
            let sc = cx.idx.get("StorageClass", "", name);
            match sc {
                Some(sc) => cx.read(sc),
                None => {
                    let classes: Vec<String> = cx
                        .idx
                        .list("StorageClass", "")
                        .iter()
                        .filter_map(|c| str_at(c, &["metadata", "name"]).map(str::to_string))
                        .collect();
                    cx.error(
                        &[
                            "target",
                            "kubernetes",
                            "statefulSet",
                            "storage",
                            "storageClassName",
                        ],
                        "pgplan::plan::storage-class-missing",
                        format!("StorageClass `{name}` does not exist"),
                        if classes.is_empty() {
                            "the cluster has no StorageClasses; create one or use static volumes"
                                .to_string()
                        } else {
                            format!("the cluster has: {}", classes.join(", "))
                        },
                    );
                }
            }
            sc
        }
        None => cx.idx.list("StorageClass", "").into_iter().find(|c| {
            str_at(
                c,
                &[
                    "metadata",
                    "annotations",
                    "storageclass.kubernetes.io/is-default-class",
                ],
            ) == Some("true")
        }),
    }
}

fn move_into_statefulset(cx: &mut Ctx<'_>, kt: &KubeTarget, ns: &str, src: &SourceFacts<'_>) {
    let spec = cx.p.spec();
    let t = &kt.stateful_set;
    cx.journey = journey_of(src.kind);
    let svc_name = t.service_name.clone().unwrap_or_else(|| t.name.clone());

    let Some(server) = inventory(cx, src) else {
        return;
    };
    let dbs = data::select(cx, server);
    let Some(storage) = target_storage(cx, t, &dbs) else {
        return;
    };
    let class_name = storage.class_name;

    // Protect the old volume so a rollback can bring the Deployment back on it.
    let protect = protect_old_volume(cx, src);

    // Static PVs.
    let pv_steps = match storage.needs_static {
        true => static_volumes(cx, t, ns, class_name.as_deref().unwrap_or(""), 0),
        false => Vec::new(),
    };

    // With the data path in the cluster, the claim the dumps go to.
    let Ok((claim, claim_steps)) = data_path_claim(cx, t, ns, class_name.as_deref(), (src, &dbs))
    else {
        return;
    };

    // Only now stop the consumers: everything above is safe while they run.
    let consumers = consumers::resolve(cx, &src.namespace);
    let quiesced = consumers::quiesce(cx, &consumers, &[]);

    let source = ObjectRef::new("apps/v1", src.kind.as_str(), &src.namespace, &src.name);
    let source_ref = pod_server(source, src);
    let target_workload = ObjectRef::new("apps/v1", "StatefulSet", ns, &t.name);
    let target_ref = pod_server(target_workload.clone(), src);

    // Backups first; everything disruptive waits for them.
    let after: Vec<String> = quiesced.iter().chain(&claim_steps).cloned().collect();
    let backups = data::backups(cx, &source_ref, claim.as_ref(), &dbs, &after);

    // Delete the source workload.
    let del_addr = delete_source(
        cx,
        src,
        backups.iter().chain(protect.iter()).cloned().collect(),
    );

    // Services: the one named like the target's headless Service is replaced
    // (clusterIP is immutable) and keeps its labels, annotations, ports and
    // selector, so that whatever selects it (ServiceMonitors, policies,
    // runbooks) still does; others keep selecting the same labels.
    let svc_step = headless_service(cx, ns, &svc_name, &t.name, src, &backups);

    // The StatefulSet.
    let template = at(src.manifest, &["spec", "template"])
        .cloned()
        .unwrap_or_else(|| json!({}));
    let shape = Shape {
        t,
        ns,
        template: &template,
        container_name: &src.container_name,
        svc_name: &svc_name,
        class: class_name.as_deref(),
        after: None,
    };
    let deps = [del_addr.clone()]
        .into_iter()
        .chain(svc_step.clone())
        .chain(pv_steps);
    let sts_addr = create_statefulset(cx, &shape, src, deps.collect());

    // Data.
    let from = (&source_ref, server);
    let verifies = restore(cx, &shape, from, &target_ref, &sts_addr, &dbs, &backups);

    let after_verify = match spec.verify.self_heal {
        true => self_heal(cx, ns, &target_workload, &dbs, &verifies),
        false => verifies.clone(),
    };

    backup_cronjob(
        cx,
        Shape {
            after: Some(&sts_addr),
            ..shape
        },
    );

    let host = format!("{svc_name}.{ns}.svc");
    let resumed = hand_back(cx, &consumers, target_ref, host, &sts_addr, &after_verify);

    if spec.cleanup.old_volume {
        cleanup_old_volumes(cx, &old_volumes(src), &verifies, &resumed);
    }
}

/// With `backup.dataPath: cluster`, the backup claim and the steps that
/// make it (`Ok(None)` with the local data path); `Err` once an error says
/// why the cluster data path cannot work here.
#[allow(clippy::result_unit_err)]
fn data_path_claim(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    class: Option<&str>,
    (src, dbs): (&SourceFacts<'_>, &[&crate::observed::DatabaseInventory]),
) -> Result<(Option<ObjectRef>, Vec<String>), ()> {
    if cx.p.spec().backup.data_path.is_local() {
        return Ok((None, Vec::new()));
    }
    if !cluster_data_path_fits(cx, ns, src, dbs) {
        return Err(());
    }
    let steps = backup_claim(cx, t, ns, class, None);
    let name = crate::names::backup_object_name(&t.name);
    let claim = ObjectRef::new("v1", "PersistentVolumeClaim", ns, &name);
    Ok((Some(claim), steps))
}

/// The journey from a source workload of `kind`.
fn journey_of(kind: crate::spec::WorkloadKind) -> Journey {
    match kind {
        crate::spec::WorkloadKind::Deployment => Journey::DeploymentToStatefulset,
        crate::spec::WorkloadKind::StatefulSet => Journey::StatefulsetToStatefulset,
    }
}

/// Whether `backup.dataPath: cluster` can work here: the tools pods run in
/// the target's namespace with the source's login Secret by reference, so
/// the source must be there too; and the backup claim must hold the dumps
/// (no larger than the databases' data, usually smaller). Errors say why not.
fn cluster_data_path_fits(
    cx: &mut Ctx<'_>,
    ns: &str,
    src: &SourceFacts<'_>,
    dbs: &[&crate::observed::DatabaseInventory],
) -> bool {
    let mut fits = true;
    if src.namespace != ns {
        cx.error(
            &["backup", "dataPath"],
            "pgplan::plan::data-path",
            format!(
                "`backup.dataPath: cluster` runs the tools in namespace {ns} with the source's login by reference, and the source is in {}",
                src.namespace
            ),
            "move within one namespace, or use `dataPath: local` for this placement",
        );
        fits = false;
    }
    claim_holds(cx, dbs) && fits
}

/// Whether the backup claim (`backup.storageSize`) holds the dumps of
/// `dbs` (no larger than their data, usually smaller); an error says by how
/// much it falls short.
pub(super) fn claim_holds(cx: &mut Ctx<'_>, dbs: &[&crate::observed::DatabaseInventory]) -> bool {
    let mut fits = true;
    let total: u64 = dbs.iter().map(|d| d.size_bytes).sum();
    let size = &cx.p.spec().backup.storage_size;
    let room = crate::quantity::parse_bytes(size).unwrap_or(u64::MAX);
    if total > room {
        cx.error(
            &["backup", "storageSize"],
            "pgplan::plan::backup-too-small",
            format!(
                "the backup claim ({size}) is smaller than the {} the databases to move hold",
                crate::quantity::human_bytes(total)
            ),
            format!(
                "raise `backup.storageSize` to at least {} (the dumps are no larger than the data, and the scheduled backups share the claim)",
                crate::quantity::human_bytes(total)
            ),
        );
        fits = false;
    }
    fits
}

/// The source server's database inventory, or an error saying how to
/// observe it.
fn inventory<'s>(
    cx: &mut Ctx<'_>,
    src: &SourceFacts<'s>,
) -> Option<&'s crate::observed::ServerInventory> {
    if src.server.is_none() {
        cx.error(
            &["source", "kubernetes", "workload"],
            "pgplan::plan::no-inventory",
            format!(
                "the live state has no database inventory for {}",
                src.locator()
            ),
            "observe the databases too: `pgplan observe -f SPEC --out live.yaml` (or plan online)",
        );
    }
    src.server
}

/// The Postgres server in the pods of `workload`, found by the source's
/// pod labels and container.
fn pod_server(workload: ObjectRef, src: &SourceFacts<'_>) -> ServerRef {
    ServerRef::Pod {
        workload,
        selector: src.pod_labels.clone(),
        container: Some(src.container_name.clone()),
    }
}

/// Where the target's data will live, decided before anything is planned
/// that changes the cluster.
struct TargetStorage {
    /// The StorageClass the claims name (`None`: the cluster's default).
    class_name: Option<String>,
    /// The class has no provisioner: pgplan creates the PVs itself.
    needs_static: bool,
}

/// Checks that the target volume holds the selected databases and that
/// something will create its volumes (seed 002's lesson: a class without a
/// provisioner and no static volumes leaves the claims pending forever).
/// `None` once any error is recorded.
fn target_storage(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    dbs: &[&crate::observed::DatabaseInventory],
) -> Option<TargetStorage> {
    let total: u64 = dbs.iter().map(|d| d.size_bytes).sum();
    if let Some(size) = cx.p.model().target_storage_bytes {
        if size < total {
            cx.error(
                &["target", "kubernetes", "statefulSet", "storage", "size"],
                "pgplan::plan::too-small",
                format!(
                    "the target volume ({}) is smaller than the databases it must hold ({})",
                    t.storage.size,
                    human_bytes(total)
                ),
                "give the volume room to grow: at least twice the data is a good start",
            );
        }
    }

    // Storage: a class with a provisioner creates PVs; without one, pgplan
    // creates the static PVs the claims will bind to (seed 002's lesson).
    let class = storage_class(cx, t);
    let class_name = class
        .and_then(|c| str_at(c, &["metadata", "name"]))
        .map(str::to_string)
        .or_else(|| t.storage.storage_class_name.clone());
    let provisioner = class
        .and_then(|c| str_at(c, &["provisioner"]))
        .unwrap_or(NO_PROVISIONER);
    let needs_static = provisioner == NO_PROVISIONER;
    if needs_static && t.storage.static_volumes.is_empty() {
        cx.error(
            &["target", "kubernetes", "statefulSet", "storage"],
            "pgplan::plan::no-provisioner",
            format!(
                "StorageClass `{}` has no provisioner, so nothing would create volumes for the StatefulSet's claims",
                class_name.as_deref().unwrap_or("(default)")
            ),
            "add `staticVolumes: [{node: NODE, path: /data/DIR}]` (one per replica), or use a class with a provisioner",
        );
    }
    if !needs_static && !t.storage.static_volumes.is_empty() {
        cx.warnings.push(format!(
            "StorageClass `{}` has provisioner `{provisioner}`; staticVolumes are ignored",
            class_name.as_deref().unwrap_or("(default)")
        ));
    }
    if !cx.errors.is_empty() {
        return None;
    }
    Some(TargetStorage {
        class_name,
        needs_static,
    })
}

/// The StatefulSet step: created in `shape` with the source's pod labels,
/// selector, metadata and data volume, after `deps`; ready before anything
/// restores into it. Returns its address.
fn create_statefulset(
    cx: &mut Ctx<'_>,
    shape: &Shape<'_>,
    src: &SourceFacts<'_>,
    deps: Vec<String>,
) -> String {
    let t = shape.t;
    let desired = manifests::statefulset(
        cx.p,
        &manifests::StatefulSetInput {
            namespace: shape.ns,
            target: t,
            service_name: shape.svc_name,
            pod_labels: &src.pod_labels,
            selector: at(src.manifest, &["spec", "selector"]),
            metadata_from: Some(src.manifest),
            template: shape.template,
            container_name: &src.container_name,
            data_volume: src.data_volume_name.as_deref(),
            storage_class: shape.class,
        },
    );
    let target_workload = ObjectRef::new("apps/v1", "StatefulSet", shape.ns, &t.name);
    let mut sts = cx.step(
        target_workload.address(),
        Action::Create,
        Risk::Safe,
        Operation::Create {
            object: target_workload.clone(),
            wait: Wait::Ready,
        },
        format!(
            "create {} ({}; PVC {} of {}) and wait until ready",
            target_workload.display(),
            crate::quantity::count(t.replicas, "replica"),
            crate::names::claim_name(&t.storage.volume_claim_template, &t.name, 0),
            t.storage.size
        ),
        "a StatefulSet gives the pod a stable name and its own claim, so the data survives pod restarts".into(),
    );
    sts.depends_on = deps;
    sts.after = Some(desired);
    cx.push(sts)
}

/// The restore chain from `from` (the source server and its inventory)
/// into the new StatefulSet's server once `ready`, with load tuning when
/// the target asks for it. Returns the verify steps.
fn restore(
    cx: &mut Ctx<'_>,
    shape: &Shape<'_>,
    from: (&ServerRef, &crate::observed::ServerInventory),
    target: &ServerRef,
    ready: &str,
    dbs: &[&crate::observed::DatabaseInventory],
    backups: &[String],
) -> Vec<String> {
    let t = shape.t;
    data::restore_chain(
        cx,
        &Chain {
            source: from.0,
            source_server: from.1,
            target,
            target_server: None,
            target_ready: &[ready.to_string()],
            strip_superuser: false,
            tuning: (t.load_tuning != LoadTuningMode::Off).then(|| data::Tuning {
                pod: ObjectRef::new("v1", "Pod", shape.ns, &format!("{}-0", t.name)),
                mode: t.load_tuning,
            }),
        },
        dbs,
        backups,
    )
}

/// Seed 002's self-healing check: the first pod deleted after `verifies`,
/// its first database counted when it returns. Returns what later steps
/// wait for (the check, or `verifies` when there is no database to count).
fn self_heal(
    cx: &mut Ctx<'_>,
    ns: &str,
    workload: &ObjectRef,
    dbs: &[&crate::observed::DatabaseInventory],
    verifies: &[String],
) -> Vec<String> {
    let pod = ObjectRef::new("v1", "Pod", ns, &format!("{}-0", workload.name));
    let Some((db, rows)) = dbs.first().map(|d| (d.name.clone(), d.total_rows())) else {
        return verifies.to_vec();
    };
    let mut s = cx.step(
        pod.address_at(Phase::SelfHeal),
        Action::Run,
        Risk::Disruptive,
        Operation::SelfHeal {
            pod: pod.clone(),
            workload: workload.clone(),
            database: db.clone(),
            expect_rows: rows,
        },
        format!(
            "delete {} and check that {db} still has {rows} rows when it returns",
            pod.display()
        ),
        "proves the pod reattaches its own volume (seed 002's self-healing check)".into(),
    );
    s.depends_on = verifies.to_vec();
    vec![cx.push(s)]
}

/// The consumers handed to the new server (`server`, reached at `host`):
/// their Secrets written once it is ready (`ready`), their connection settings changed after `verified`, then
/// resumed and checked over HTTP. Returns the resume steps.
fn hand_back(
    cx: &mut Ctx<'_>,
    consumers: &[consumers::ConsumerFacts<'_>],
    server: ServerRef,
    host: String,
    ready: &str,
    verified: &[String],
) -> Vec<String> {
    let conn = &consumers::Connection {
        server,
        host: Some(host),
        port: 5432,
        user: String::new(),
        password_var: None,
        ca: None,
    };
    let mut reconf_deps = verified.to_vec();
    reconf_deps.extend(consumers::secrets(
        cx,
        consumers,
        conn,
        &[ready.to_string()],
    ));
    let reconf = consumers::reconfigure(cx, consumers, &reconf_deps);
    let resume_deps = if reconf.is_empty() {
        verified.to_vec()
    } else {
        reconf
    };
    let resumed = consumers::resume(cx, consumers, &resume_deps, true);
    http_checks(cx, &resumed, verified);
    resumed
}

/// The headless Service the StatefulSet names: the live Service of that name
/// replaced (after `backups`), or a new one. Returns its step, if any.
fn headless_service(
    cx: &mut Ctx<'_>,
    ns: &str,
    svc_name: &str,
    sts_name: &str,
    src: &SourceFacts<'_>,
    backups: &[String],
) -> Option<String> {
    let live_svc = cx.idx.get("Service", ns, svc_name);
    let selector = match live_svc.and_then(|l| selects(l, &src.pod_labels)) {
        Some(kept) => kept,
        None => workload_selector(src),
    };
    let ports = live_svc
        .or(src.services.first().copied())
        .and_then(|s| at(s, &["spec", "ports"]));
    let desired_svc = manifests::headless_service(
        cx.p,
        svc_name,
        ns,
        &selector,
        ports,
        Some(live_svc.unwrap_or(src.manifest)),
    );
    let svc_obj = ObjectRef::new("v1", "Service", ns, svc_name);
    let pod_dns = format!("{sts_name}-0.{svc_name}");
    match live_svc {
        Some(live) => {
            cx.read(live);
            if str_at(live, &["spec", "clusterIP"]) == Some("None")
                && covers(
                    live,
                    &json!({"spec": {"selector": desired_svc["spec"]["selector"].clone()}}),
                )
            {
                None
            } else {
                let mut s = cx.step(
                    svc_obj.address(),
                    Action::Replace,
                    Risk::Disruptive,
                    Operation::Replace {
                        object: svc_obj.clone(),
                        wait: Wait::None,
                    },
                    format!(
                    "replace {} with a headless Service (clusterIP: None)",
                    svc_obj.display()
                ),
                    format!("a StatefulSet's pods get stable DNS names ({pod_dns}) only through a headless Service, and clusterIP cannot be changed in place; its labels, annotations and selector are kept"),
                );
                s.depends_on = backups.to_vec();
                s.before = Some(shown(live));
                s.after = Some(desired_svc.clone());
                Some(cx.push(s))
            }
        }
        None => {
            cx.read_absent(svc_obj.address());
            let mut s = cx.step(
                svc_obj.address(),
                Action::Create,
                Risk::Safe,
                Operation::Create {
                    object: svc_obj.clone(),
                    wait: Wait::None,
                },
                format!("create headless {}", svc_obj.display()),
                format!("the StatefulSet's serviceName must name a headless Service, which gives its pod the stable name {pod_dns}"),
            );
            s.after = Some(desired_svc.clone());
            Some(cx.push(s))
        }
    }
}

/// The source's claims and their volumes.
fn old_volumes<'s>(src: &SourceFacts<'s>) -> Vec<(&'s Value, Option<&'s Value>)> {
    match &src.data {
        DataVolume::Claim { pvc, pv } => vec![(*pvc, *pv)],
        DataVolume::Templates { claims } => claims.clone(),
        DataVolume::Ephemeral { .. } => Vec::new(),
    }
}

/// Keep the old volume when its claim goes (reclaim policy Retain): it is
/// the rollback path. Returns the steps' addresses.
fn protect_old_volume(cx: &mut Ctx<'_>, src: &SourceFacts<'_>) -> Vec<String> {
    let mut protect = Vec::new();
    let old_volumes = old_volumes(src);
    for (pvc, pv) in &old_volumes {
        cx.read(pvc);
        let Some(pv) = pv else { continue };
        cx.read(pv);
        let policy = str_at(pv, &["spec", "persistentVolumeReclaimPolicy"]).unwrap_or("Delete");
        if policy == "Retain" {
            continue;
        }
        let name = str_at(pv, &["metadata", "name"]).unwrap_or_default();
        let volume = ObjectRef::new("v1", "PersistentVolume", "", name);
        let mut after = shown(pv);
        after["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
        let mut s = cx.step(
            volume.address_at(Phase::Protect),
            Action::Update,
            Risk::Safe,
            Operation::ProtectVolume {
                volume: volume.clone(),
                from: policy.to_string(),
            },
            format!(
            "keep {} when its claim goes (reclaim policy {policy} → Retain)",
            volume.display()
        ),
            "the old volume is the rollback path: with Retain it survives the old workload and its claim".into(),
        );
        s.before = Some(shown(pv));
        s.after = Some(after);
        protect.push(cx.push(s));
    }
    protect
}

/// Delete the source workload once `deps` (the backups, the protected
/// volume) are done. Returns the step's address.
fn delete_source(cx: &mut Ctx<'_>, src: &SourceFacts<'_>, deps: Vec<String>) -> String {
    let src_obj = ObjectRef::new("apps/v1", src.kind.as_str(), &src.namespace, &src.name);
    let mut del = cx.step(
        src_obj.address(),
        Action::Delete,
        if src.data_at_risk() {
            Risk::Destructive
        } else {
            Risk::Disruptive
        },
        Operation::Delete {
            object: src_obj.clone(),
            wait: Wait::Gone,
        },
        format!(
        "delete {} (the database is down from here until the StatefulSet is ready)",
        src_obj.display()
    ),
        match &src.data {
        DataVolume::Ephemeral { what } => format!(
            "its data lives on {what} and dies with the pod; the verified backup is the only copy from here on"
        ),
        _ => "its pods must be gone before the StatefulSet's pods take the same labels; the data stays on the retained volume".into(),
    },
    );
    del.depends_on = deps;
    del.before = Some(shown(src.manifest));
    cx.push(del)
}

/// The selector of a live Service when it selects the source's pods (every
/// key it names has the pods' value): it is kept as it is.
fn selects(svc: &Value, pod_labels: &BTreeMap<String, String>) -> Option<Map<String, Value>> {
    let sel = at(svc, &["spec", "selector"]).and_then(Value::as_object)?;
    let fits = !sel.is_empty()
        && sel.iter().all(|(k, v)| {
            v.as_str()
                .is_some_and(|v| pod_labels.get(k).map(String::as_str) == Some(v))
        });
    fits.then(|| sel.clone())
}

/// What a new Service in front of the StatefulSet selects: the source
/// workload's `matchLabels` (what its pods were chosen by), or all of the
/// pods' labels when it has none.
fn workload_selector(src: &SourceFacts<'_>) -> Map<String, Value> {
    at(src.manifest, &["spec", "selector", "matchLabels"])
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            src.pod_labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        })
}

/// Static PVs for ordinals `from..replicas`.
fn static_volumes(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    class: &str,
    from: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    let all_pvs = cx.idx.list("PersistentVolume", "");
    for (i, v) in t
        .storage
        .static_volumes
        .iter()
        .enumerate()
        .skip(from as usize)
    {
        let name = v
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-pv-{i}", t.name));
        let claim = crate::names::claim_name(&t.storage.volume_claim_template, &t.name, i);
        let desired = manifests::static_pv(
            cx.p,
            &manifests::StaticPvInput {
                name: &name,
                volume: v,
                size: &t.storage.size,
                class,
                access_modes: &t.storage.access_modes,
                claim_namespace: ns,
                claim_name: &claim,
            },
        );
        let idx = i.to_string();
        // Another PV on the same directory would hand the new pod the old
        // cluster's files (seed 002 reused /data/postgres): refuse.
        let clash = all_pvs.iter().find(|pv| {
            str_at(pv, &["metadata", "name"]) != Some(name.as_str())
                && source::volume_location(pv).is_some_and(|(node, path)| {
                    path == v.path && node.as_deref().is_none_or(|n| n == v.node)
                })
        });
        if let Some(other) = clash {
            cx.error(
                &["target", "kubernetes", "statefulSet", "storage", "staticVolumes", &idx, "path"],
                "pgplan::plan::volume-path-in-use",
                format!(
                    "PersistentVolume `{}` already uses {} on {}",
                    str_at(other, &["metadata", "name"]).unwrap_or("?"),
                    v.path,
                    v.node
                ),
                "give the new volume its own directory: the restore must start from an empty data directory",
            );
            continue;
        }
        let obj = ObjectRef::new("v1", "PersistentVolume", "", &name);
        match cx.idx.get("PersistentVolume", "", &name) {
            Some(live) => {
                cx.read(live);
                if !covers(
                    live,
                    &json!({"spec": {"local": desired["spec"]["local"].clone(), "storageClassName": class}}),
                ) {
                    cx.error(
                        &["target", "kubernetes", "statefulSet", "storage", "staticVolumes", &idx],
                        "pgplan::plan::volume-exists",
                        format!("PersistentVolume `{name}` exists but points elsewhere"),
                        "name the static volume differently, or delete the stale PV after checking it holds nothing you need",
                    );
                }
            }
            None => {
                cx.read_absent(obj.address());
                let mut s = cx.step(
                    obj.address(),
                    Action::Create,
                    Risk::Safe,
                    Operation::Create {
                        object: obj.clone(),
                        wait: Wait::None,
                    },
                    format!(
                    "create {} ({}:{}, {}) for claim {claim}",
                    obj.display(),
                    v.node,
                    v.path,
                    t.storage.size
                ),
                    format!("StorageClass `{class}` has no provisioner; the claim binds only to a PV that already exists, pinned to its node"),
                );
                s.after = Some(desired);
                out.push(cx.push(s));
            }
        }
    }
    out
}

/// What the StatefulSet and its backup CronJob and claim are made from:
/// the target, its pod template, container, Service and storage class, and
/// the step that creates it, when this plan does.
#[derive(Clone, Copy)]
struct Shape<'e> {
    t: &'e StatefulSetTarget,
    ns: &'e str,
    template: &'e Value,
    container_name: &'e str,
    svc_name: &'e str,
    class: Option<&'e str>,
    /// The StatefulSet's creating step (`None`: it exists already).
    after: Option<&'e str>,
}

/// The backup CronJob and its PVC (when `backup.schedule` is set).
fn backup_cronjob(cx: &mut Ctx<'_>, x: Shape<'_>) -> Vec<String> {
    let Shape {
        t,
        ns,
        template,
        container_name,
        svc_name,
        class,
        after: sts_addr,
    } = x;
    let spec = cx.p.spec();
    let Some(schedule) = &spec.backup.schedule else {
        return Vec::new();
    };
    let (image, env) = backup_image_and_login(t, template, container_name);
    let dbs = backup_databases(cx);
    let claim = crate::names::backup_object_name(&t.name);
    let mut steps = Vec::new();
    if cx.p.spec().backup.data_path.is_local() {
        // With the data path in the cluster the claim was planned first.
        steps = backup_claim(cx, t, ns, class, sts_addr);
    }
    let host = format!("{}-0.{svc_name}", t.name);
    let cron = manifests::backup_cronjob(
        cx.p,
        &manifests::CronJobInput {
            name: &crate::names::backup_object_name(&t.name),
            namespace: ns,
            schedule,
            retention_days: spec.backup.retention_days,
            image: &image,
            host: &host,
            env,
            databases: &dbs,
            claim: &claim,
        },
    );
    steps.extend(converge(
        cx,
        cron,
        "scheduled, verified dumps with retention (seed 003's backup CronJob)",
        ns,
        sts_addr,
    ));
    steps
}

/// The backup claim (and its static PV when the class has no provisioner):
/// where the scheduled dumps go, and with `dataPath: cluster` the move's own.
fn backup_claim(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    class: Option<&str>,
    after: Option<&str>,
) -> Vec<String> {
    let spec = cx.p.spec();
    let claim = crate::names::backup_object_name(&t.name);
    let pvc = manifests::backup_pvc(cx.p, &claim, ns, &spec.backup.storage_size, class);
    let pv = backup_static_volume(cx, t, class).map(|v| {
        manifests::static_pv(
            cx.p,
            &manifests::StaticPvInput {
                name: &format!("{claim}-pv"),
                volume: &v,
                size: &spec.backup.storage_size,
                class: class.unwrap_or_default(),
                access_modes: &["ReadWriteOnce".to_string()],
                claim_namespace: ns,
                claim_name: &claim,
            },
        )
    });
    let mut steps = Vec::new();
    if let Some(pv) = pv {
        steps.extend(converge(
            cx,
            pv,
            "the class has no provisioner: the backup claim binds to this volume, beside the data's and kept when the claim goes",
            ns,
            after,
        ));
    }
    let reason = if spec.backup.data_path.is_local() {
        "scheduled dumps are kept on their own volume, not the database's"
    } else {
        "`backup.dataPath: cluster`: the move's dumps (and scheduled ones) are made and kept on their own volume in the cluster, not on the machine running pgplan"
    };
    steps.extend(converge(cx, pvc, reason, ns, after));
    steps
}

/// Where the scheduled backups live when the claims' class has no
/// provisioner (nothing would bind the backup claim): a static PV on the
/// node of the first replica's volume, in the directory beside it
/// (`{path}-backups`), kept (Retain) when the claim goes.
fn backup_static_volume(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    class: Option<&str>,
) -> Option<crate::spec::StaticVolume> {
    let sc = cx.idx.get("StorageClass", "", class?)?;
    cx.read(sc);
    if str_at(sc, &["provisioner"]).unwrap_or(NO_PROVISIONER) != NO_PROVISIONER {
        return None;
    }
    let first = t.storage.static_volumes.first()?;
    Some(crate::spec::StaticVolume {
        name: None,
        node: first.node.clone(),
        path: format!("{}-backups", first.path.trim_end_matches('/')),
        reclaim_policy: crate::spec::ReclaimPolicy::Retain,
    })
}

/// The dump job's image (the spec's, else the Postgres container's) and
/// the Postgres container's own login, passed on as libpq variables.
fn backup_image_and_login(
    t: &StatefulSetTarget,
    template: &Value,
    container_name: &str,
) -> (String, Vec<Value>) {
    let container = at(template, &["spec", "containers"])
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| str_at(c, &["name"]) == Some(container_name))
                .or(cs.first())
        });
    let image = t
        .image
        .clone()
        .or_else(|| {
            container
                .and_then(|c| str_at(c, &["image"]))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "postgres".into());
    let mut env = Vec::new();
    if let Some(Value::Array(cenv)) = container.and_then(|c| c.get("env")) {
        for e in cenv {
            let target = match str_at(e, &["name"]) {
                Some("POSTGRES_USER") | Some("POSTGRESQL_USER") => "PGUSER",
                Some("POSTGRES_PASSWORD")
                | Some("POSTGRESQL_PASSWORD")
                | Some("POSTGRESQL_ADMIN_PASSWORD") => "PGPASSWORD",
                _ => continue,
            };
            let mut e = e.clone();
            e["name"] = json!(target);
            env.push(e);
        }
    }
    (image, env)
}

/// The databases the CronJob dumps: those the plan moves, else the spec's
/// exact names.
fn backup_databases(cx: &mut Ctx<'_>) -> Vec<String> {
    if cx.databases.is_empty() {
        cx.p.model()
            .databases
            .exact_names()
            .map(str::to_string)
            .collect()
    } else {
        // Names read from the server go into a script: each is held to
        // PostgreSQL's own rule here (the script quotes them for the shell).
        let mut dbs = Vec::new();
        let names: Vec<String> = cx.databases.iter().map(|d| d.name.clone()).collect();
        for name in names {
            match crate::names::pg_database_name(&name) {
                Ok(()) => dbs.push(name),
                Err(why) => cx.error(
                    &["backup", "schedule"],
                    "pgplan::plan::database-name",
                    format!("the backup CronJob cannot dump this database: {why}"),
                    "rename the database on the server, or leave `backup.schedule` unset",
                ),
            }
        }
        dbs
    }
}

/// One object made to match `desired`: created when absent, patched with
/// what differs when present (a claim is only resized, elsewhere), after
/// `wait_for`. Returns the step, if one is needed.
pub(super) fn converge(
    cx: &mut Ctx<'_>,
    desired: Value,
    reason: &str,
    ns: &str,
    wait_for: Option<&str>,
) -> Option<String> {
    let obj = ObjectRef::of(&desired)?;
    let kind = obj.kind.clone();
    match cx.idx.get(&kind, ns, &obj.name) {
        Some(live) => {
            cx.read(live);
            if covers(live, &json!({"spec": desired["spec"].clone()})) {
                return None;
            }
            if kind == "PersistentVolumeClaim" {
                // Only the size of a claim can change; handled as expansion elsewhere.
                return None;
            }
            let mut after = shown(live);
            let patch = json!({"spec": desired["spec"].clone()});
            merge_patch(&mut after, &patch);
            let effective = diff_patch(&shown(live), &after)?;
            let mut s = cx.step(
                obj.address(),
                Action::Update,
                Risk::Safe,
                Operation::Patch {
                    object: obj.clone(),
                    patch: effective,
                },
                format!("update {}", obj.display()),
                reason.into(),
            );
            s.depends_on = wait_for.map(str::to_string).into_iter().collect();
            s.before = Some(shown(live));
            s.after = Some(after);
            Some(cx.push(s))
        }
        None => {
            cx.read_absent(obj.address());
            let mut s = cx.step(
                obj.address(),
                Action::Create,
                Risk::Safe,
                Operation::Create {
                    object: obj.clone(),
                    wait: Wait::None,
                },
                format!("create {}", obj.display()),
                reason.into(),
            );
            s.depends_on = wait_for.map(str::to_string).into_iter().collect();
            s.after = Some(desired);
            Some(cx.push(s))
        }
    }
}

fn http_checks(cx: &mut Ctx<'_>, resumed: &[String], verified: &[String]) {
    let checks = cx.p.spec().verify.http.clone();
    let pname = cx.p.name().to_string();
    for h in checks {
        let mut s = cx.step(
            format!("http/{pname}/{}", h.name.replace(' ', "-")),
            Action::Run,
            Risk::Safe,
            Operation::HttpCheck {
                name: h.name.clone(),
                url: h.url.clone(),
                expect_status: h.expect_status,
                contains: h.contains.clone(),
            },
            format!("GET {} expects {}", h.url, h.expect_status),
            "the application answers from the new database (seed 002's `curl /patients`)".into(),
        );
        s.depends_on = if resumed.is_empty() {
            verified.to_vec()
        } else {
            resumed.to_vec()
        };
        cx.push(s);
    }
}

fn cleanup_old_volumes(
    cx: &mut Ctx<'_>,
    old: &[(&Value, Option<&Value>)],
    verified: &[String],
    resumed: &[String],
) {
    for (pvc, pv) in old {
        let name = str_at(pvc, &["metadata", "name"]).unwrap_or_default();
        let ns = str_at(pvc, &["metadata", "namespace"]).unwrap_or_default();
        let obj = ObjectRef::new("v1", "PersistentVolumeClaim", ns, name);
        let mut s = cx.step(
            obj.address(),
            Action::Delete,
            Risk::Destructive,
            Operation::Delete {
                object: obj.clone(),
                wait: Wait::Gone,
            },
            format!("delete the old claim {}", obj.display()),
            "`cleanup.oldVolume` is set and the target is verified".into(),
        );
        s.depends_on = verified.iter().chain(resumed).cloned().collect();
        s.before = Some(shown(pvc));
        let pvc_addr = cx.push(s);
        if let Some(pv) = pv {
            let pv_name = str_at(pv, &["metadata", "name"]).unwrap_or_default();
            let obj = ObjectRef::new("v1", "PersistentVolume", "", pv_name);
            let mut s = cx.step(
                obj.address(),
                Action::Delete,
                Risk::Destructive,
                Operation::Delete {
                    object: obj.clone(),
                    wait: Wait::Gone,
                },
                format!(
                "delete the old volume {} (its data is on the target, verified)",
                obj.display()
            ),
                "a retained volume stays Released after its claim is gone; `cleanup.oldVolume` removes it".into(),
            );
            s.depends_on = vec![pvc_addr];
            s.before = Some(shown(pv));
            cx.push(s);
        }
    }
}

/// Day-2: the target StatefulSet exists; bring it to the spec in place.
fn day2(cx: &mut Ctx<'_>, kt: &KubeTarget, ns: &str, sts: &Value) {
    let t = &kt.stateful_set;
    cx.journey = Journey::Day2;
    let Some(live) = live_statefulset(cx, t, ns, sts) else {
        return;
    };
    let live_replicas = at(sts, &["spec", "replicas"])
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;

    let (expansions, mut snapshot_targets) = expand_volumes(cx, t, ns, &live, live_replicas);

    // Image and replicas.
    let mut sts_patch = json!({});
    let mut changes = Vec::new();
    let mut disruptive = false;
    if t.replicas != live_replicas {
        sts_patch["spec"]["replicas"] = json!(t.replicas);
        changes.push(format!("replicas {live_replicas} → {}", t.replicas));
        disruptive |= t.replicas < live_replicas;
    }
    if let Some(img) = &t.image {
        if let Some((containers, change)) = new_image(&live, img) {
            sts_patch["spec"]["template"]["spec"]["containers"] = containers;
            changes.push(change);
            disruptive = true;
            for i in 0..live_replicas {
                let claim = crate::names::claim_name(&live.claim_template, &t.name, i);
                if !snapshot_targets.contains(&claim) {
                    snapshot_targets.push(claim);
                }
            }
        }
    }

    // Snapshots before anything touches the volumes or restarts Postgres.
    let snap_addrs = snapshots_before_changes(cx, t, ns, &snapshot_targets);
    for mut s in expansions {
        s.depends_on = snap_addrs.clone();
        cx.push(s);
    }
    if !changes.is_empty() {
        if t.replicas > live_replicas && !t.storage.static_volumes.is_empty() {
            let class_name = live.class.clone().unwrap_or_default();
            static_volumes(cx, t, ns, &class_name, live_replicas);
        }
        let obj = ObjectRef::new("apps/v1", "StatefulSet", ns, &t.name);
        update_statefulset(cx, sts, obj, sts_patch, &changes, disruptive, &snap_addrs);
    }

    day2_headless_service(cx, ns, &live.service_name, sts);

    backup_cronjob(
        cx,
        Shape {
            t,
            ns,
            template: &live.template,
            container_name: &live.container_name,
            svc_name: &live.service_name,
            class: live.class.as_deref(),
            after: None,
        },
    );
}

/// What day 2 reads from the live StatefulSet, once the spec is found not
/// to ask for a change that cannot be made in place.
struct LiveStatefulSet {
    service_name: String,
    /// The claim template's name (`data` in `data-pg-0`).
    claim_template: String,
    /// The claims' StorageClass (`None`: the cluster's default).
    class: Option<String>,
    template: Value,
    container_name: String,
}

/// Reads the live StatefulSet and reports what cannot change in place
/// (serviceName, the claim template, the claims' class) or a pod template
/// without a Postgres container. `None` after an error.
fn live_statefulset(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    sts: &Value,
) -> Option<LiveStatefulSet> {
    let spec = cx.p.spec();
    let svc_name = str_at(sts, &["spec", "serviceName"])
        .unwrap_or(&t.name)
        .to_string();
    if let Some(wanted) = &t.service_name {
        if *wanted != svc_name {
            cx.error(
                &["target", "kubernetes", "statefulSet", "serviceName"],
                "pgplan::plan::immutable",
                format!("StatefulSet {ns}/{} uses Service `{svc_name}`; serviceName cannot change in place", t.name),
                "keep the current serviceName, or move the database to a new StatefulSet name",
            );
        }
    }
    let vct = at(sts, &["spec", "volumeClaimTemplates", "0"])
        .cloned()
        .unwrap_or(Value::Null);
    let vct_name = str_at(&vct, &["metadata", "name"])
        .unwrap_or("")
        .to_string();
    let live_class = str_at(&vct, &["spec", "storageClassName"]).map(str::to_string);
    if vct_name != t.storage.volume_claim_template {
        cx.error(
            &["target", "kubernetes", "statefulSet", "storage", "volumeClaimTemplate"],
            "pgplan::plan::immutable",
            format!("StatefulSet {ns}/{} names its claim template `{vct_name}`; volumeClaimTemplates cannot change in place", t.name),
            format!("write `volumeClaimTemplate: {vct_name}`"),
        );
        return None;
    }
    if let (Some(want), Some(have)) = (&t.storage.storage_class_name, &live_class) {
        if want != have {
            cx.error(
                &["target", "kubernetes", "statefulSet", "storage", "storageClassName"],
                "pgplan::plan::immutable",
                format!("the volumes of StatefulSet {ns}/{} are on StorageClass `{have}`; a claim's class cannot change", t.name),
                "move the data to a new StatefulSet (another name, or another volumeClaimTemplate) with this class as the target",
            );
            return None;
        }
    }
    let template = at(sts, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    let wanted = match &spec.source {
        Source::Kubernetes(k) => k.container.as_deref(),
        _ => None,
    };
    let container_name = match source::postgres_container(
        at(&template, &["spec"]).unwrap_or(&Value::Null),
        wanted,
    ) {
        Ok(c) => c.name,
        Err(problem) => {
            let p = SourceProblem::NoContainer {
                workload: format!("StatefulSet {}", t.name),
                problem,
            };
            if let Some(d) = p.container_diagnosis() {
                cx.error(d.path, d.code, d.message, d.help);
            }
            return None;
        }
    };
    Some(LiveStatefulSet {
        service_name: svc_name,
        claim_template: vct_name,
        class: live_class,
        template,
        container_name,
    })
}

/// Volume expansion of each existing claim: the patches (not yet pushed:
/// they wait for the snapshots) and the claims they change.
fn expand_volumes(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    live: &LiveStatefulSet,
    live_replicas: u32,
) -> (Vec<crate::plan::Step>, Vec<String>) {
    let class = live
        .class
        .as_deref()
        .and_then(|c| cx.idx.get("StorageClass", "", c));
    if let Some(c) = class {
        cx.read(c);
    }
    let resize = Resize {
        // Validated when the spec was loaded.
        want: cx.p.model().target_storage_bytes.unwrap_or_default(),
        expandable: class
            .and_then(|c| c.get("allowVolumeExpansion"))
            .and_then(Value::as_bool)
            == Some(true),
        class: live.class.as_deref(),
    };
    let mut expansions = Vec::new();
    let mut snapshot_targets = Vec::new();
    for i in 0..live_replicas {
        let claim = crate::names::claim_name(&live.claim_template, &t.name, i);
        let Some(pvc) = cx.idx.get("PersistentVolumeClaim", ns, &claim) else {
            continue;
        };
        cx.read(pvc);
        if let Some(s) = expand_claim(cx, t, ns, pvc, &claim, &resize) {
            expansions.push(s);
            snapshot_targets.push(claim);
        }
    }
    (expansions, snapshot_targets)
}

/// What every claim of a StatefulSet is resized against.
struct Resize<'c> {
    /// The size the spec asks for, in bytes.
    want: u64,
    /// The claims' class allows volume expansion.
    expandable: bool,
    class: Option<&'c str>,
}

/// The patch growing one claim (or finishing its earlier resize); `None`
/// when it has its size or cannot grow (an error then says why).
fn expand_claim(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    pvc: &Value,
    claim: &str,
    r: &Resize<'_>,
) -> Option<crate::plan::Step> {
    let have_q = str_at(pvc, &["spec", "resources", "requests", "storage"]).unwrap_or("0");
    let have = parse_bytes(have_q).unwrap_or(0);
    // A claim has the size its capacity says: a resize asked for but not
    // finished (e.g. FileSystemResizePending) is not converged.
    let capacity_q = str_at(pvc, &["status", "capacity", "storage"]);
    let pending = r.want == have
        && capacity_q
            .and_then(|c| parse_bytes(c).ok())
            .is_some_and(|c| c < r.want);
    if r.want < have {
        cx.error(
            &["target", "kubernetes", "statefulSet", "storage", "size"],
            "pgplan::plan::shrink",
            format!(
                "claim {ns}/{claim} has {have_q}; Kubernetes volumes cannot shrink to {}",
                t.storage.size
            ),
            format!("keep `size: {have_q}` or larger"),
        );
        return None;
    }
    if r.want == have && !pending {
        return None;
    }
    if !r.expandable && !pending {
        cx.error(
            &["target", "kubernetes", "statefulSet", "storage", "size"],
            "pgplan::plan::not-expandable",
            format!(
                "StorageClass `{}` does not allow volume expansion, so claim {ns}/{claim} cannot grow from {have_q}",
                r.class.unwrap_or("(default)")
            ),
            "set `allowVolumeExpansion: true` on the class, or move the data to a new StatefulSet",
        );
        return None;
    }
    let obj = ObjectRef::new("v1", "PersistentVolumeClaim", ns, claim);
    let patch = json!({"spec": {"resources": {"requests": {"storage": t.storage.size}}}});
    let mut after = shown(pvc);
    merge_patch(&mut after, &patch);
    let (summary, reason) = if pending {
        resize_pending(pvc, &obj, have_q, capacity_q)
    } else {
        (
            format!("grow {} from {have_q} to {}", obj.display(), t.storage.size),
            "volume expansion happens online on classes that allow it; the claim template keeps its old size (it is immutable), so pgplan compares claims, not the template",
        )
    };
    let mut s = cx.step(
        obj.address(),
        Action::Update,
        Risk::Safe,
        Operation::Patch {
            object: obj.clone(),
            patch,
        },
        summary,
        reason.into(),
    );
    s.before = Some(shown(pvc));
    s.after = Some(after);
    Some(s)
}

/// The words for a claim whose earlier resize has not finished.
fn resize_pending(
    pvc: &Value,
    obj: &ObjectRef,
    have_q: &str,
    capacity_q: Option<&str>,
) -> (String, &'static str) {
    let fs_pending = at(pvc, &["status", "conditions"])
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "FileSystemResizePending" && c["status"] == "True")
        });
    let summary = format!(
        "finish growing {}: it asks for {have_q} and has {}",
        obj.display(),
        capacity_q.unwrap_or("less")
    );
    let reason = if fs_pending {
        "the volume has grown but its file system resize is pending (FileSystemResizePending): the kubelet finishes it when a pod mounts the claim, so restart the pod that uses it if it does not"
    } else {
        "an earlier resize has not finished: the claim's capacity is still below its request"
    };
    (summary, reason)
}

/// The pod template's containers with the Postgres container on `img`,
/// and the change in words; `None` when it already runs `img`.
fn new_image(live: &LiveStatefulSet, img: &str) -> Option<(Value, String)> {
    let containers = at(&live.template, &["spec", "containers"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let live_img = containers
        .iter()
        .find(|c| str_at(c, &["name"]) == Some(live.container_name.as_str()))
        .and_then(|c| str_at(c, &["image"]));
    if live_img == Some(img) {
        return None;
    }
    let new: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if str_at(&c, &["name"]) == Some(live.container_name.as_str()) {
                c["image"] = json!(img);
            }
            c
        })
        .collect();
    Some((
        Value::Array(new),
        format!("image {} → {img}", live_img.unwrap_or("?")),
    ))
}

/// `backup.snapshots.beforeChanges`: a VolumeSnapshot of each claim a
/// change touches, ready before the change. Returns their steps.
fn snapshots_before_changes(
    cx: &mut Ctx<'_>,
    t: &StatefulSetTarget,
    ns: &str,
    snapshot_targets: &[String],
) -> Vec<String> {
    let spec = cx.p.spec();
    let mut snap_addrs = Vec::new();
    if let Some(sn) = &spec.backup.snapshots {
        if sn.before_changes {
            for claim in snapshot_targets {
                let tag = crate::observed::secret_fingerprint([(
                    "change",
                    format!("{}|{:?}", t.storage.size, t.image).as_bytes(),
                )]);
                let short = tag
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(8)
                    .collect::<String>();
                let name = format!("{claim}-pgplan-{short}");
                let existing = cx.idx.get("VolumeSnapshot", ns, &name);
                // Only a snapshot that is ready to use is a point to return to;
                // one that exists and is not ready is waited for again.
                if existing.is_some_and(|e| e["status"]["readyToUse"] == json!(true)) {
                    continue;
                }
                let desired = manifests::volume_snapshot(cx.p, &name, ns, &sn.class_name, claim);
                let obj = ObjectRef::new("snapshot.storage.k8s.io/v1", "VolumeSnapshot", ns, &name);
                match existing {
                    Some(e) => cx.read(e),
                    None => cx.read_absent(obj.address()),
                }
                let mut s = cx.step(
                    obj.address(),
                    Action::Create,
                    Risk::Safe,
                    Operation::Create {
                        object: obj.clone(),
                        wait: Wait::Ready,
                    },
                    format!("snapshot claim {ns}/{claim} before changing it"),
                    "`backup.snapshots.beforeChanges`: a point to return to if the change goes wrong".into(),
                );
                s.after = Some(desired);
                snap_addrs.push(cx.push(s));
            }
        }
    }
    snap_addrs
}

/// The StatefulSet patched with the image and replica `changes`, after the
/// snapshots.
fn update_statefulset(
    cx: &mut Ctx<'_>,
    sts: &Value,
    sts_obj: ObjectRef,
    sts_patch: Value,
    changes: &[String],
    disruptive: bool,
    snapshots: &[String],
) {
    let mut after = shown(sts);
    merge_patch(&mut after, &sts_patch);
    let mut s = cx.step(
        sts_obj.address(),
        Action::Update,
        if disruptive {
            Risk::Disruptive
        } else {
            Risk::Safe
        },
        Operation::Patch {
            object: sts_obj.clone(),
            patch: sts_patch,
        },
        format!("update {}: {}", sts_obj.display(), changes.join(", ")),
        if disruptive {
            "pods restart one at a time (OrderedReady), so Postgres is briefly unavailable".into()
        } else {
            "new pods get their own claims; existing pods are untouched".into()
        },
    );
    s.depends_on = snapshots.to_vec();
    s.before = Some(shown(sts));
    s.after = Some(after);
    cx.push(s);
}

/// The headless Service the StatefulSet names, created when it is missing.
fn day2_headless_service(cx: &mut Ctx<'_>, ns: &str, svc_name: &str, sts: &Value) {
    let live_svc = cx.idx.get("Service", ns, svc_name);
    match live_svc {
        Some(l) => cx.read(l),
        None => {
            let selector = at(sts, &["spec", "selector", "matchLabels"])
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let desired =
                manifests::headless_service(cx.p, svc_name, ns, &selector, None, Some(sts));
            let obj = ObjectRef::new("v1", "Service", ns, svc_name);
            cx.read_absent(obj.address());
            let mut s = cx.step(
                obj.address(),
                Action::Create,
                Risk::Safe,
                Operation::Create {
                    object: obj.clone(),
                    wait: Wait::None,
                },
                format!("create headless {}", obj.display()),
                "the StatefulSet names this Service, and it does not exist".into(),
            );
            s.after = Some(desired);
            cx.push(s);
        }
    }
}
