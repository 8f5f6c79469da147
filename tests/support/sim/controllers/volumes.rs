//! Persistent volumes: binding PVCs to matching static PVs (storage class, capacity ≥ request,
//! access modes, volume mode, label selector, a pre-set claimRef), dynamic provisioning
//! (`pvc-{uid}`) for StorageClasses with a real provisioner (anything but
//! `kubernetes.io/no-provisioner`), WaitForFirstConsumer, reclaiming (Retain → Released, Delete →
//! the PV object and its directory go), the pvc/pv-protection finalizers, PVC expansion, and
//! VolumeSnapshots (a copy of the volume's directory, restorable through a PVC's dataSource).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{pod_phase, Controllers};
use crate::support::proc::{self, SpawnOptions};
use crate::support::scratch;
use crate::support::sim::kinds;
use crate::support::sim::kubelet::{pv_host_dir, safe_relative};
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
use crate::support::sim::store::Store;

/// Background copies in progress (snapshots taken, snapshots restored), by object uid.
#[derive(Default)]
pub struct VolumeWork {
    busy: Arc<Mutex<HashSet<String>>>,
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    scratch::make_dir_for_postgres(to, 0o755).map_err(|e| e.to_string())?;
    if !from.exists() {
        return Ok(());
    }
    let mut src = from.as_os_str().to_owned();
    src.push("/.");
    let mut cmd = Command::new("cp");
    cmd.arg("-a")
        .arg(src)
        .arg(to)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let out = proc::spawn(cmd, SpawnOptions::AS_IS)
        .and_then(|c| c.wait_with_output())
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Copies a volume as a CSI snapshot does: at one instant. The PostgreSQL servers running on it
/// (found by their `postmaster.pid`, each the leader of its process group) are stopped with
/// SIGSTOP for the copy (the copy starts once every process of theirs has stopped) and continued
/// after it, so the copy is what a crash at that instant would leave. A file-by-file copy of a
/// running server is not: a checkpoint in the middle of it leaves a control file newer than the
/// catalog files copied before it.
fn copy_point_in_time(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    let mut servers = Vec::new();
    postmasters(from, 2, &mut servers);
    let mut stopped = true;
    for pid in &servers {
        stopped &= proc::stop_group(*pid);
    }
    let result = if stopped {
        copy_dir(from, to)
    } else {
        Err("a server on the volume did not stop for the snapshot".into())
    };
    for pid in &servers {
        proc::signal_group(*pid, libc::SIGCONT);
    }
    result
}

/// Pids of the live servers whose data directories are in `dir` (up to `depth` levels down).
fn postmasters(dir: &std::path::Path, depth: u32, out: &mut Vec<u32>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name() == "postmaster.pid" {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
            if let Some(pid) = pid.filter(|p| *p > 1 && proc::alive(*p)) {
                out.push(pid);
            }
        } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            postmasters(&path, depth - 1, out);
        }
    }
}

/// Removes stale `postmaster.pid` files from a copied volume: in a real restore the old server's
/// pid means nothing in the new container, here it may be a live process on the same host.
fn forget_postmasters(dir: &std::path::Path, depth: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name() == "postmaster.pid" {
            let _ = std::fs::remove_file(&path);
        } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            forget_postmasters(&path, depth - 1);
        }
    }
}

