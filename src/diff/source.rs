//! Finding the source in the observed state: the workload, its Postgres
//! container, its data volume (PVC → PV, or nothing that survives the pod),
//! the Services in front of it and the server's inventory.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::observed::{at, labels, str_at, Index, ServerInventory};
use crate::spec::{KubeSource, WorkloadKind};

/// Where the source's data lives.
#[derive(Debug, Clone)]
pub enum DataVolume<'a> {
    /// A PVC shared by whatever pod the Deployment runs (seed 002's "before").
    Claim {
        pvc: &'a Value,
        pv: Option<&'a Value>,
    },
    /// One PVC per pod from volumeClaimTemplates.
    Templates {
        claims: Vec<(&'a Value, Option<&'a Value>)>,
    },
    /// emptyDir or no volume: the data dies with the pod.
    Ephemeral { what: String },
}

/// The source workload as observed.
#[derive(Debug, Clone)]
pub struct SourceFacts<'a> {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub manifest: &'a Value,
    pub pod_labels: BTreeMap<String, String>,
    pub container: &'a Value,
    pub container_name: String,
    pub replicas: u32,
    pub data: DataVolume<'a>,
    /// Name of the pod volume holding the data (mounted at the data path).
    pub data_volume_name: Option<String>,
    pub data_mount_path: String,
    pub services: Vec<&'a Value>,
    pub server: Option<&'a ServerInventory>,
}

impl SourceFacts<'_> {
    pub fn locator(&self) -> String {
        format!(
            "k8s/{}/{}/{}",
            self.namespace,
            self.kind.as_str(),
            self.name
        )
    }
    pub fn data_at_risk(&self) -> bool {
        matches!(self.data, DataVolume::Ephemeral { .. })
    }
}

/// Why the source could not be resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceProblem {
    NotFound,
    Ambiguous(Vec<String>),
    NoContainer(String),
}

