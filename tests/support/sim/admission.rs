//! What the API server does to an object before storing it: defaulting (the fields a real server
//! fills in, so pgplan sees the same shapes it would see live) and validation — required fields,
//! name formats and immutable fields — that turns into 422 Invalid (or 403 where the real server
//! forbids, e.g. expanding a PVC whose StorageClass does not allow it).

use base64::Engine as _;
use serde_json::{json, Value};

use super::error::{ApiError, Cause};
use super::kinds::{self, Kind};
use super::obj;
use super::select::LabelSelector;
use super::store::Store;

/// Fills in defaults. `old` is the stored object on update (allocated values are carried over).
pub fn defaults(kind: &Kind, o: &mut Value, old: Option<&Value>, store: &Store) {
    match kind.kind {
        "Pod" => pod_spec_defaults(o.pointer_mut("/spec")),
        "Deployment" => {
            let spec = obj::map_at(o, &["spec"]);
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            let strategy = spec
                .entry("strategy")
                .or_insert(json!({"type": "RollingUpdate"}));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                obj::map_at(strategy, &["rollingUpdate"])
                    .entry("maxSurge")
                    .or_insert(json!("25%"));
                obj::map_at(strategy, &["rollingUpdate"])
                    .entry("maxUnavailable")
                    .or_insert(json!("25%"));
            }
            pod_spec_defaults(o.pointer_mut("/spec/template/spec"));
        }
        "ReplicaSet" => {
            obj::map_at(o, &["spec"])
                .entry("replicas")
                .or_insert(json!(1));
            pod_spec_defaults(o.pointer_mut("/spec/template/spec"));
        }
        "StatefulSet" => {
            let spec = obj::map_at(o, &["spec"]);
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("podManagementPolicy")
                .or_insert(json!("OrderedReady"));
            spec.entry("updateStrategy")
                .or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
            spec.entry("persistentVolumeClaimRetentionPolicy")
                .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
            if let Some(Value::Array(vcts)) = spec.get_mut("volumeClaimTemplates") {
                for t in vcts {
                    obj::map_at(t, &["spec"])
                        .entry("volumeMode")
                        .or_insert(json!("Filesystem"));
                    obj::map_at(t, &[])
                        .entry("apiVersion")
                        .or_insert(json!("v1"));
                    obj::map_at(t, &[])
                        .entry("kind")
                        .or_insert(json!("PersistentVolumeClaim"));
                    obj::map_at(t, &[])
                        .entry("status")
                        .or_insert(json!({"phase": "Pending"}));
                }
            }
            pod_spec_defaults(o.pointer_mut("/spec/template/spec"));
        }
        "Job" => {
            let spec = obj::map_at(o, &["spec"]);
            spec.entry("completions").or_insert(json!(1));
            spec.entry("parallelism").or_insert(json!(1));
            spec.entry("backoffLimit").or_insert(json!(6));
            spec.entry("completionMode").or_insert(json!("NonIndexed"));
            spec.entry("suspend").or_insert(json!(false));
            pod_spec_defaults(o.pointer_mut("/spec/template/spec"));
        }
        "CronJob" => {
            let spec = obj::map_at(o, &["spec"]);
            spec.entry("concurrencyPolicy").or_insert(json!("Allow"));
            spec.entry("suspend").or_insert(json!(false));
            spec.entry("successfulJobsHistoryLimit").or_insert(json!(3));
            spec.entry("failedJobsHistoryLimit").or_insert(json!(1));
            pod_spec_defaults(o.pointer_mut("/spec/jobTemplate/spec/template/spec"));
        }
        "Service" => service_defaults(o, old),
        "PersistentVolumeClaim" => {
            let spec = obj::map_at(o, &["spec"]);
            spec.entry("volumeMode").or_insert(json!("Filesystem"));
            if old.is_none() && !spec.contains_key("storageClassName") {
                if let Some(class) = default_storage_class(store) {
                    spec.insert("storageClassName".into(), json!(class));
                }
            }
        }
        "PersistentVolume" => {
            let spec = obj::map_at(o, &["spec"]);
            spec.entry("persistentVolumeReclaimPolicy")
                .or_insert(json!("Retain"));
            spec.entry("volumeMode").or_insert(json!("Filesystem"));
        }
        "StorageClass" => {
            let m = obj::map_at(o, &[]);
            m.entry("reclaimPolicy").or_insert(json!("Delete"));
            m.entry("volumeBindingMode").or_insert(json!("Immediate"));
        }
        "Secret" => {
            let m = obj::map_at(o, &[]);
            m.entry("type").or_insert(json!("Opaque"));
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = obj::map_at(o, &["data"]);
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default().to_string();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
        }
        "Namespace" => {
            let name = obj::name(o).to_string();
            obj::map_at(o, &["metadata", "labels"])
                .insert("kubernetes.io/metadata.name".into(), json!(name));
            obj::map_at(o, &["spec"])
                .entry("finalizers")
                .or_insert(json!(["kubernetes"]));
        }
        _ => {}
    }
}