fn access_modes(v: &Value, pointer: &str) -> Vec<String> {
    obj::array_at(v, pointer)
        .iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

fn pvc_class(pvc: &Value) -> &str {
    obj::str_at(pvc, "/spec/storageClassName").unwrap_or("")
}

/// Whether static `pv` can satisfy `pvc`.
fn pv_matches(pv: &Value, pvc: &Value) -> bool {
    if obj::is_deleting(pv) || obj::str_at(pv, "/status/phase") != Some("Available") {
        return false;
    }
    if let Some(cr) = pv.pointer("/spec/claimRef").filter(|c| !c.is_null()) {
        let same = obj::str_at(cr, "/name") == Some(obj::name(pvc))
            && obj::str_at(cr, "/namespace").unwrap_or("default") == obj::namespace(pvc);
        let uid_ok = obj::str_at(cr, "/uid").is_none_or(|u| u.is_empty() || u == obj::uid(pvc));
        if !(same && uid_ok) {
            return false;
        }
    }
    if obj::str_at(pv, "/spec/storageClassName").unwrap_or("") != pvc_class(pvc) {
        return false;
    }
    let have = obj::quantity_at(pv, "/spec/capacity/storage").unwrap_or(0);
    let want = obj::quantity_at(pvc, "/spec/resources/requests/storage").unwrap_or(u128::MAX);
    if have < want {
        return false;
    }
    let modes = access_modes(pv, "/spec/accessModes");
    if !access_modes(pvc, "/spec/accessModes")
        .iter()
        .all(|m| modes.contains(m))
    {
        return false;
    }
    let mode = |v: &Value| {
        obj::str_at(v, "/spec/volumeMode")
            .unwrap_or("Filesystem")
            .to_string()
    };
    if mode(pv) != mode(pvc) {
        return false;
    }
    match pvc.pointer("/spec/selector").filter(|s| !s.is_null()) {
        Some(sel) => crate::support::sim::select::LabelSelector::from_object(sel)
            .map(|s| s.matches_object(pv))
            .unwrap_or(false),
        None => true,
    }
}

fn bind(store: &Store, pv: &Value, pvc: &Value) {
    let pre_bound = pv.pointer("/spec/claimRef").is_some_and(|c| !c.is_null());
    let claim_ref = json!({
        "kind": "PersistentVolumeClaim", "namespace": obj::namespace(pvc), "name": obj::name(pvc),
        "uid": obj::uid(pvc), "apiVersion": "v1", "resourceVersion": obj::resource_version(pvc),
    });
    let pv_name = obj::name(pv).to_string();
    registry::modify(store, &kinds::PV, "", &pv_name, |p| {
        obj::set(p, &["spec", "claimRef"], claim_ref.clone());
        obj::set(p, &["status", "phase"], json!("Bound"));
        if !pre_bound {
            obj::map_at(p, &["metadata", "annotations"])
                .insert("pv.kubernetes.io/bound-by-controller".into(), json!("yes"));
        }
    });
    let user_named = !obj::str_at(pvc, "/spec/volumeName")
        .unwrap_or("")
        .is_empty();
    let uid = obj::uid(pvc).to_string();
    let capacity = pv.pointer("/spec/capacity").cloned().unwrap_or(json!({}));
    let modes = pv
        .pointer("/spec/accessModes")
        .cloned()
        .unwrap_or(json!([]));
    registry::modify(
        store,
        &kinds::PVC,
        obj::namespace(pvc),
        obj::name(pvc),
        |c| {
            if obj::uid(c) != uid {
                return;
            }
            obj::set(c, &["spec", "volumeName"], json!(pv_name));
            obj::set(
                c,
                &["status"],
                json!({"phase": "Bound", "accessModes": modes, "capacity": capacity}),
            );
            let ann = obj::map_at(c, &["metadata", "annotations"]);
            ann.insert("pv.kubernetes.io/bind-completed".into(), json!("yes"));
            if !user_named {
                ann.insert("pv.kubernetes.io/bound-by-controller".into(), json!("yes"));
            }
        },
    );
}

fn provision(ctl: &Controllers, class: &Value, pvc: &Value, node: Option<String>) -> Option<Value> {
    let store = &ctl.store;
    let provisioner = obj::str_at(class, "/provisioner").unwrap_or("");
    let name = format!("pvc-{}", obj::uid(pvc));
    if let Some(existing) = store.get(&kinds::PV, "", &name) {
        return Some((*existing).clone());
    }
    let node = node
        .or_else(|| ctl.kubelet.nodes().first().cloned())
        .unwrap_or_else(|| "node1".into());
    let mut spec = json!({
        "capacity": {"storage": pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"))},
        "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
        "persistentVolumeReclaimPolicy": obj::str_at(class, "/reclaimPolicy").unwrap_or("Delete"),
        "storageClassName": obj::name(class),
        "volumeMode": obj::str_at(pvc, "/spec/volumeMode").unwrap_or("Filesystem"),
        "claimRef": {"kind": "PersistentVolumeClaim", "namespace": obj::namespace(pvc),
                     "name": obj::name(pvc), "uid": obj::uid(pvc), "apiVersion": "v1"},
    });
    if provisioner.contains("local-path") || provisioner.contains("hostpath") {
        spec["hostPath"] = json!({"path": format!("/opt/local-path-provisioner/{name}_{}_{}",
            obj::namespace(pvc), obj::name(pvc)), "type": "DirectoryOrCreate"});
        spec["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
    } else {
        spec["csi"] = json!({"driver": provisioner, "fsType": "ext4",
                             "volumeHandle": format!("vol-{}", obj::stable_hash(&json!(name), 17))});
    }
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
        "spec": spec,
    });
    registry::create(store, &kinds::PV, "", pv, false).ok()?;
    // Available at once: the claimRef reserves it for this claim.
    registry::modify(store, &kinds::PV, "", &name, |p| {
        obj::set(p, &["status", "phase"], json!("Available"));
    });
    registry::record_event(
        store,
        &kinds::PVC,
        pvc,
        "Normal",
        "ProvisioningSucceeded",
        &format!("Successfully provisioned volume {name}"),
    );
    store.get(&kinds::PV, "", &name).map(|p| (*p).clone())
}

fn remove_pv_dirs(ctl: &Controllers, pv: &Value) {
    let root = ctl.kubelet.root();
    let nodes = ctl.kubelet.nodes();
    let mut dirs = vec![pv_host_dir(root, nodes, pv, None)];
    if let Some(p) = obj::str_at(pv, "/spec/hostPath/path") {
        if crate::support::sim::kubelet::pv_node(pv).is_none() {
            for n in nodes {
                dirs.push(root.join("nodes").join(n).join(safe_relative(p)));
            }
        }
    }
    for d in dirs {
        if d.starts_with(root) && d != root {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn snapshot_dir(ctl: &Controllers, uid: &str) -> PathBuf {
    ctl.kubelet.root().join("snapshots").join(uid)
}

pub fn reconcile(ctl: &Controllers) {
    let store = &ctl.store;
    let pods = store.list(&kinds::POD, None);
    let classes = store.list(&kinds::STORAGE_CLASS, None);
    // New static PVs become Available.
    for pv in store.list(&kinds::PV, None) {
        if obj::str_at(&pv, "/status/phase") == Some("Pending") && !obj::is_deleting(&pv) {
            registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                obj::set(p, &["status", "phase"], json!("Available"));
            });
        }
    }
    let consumers = |ns: &str, claim: &str| -> Vec<Value> {
        pods.iter()
            .filter(|p| obj::namespace(p) == ns && !matches!(pod_phase(p), "Succeeded" | "Failed"))
            .filter(|p| {
                obj::array_at(p, "/spec/volumes")
                    .iter()
                    .any(|v| obj::str_at(v, "/persistentVolumeClaim/claimName") == Some(claim))
            })
            .map(|p| (**p).clone())
            .collect()
    };
    // Binding and provisioning.
    for pvc in store.list(&kinds::PVC, None) {
        let (ns, name) = (obj::namespace(&pvc), obj::name(&pvc));
        if obj::is_deleting(&pvc) || obj::str_at(&pvc, "/status/phase") == Some("Bound") {
            continue;
        }
        if obj::str_at(&pvc, "/status/phase") == Some("Lost") {
            continue;
        }
        // A claim being restored from a snapshot is not bound to anything
        // until the copy is in: its PV (reserved for it by claimRef) exists
        // already, and binding it on the next pass would start a pod on a
        // half-copied volume. (A real provisioner creates the PV only once
        // the volume is restored.)
        if ctl
            .volumes
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&format!("restore-{}", obj::uid(&pvc)))
        {
            continue;
        }
        if ctl.faults.pvc_held(ns, name) {
            registry::record_event(
                store,
                &kinds::PVC,
                &pvc,
                "Warning",
                "FailedBinding",
                "no persistent volumes available for this claim (held unbound by fault injection)",
            );
            continue;
        }
        let class_name = pvc_class(&pvc);
        let class = classes.iter().find(|c| obj::name(c) == class_name);
        let users = consumers(ns, name);
        if class
            .is_some_and(|c| obj::str_at(c, "/volumeBindingMode") == Some("WaitForFirstConsumer"))
            && users.is_empty()
        {
            registry::record_event(
                store,
                &kinds::PVC,
                &pvc,
                "Normal",
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            );
            continue;
        }
        let pvs = store.list(&kinds::PV, None);
        let wanted = obj::str_at(&pvc, "/spec/volumeName").unwrap_or("");
        let candidate = if !wanted.is_empty() {
            pvs.iter()
                .find(|pv| obj::name(pv) == wanted && pv_matches(pv, &pvc))
                .cloned()
        } else {
            let mut matching: Vec<_> = pvs
                .iter()
                .filter(|pv| pv_matches(pv, &pvc))
                .cloned()
                .collect();
            matching.sort_by_key(|pv| {
                let pre = pv.pointer("/spec/claimRef").is_some_and(|c| !c.is_null());
                (
                    !pre,
                    obj::quantity_at(pv, "/spec/capacity/storage").unwrap_or(0),
                )
            });
            matching.into_iter().next()
        };
        if let Some(pv) = candidate {
            bind(store, &pv, &pvc);
            continue;
        }
        if !wanted.is_empty() {
            continue;
        }
        match class {
            Some(c) if obj::str_at(c, "/provisioner") != Some("kubernetes.io/no-provisioner") => {
                let node = users.iter().find_map(|p| {
                    obj::str_at(p, "/spec/nodeName")
                        .or_else(|| obj::str_at(p, "/spec/nodeSelector/kubernetes.io~1hostname"))
                        .map(str::to_string)
                });
                // Restoring from a snapshot waits for the snapshot, then copies it in.
                let source = pvc
                    .pointer("/spec/dataSource")
                    .filter(|d| obj::str_at(d, "/kind") == Some("VolumeSnapshot"));
                let snapshot = match source {
                    Some(src) => {
                        let snap = store.get(
                            &kinds::VOLUME_SNAPSHOT,
                            ns,
                            obj::str_at(src, "/name").unwrap_or(""),
                        );
                        match snap {
                            Some(s) if s.pointer("/status/readyToUse") == Some(&json!(true)) => {
                                Some(s)
                            }
                            _ => continue,
                        }
                    }
                    None => None,
                };
                let busy_key = format!("restore-{}", obj::uid(&pvc));
                let Some(pv) = provision(ctl, c, &pvc, node) else {
                    continue;
                };
                match snapshot {
                    None => bind(store, &pv, &pvc),
                    Some(snap) => {
                        ctl.volumes
                            .busy
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(busy_key.clone());
                        let from = snapshot_dir(ctl, obj::uid(&snap));
                        let to = pv_host_dir(ctl.kubelet.root(), ctl.kubelet.nodes(), &pv, None);
                        let store = store.clone();
                        let busy = ctl.volumes.busy.clone();
                        let pvc = (*pvc).clone();
                        std::thread::spawn(move || {
                            // A snapshot whose data is gone restores nothing: the claim stays
                            // Pending with the reason, as a failed CreateVolume leaves it.
                            let copied = if from.exists() {
                                copy_dir(&from, &to)
                            } else {
                                Err(format!("the snapshot's data {} is gone", from.display()))
                            };
                            match copied {
                                Ok(()) => {
                                    forget_postmasters(&to, 3);
                                    if let Some(pv) = store.get(&kinds::PV, "", obj::name(&pv)) {
                                        bind(&store, &pv, &pvc);
                                    }
                                }
                                Err(e) => registry::record_event(
                                    &store,
                                    &kinds::PVC,
                                    &pvc,
                                    "Warning",
                                    "ProvisioningFailed",
                                    &format!("failed to restore the volume from its snapshot: {e}"),
                                ),
                            }
                            busy.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&busy_key);
                        });
                    }
                }
            }
            Some(_) => registry::record_event(
                store,
                &kinds::PVC,
                &pvc,
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            ),
            None if class_name.is_empty() => registry::record_event(
                store,
                &kinds::PVC,
                &pvc,
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            ),
            None => registry::record_event(
                store,
                &kinds::PVC,
                &pvc,
                "Warning",
                "ProvisioningFailed",
                &format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            ),
        }
    }
    let pvcs = store.list(&kinds::PVC, None);
    // Reclaiming PVs whose claim is gone.
    for pv in store.list(&kinds::PV, None) {
        let phase = obj::str_at(&pv, "/status/phase").unwrap_or("");
        let Some(cr) = pv.pointer("/spec/claimRef").filter(|c| !c.is_null()) else {
            if phase == "Released" {
                registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                    obj::set(p, &["status", "phase"], json!("Available"));
                });
            }
            continue;
        };
        if phase != "Bound" && phase != "Released" {
            continue;
        }
        let claim_uid = obj::str_at(cr, "/uid").unwrap_or("");
        let claim_alive = pvcs.iter().any(|c| {
            obj::namespace(c) == obj::str_at(cr, "/namespace").unwrap_or("")
                && obj::name(c) == obj::str_at(cr, "/name").unwrap_or("")
                && (claim_uid.is_empty() || obj::uid(c) == claim_uid)
        });
        if claim_alive {
            // An admin pointed a Released volume at a (new) claim: it is pre-bound, so Available.
            if phase == "Released" {
                registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                    obj::set(p, &["status", "phase"], json!("Available"));
                });
            }
            continue;
        }
        if phase == "Released" && claim_uid.is_empty() {
            registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                obj::set(p, &["status", "phase"], json!("Available"));
            });
            continue;
        }
        if phase == "Bound" && claim_uid.is_empty() {
            continue;
        }
        match obj::str_at(&pv, "/spec/persistentVolumeReclaimPolicy").unwrap_or("Retain") {
            "Delete" => {
                if !obj::is_deleting(&pv) {
                    remove_pv_dirs(ctl, &pv);
                    let _ = registry::delete(
                        store,
                        &kinds::PV,
                        "",
                        obj::name(&pv),
                        &DeleteOptions::default(),
                    );
                }
                registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                    obj::set(p, &["status", "phase"], json!("Released"));
                });
            }
            "Recycle" => {
                remove_pv_dirs(ctl, &pv);
                registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                    obj::map_at(p, &["spec"]).remove("claimRef");
                    obj::set(p, &["status", "phase"], json!("Available"));
                });
            }
            _ => {
                if phase != "Released" {
                    registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                        obj::set(p, &["status", "phase"], json!("Released"));
                    });
                }
            }
        }
    }
    // A bound claim whose volume vanished is Lost.
    for pvc in &pvcs {
        if obj::str_at(pvc, "/status/phase") == Some("Bound") {
            let vol = obj::str_at(pvc, "/spec/volumeName").unwrap_or("");
            if store.get(&kinds::PV, "", vol).is_none() {
                registry::modify(
                    store,
                    &kinds::PVC,
                    obj::namespace(pvc),
                    obj::name(pvc),
                    |c| {
                        obj::set(c, &["status", "phase"], json!("Lost"));
                    },
                );
            }
        }
    }
    // Protection finalizers: a PVC goes once no pod uses it; a PV once it is not bound.
    for pvc in &pvcs {
        if obj::is_deleting(pvc) && consumers(obj::namespace(pvc), obj::name(pvc)).is_empty() {
            let uid = obj::uid(pvc).to_string();
            registry::modify(
                store,
                &kinds::PVC,
                obj::namespace(pvc),
                obj::name(pvc),
                |c| {
                    if obj::uid(c) == uid {
                        registry::remove_finalizer(c, "kubernetes.io/pvc-protection");
                    }
                },
            );
        }
    }
    for pv in store.list(&kinds::PV, None) {
        if obj::is_deleting(&pv) && obj::str_at(&pv, "/status/phase") != Some("Bound") {
            remove_pv_dirs_if_delete(ctl, &pv);
            registry::modify(store, &kinds::PV, "", obj::name(&pv), |p| {
                registry::remove_finalizer(p, "kubernetes.io/pv-protection");
            });
        }
    }
    // Expansion of bound claims (admission already refused classes that cannot expand): the
    // volume grows at once, and so does the claim's capacity unless its class is one whose file
    // system resize never finishes (the claim then waits at `FileSystemResizePending`).
    for pvc in &pvcs {
        let want = obj::quantity_at(pvc, "/spec/resources/requests/storage").unwrap_or(0);
        let have = obj::quantity_at(pvc, "/status/capacity/storage").unwrap_or(want);
        if obj::str_at(pvc, "/status/phase") == Some("Bound") && want > have {
            let size = pvc
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or(Value::Null);
            let vol = obj::str_at(pvc, "/spec/volumeName")
                .unwrap_or("")
                .to_string();
            let stalled = ctl
                .options
                .stalled_resize_classes
                .iter()
                .any(|c| c == pvc_class(pvc));
            registry::modify(store, &kinds::PV, "", &vol, |p| {
                obj::set(p, &["spec", "capacity", "storage"], size.clone());
            });
            let pending_before = obj::array_at(pvc, "/status/conditions")
                .iter()
                .any(|c| obj::str_at(c, "/type") == Some("FileSystemResizePending"));
            registry::modify(
                store,
                &kinds::PVC,
                obj::namespace(pvc),
                obj::name(pvc),
                |c| {
                    obj::set(
                        c,
                        &["status", "allocatedResources", "storage"],
                        size.clone(),
                    );
                    if stalled {
                        if !pending_before {
                            obj::set(
                                c,
                                &["status", "allocatedResourceStatuses"],
                                json!({"storage": "NodeResizePending"}),
                            );
                            obj::set(
                                c,
                                &["status", "conditions"],
                                json!([{"type": "FileSystemResizePending", "status": "True",
                                    "lastProbeTime": null, "lastTransitionTime": obj::now(),
                                    "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}]),
                            );
                        }
                    } else {
                        obj::set(c, &["status", "capacity", "storage"], size.clone());
                        if let Some(st) = c.get_mut("status").and_then(Value::as_object_mut) {
                            st.remove("conditions");
                            st.remove("allocatedResourceStatuses");
                        }
                    }
                },
            );
            if stalled && !pending_before {
                registry::record_event(
                    store,
                    &kinds::PVC,
                    pvc,
                    "Normal",
                    "FileSystemResizeRequired",
                    "Require file system resize of volume on node",
                );
            }
        }
    }
    if ctl.options.snapshot_controller {
        snapshots(ctl);
    }
}

fn remove_pv_dirs_if_delete(ctl: &Controllers, pv: &Value) {
    if obj::str_at(pv, "/spec/persistentVolumeReclaimPolicy") == Some("Delete")
        && pv.pointer("/spec/claimRef").is_some_and(|c| !c.is_null())
    {
        remove_pv_dirs(ctl, pv);
    }
}

fn snapshots(ctl: &Controllers) {
    let store = &ctl.store;
    let snaps = store.list(&kinds::VOLUME_SNAPSHOT, None);
    for snap in &snaps {
        if obj::is_deleting(snap) || snap.pointer("/status/readyToUse") == Some(&json!(true)) {
            continue;
        }
        let uid = obj::uid(snap).to_string();
        if ctl
            .volumes
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&uid)
        {
            continue;
        }
        let ns = obj::namespace(snap);
        let Some(claim) = obj::str_at(snap, "/spec/source/persistentVolumeClaimName") else {
            continue;
        };
        let Some(pvc) = store
            .get(&kinds::PVC, ns, claim)
            .filter(|c| obj::str_at(c, "/status/phase") == Some("Bound"))
        else {
            continue;
        };
        let Some(pv) = store.get(
            &kinds::PV,
            "",
            obj::str_at(&pvc, "/spec/volumeName").unwrap_or(""),
        ) else {
            continue;
        };
        ctl.volumes
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.clone());
        // The controller binds a content object first and reports the snapshot not ready yet.
        registry::modify(store, &kinds::VOLUME_SNAPSHOT, ns, obj::name(snap), |s| {
            if obj::uid(s) == uid && s.pointer("/status/readyToUse").is_none() {
                obj::set(
                    s,
                    &["status"],
                    json!({"readyToUse": false,
                           "boundVolumeSnapshotContentName": format!("snapcontent-{uid}")}),
                );
            }
        });
        let from = pv_host_dir(ctl.kubelet.root(), ctl.kubelet.nodes(), &pv, None);
        let to = snapshot_dir(ctl, &uid);
        let size = pvc
            .pointer("/status/capacity/storage")
            .cloned()
            .unwrap_or(Value::Null);
        let (store, busy, ns, name) = (
            store.clone(),
            ctl.volumes.busy.clone(),
            ns.to_string(),
            obj::name(snap).to_string(),
        );
        std::thread::spawn(move || {
            let result = copy_point_in_time(&from, &to);
            registry::modify(&store, &kinds::VOLUME_SNAPSHOT, &ns, &name, |s| {
                if obj::uid(s) != uid {
                    return;
                }
                match &result {
                    Ok(()) => obj::set(
                        s,
                        &["status"],
                        json!({
                            "readyToUse": true, "restoreSize": size, "creationTime": obj::now(),
                            "boundVolumeSnapshotContentName": format!("snapcontent-{uid}"),
                        }),
                    ),
                    Err(e) => obj::set(
                        s,
                        &["status"],
                        json!({"readyToUse": false,
                        "error": {"message": e, "time": obj::now()}}),
                    ),
                }
            });
            busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        });
    }
    // Drop the data of snapshots that are gone.
    let live: HashSet<&str> = snaps.iter().map(|s| obj::uid(s)).collect();
    if let Ok(entries) = std::fs::read_dir(ctl.kubelet.root().join("snapshots")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let busy = ctl
                .volumes
                .busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&name);
            if !live.contains(name.as_str()) && !busy {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