pub fn resolve<'a>(idx: &Index<'a>, src: &KubeSource) -> Result<SourceFacts<'a>, SourceProblem> {
    let kind = src.workload.kind.as_str();
    let manifest = match (&src.workload.name, &src.workload.selector) {
        (Some(name), _) => idx
            .get(kind, &src.namespace, name)
            .ok_or(SourceProblem::NotFound)?,
        (None, Some(sel)) => {
            let found: Vec<&Value> = idx
                .list(kind, &src.namespace)
                .into_iter()
                .filter(|o| {
                    let l = labels(o);
                    sel.iter().all(|(k, v)| l.get(k) == Some(v))
                })
                .collect();
            match found.len() {
                0 => return Err(SourceProblem::NotFound),
                1 => found[0],
                _ => {
                    return Err(SourceProblem::Ambiguous(
                        found
                            .iter()
                            .filter_map(|o| str_at(o, &["metadata", "name"]).map(str::to_string))
                            .collect(),
                    ))
                }
            }
        }
        (None, None) => return Err(SourceProblem::NotFound),
    };
    let name = str_at(manifest, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    let template = at(manifest, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    let mut pod_labels = labels(&template);
    pod_labels.remove("pod-template-hash");

    let containers = at(manifest, &["spec", "template", "spec", "containers"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let container = match &src.container {
        Some(c) => containers
            .iter()
            .find(|x| str_at(x, &["name"]) == Some(c.as_str())),
        None => containers
            .iter()
            .find(|x| str_at(x, &["image"]).is_some_and(|i| i.contains("postgres")))
            .or_else(|| containers.first()),
    }
    .ok_or_else(|| SourceProblem::NoContainer(name.clone()))?;
    let container_name = str_at(container, &["name"])
        .unwrap_or("postgres")
        .to_string();

    // The data volume is the one mounted where Postgres keeps its cluster;
    // failing that, the only volume mount.
    let mounts = at(container, &["volumeMounts"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let data_mount = mounts
        .iter()
        .find(|m| {
            str_at(m, &["mountPath"]).is_some_and(|p| {
                p.starts_with("/var/lib/postgresql")
                    || p.starts_with("/var/lib/pgsql")
                    || p.contains("pgdata")
            })
        })
        .or(if mounts.len() == 1 {
            mounts.first()
        } else {
            None
        });
    let data_volume_name = data_mount
        .and_then(|m| str_at(m, &["name"]))
        .map(str::to_string);
    let data_mount_path = data_mount
        .and_then(|m| str_at(m, &["mountPath"]))
        .unwrap_or("/var/lib/postgresql/data")
        .to_string();

    let replicas = at(manifest, &["spec", "replicas"])
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let data = match src.workload.kind {
        WorkloadKind::StatefulSet => {
            let templates: Vec<String> = at(manifest, &["spec", "volumeClaimTemplates"])
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(|x| str_at(x, &["metadata", "name"]).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let claim_template = data_volume_name
                .clone()
                .filter(|v| templates.contains(v))
                .or_else(|| templates.first().cloned());
            match claim_template {
                Some(t) => {
                    let claims = (0..replicas.max(1))
                        .filter_map(|i| {
                            let pvc = idx.get(
                                "PersistentVolumeClaim",
                                &src.namespace,
                                &format!("{t}-{name}-{i}"),
                            )?;
                            Some((pvc, bound_volume(idx, pvc)))
                        })
                        .collect();
                    DataVolume::Templates { claims }
                }
                None => {
                    ephemeral_or_claim(idx, &src.namespace, &template, data_volume_name.as_deref())
                }
            }
        }
        WorkloadKind::Deployment => {
            ephemeral_or_claim(idx, &src.namespace, &template, data_volume_name.as_deref())
        }
    };

    let services = idx
        .list("Service", &src.namespace)
        .into_iter()
        .filter(|svc| {
            at(svc, &["spec", "selector"])
                .and_then(Value::as_object)
                .is_some_and(|sel| {
                    !sel.is_empty()
                        && sel.iter().all(|(k, v)| {
                            v.as_str()
                                .is_some_and(|v| pod_labels.get(k).map(String::as_str) == Some(v))
                        })
                })
        })
        .collect();

    let locator = format!("k8s/{}/{}/{}", src.namespace, kind, name);
    Ok(SourceFacts {
        kind: src.workload.kind,
        namespace: src.namespace.clone(),
        name,
        manifest,
        pod_labels,
        container,
        container_name,
        replicas,
        data,
        data_volume_name,
        data_mount_path,
        services,
        server: idx.server(&locator),
    })
}

fn ephemeral_or_claim<'a>(
    idx: &Index<'a>,
    namespace: &str,
    template: &Value,
    volume: Option<&str>,
) -> DataVolume<'a> {
    let Some(volume) = volume else {
        return DataVolume::Ephemeral {
            what: "no volume (the container's own filesystem)".into(),
        };
    };
    let vol = at(template, &["spec", "volumes"])
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| str_at(v, &["name"]) == Some(volume)));
    match vol {
        Some(v) => match str_at(v, &["persistentVolumeClaim", "claimName"]) {
            Some(claim) => match idx.get("PersistentVolumeClaim", namespace, claim) {
                Some(pvc) => DataVolume::Claim {
                    pvc,
                    pv: bound_volume(idx, pvc),
                },
                None => DataVolume::Ephemeral {
                    what: format!("PVC {claim}, which does not exist"),
                },
            },
            None if v.get("emptyDir").is_some() => DataVolume::Ephemeral {
                what: format!("emptyDir volume `{volume}`"),
            },
            None if v.get("hostPath").is_some() => DataVolume::Ephemeral {
                what: format!(
                    "hostPath volume `{volume}` (tied to whichever node the pod lands on)"
                ),
            },
            None => DataVolume::Ephemeral {
                what: format!("volume `{volume}`"),
            },
        },
        None => DataVolume::Ephemeral {
            what: "no volume (the container's own filesystem)".into(),
        },
    }
}

/// The PV a PVC is bound to.
pub fn bound_volume<'a>(idx: &Index<'a>, pvc: &Value) -> Option<&'a Value> {
    let name = str_at(pvc, &["spec", "volumeName"])?;
    idx.get("PersistentVolume", "", name)
}

/// The local directory of a PV (`local.path` or `hostPath.path`) and its node.
pub fn volume_location(pv: &Value) -> Option<(Option<String>, String)> {
    let path = str_at(pv, &["spec", "local", "path"])
        .or_else(|| str_at(pv, &["spec", "hostPath", "path"]))?;
    let node = at(
        pv,
        &[
            "spec",
            "nodeAffinity",
            "required",
            "nodeSelectorTerms",
            "0",
            "matchExpressions",
            "0",
            "values",
            "0",
        ],
    )
    .and_then(Value::as_str)
    .map(str::to_string);
    Some((node, path.to_string()))
}