fn default_storage_class(store: &Store) -> Option<String> {
    store
        .list(&kinds::STORAGE_CLASS, None)
        .into_iter()
        .find(|c| {
            obj::annotations(c)
                .get("storageclass.kubernetes.io/is-default-class")
                .is_some_and(|v| v == "true")
        })
        .map(|c| obj::name(&c).to_string())
}

fn pod_spec_defaults(spec: Option<&mut Value>) {
    let Some(spec) = spec else { return };
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    m.entry("restartPolicy").or_insert(json!("Always"));
    m.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    m.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    m.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    m.entry("securityContext").or_insert(json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = m.get_mut(list) {
            for c in cs {
                let Some(cm) = c.as_object_mut() else {
                    continue;
                };
                let image = cm.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.contains(':') || image.ends_with(":latest");
                cm.entry("imagePullPolicy").or_insert(json!(if latest {
                    "Always"
                } else {
                    "IfNotPresent"
                }));
                cm.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                cm.entry("terminationMessagePolicy")
                    .or_insert(json!("File"));
                cm.entry("resources").or_insert(json!({}));
                if let Some(Value::Array(ports)) = cm.get_mut("ports") {
                    for p in ports {
                        obj::map_at(p, &[])
                            .entry("protocol")
                            .or_insert(json!("TCP"));
                    }
                }
            }
        }
    }
    if let Some(Value::Array(vols)) = m.get_mut("volumes") {
        for v in vols {
            if let Some(ed) = v.get_mut("emptyDir") {
                if ed.is_null() {
                    *ed = json!({});
                }
            }
        }
    }
}

fn service_defaults(o: &mut Value, old: Option<&Value>) {
    let old_ip = old.and_then(|o| obj::str_at(o, "/spec/clusterIP").map(str::to_string));
    let spec = obj::map_at(o, &["spec"]);
    spec.entry("type").or_insert(json!("ClusterIP"));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    spec.entry("internalTrafficPolicy")
        .or_insert(json!("Cluster"));
    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    let ip = match (spec.get("clusterIP").and_then(Value::as_str), old_ip) {
        (Some(ip), _) if !ip.is_empty() => ip.to_string(),
        (_, Some(old)) => old,
        _ => {
            let n: u32 = rand::random_range(1..65_000);
            format!("10.96.{}.{}", n / 250, n % 250 + 2)
        }
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports {
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            let pm = obj::map_at(p, &[]);
            pm.entry("protocol").or_insert(json!("TCP"));
            pm.entry("targetPort").or_insert(port);
        }
    }
}

