//! The planner on plain data: each step appears for its reason and only
//! then, a state that already matches plans to no changes, and the safety
//! invariant holds on every plan.

use std::collections::{BTreeMap, HashSet};

use pgplan::diff::{self, Inputs};
use pgplan::observed::{self, Observed};
use pgplan::plan::{Action, Operation, Plan, Risk};
use pgplan::spec::{self, LoadOptions, Spec};
use serde_json::{json, Value};

pub const TEST_PASSWORD: &str = "test-master-password";

fn env(name: &str) -> Option<String> {
    (name == "RDS_MASTER_PASSWORD").then(|| TEST_PASSWORD.to_string())
}

pub fn example_files(name: &str) -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    (
        std::fs::read_to_string(dir.join("pgplan.yaml")).expect("example spec"),
        std::fs::read_to_string(dir.join("live.yaml")).expect("example live state"),
    )
}

pub fn load_spec(text: &str, environment: Option<&str>) -> Spec {
    let opts = LoadOptions {
        environment,
        all_environments: false,
        lookup: &env,
    };
    match spec::load(spec::SourceFile::new("pgplan.yaml", text), &opts) {
        Ok(s) => s,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    }
}

pub fn files() -> BTreeMap<String, String> {
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/backstage-to-rds/rds-ca.pem");
    BTreeMap::from([(
        "rds-ca.pem".to_string(),
        std::fs::read_to_string(ca).expect("ca"),
    )])
}

pub fn try_plan(spec: &Spec, observed: &Observed) -> Result<Plan, diff::PlanError> {
    let files = files();
    let plan = diff::plan(
        spec,
        &Inputs {
            observed,
            env: &env,
            files: &files,
        },
    )?;
    assert_one_writer(&plan, observed);
    Ok(plan)
}

/// The identity of a manifest: kind, namespace, name.
fn identity(m: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&m["kind"]),
        s(&m["metadata"]["namespace"]),
        s(&m["metadata"]["name"]),
    )
}

/// No plan puts two writable PostgreSQL servers behind one Service: in the
/// world the plan leaves (the live objects, with every manifest a step
/// writes in place of its live one and every deleted one gone), no Service
/// selects the pods of a server workload with more than one replica.
/// Until standbys exist every replica is a writable server of its own.
pub fn assert_one_writer(plan: &Plan, observed: &Observed) {
    let mut world: BTreeMap<(String, String, String), Value> = observed
        .kubernetes
        .objects
        .iter()
        .map(|m| (identity(m), m.clone()))
        .collect();
    for s in &plan.steps {
        match (&s.operation, &s.after) {
            (Operation::Delete { .. }, _) => {
                if let Some(b) = &s.before {
                    world.remove(&identity(b));
                }
            }
            (_, Some(after)) if after["kind"].is_string() => {
                world.insert(identity(after), after.clone());
            }
            _ => {}
        }
    }
    let servers = world.values().filter(|m| {
        matches!(m["kind"].as_str(), Some("StatefulSet" | "Deployment"))
            && m["spec"]["template"]["spec"]["containers"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["image"]
                            .as_str()
                            .is_some_and(|i| i.contains("postgres") || i.contains("postgis"))
                    })
                })
    });
    for server in servers {
        let replicas = server["spec"]["replicas"].as_u64().unwrap_or(1);
        if replicas < 2 {
            continue;
        }
        let labels = &server["spec"]["template"]["metadata"]["labels"];
        for svc in world.values().filter(|m| {
            m["kind"] == "Service" && m["metadata"]["namespace"] == server["metadata"]["namespace"]
        }) {
            let Some(selector) = svc["spec"]["selector"].as_object() else {
                continue;
            };
            let selects = !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v);
            assert!(
                !selects,
                "{} puts {replicas} writable servers ({:?}) behind Service {:?}",
                plan.steps
                    .first()
                    .map_or("the plan", |s| s.placement.as_str()),
                identity(server),
                identity(svc)
            );
        }
    }
}

pub fn plan_of(spec: &Spec, observed: &Observed) -> Plan {
    match try_plan(spec, observed) {
        Ok(p) => p,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    }
}

fn example(name: &str, environment: Option<&str>) -> (Spec, Observed) {
    let (s, l) = example_files(name);
    (
        load_spec(&s, environment),
        observed::load_snapshot("live.yaml", l.as_bytes()).expect("snapshot"),
    )
}

fn addresses(plan: &Plan) -> Vec<&str> {
    plan.steps.iter().map(|s| s.address.as_str()).collect()
}

/// A diagnostic as one unwrapped text, for assertions.
pub fn error_text(e: impl miette::Diagnostic) -> String {
    let mut out = String::new();
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(10_000)
            .with_links(false);
    handler
        .render_report(&mut out, &e)
        .expect("render diagnostic");
    out
}