/// Validates `o` (and, on update, its change from `old`).
pub fn validate(
    kind: &Kind,
    o: &Value,
    old: Option<&Value>,
    store: &Store,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    validate_metadata(kind, o, &mut causes);
    match kind.kind {
        "Pod" => {
            validate_pod_spec(o.get("spec"), "spec", &mut causes);
            if let Some(old) = old {
                pod_update(o, old, &mut causes);
            }
        }
        "Deployment" | "ReplicaSet" => {
            validate_workload(o, &mut causes, &["Always"]);
            if let Some(old) = old {
                immutable(o, old, "/spec/selector", "spec.selector", &mut causes);
            }
        }
        "StatefulSet" => {
            validate_workload(o, &mut causes, &["Always"]);
            for (i, t) in obj::array_at(o, "/spec/volumeClaimTemplates")
                .iter()
                .enumerate()
            {
                let f = format!("spec.volumeClaimTemplates[{i}]");
                if obj::name(t).is_empty() {
                    causes.push(Cause::required(format!("{f}.metadata.name"), ""));
                }
                validate_pvc_spec(t.get("spec"), &format!("{f}.spec"), &mut causes);
            }
            if let Some(old) = old {
                statefulset_update(o, old, &mut causes);
            }
        }
        "Job" => {
            validate_pod_spec(
                o.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            restart_never_or_on_failure(
                o.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            if let Some(old) = old {
                immutable(o, old, "/spec/selector", "spec.selector", &mut causes);
                immutable(o, old, "/spec/template", "spec.template", &mut causes);
            }
        }
        "CronJob" => {
            let schedule = obj::str_at(o, "/spec/schedule").unwrap_or("");
            if schedule.is_empty() {
                causes.push(Cause::required("spec.schedule", ""));
            } else if !(schedule.starts_with('@') || schedule.split_whitespace().count() == 5) {
                causes.push(Cause::invalid(
                    "spec.schedule",
                    &json!(schedule),
                    "unparseable schedule",
                ));
            }
            let p = "/spec/jobTemplate/spec/template/spec";
            let f = "spec.jobTemplate.spec.template.spec";
            validate_pod_spec(o.pointer(p), f, &mut causes);
            restart_never_or_on_failure(o.pointer(p), f, &mut causes);
        }
        "Service" => validate_service(o, old, &mut causes),
        "PersistentVolume" => validate_pv(o, old, &mut causes),
        "PersistentVolumeClaim" => {
            validate_pvc_spec(o.get("spec"), "spec", &mut causes);
            if let Some(old) = old {
                pvc_update(kind, o, old, store, &mut causes)?;
            }
        }
        "Secret" | "ConfigMap" => {
            // Bytes fields are base64 in JSON: the real server fails to decode anything else
            // (400, before validation).
            let bytes_field = if kind.kind == "Secret" {
                "data"
            } else {
                "binaryData"
            };
            if let Some(Value::Object(m)) = o.get(bytes_field) {
                for v in m.values() {
                    let text = v.as_str().unwrap_or("");
                    if base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .is_err()
                    {
                        let at = text
                            .bytes()
                            .position(|b| !(b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
                            .unwrap_or(text.len());
                        return Err(ApiError::bad_request(format!(
                            "{} in version \"v1\" cannot be handled as a {}: illegal base64 data at input byte {at}",
                            kind.kind, kind.kind
                        )));
                    }
                }
            }
            for field in ["data", "binaryData"] {
                if let Some(Value::Object(m)) = o.get(field) {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                        if !ok {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                &json!(k),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                            ));
                        }
                    }
                }
            }
            // The API server's limit on a Secret's (or ConfigMap's) data: 1 MiB decoded.
            let total: usize = ["data", "binaryData"]
                .iter()
                .filter_map(|f| Some((*f, o.get(*f)?.as_object()?)))
                .flat_map(|(f, m)| m.iter().map(move |(k, v)| (f, k, v)))
                .map(|(f, k, v)| {
                    let v = v.as_str().unwrap_or("");
                    let base64 = f == "binaryData" || kind.kind == "Secret";
                    k.len()
                        + if base64 {
                            base64::engine::general_purpose::STANDARD
                                .decode(v)
                                .map(|b| b.len())
                                .unwrap_or(v.len())
                        } else {
                            v.len()
                        }
                })
                .sum();
            if total > 1 << 20 {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: "data".into(),
                    message: "Too long: must have at most 1048576 bytes".into(),
                });
            }
            if let Some(old) = old {
                if old.get("immutable") == Some(&json!(true)) {
                    for field in ["data", "binaryData", "stringData", "immutable"] {
                        if o.get(field) != old.get(field) {
                            causes.push(Cause::forbidden(
                                field,
                                "field is immutable when `immutable` is set",
                            ));
                        }
                    }
                }
                if kind.kind == "Secret" && o.get("type") != old.get("type") {
                    causes.push(Cause::immutable(
                        "type",
                        o.get("type").unwrap_or(&Value::Null),
                    ));
                }
            }
        }
        "StorageClass" => {
            if obj::str_at(o, "/provisioner").unwrap_or("").is_empty() {
                causes.push(Cause::required("provisioner", ""));
            }
            if let Some(old) = old {
                for f in ["parameters", "provisioner", "reclaimPolicy"] {
                    if o.get(f) != old.get(f) {
                        causes.push(Cause::forbidden(
                            f,
                            &format!("updates to {f} are forbidden."),
                        ));
                    }
                }
                immutable(
                    o,
                    old,
                    "/volumeBindingMode",
                    "volumeBindingMode",
                    &mut causes,
                );
            }
        }
        "VolumeSnapshot" => {
            let src = o.pointer("/spec/source");
            let pvc = src
                .and_then(|s| s.get("persistentVolumeClaimName"))
                .is_some();
            let content = src
                .and_then(|s| s.get("volumeSnapshotContentName"))
                .is_some();
            if pvc == content {
                causes.push(Cause::invalid(
                    "spec.source",
                    src.unwrap_or(&Value::Null),
                    "exactly one of persistentVolumeClaimName and volumeSnapshotContentName should be specified",
                ));
            }
            if let Some(old) = old {
                immutable(o, old, "/spec/source", "spec.source", &mut causes);
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, obj::name(o), causes))
    }
}