/// Apply a plan's effects to the observed state, the way a successful apply
/// would leave it, so that planning again must find nothing to do.
fn simulate(mut o: Observed, plan: &Plan) -> Observed {
    use pgplan::observed::ObjectKey;
    let remove = |o: &mut Observed, key: &ObjectKey| {
        o.kubernetes
            .objects
            .retain(|m| ObjectKey::of(m).as_ref() != Some(key))
    };
    let find = |o: &mut Observed, key: &ObjectKey| -> Option<usize> {
        o.kubernetes
            .objects
            .iter()
            .position(|m| ObjectKey::of(m).as_ref() == Some(key))
    };
    let key_of = |r: &pgplan::plan::ObjectRef| ObjectKey::new(&r.kind, &r.namespace, &r.name);
    for step in &plan.steps {
        match &step.operation {
            Operation::Create { object, .. } | Operation::Replace { object, .. } => {
                let manifest = step.after.as_ref().expect("creates carry their manifest");
                remove(&mut o, &key_of(object));
                o.kubernetes.objects.push(manifest.clone());
                if object.kind == "StatefulSet" {
                    // The controller's claims, bound.
                    let t = &manifest["spec"]["volumeClaimTemplates"][0];
                    let claim = format!(
                        "{}-{}-0",
                        t["metadata"]["name"].as_str().unwrap(),
                        object.name
                    );
                    let mut spec = t["spec"].clone();
                    spec["volumeName"] = json!(format!("pv-{claim}"));
                    o.kubernetes.objects.push(json!({
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim, "namespace": object.namespace}, "spec": spec,
                    }));
                }
            }
            Operation::Delete { object, .. } => remove(&mut o, &key_of(object)),
            Operation::Patch { object, patch, .. } => {
                if let Some(i) = find(&mut o, &key_of(object)) {
                    pgplan::diff::manifests::merge_patch(&mut o.kubernetes.objects[i], patch);
                }
            }
            Operation::Scale {
                object, to, field, ..
            } => {
                if let Some(i) = find(&mut o, &key_of(object)) {
                    let path = field.clone().unwrap_or_else(|| "spec.replicas".into());
                    pgplan::diff::manifests::set_field(
                        &mut o.kubernetes.objects[i],
                        &path,
                        json!(to),
                    );
                }
            }
            Operation::ProtectVolume { volume, .. } => {
                if let Some(i) = find(&mut o, &key_of(volume)) {
                    o.kubernetes.objects[i]["spec"]["persistentVolumeReclaimPolicy"] =
                        json!("Retain");
                }
            }
            Operation::Secret {
                object,
                fingerprint,
                ..
            } => {
                remove(&mut o, &key_of(object));
                o.kubernetes.objects.push(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": object.name, "namespace": object.namespace,
                                 "annotations": {observed::FINGERPRINT_ANNOTATION: fingerprint}},
                }));
            }
            Operation::CreateRdsInstance { settings, .. } => {
                o.rds.instances.push(observed::RdsInstance {
                    region: settings.region.clone(),
                    identifier: settings.identifier.clone(),
                    engine: "postgres".into(),
                    engine_version: settings.engine_version.clone(),
                    instance_class: settings.instance_class.clone(),
                    allocated_storage: settings.allocated_storage,
                    storage_encrypted: settings.storage_encrypted,
                    deletion_protection: settings.deletion_protection,
                    multi_az: settings.multi_az,
                    publicly_accessible: settings.publicly_accessible,
                    status: "available".into(),
                    endpoint: Some(observed::Endpoint {
                        address: format!(
                            "{}.abc.{}.rds.amazonaws.com",
                            settings.identifier, settings.region
                        ),
                        port: 5432,
                    }),
                    master_username: Some(settings.master_username.clone()),
                    tags: settings.tags.clone(),
                })
            }
            Operation::Restore {
                server, database, ..
            } => {
                let src = o
                    .servers
                    .iter()
                    .flat_map(|s| s.databases.iter())
                    .find(|d| d.name == database.name)
                    .cloned()
                    .expect("restored database exists on the source");
                let locator = server.locator().to_string();
                match o.servers.iter_mut().find(|s| s.locator == locator) {
                    Some(s) => s.databases.push(src),
                    None => o.servers.push(observed::ServerInventory {
                        locator,
                        version: "15".into(),
                        roles: Vec::new(),
                        databases: vec![src],
                        sessions: Vec::new(),
                        transactions: Vec::new(),
                    }),
                }
            }
            _ => {}
        }
    }
    // The connection Secret is written at apply with the endpoint; a fresh
    // plan computes its fingerprint from the same values.
    let o2 = o.clone();
    let inst = o2.rds.instances.first();
    for m in o.kubernetes.objects.iter_mut() {
        if m["kind"] == "Secret"
            && m["metadata"]["annotations"][observed::FINGERPRINT_ANNOTATION] == "resolved at apply"
        {
            let host = inst
                .and_then(|i| i.endpoint.as_ref())
                .map(|e| e.address.clone())
                .unwrap_or_default();
            m["metadata"]["annotations"][observed::FINGERPRINT_ANNOTATION] =
                json!(observed::secret_fingerprint([
                    ("POSTGRES_HOST", host.as_bytes()),
                    ("POSTGRES_PASSWORD", TEST_PASSWORD.as_bytes()),
                    ("POSTGRES_PORT", b"5432".as_slice()),
                    ("POSTGRES_USER", b"postgres".as_slice()),
                ]));
        }
    }
    o
}

/// No step that can lose data may run before a verified backup, and no
/// source object is deleted before every database is verified.
fn assert_safe(plan: &Plan) {
    let pos: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.address.as_str(), i))
        .collect();
    let ancestors = |i: usize| -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut todo = vec![i];
        while let Some(j) = todo.pop() {
            for d in &plan.steps[j].depends_on {
                let k = pos[d.as_str()];
                if seen.insert(k) {
                    todo.push(k);
                }
            }
        }
        seen
    };
    for (i, s) in plan.steps.iter().enumerate() {
        let of_placement = |pred: fn(&Operation) -> bool| -> Vec<usize> {
            (0..plan.steps.len())
                .filter(|&j| {
                    plan.steps[j].placement == s.placement && pred(&plan.steps[j].operation)
                })
                .collect()
        };
        let backups = of_placement(|o| matches!(o, Operation::Backup { .. }));
        let verifies = of_placement(|o| matches!(o, Operation::Verify { .. }));
        if s.risk == Risk::Destructive || (s.action == Action::Delete && !backups.is_empty()) {
            let a = ancestors(i);
            assert!(
                backups.iter().all(|b| a.contains(b)),
                "{} runs without every backup before it",
                s.address
            );
        }
        if s.risk == Risk::Destructive && s.reason.contains("cleanup") {
            let a = ancestors(i);
            assert!(
                verifies.iter().all(|v| a.contains(v)),
                "{} cleans up before every verify",
                s.address
            );
        }
        for d in &s.depends_on {
            assert!(
                pos[d.as_str()] < i,
                "{} is ordered before its dependency {d}",
                s.address
            );
        }
    }
}

/// `loadTuning`: auto tunes (restarting for minimal WAL) from 256 MiB to
/// load and not at all below, restart and reload force tuning either way,
/// off plans none; untune sits between every restore and every verify.
#[test]
fn load_tuning_modes_decide_the_restart() {
    let (s, l) = example_files("healthcare");
    let tuned = |mode: Option<&str>, size: u64| -> Option<(bool, bool, String)> {
        let text = match mode {
            Some(m) => s.replace(
                "        replicas: 1\n",
                &format!("        replicas: 1\n        loadTuning: {m}\n"),
            ),
            None => s.clone(),
        };
        assert!(mode.is_none() || text != s, "the spec took the mode");
        let live = l.replace("sizeBytes: 7724391", &format!("sizeBytes: {size}"));
        let plan = plan_of(
            &load_spec(&text, None),
            &observed::load_snapshot("live.yaml", live.as_bytes()).unwrap(),
        );
        let tune = plan.step("pg/healthcare/tune-for-loading")?;
        let untune = plan.step("pg/healthcare/untune").expect("untune with tune");
        assert_eq!(untune.depends_on, ["pg/healthcare/healthcare/restore"]);
        assert_eq!(
            plan.step("pg/healthcare/healthcare/verify")
                .unwrap()
                .depends_on,
            ["pg/healthcare/untune"]
        );
        let (
            Operation::TuneForLoading { minimal_wal: a, .. },
            Operation::UntuneAfterLoading { minimal_wal: b, .. },
        ) = (&tune.operation, &untune.operation)
        else {
            panic!("tune steps with other operations");
        };
        Some((*a, *b, format!("{} / {}", tune.summary, tune.reason)))
    };
    let mib = 1u64 << 20;
    assert!(
        tuned(None, 7 * mib).is_none(),
        "auto loads 7 MiB on the server's own settings"
    );
    let (spec, live) = example("healthcare", None);
    let plan = plan_of(&spec, &live);
    let why = &plan
        .step("pg/healthcare/healthcare/restore")
        .unwrap()
        .reason;
    assert!(
        why.contains(
            "own settings: `loadTuning: auto` tunes from 256 MiB to load, and there is 7.4 MiB"
        ),
        "the restore says why nothing is tuned: {why}"
    );
    assert!(tuned(None, 256 * mib - 1).is_none());
    assert!(tuned(None, 256 * mib).unwrap().0, "from 256 MiB, restarts");
    let (small, _, why) = tuned(Some("reload"), 7 * mib).unwrap();
    assert!(!small, "reload does not restart");
    assert!(
        why.contains("by reload") && why.contains("`loadTuning: reload`"),
        "{why}"
    );
    let (big, back, why) = tuned(None, 300 * mib).unwrap();
    assert!(big && back, "300 MiB restarts for minimal WAL, and back");
    assert!(
        why.contains("minimal WAL") && why.contains("restarts it"),
        "{why}"
    );
    assert!(why.contains("300 MiB"), "{why}");
    assert!(tuned(Some("restart"), 7 * mib).unwrap().0);
    assert!(!tuned(Some("reload"), 300 * mib).unwrap().0);
    assert!(
        tuned(Some("off"), 300 * mib).is_none(),
        "off plans no tuning"
    );
}