fn validate_metadata(kind: &Kind, o: &Value, causes: &mut Vec<Cause>) {
    let name = obj::name(o);
    let label_only = matches!(kind.kind, "Namespace" | "Service");
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if label_only && !obj::is_dns1123_label(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    } else if !label_only && !obj::is_dns1123_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    for (k, v) in obj::labels(o) {
        if !obj::is_label_key(&k) {
            causes.push(Cause::invalid(
                "metadata.labels",
                &json!(k),
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
        if !obj::is_label_value(&v) {
            causes.push(Cause::invalid(
                "metadata.labels",
                &json!(v),
                "a valid label must be an empty string or consist of alphanumeric characters, \
                 '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
    }
    for k in obj::annotations(o).keys() {
        if !obj::is_label_key(k) {
            causes.push(Cause::invalid(
                "metadata.annotations",
                &json!(k),
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
}

fn validate_pod_spec(spec: Option<&Value>, f: &str, causes: &mut Vec<Cause>) {
    validate_pod_spec_with(spec, f, &[], causes)
}

/// `extra_volumes`: names a controller adds (a StatefulSet's volumeClaimTemplates).
fn validate_pod_spec_with(
    spec: Option<&Value>,
    f: &str,
    extra_volumes: &[&str],
    causes: &mut Vec<Cause>,
) {
    let empty = json!({});
    let spec = spec.unwrap_or(&empty);
    let containers = obj::array_at(spec, "/containers");
    if containers.is_empty() {
        causes.push(Cause::required(format!("{f}.containers"), ""));
    }
    let volumes: Vec<&str> = obj::array_at(spec, "/volumes")
        .iter()
        .map(|v| v.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let mountable: Vec<&str> = volumes.iter().chain(extra_volumes).copied().collect();
    for (i, name) in volumes.iter().enumerate() {
        if name.is_empty() {
            causes.push(Cause::required(format!("{f}.volumes[{i}].name"), ""));
        } else if volumes[..i].contains(name) {
            causes.push(Cause::duplicate(
                format!("{f}.volumes[{i}].name"),
                &json!(name),
            ));
        }
    }
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in obj::array_at(spec, &format!("/{list}")).iter().enumerate() {
            let cf = format!("{f}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                causes.push(Cause::required(format!("{cf}.name"), ""));
            } else if !obj::is_dns1123_label(name) {
                causes.push(Cause::invalid(format!("{cf}.name"), &json!(name), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"));
            } else if seen.contains(&name) {
                causes.push(Cause::duplicate(format!("{cf}.name"), &json!(name)));
            }
            seen.push(name);
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                causes.push(Cause::required(format!("{cf}.image"), ""));
            }
            for (j, m) in obj::array_at(c, "/volumeMounts").iter().enumerate() {
                let vname = m.get("name").and_then(Value::as_str).unwrap_or("");
                if !mountable.contains(&vname) {
                    causes.push(Cause {
                        reason: "FieldValueNotFound",
                        field: format!("{cf}.volumeMounts[{j}].name"),
                        message: format!("Not found: \"{vname}\""),
                    });
                }
                if m.get("mountPath")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push(Cause::required(
                        format!("{cf}.volumeMounts[{j}].mountPath"),
                        "",
                    ));
                }
            }
            for (j, p) in obj::array_at(c, "/ports").iter().enumerate() {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("{cf}.ports[{j}].containerPort"),
                        &json!(port),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{f}.restartPolicy"),
                message: format!(
                    "Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""
                ),
            });
        }
    }
}

fn restart_never_or_on_failure(spec: Option<&Value>, f: &str, causes: &mut Vec<Cause>) {
    let rp = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if rp != "OnFailure" && rp != "Never" {
        causes.push(Cause::required(
            format!("{f}.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        ));
    }
}

fn validate_workload(o: &Value, causes: &mut Vec<Cause>, restart: &[&str]) {
    match o.pointer("/spec/selector") {
        None | Some(Value::Null) => causes.push(Cause::required("spec.selector", "")),
        Some(sel) => match LabelSelector::from_object(sel) {
            Ok(s) if s.is_empty() => causes.push(Cause::invalid(
                "spec.selector",
                sel,
                "empty selector is invalid for deployment",
            )),
            Ok(s) => {
                let labels = obj::string_map(o.pointer("/spec/template/metadata/labels"));
                if !s.matches(&labels) {
                    causes.push(Cause::invalid(
                        "spec.template.metadata.labels",
                        &json!(labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => causes.push(Cause::invalid("spec.selector", sel, &e)),
        },
    }
    if let Some(r) = obj::i64_at(o, "/spec/replicas") {
        if r < 0 {
            causes.push(Cause::invalid(
                "spec.replicas",
                &json!(r),
                "must be greater than or equal to 0",
            ));
        }
    }
    let claim_templates: Vec<&str> = obj::array_at(o, "/spec/volumeClaimTemplates")
        .iter()
        .map(obj::name)
        .collect();
    validate_pod_spec_with(
        o.pointer("/spec/template/spec"),
        "spec.template.spec",
        &claim_templates,
        causes,
    );
    let rp = obj::str_at(o, "/spec/template/spec/restartPolicy").unwrap_or("Always");
    if !restart.contains(&rp) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.template.spec.restartPolicy".into(),
            message: format!("Unsupported value: \"{rp}\": supported values: \"Always\""),
        });
    }
}

fn immutable(o: &Value, old: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    if o.pointer(pointer) != old.pointer(pointer) {
        causes.push(Cause::immutable(
            field,
            o.pointer(pointer).unwrap_or(&Value::Null),
        ));
    }
}

fn pod_update(o: &Value, old: &Value, causes: &mut Vec<Cause>) {
    // A pod's spec is immutable but for container images, activeDeadlineSeconds, tolerations
    // additions and scheduling gates; the substrate binds nodeName itself.
    let strip = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = s.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            m.remove("nodeName");
            m.remove("schedulingGates");
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = m.get_mut(list) {
                    for c in cs {
                        if let Some(cm) = c.as_object_mut() {
                            cm.remove("image");
                        }
                    }
                }
            }
        }
        s
    };
    if strip(o) != strip(old) {
        causes.push(Cause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,\
             `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
             `spec.tolerations` (only additions to existing tolerations),\
             `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn statefulset_update(o: &Value, old: &Value, causes: &mut Vec<Cause>) {
    const MUTABLE: [&str; 7] = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let strip = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = s.as_object_mut() {
            for f in MUTABLE {
                m.remove(f);
            }
        }
        s
    };
    if strip(o) != strip(old) {
        causes.push(Cause::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
             'template', 'updateStrategy', 'revisionHistoryLimit', \
             'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

fn validate_service(o: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let headless = obj::str_at(o, "/spec/clusterIP") == Some("None");
    let ports = obj::array_at(o, "/spec/ports");
    let typ = obj::str_at(o, "/spec/type").unwrap_or("ClusterIP");
    if ports.is_empty() && !headless && typ != "ExternalName" {
        causes.push(Cause::required("spec.ports", ""));
    }
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&typ) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.type".into(),
            message: format!("Unsupported value: \"{typ}\""),
        });
    }
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1
            && p.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
        }
    }
    if let Some(old) = old {
        immutable(o, old, "/spec/clusterIP", "spec.clusterIPs[0]", causes);
    }
}

/// The keys of a PV spec that name its volume source.
const PV_SOURCES: [&str; 17] = [
    "hostPath",
    "local",
    "csi",
    "nfs",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "azureFile",
    "iscsi",
    "fc",
    "cephfs",
    "rbd",
    "cinder",
    "glusterfs",
    "vsphereVolume",
    "portworxVolume",
    "flexVolume",
];

/// The PV's volume source key (`hostPath`, `local`, `csi`, …).
pub fn pv_source(pv: &Value) -> Option<&'static str> {
    PV_SOURCES.iter().copied().find(|s| {
        pv.pointer(&format!("/spec/{s}"))
            .is_some_and(|v| !v.is_null())
    })
}

fn validate_pv(o: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if obj::quantity_at(o, "/spec/capacity/storage").is_none() {
        causes.push(Cause::required("spec.capacity", ""));
    }
    if obj::array_at(o, "/spec/accessModes").is_empty() {
        causes.push(Cause::required("spec.accessModes", ""));
    }
    let sources: Vec<&str> = PV_SOURCES
        .iter()
        .copied()
        .filter(|s| {
            o.pointer(&format!("/spec/{s}"))
                .is_some_and(|v| !v.is_null())
        })
        .collect();
    match sources.len() {
        0 => causes.push(Cause::required("spec", "must specify a volume type")),
        1 => {}
        _ => causes.push(Cause::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        )),
    }
    if sources.contains(&"local") && o.pointer("/spec/nodeAffinity").is_none() {
        causes.push(Cause::required(
            "spec.nodeAffinity",
            "Local volume requires node affinity",
        ));
    }
    if sources.contains(&"hostPath")
        && obj::str_at(o, "/spec/hostPath/path")
            .unwrap_or("")
            .is_empty()
    {
        causes.push(Cause::required("spec.hostPath.path", ""));
    }
    let policy = obj::str_at(o, "/spec/persistentVolumeReclaimPolicy").unwrap_or("Retain");
    if !["Retain", "Delete", "Recycle"].contains(&policy) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.persistentVolumeReclaimPolicy".into(),
            message: format!(
                "Unsupported value: \"{policy}\": supported values: \"Delete\", \"Recycle\", \"Retain\""
            ),
        });
    }
    if let Some(old) = old {
        let source_of = |v: &Value| {
            PV_SOURCES
                .iter()
                .map(|s| v.pointer(&format!("/spec/{s}")).cloned())
                .collect::<Vec<_>>()
        };
        if source_of(o) != source_of(old) {
            causes.push(Cause::forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        if old.pointer("/spec/nodeAffinity").is_some() {
            immutable(o, old, "/spec/nodeAffinity", "spec.nodeAffinity", causes);
        }
        immutable(o, old, "/spec/volumeMode", "spec.volumeMode", causes);
    }
}

fn validate_pvc_spec(spec: Option<&Value>, f: &str, causes: &mut Vec<Cause>) {
    let empty = json!({});
    let spec = spec.unwrap_or(&empty);
    if obj::array_at(spec, "/accessModes").is_empty() {
        causes.push(Cause::required(
            format!("{f}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for m in obj::array_at(spec, "/accessModes") {
        let m = m.as_str().unwrap_or("");
        if ![
            "ReadWriteOnce",
            "ReadOnlyMany",
            "ReadWriteMany",
            "ReadWriteOncePod",
        ]
        .contains(&m)
        {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{f}.accessModes"),
                message: format!("Unsupported value: \"{m}\""),
            });
        }
    }
    match obj::quantity_at(spec, "/resources/requests/storage") {
        None => causes.push(Cause::required(format!("{f}.resources[storage]"), "")),
        Some(0) => causes.push(Cause::invalid(
            format!("{f}.resources[storage]"),
            spec.pointer("/resources/requests/storage")
                .unwrap_or(&Value::Null),
            "must be greater than zero",
        )),
        Some(_) => {}
    }
}

fn pvc_update(
    kind: &Kind,
    o: &Value,
    old: &Value,
    store: &Store,
    causes: &mut Vec<Cause>,
) -> Result<(), ApiError> {
    let bound = obj::str_at(old, "/status/phase") == Some("Bound");
    let strip = |v: &Value, drop_requests: bool| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = s.as_object_mut() {
            if drop_requests {
                if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
            }
            m.remove("volumeAttributesClassName");
            // Binding fills in volumeName; it is settable once.
            if old
                .pointer("/spec/volumeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                m.remove("volumeName");
            }
        }
        s
    };
    if strip(o, bound) != strip(old, bound) {
        causes.push(Cause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and \
             volumeAttributesClassName for bound claims",
        ));
        return Ok(());
    }
    let new_size = obj::quantity_at(o, "/spec/resources/requests/storage").unwrap_or(0);
    let old_size = obj::quantity_at(old, "/spec/resources/requests/storage").unwrap_or(0);
    let capacity = obj::quantity_at(old, "/status/capacity/storage").unwrap_or(old_size);
    if new_size < capacity && new_size < old_size {
        causes.push(Cause::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    } else if new_size > old_size {
        let class = obj::str_at(old, "/spec/storageClassName").unwrap_or("");
        let expandable = store
            .get(&kinds::STORAGE_CLASS, "", class)
            .is_some_and(|c| c.get("allowVolumeExpansion") == Some(&json!(true)));
        if !expandable {
            return Err(ApiError::forbidden(
                kind,
                obj::name(o),
                "only dynamically provisioned pvc can be resized and the storageclass that \
                 provisions the pvc must support resize",
            ));
        }
    }
    Ok(())
}