#[test]
fn healthcare_steps_in_order_with_reasons() {
    let (spec, live) = example("healthcare", None);
    let plan = plan_of(&spec, &live);
    assert_eq!(
        addresses(&plan),
        [
            "k8s/PersistentVolume/postgres-pv:protect",
            "k8s/PersistentVolume/postgres-pv-0",
            "k8s/default/Deployment/healthcare-api:quiesce",
            "pg/healthcare/healthcare/backup",
            "k8s/default/Deployment/postgres",
            "k8s/default/Service/postgres",
            "k8s/default/StatefulSet/postgres",
            "pg/healthcare/prepare",
            "pg/healthcare/healthcare/restore",
            "pg/healthcare/healthcare/verify",
            "k8s/default/Pod/postgres-0:self-heal",
            "k8s/default/Deployment/healthcare-api:resume",
        ]
    );
    let step = |a: &str| plan.step(a).unwrap();
    assert_eq!(step("k8s/default/Service/postgres").action, Action::Replace);
    assert_eq!(
        step("k8s/default/Deployment/postgres").risk,
        Risk::Disruptive
    );
    assert_eq!(plan.placements[0].downtime, Some((3, 12)));
    // The StatefulSet keeps the Deployment's labels, env and image, mounts the claim template.
    let sts = step("k8s/default/StatefulSet/postgres");
    assert!(matches!(sts.operation, Operation::Create { .. }));
    let manifest = sts.after.as_ref().unwrap();
    assert_eq!(
        manifest["spec"]["selector"]["matchLabels"],
        json!({"app": "postgres"})
    );
    assert_eq!(
        manifest["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "postgres-storage"
    );
    let c = &manifest["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "postgres:15");
    assert_eq!(
        c["volumeMounts"][0],
        json!({"name": "postgres-storage", "mountPath": "/var/lib/postgresql/data"})
    );
    assert!(
        manifest["spec"]["template"]["spec"]
            .get("volumes")
            .is_none(),
        "the old claim is not mounted"
    );
    let pv = step("k8s/PersistentVolume/postgres-pv-0")
        .after
        .as_ref()
        .unwrap();
    assert_eq!(
        pv["spec"]["claimRef"]["name"],
        "postgres-storage-postgres-0"
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"],
        json!(["node2"])
    );
    assert_eq!(plan.summary().bytes, 7_724_391);
    assert_safe(&plan);
}

#[test]
fn applying_a_plan_converges_to_no_changes() {
    for (name, envs) in [
        ("healthcare", vec![None]),
        ("backstage-to-rds", vec![None]),
        (
            "pyairtable",
            vec![Some("dev"), Some("staging"), Some("prod")],
        ),
    ] {
        for e in envs {
            let (spec, live) = example(name, e);
            let plan = plan_of(&spec, &live);
            assert_safe(&plan);
            let after = simulate(live, &plan);
            let again = plan_of(&spec, &after);
            assert!(
                again.steps.is_empty(),
                "{name} {e:?} still plans {:?}",
                addresses(&again)
            );
        }
    }
}

#[test]
fn protect_step_only_when_the_old_volume_would_be_deleted() {
    let (spec, mut live) = example("healthcare", None);
    for o in live.kubernetes.objects.iter_mut() {
        if o["kind"] == "PersistentVolume" {
            o["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
        }
    }
    let plan = plan_of(&spec, &live);
    assert!(!addresses(&plan).iter().any(|a| a.ends_with(":protect")));
}

#[test]
fn an_emptydir_source_makes_deleting_it_destructive() {
    let (spec, mut live) = example("healthcare", None);
    for o in live.kubernetes.objects.iter_mut() {
        if o["kind"] == "Deployment" && o["metadata"]["name"] == "postgres" {
            o["spec"]["template"]["spec"]["volumes"] =
                json!([{"name": "postgres-storage", "emptyDir": {}}]);
        }
    }
    let plan = plan_of(&spec, &live);
    let del = plan.step("k8s/default/Deployment/postgres").unwrap();
    assert_eq!(del.risk, Risk::Destructive);
    assert!(del.reason.contains("emptyDir"), "{}", del.reason);
    assert!(!addresses(&plan).iter().any(|a| a.ends_with(":protect")));
    assert_safe(&plan);
}

#[test]
fn a_class_with_a_provisioner_needs_no_static_volume() {
    let (spec, mut live) = example("healthcare", None);
    for o in live.kubernetes.objects.iter_mut() {
        if o["kind"] == "StorageClass" {
            o["provisioner"] = json!("rancher.io/local-path");
        }
    }
    let plan = plan_of(&spec, &live);
    assert!(!addresses(&plan).contains(&"k8s/PersistentVolume/postgres-pv-0"));
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
}

#[test]
fn no_provisioner_and_no_static_volumes_is_a_located_error() {
    let (text, live) = example_files("healthcare");
    let text = text.replace(
        "          staticVolumes:\n            - name: postgres-pv-0\n              node: node2\n              path: /data/postgres-0\n",
        "",
    );
    let spec = load_spec(&text, None);
    let live = observed::load_snapshot("live.yaml", live.as_bytes()).unwrap();
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::no-provisioner"), "{err}");
    assert!(err.contains("pgplan.yaml:21:9"), "{err}");
}

#[test]
fn a_static_volume_on_the_old_directory_is_refused() {
    let (text, live) = example_files("healthcare");
    let spec = load_spec(
        &text.replace("path: /data/postgres-0", "path: /data/postgres"),
        None,
    );
    let live = observed::load_snapshot("live.yaml", live.as_bytes()).unwrap();
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::volume-path-in-use"), "{err}");
    assert!(
        err.contains("`postgres-pv` already uses /data/postgres"),
        "{err}"
    );
}

#[test]
fn missing_source_and_target_is_an_error_not_a_panic() {
    let (spec, mut live) = example("healthcare", None);
    live.kubernetes
        .objects
        .retain(|o| o["kind"] != "Deployment" || o["metadata"]["name"] != "postgres");
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::source-missing"), "{err}");
    assert!(err.contains("nothing to move"), "{err}");
}

#[test]
fn source_and_target_both_present_is_refused() {
    let (spec, live) = example("healthcare", None);
    let plan = plan_of(&spec, &live);
    let manifest = plan
        .step("k8s/default/StatefulSet/postgres")
        .unwrap()
        .after
        .as_ref()
        .unwrap();
    let mut live = live;
    live.kubernetes.objects.push(manifest.clone());
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::both-exist"), "{err}");
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn a_missing_database_gets_did_you_mean() {
    let (text, live) = example_files("healthcare");
    let text = text
        .replace(
            "    - healthcare\n  consumers",
            "    - healthcar\n  consumers",
        )
        .replace("database: healthcare", "database: healthcar");
    let spec = load_spec(&text, None);
    let live = observed::load_snapshot("live.yaml", live.as_bytes()).unwrap();
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("database `healthcar` does not exist"), "{err}");
    assert!(err.contains("did you mean `healthcare`?"), "{err}");
}

#[test]
fn backstage_moves_every_plugin_database_and_unlocks_only_locked_ones() {
    let (spec, live) = example("backstage-to-rds", None);
    let plan = plan_of(&spec, &live);
    let backups: Vec<&str> = addresses(&plan)
        .into_iter()
        .filter(|a| a.ends_with("/backup"))
        .collect();
    assert_eq!(backups.len(), 6, "{backups:?}");
    let unlocks: Vec<&str> = addresses(&plan)
        .into_iter()
        .filter(|a| a.ends_with("/knex-unlock"))
        .collect();
    assert_eq!(
        unlocks,
        [
            "pg/backstage/backstage_plugin_auth/knex-unlock",
            "pg/backstage/backstage_plugin_search/knex-unlock"
        ]
    );
    let Operation::ReleaseKnexLocks { tables, .. } = &plan.step(unlocks[1]).unwrap().operation
    else {
        panic!()
    };
    assert_eq!(
        tables,
        &["public.backstage_backend_tasks__knex_migrations_lock"]
    );
    let Operation::PrepareTarget {
        roles,
        strip_superuser,
        ..
    } = &plan.step("pg/backstage/prepare").unwrap().operation
    else {
        panic!()
    };
    assert!(strip_superuser);
    assert!(roles.iter().all(|r| !r.superuser));
    let Operation::Patch { patch, .. } = &plan
        .step("k8s/backstage/Backstage/developer-hub:reconfigure")
        .unwrap()
        .operation
    else {
        panic!()
    };
    assert_eq!(patch["spec"]["database"]["enableLocalDb"], false);
    assert_eq!(
        patch["spec"]["application"]["extraEnvs"]["secrets"],
        json!([{"name": "backstage-rds-credentials"}])
    );
    assert_eq!(
        patch["spec"]["application"]["extraFiles"]["secrets"],
        json!([{"name": "backstage-rds-ca", "key": "postgres-crt.pem"}])
    );
    // Cleanup only after the consumer is back on RDS.
    let cleanup = plan
        .position("k8s/backstage/PersistentVolumeClaim/data-backstage-psql-developer-hub-0")
        .unwrap();
    assert!(
        cleanup
            > plan
                .position("k8s/backstage/Backstage/developer-hub:resume")
                .unwrap()
    );
    assert_eq!(plan.summary().databases, 6);
    assert_safe(&plan);
}

#[test]
fn backstage_without_cleanup_keeps_the_local_database() {
    let (text, live) = example_files("backstage-to-rds");
    let spec = load_spec(
        &text.replace("localDatabase: true", "localDatabase: false"),
        None,
    );
    let live = observed::load_snapshot("live.yaml", live.as_bytes()).unwrap();
    let plan = plan_of(&spec, &live);
    assert!(
        !plan.steps.iter().any(|s| s.risk == Risk::Destructive),
        "{:?}",
        addresses(&plan)
    );
}

#[test]
fn a_non_empty_different_target_database_is_never_overwritten() {
    let (spec, mut live) = example("backstage-to-rds", None);
    let mut db = live.servers[0].databases[0].clone();
    db.tables[0].rows += 10;
    live.servers.push(observed::ServerInventory {
        locator: "rds/us-east-1/backstage-prod".into(),
        version: "15.4".into(),
        roles: Vec::new(),
        databases: vec![db],
        sessions: Vec::new(),
        transactions: Vec::new(),
    });
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::target-not-empty"), "{err}");
}

#[test]
fn an_unmanaged_instance_is_not_adopted_silently() {
    let (spec, mut live) = example("backstage-to-rds", None);
    let plan = plan_of(&spec, &live);
    let after = simulate(live.clone(), &plan);
    live.rds.instances = after.rds.instances;
    live.rds.instances[0].tags.clear();
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::not-managed"), "{err}");
    assert!(err.contains("adopt: true"), "{err}");
}

#[test]
fn rds_changes_are_snapshotted_first_and_shrinking_is_refused() {
    let (spec, live) = example("backstage-to-rds", None);
    let after = simulate(live, &plan_of(&spec, &example("backstage-to-rds", None).1));
    let mut bigger = after.clone();
    bigger.rds.instances[0].instance_class = "db.t3.small".into();
    let plan = plan_of(&spec, &bigger);
    assert_eq!(addresses(&plan).len(), 2, "{:?}", addresses(&plan));
    assert!(addresses(&plan)[0].contains("/snapshot/backstage-prod-pgplan-"));
    assert_eq!(plan.steps[1].depends_on, [plan.steps[0].address.clone()]);
    let mut smaller = after;
    smaller.rds.instances[0].allocated_storage = 200;
    let err = error_text(try_plan(&spec, &smaller).unwrap_err());
    assert!(
        err.contains("cannot shrink from 200 GiB to 100 GiB"),
        "{err}"
    );
}

#[test]
fn pyairtable_environments_plan_what_differs() {
    let (spec, live) = example("pyairtable", Some("dev"));
    assert!(plan_of(&spec, &live).steps.is_empty());
    let (spec, live) = example("pyairtable", Some("staging"));
    let plan = plan_of(&spec, &live);
    let a = addresses(&plan);
    assert!(a[0].starts_with("k8s/pyairtable-staging/VolumeSnapshot/postgres-storage-pyairtable-stack-postgres-0-pgplan-"), "{a:?}");
    assert_eq!(
        a[1],
        "k8s/pyairtable-staging/PersistentVolumeClaim/postgres-storage-pyairtable-stack-postgres-0"
    );
    assert_eq!(plan.steps[1].depends_on, [a[0].to_string()]);
    assert!(a.contains(&"k8s/pyairtable-staging/CronJob/pyairtable-stack-postgres-backup"));
    let (spec, live) = example("pyairtable", Some("prod"));
    let plan = plan_of(&spec, &live);
    // Prod differs only in the CronJob's retention (14 → 30 days).
    assert_eq!(
        addresses(&plan),
        ["k8s/pyairtable-prod/CronJob/pyairtable-stack-postgres-backup"]
    );
    assert_eq!(plan.steps[0].action, Action::Update);
    let after: &Value = plan.steps[0].after.as_ref().unwrap();
    let script = after["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        ["command"][2]
        .as_str()
        .unwrap();
    assert!(script.contains("-mtime +30"), "{script}");
}

#[test]
fn changing_the_storage_class_in_place_is_explained() {
    let (text, live) = example_files("pyairtable");
    let spec = load_spec(
        &text.replace(
            "storageClassName: postgres-dev-ssd",
            "storageClassName: fast",
        ),
        Some("dev"),
    );
    let live = observed::load_snapshot("live.yaml", live.as_bytes()).unwrap();
    let err = error_text(try_plan(&spec, &live).unwrap_err());
    assert!(err.contains("pgplan::plan::immutable"), "{err}");
    assert!(err.contains("a claim's class cannot change"), "{err}");
}

#[test]
fn a_thousand_databases_in_a_hundred_placements_plan() {
    let (spec, live) = generated(100, 10);
    let plan = plan_of(&spec, &live);
    assert_eq!(plan.summary().databases, 1000);
    assert_safe(&plan);
}

/// A generated spec: `placements` healthcare-like placements of `dbs` databases each.
pub fn generated(placements: usize, dbs: usize) -> (Spec, Observed) {
    let (spec, live) = pgplan::examples::generated(placements, dbs);
    (
        load_spec(&spec, None),
        observed::load_snapshot("live.yaml", live.as_bytes()).expect("generated snapshot"),
    )
}

/// Passwords are read at apply (issue 14.12): without the variable, the
/// spec loads, the plan is the same on every run, and a connection Secret
/// that exists is an update whose summary says its value is resolved and
/// compared at apply; with the variable, the converged world plans nothing.
#[test]
fn a_plan_without_the_password_variable_is_deterministic_and_says_when_it_compares() {
    let (s, l) = example_files("backstage-to-rds");
    let unset = |_: &str| None::<String>;
    let spec = spec::load(
        spec::SourceFile::new("pgplan.yaml", s.as_str()),
        &LoadOptions {
            environment: None,
            all_environments: false,
            lookup: &unset,
        },
    )
    .expect("loads without RDS_MASTER_PASSWORD");
    let live = observed::load_snapshot("live.yaml", l.as_bytes()).unwrap();
    let converged = simulate(
        live,
        &plan_of(
            &spec,
            &observed::load_snapshot("live.yaml", l.as_bytes()).unwrap(),
        ),
    );
    assert!(plan_of(&spec, &converged).steps.is_empty());
    let files = files();
    let without = || {
        diff::plan(
            &spec,
            &Inputs {
                observed: &converged,
                env: &unset,
                files: &files,
            },
        )
        .expect("plans without RDS_MASTER_PASSWORD")
    };
    let plan = without();
    assert_eq!(plan, without(), "deterministic");
    assert_eq!(
        addresses(&plan),
        ["k8s/backstage/Secret/backstage-rds-credentials"]
    );
    let step = &plan.steps[0];
    assert_eq!(step.action, Action::Update);
    assert_eq!(
        step.summary,
        "update Secret backstage/backstage-rds-credentials (keys POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD) if its data differs: POSTGRES_PASSWORD is read from `${RDS_MASTER_PASSWORD}` at apply and the data compared then"
    );
    let Operation::Secret { fingerprint, .. } = &step.operation else {
        panic!("{:?}", step.operation)
    };
    assert_eq!(fingerprint, "resolved at apply");
}

// ---------------------------------------------------------------------------
// Labels, selectors and objects other tools keep in sync (issue 14, items 4,
// 10 and 19).

/// The live object of a kind and name in the observed state.
fn live_object<'o>(o: &'o mut Observed, kind: &str, name: &str) -> &'o mut Value {
    o.kubernetes
        .objects
        .iter_mut()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in the live state"))
}

/// The healthcare example's live state with a source labelled as teams
/// label theirs: recommended `app.kubernetes.io/*` labels, a team label and
/// an annotation, plus what the server and kubectl set; the pods carry more
/// labels than the Deployment selects on.
fn labelled_healthcare() -> (Spec, Observed) {
    let (spec, mut live) = example("healthcare", None);
    let dep = live_object(&mut live, "Deployment", "postgres");
    dep["metadata"]["labels"] = json!({
        "app": "postgres",
        "app.kubernetes.io/name": "postgres",
        "app.kubernetes.io/component": "database",
        "app.kubernetes.io/part-of": "healthcare",
        "team": "clinical-data",
    });
    dep["metadata"]["annotations"] = json!({
        "owner": "clinical-data@example.com",
        "deployment.kubernetes.io/revision": "3",
        "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}",
    });
    dep["spec"]["template"]["metadata"]["labels"] = json!({
        "app": "postgres",
        "app.kubernetes.io/name": "postgres",
        "team": "clinical-data",
    });
    let svc = live_object(&mut live, "Service", "postgres");
    svc["metadata"]["labels"] = json!({
        "app": "postgres",
        "app.kubernetes.io/name": "postgres",
        "team": "clinical-data",
    });
    svc["metadata"]["annotations"] = json!({"prometheus.io/scrape": "true"});
    (spec, live)
}

fn text_of(plan: &Plan) -> String {
    pgplan::render::render(
        plan,
        pgplan::render::Format::Text,
        &pgplan::redact::Redactor::default(),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn the_statefulset_and_service_keep_the_sources_labels_and_selectors() {
    let (spec, live) = labelled_healthcare();
    let plan = plan_of(&spec, &live);
    assert_safe(&plan);
    let sts = plan
        .step("k8s/default/StatefulSet/postgres")
        .unwrap()
        .after
        .as_ref()
        .unwrap();
    assert_eq!(
        sts["metadata"]["labels"],
        json!({
            "app": "postgres",
            "app.kubernetes.io/name": "postgres",
            "app.kubernetes.io/component": "database",
            "app.kubernetes.io/part-of": "healthcare",
            "team": "clinical-data",
            "app.kubernetes.io/managed-by": "pgplan",
            "pgplan.dev/placement": "healthcare",
        })
    );
    assert_eq!(
        sts["metadata"]["annotations"],
        json!({"owner": "clinical-data@example.com"}),
        "server-set and kubectl annotations are not carried"
    );
    // The Deployment's selector, not every label of its pods; the pods
    // carry the source pods' labels.
    assert_eq!(
        sts["spec"]["selector"],
        json!({"matchLabels": {"app": "postgres"}})
    );
    assert_eq!(
        sts["spec"]["template"]["metadata"]["labels"],
        json!({"app": "postgres", "app.kubernetes.io/name": "postgres", "team": "clinical-data"})
    );

    let step = plan.step("k8s/default/Service/postgres").unwrap();
    assert_eq!(step.action, Action::Replace);
    let svc = step.after.as_ref().unwrap();
    assert_eq!(
        svc["metadata"]["labels"],
        json!({
            "app": "postgres",
            "app.kubernetes.io/name": "postgres",
            "team": "clinical-data",
            "app.kubernetes.io/managed-by": "pgplan",
            "pgplan.dev/placement": "healthcare",
        })
    );
    assert_eq!(
        svc["metadata"]["annotations"],
        json!({"prometheus.io/scrape": "true"})
    );
    assert_eq!(svc["spec"]["selector"], json!({"app": "postgres"}));
    assert_eq!(svc["spec"]["clusterIP"], "None");

    // The diff of the Service shows what changes and only that: no label
    // and no selector is removed, pgplan's two labels are added.
    let text = text_of(&plan);
    let at = text.find("-/+ #6  k8s/default/Service/postgres").unwrap();
    let block = &text[at..at + text[at..].find("#7  k8s/default/StatefulSet").unwrap()];
    // Each line is the window's gutter (`│ `) and the step's indent (8).
    let changed: Vec<String> = block
        .lines()
        .map(|l| l.chars().skip(10).collect::<String>())
        .filter(|l| l.starts_with("+ ") || l.starts_with("- "))
        .collect();
    assert_eq!(
        changed,
        [
            "+     app.kubernetes.io/managed-by: pgplan",
            "+     pgplan.dev/placement: healthcare",
            "-   clusterIP: 10.96.146.248",
            "-   clusterIPs:",
            "-   - 10.96.146.248",
            "-   internalTrafficPolicy: Cluster",
            "-   ipFamilies:",
            "-   - IPv4",
            "-   ipFamilyPolicy: SingleStack",
            "+   clusterIP: None",
            "-   sessionAffinity: None",
            "-   type: ClusterIP",
        ],
        "{block}"
    );
    assert!(
        block.contains("      app.kubernetes.io/name: postgres\n"),
        "{block}"
    );
    assert!(
        block.contains("    prometheus.io/scrape: 'true'\n")
            || block.contains("    prometheus.io/scrape: \"true\"\n"),
        "{block}"
    );

    // Applied, it converges.
    let after = simulate(live, &plan);
    let again = plan_of(&spec, &after);
    assert!(again.steps.is_empty(), "{:?}", addresses(&again));
}

#[test]
fn plan_prose_names_the_real_statefulset_and_service() {
    let (s, l) = example_files("healthcare");
    let s = s.replace(
        "        name: postgres\n        serviceName: postgres\n",
        "        name: pg\n        serviceName: postgres\n",
    );
    let spec = load_spec(&s, None);
    let live = observed::load_snapshot("live.yaml", l.as_bytes()).unwrap();
    let plan = plan_of(&spec, &live);
    let svc = plan.step("k8s/default/Service/postgres").unwrap();
    assert!(svc.reason.contains("(pg-0.postgres)"), "{}", svc.reason);
    let text = text_of(&plan);
    assert!(!text.contains("postgres-0.postgres"), "{text}");
}

/// The healthcare source as Helm installs it.
fn helm_healthcare(acknowledge: bool) -> (Spec, Observed, String) {
    let (s, l) = example_files("healthcare");
    let s = if acknowledge {
        s.replace(
            "  cleanup:\n",
            "  gitops:\n    acknowledge: [helm]\n  cleanup:\n",
        )
    } else {
        s
    };
    let spec = load_spec(&s, None);
    let mut live = observed::load_snapshot("live.yaml", l.as_bytes()).unwrap();
    let dep = live_object(&mut live, "Deployment", "postgres");
    dep["metadata"]["labels"] = json!({
        "app": "postgres",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/instance": "clinic",
        "helm.sh/chart": "postgres-1.2.0",
        "team": "clinical-data",
    });
    dep["metadata"]["annotations"] = json!({
        "meta.helm.sh/release-name": "clinic",
        "meta.helm.sh/release-namespace": "default",
    });
    (spec, live, s)
}

#[test]
fn a_helm_managed_source_is_flagged_on_its_step_in_every_rendering() {
    let (spec, live, _) = helm_healthcare(false);
    let plan = plan_of(&spec, &live);
    let del = plan.step("k8s/default/Deployment/postgres").unwrap();
    assert_eq!(del.warnings.len(), 1, "{:?}", del.warnings);
    let w = &del.warnings[0];
    assert_eq!(w.code, pgplan::plan::WarningCode::HelmManaged);
    assert!(w.blocks_apply);
    assert!(
        w.message
            .contains("Deployment default/postgres is managed by Helm release `clinic`"),
        "{}",
        w.message
    );
    assert!(w.message.contains("recreates it"), "{}", w.message);
    assert!(
        w.help.contains("pgplan plan --export-manifests DIR"),
        "{}",
        w.help
    );
    assert!(w.help.contains("spec.gitops.acknowledge"), "{}", w.help);
    // Only the Helm-managed object's step warns.
    let warned: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| !s.warnings.is_empty())
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(warned, ["k8s/default/Deployment/postgres"]);
    assert_eq!(plan.blocking_warnings().len(), 1);

    // The StatefulSet takes the team label, not Helm's tracking.
    let sts = plan
        .step("k8s/default/StatefulSet/postgres")
        .unwrap()
        .after
        .as_ref()
        .unwrap();
    assert_eq!(
        sts["metadata"]["labels"],
        json!({"app": "postgres", "team": "clinical-data",
               "app.kubernetes.io/managed-by": "pgplan", "pgplan.dev/placement": "healthcare"})
    );
    assert!(sts["metadata"].get("annotations").is_none());

    let r = pgplan::redact::Redactor::default();
    let render = |f| pgplan::render::render(&plan, f, &r, &Default::default()).unwrap();
    let text = render(pgplan::render::Format::Text);
    assert!(
        text.contains("⚠ warning[pgplan::gitops::helm_managed]: Deployment default/postgres is managed by Helm release `clinic`"),
        "{text}"
    );
    assert!(text.contains("help: change the chart"), "{text}");
    assert!(
        text.contains("Warning: apply will refuse this plan: step #5 has a warning"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&render(pgplan::render::Format::Json)).unwrap();
    let step = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == "k8s/default/Deployment/postgres")
        .unwrap();
    assert_eq!(step["warnings"][0]["code"], "pgplan::gitops::helm_managed");
    assert_eq!(step["warnings"][0]["blocks_apply"], true);
    let others = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("warnings").is_some())
        .count();
    assert_eq!(others, 1, "steps without warnings have no key");
    let md = render(pgplan::render::Format::Markdown);
    assert!(
        md.contains("> - `#5` `pgplan::gitops::helm_managed` Deployment default/postgres is managed by Helm release `clinic`"),
        "{md}"
    );
    assert!(
        md.contains("⚠️ **Warning** `pgplan::gitops::helm_managed`"),
        "{md}"
    );

    // Acknowledged: still said, no longer blocking.
    let (spec, live, _) = helm_healthcare(true);
    let plan = plan_of(&spec, &live);
    let w = &plan
        .step("k8s/default/Deployment/postgres")
        .unwrap()
        .warnings[0];
    assert!(!w.blocks_apply);
    assert!(
        w.message.contains("acknowledged in spec.gitops: `helm`"),
        "{}",
        w.message
    );
    assert!(plan.blocking_warnings().is_empty());
    assert!(!text_of(&plan).contains("apply will refuse"));
}

#[test]
fn argo_cd_and_flux_tracking_is_recognised_on_the_replaced_service() {
    for (key, value, code) in [
        (
            "argocd.argoproj.io/tracking-id",
            "clinic:/Service:default/postgres",
            "pgplan::gitops::argocd_managed",
        ),
        (
            "kustomize.toolkit.fluxcd.io/name",
            "apps",
            "pgplan::gitops::flux_managed",
        ),
    ] {
        let (spec, mut live) = example("healthcare", None);
        let svc = live_object(&mut live, "Service", "postgres");
        if key.starts_with("argocd") {
            svc["metadata"]["annotations"] = json!({key: value});
        } else {
            svc["metadata"]["labels"][key] = json!(value);
        }
        svc["metadata"]["labels"]["app.kubernetes.io/instance"] = json!("clinic");
        let plan = plan_of(&spec, &live);
        let step = plan.step("k8s/default/Service/postgres").unwrap();
        let codes: Vec<&str> = step.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(codes, [code]);
        assert!(step.warnings[0]
            .message
            .contains("puts its old version back"));
        // The new Service keeps none of the tool's tracking keys.
        let after = step.after.as_ref().unwrap().to_string();
        assert!(
            !after.contains(key) && !after.contains("app.kubernetes.io/instance"),
            "{after}"
        );
    }
}

/// A database name read from the server that PostgreSQL itself would not
/// allow (a hand-edited snapshot: 64 bytes) never reaches the backup
/// CronJob's script: the plan fails at `backup.schedule`, naming it.
#[test]
fn a_database_name_postgresql_would_refuse_is_not_written_into_the_backup_cronjob() {
    let (spec_text, live) = example_files("healthcare");
    let spec_text = spec_text
        .replace("    - healthcare\n", "    - \"*\"\n")
        .replace("  backup:\n", "  backup:\n    schedule: \"0 2 * * *\"\n");
    let spec = load_spec(&spec_text, None);
    let mut o = observed::load_snapshot("live.yaml", live.as_bytes()).expect("snapshot");
    let server = o
        .servers
        .iter_mut()
        .find(|s| s.databases.iter().any(|d| d.name == "healthcare"))
        .expect("the healthcare server");
    let mut long = server.databases[0].clone();
    long.name = "d".repeat(64);
    server.databases.push(long);
    let err = error_text(try_plan(&spec, &o).expect_err("refused"));
    assert!(err.contains("pgplan::plan::database-name"), "{err}");
    assert!(err.contains("must be 1 to 63 bytes long"), "{err}");
    assert!(err.contains("pgplan.yaml:"), "located: {err}");
}

/// The one-writer check that every plan here passes can fail: the healthcare
/// plan with its StatefulSet's replicas raised behind the spec's back puts
/// two writable servers behind the `postgres` Service.
#[test]
fn the_one_writer_check_catches_two_servers_behind_a_service() {
    let (spec, live) = example("healthcare", None);
    let mut plan = plan_of(&spec, &live);
    let sts = plan
        .steps
        .iter_mut()
        .find(|s| s.after.as_ref().is_some_and(|a| a["kind"] == "StatefulSet"))
        .expect("the plan creates the StatefulSet");
    sts.after.as_mut().expect("manifest")["spec"]["replicas"] = json!(2);
    let caught = std::panic::catch_unwind(|| assert_one_writer(&plan, &live))
        .expect_err("two writable servers behind one Service pass the check");
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("puts 2 writable servers"), "{message}");
    assert!(message.contains("\"Service\""), "{message}");
}

/// A selector that matches two workloads is refused where it is written,
/// for a move to a StatefulSet and to RDS alike, with both names.
#[test]
fn a_selector_matching_several_workloads_is_a_located_error() {
    for example in ["healthcare", "backstage-to-rds"] {
        let (text, live) = example_files(example);
        let (workload, labelled): (&str, Vec<&str>) = match example {
            "healthcare" => (
                "        kind: Deployment\n        name: postgres\n",
                vec!["healthcare-api", "postgres"],
            ),
            _ => (
                "        kind: StatefulSet\n        name: backstage-psql-developer-hub\n",
                vec!["backstage-psql-developer-hub"],
            ),
        };
        let kind_line = workload.lines().next().unwrap_or_default();
        let changed = text.replace(
            workload,
            &format!("{kind_line}\n        selector:\n          tier: shared\n"),
        );
        assert_ne!(changed, text, "{example}: the spec took the selector");
        // Both named workloads (and, for Backstage, a copy of its database's
        // StatefulSet) carry the label.
        let mut o = observed::load_snapshot("live.yaml", live.as_bytes()).unwrap();
        let mut copies = Vec::new();
        for m in o.kubernetes.objects.iter_mut() {
            let name = m["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let workload = matches!(m["kind"].as_str(), Some("Deployment" | "StatefulSet"));
            if workload && labelled.contains(&name.as_str()) {
                m["metadata"]["labels"]["tier"] = json!("shared");
                if labelled.len() == 1 {
                    let mut twin = m.clone();
                    twin["metadata"]["name"] = json!(format!("{name}-twin"));
                    copies.push(twin);
                }
            }
        }
        o.kubernetes.objects.extend(copies);
        let spec = load_spec(&changed, None);
        let err = error_text(try_plan(&spec, &o).expect_err("refused"));
        assert!(
            err.contains("pgplan::plan::source-ambiguous"),
            "{example}: {err}"
        );
        assert!(
            err.contains("the selector matches several workloads"),
            "{err}"
        );
        assert!(err.contains("pgplan.yaml:"), "located: {err}");
    }
}
