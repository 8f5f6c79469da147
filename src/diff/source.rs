//! Finding the source in the observed state: the workload, its Postgres
//! container, its data volume (PVC → PV, or nothing that survives the pod),
//! the Services in front of it and the server's inventory.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::addr::Locator;
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
        Locator::k8s(&self.namespace, self.kind.as_str(), &self.name).to_string()
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
    /// The workload (`Deployment billing-api`) has no container pgplan can
    /// take for the server.
    NoContainer {
        workload: String,
        problem: ContainerProblem,
    },
}

/// Why no container of a pod template is taken for the PostgreSQL server.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerProblem {
    /// `source.kubernetes.container` names a container the pod does not have.
    Missing { wanted: String, have: Vec<String> },
    /// No container looks like a PostgreSQL server.
    NoServer { have: Vec<String> },
    /// Several do, equally.
    Ambiguous(Vec<String>),
}

/// A located diagnostic about the source for the planner to raise: the
/// spec path (under `spec`), code, message and help.
pub struct Diagnosis {
    pub path: &'static [&'static str],
    pub code: &'static str,
    pub message: String,
    pub help: String,
}

impl SourceProblem {
    /// The diagnostic of a container problem or of a selector matching
    /// several workloads (`None` for a missing source, which each journey
    /// words itself).
    pub fn container_diagnosis(&self) -> Option<Diagnosis> {
        let (workload, problem) = match self {
            SourceProblem::NoContainer { workload, problem } => (workload, problem),
            SourceProblem::Ambiguous(names) => {
                return Some(Diagnosis {
                    path: &["source", "kubernetes", "workload", "selector"],
                    code: "pgplan::plan::source-ambiguous",
                    message: format!(
                        "the selector matches several workloads: {}",
                        names.join(", ")
                    ),
                    help: "add labels to the selector, or name the workload".into(),
                })
            }
            SourceProblem::NotFound => return None,
        };
        Some(match problem {
            ContainerProblem::Missing { wanted, have } => Diagnosis {
                path: &["source", "kubernetes", "container"],
                code: "pgplan::plan::no-container",
                message: format!("{workload} has no container named `{wanted}`"),
                help: format!("its containers are: {}", have.join(", ")),
            },
            ContainerProblem::NoServer { have } => Diagnosis {
                path: &["source", "kubernetes", "workload"],
                code: "pgplan::plan::no-container",
                message: format!("{workload} has no PostgreSQL container"),
                help: format!(
                    "its containers ({}) run no PostgreSQL server image, command, port 5432 or data volume: point `source.kubernetes.workload` at the database's workload (a selector may match the application instead), or set `source.kubernetes.container` if the server runs in one of them",
                    have.join(", ")
                ),
            },
            ContainerProblem::Ambiguous(names) => Diagnosis {
                path: &["source", "kubernetes", "workload"],
                code: "pgplan::plan::ambiguous-container",
                message: format!(
                    "{workload} has several containers that could run PostgreSQL: {}",
                    names.join(", ")
                ),
                help: "set `source.kubernetes.container` to the one that runs the server".into(),
            },
        })
    }
}

/// The container chosen as the PostgreSQL server, and why.
#[derive(Debug, Clone)]
pub struct ContainerChoice<'a> {
    pub container: &'a Value,
    pub name: String,
    /// What pointed at it (`image postgres:15`, `port 5432`, …); empty when
    /// the spec named it.
    pub evidence: Vec<String>,
    /// The evidence is thin (a single sign, or neither a server image nor a
    /// server command): errors from inside it should say which container was
    /// tried.
    pub unsure: bool,
}

/// The repository part of an image reference (`quay.io/org/postgres-exporter:v1`
/// → `postgres-exporter`), lowercased.
fn image_repo(image: &str) -> String {
    let lower = image.to_ascii_lowercase();
    let without_digest = lower.split('@').next().unwrap_or("");
    let last = without_digest.rsplit('/').next().unwrap_or("");
    last.split(':').next().unwrap_or("").to_string()
}

/// Containers that talk to PostgreSQL without being it: exporters, poolers,
/// admin UIs, backup agents.
fn is_companion(name: &str, repo: &str) -> bool {
    const COMPANIONS: [&str; 9] = [
        "exporter", "bouncer", "pgpool", "pgadmin", "backrest", "wal-g", "walg", "barman", "proxy",
    ];
    COMPANIONS
        .iter()
        .any(|c| repo.contains(c) || name.to_ascii_lowercase().contains(c))
}

/// Signs that `c` runs the PostgreSQL server, with what they were.
fn server_signs(c: &Value) -> Vec<String> {
    let name = str_at(c, &["name"]).unwrap_or("");
    let image = str_at(c, &["image"]).unwrap_or("");
    let repo = image_repo(image);
    if is_companion(name, &repo) {
        return Vec::new();
    }
    let mut signs = Vec::new();
    if ["postgres", "postgis", "timescaledb", "pgvector"]
        .iter()
        .any(|p| repo.contains(p))
    {
        signs.push(format!("image {image}"));
    }
    let first = at(c, &["command", "0"])
        .or_else(|| at(c, &["args", "0"]))
        .and_then(Value::as_str);
    if let Some(cmd) = first {
        let base = cmd.rsplit('/').next().unwrap_or(cmd);
        if matches!(
            base,
            "postgres" | "postmaster" | "docker-entrypoint.sh" | "run-postgresql" | "pg_ctl"
        ) {
            signs.push(format!("command {base}"));
        }
    }
    let ports = at(c, &["ports"]).and_then(Value::as_array);
    if ports.is_some_and(|ps| {
        ps.iter().any(|p| {
            p["containerPort"] == 5432
                || str_at(p, &["name"]).is_some_and(|n| n.contains("postgres"))
        })
    }) {
        signs.push("port 5432".into());
    }
    let pgdata = at(c, &["env"])
        .and_then(Value::as_array)
        .and_then(|env| env.iter().find(|e| e["name"] == "PGDATA"))
        .and_then(|e| str_at(e, &["value"]));
    let mounts = at(c, &["volumeMounts"]).and_then(Value::as_array);
    if let Some(m) = mounts.and_then(|ms| {
        ms.iter().find(|m| {
            str_at(m, &["mountPath"]).is_some_and(|p| {
                is_data_path(p) || pgdata.is_some_and(|d| d.starts_with(p.trim_end_matches('/')))
            })
        })
    }) {
        signs.push(format!(
            "data volume at {}",
            str_at(m, &["mountPath"]).unwrap_or("")
        ));
    }
    signs
}

/// Where PostgreSQL images keep their data.
fn is_data_path(p: &str) -> bool {
    p.starts_with("/var/lib/postgresql") || p.starts_with("/var/lib/pgsql") || p.contains("pgdata")
}

/// The container of a pod spec that runs the PostgreSQL server: the one the
/// spec names, else the one with the most signs of a server (its image, its
/// command, port 5432, a data volume), never an exporter, pooler or other
/// companion. Shared by the planner and by observe, so both exec into the
/// same container.
pub fn postgres_container<'a>(
    pod_spec: &'a Value,
    wanted: Option<&str>,
) -> Result<ContainerChoice<'a>, ContainerProblem> {
    let containers = at(pod_spec, &["containers"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<String> = containers
        .iter()
        .map(|c| str_at(c, &["name"]).unwrap_or("").to_string())
        .collect();
    if let Some(w) = wanted {
        return containers
            .iter()
            .find(|c| str_at(c, &["name"]) == Some(w))
            .map(|c| ContainerChoice {
                container: c,
                name: w.to_string(),
                evidence: Vec::new(),
                unsure: false,
            })
            .ok_or(ContainerProblem::Missing {
                wanted: w.to_string(),
                have: names.clone(),
            });
    }
    let scored: Vec<(&Value, Vec<String>)> =
        containers.iter().map(|c| (c, server_signs(c))).collect();
    let best = scored.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    // A port or a mount alone does not make a server; an image or a command does.
    let strong = |s: &Vec<String>| {
        s.iter()
            .any(|x| x.starts_with("image ") || x.starts_with("command "))
    };
    let top: Vec<&(&Value, Vec<String>)> = scored
        .iter()
        .filter(|(_, s)| s.len() == best && best > 0 && (strong(s) || s.len() >= 2))
        .collect();
    match top.as_slice() {
        [] => Err(ContainerProblem::NoServer {
            have: containers
                .iter()
                .map(|c| {
                    format!(
                        "{} ({})",
                        str_at(c, &["name"]).unwrap_or(""),
                        str_at(c, &["image"]).unwrap_or("no image")
                    )
                })
                .collect(),
        }),
        [(c, signs)] => Ok(ContainerChoice {
            container: c,
            name: str_at(c, &["name"]).unwrap_or("").to_string(),
            evidence: signs.clone(),
            unsure: !strong(signs) || signs.len() < 2,
        }),
        many => Err(ContainerProblem::Ambiguous(
            many.iter()
                .map(|(c, _)| str_at(c, &["name"]).unwrap_or("").to_string())
                .collect(),
        )),
    }
}

/// The address a plan reads as absent for a source workload that is gone
/// (a move that happened earlier): its kind and name in its namespace.
pub fn absent_address(src: &KubeSource) -> String {
    Locator::k8s(
        &src.namespace,
        src.workload.kind.as_str(),
        src.workload.name.as_deref().unwrap_or_default(),
    )
    .to_string()
}

/// How a source that was not found is worded, after "the source …": the
/// workload by kind and name (or selector) and its namespace, or that the
/// namespace itself does not exist; with the matching help line.
pub fn describe_missing(idx: &Index<'_>, src: &KubeSource) -> (String, String) {
    let kind = src.workload.kind.as_str();
    let workload = match (&src.workload.name, &src.workload.selector) {
        (Some(name), _) => format!("{kind} `{name}`"),
        (None, Some(sel)) => format!(
            "{kind} matching {}",
            sel.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        (None, None) => kind.to_string(),
    };
    let ns = &src.namespace;
    if idx
        .observed
        .kubernetes
        .missing_namespaces
        .iter()
        .any(|m| m == ns)
    {
        (
            format!("{workload} cannot be there: namespace `{ns}` does not exist"),
            format!("correct `source.kubernetes.namespace` (`kubectl get namespaces` lists them), or create namespace `{ns}`"),
        )
    } else {
        (
            format!("{workload} was not found in namespace `{ns}`"),
            format!("check the workload's name and namespace (`kubectl get deploy,sts -n {ns}`)"),
        )
    }
}

pub fn resolve<'a>(idx: &Index<'a>, src: &KubeSource) -> Result<SourceFacts<'a>, SourceProblem> {
    let kind = src.workload.kind.as_str();
    let manifest = find_workload(idx, src)?;
    let name = str_at(manifest, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    let template = at(manifest, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    let mut pod_labels = labels(&template);
    pod_labels.remove("pod-template-hash");

    let pod_spec = at(manifest, &["spec", "template", "spec"]).unwrap_or(&Value::Null);
    let choice = postgres_container(pod_spec, src.container.as_deref()).map_err(|problem| {
        SourceProblem::NoContainer {
            workload: format!("{kind} {name}"),
            problem,
        }
    })?;
    let container = choice.container;
    let container_name = choice.name;

    let (data_volume_name, data_mount_path) = data_mount(container);

    let replicas = at(manifest, &["spec", "replicas"])
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let data = data_volume(
        idx,
        src,
        manifest,
        &name,
        replicas,
        data_volume_name.as_deref(),
    );

    let services = selecting(idx, &src.namespace, &pod_labels);

    let locator = Locator::k8s(&src.namespace, kind, &name).to_string();
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

/// The workload the source names, or the one its selector matches.
fn find_workload<'a>(idx: &Index<'a>, src: &KubeSource) -> Result<&'a Value, SourceProblem> {
    let kind = src.workload.kind.as_str();
    match (&src.workload.name, &src.workload.selector) {
        (Some(name), _) => idx
            .get(kind, &src.namespace, name)
            .ok_or(SourceProblem::NotFound),
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
                0 => Err(SourceProblem::NotFound),
                1 => Ok(found[0]),
                _ => Err(SourceProblem::Ambiguous(
                    found
                        .iter()
                        .filter_map(|o| str_at(o, &["metadata", "name"]).map(str::to_string))
                        .collect(),
                )),
            }
        }
        (None, None) => Err(SourceProblem::NotFound),
    }
}

/// The data volume's name and mount path: the mount where Postgres keeps
/// its cluster, failing that the only volume mount.
fn data_mount(container: &Value) -> (Option<String>, String) {
    let mounts = at(container, &["volumeMounts"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let data_mount = mounts
        .iter()
        .find(|m| str_at(m, &["mountPath"]).is_some_and(is_data_path))
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

    (data_volume_name, data_mount_path)
}

/// Where the workload's data lives: a StatefulSet's claims from its
/// template (the data volume's, else the first), or a pod volume.
fn data_volume<'a>(
    idx: &Index<'a>,
    src: &KubeSource,
    manifest: &Value,
    name: &str,
    replicas: u32,
    data_volume_name: Option<&str>,
) -> DataVolume<'a> {
    let template = at(manifest, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    match src.workload.kind {
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
                .map(str::to_string)
                .filter(|v| templates.contains(v))
                .or_else(|| templates.first().cloned());
            match claim_template {
                Some(t) => {
                    let claims = (0..replicas.max(1))
                        .filter_map(|i| {
                            let pvc = idx.get(
                                "PersistentVolumeClaim",
                                &src.namespace,
                                &crate::names::claim_name(&t, name, i),
                            )?;
                            Some((pvc, bound_volume(idx, pvc)))
                        })
                        .collect();
                    DataVolume::Templates { claims }
                }
                None => ephemeral_or_claim(idx, &src.namespace, &template, data_volume_name),
            }
        }
        WorkloadKind::Deployment => {
            ephemeral_or_claim(idx, &src.namespace, &template, data_volume_name)
        }
    }
}

/// The Services in `namespace` whose selector matches the pod labels.
fn selecting<'a>(
    idx: &Index<'a>,
    namespace: &str,
    pod_labels: &BTreeMap<String, String>,
) -> Vec<&'a Value> {
    idx.list("Service", namespace)
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
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"containers": containers})
    }

    #[test]
    fn an_exporter_listed_first_is_never_the_server() {
        let spec = pod(json!([
            {"name": "postgres-exporter", "image": "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
             "ports": [{"containerPort": 9187}], "env": [{"name": "DATA_SOURCE_NAME", "value": "postgresql://localhost:5432/postgres"}]},
            {"name": "db", "image": "postgres:15", "ports": [{"containerPort": 5432}],
             "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]},
        ]));
        let c = postgres_container(&spec, None).unwrap();
        assert_eq!(c.name, "db");
        assert_eq!(
            c.evidence,
            [
                "image postgres:15",
                "port 5432",
                "data volume at /var/lib/postgresql/data"
            ]
        );
        assert!(!c.unsure);
    }

    #[test]
    fn poolers_and_admin_uis_are_companions_too() {
        let spec = pod(json!([
            {"name": "pgbouncer", "image": "bitnami/pgbouncer:1.22", "ports": [{"containerPort": 5432}]},
            {"name": "server", "image": "registry.redhat.io/rhel9/postgresql-15"},
        ]));
        let c = postgres_container(&spec, None).unwrap();
        assert_eq!((c.name.as_str(), c.unsure), ("server", true));
    }

    #[test]
    fn an_application_has_no_postgres_container() {
        let spec = pod(
            json!([{"name": "api", "image": "billing/api:2", "ports": [{"containerPort": 8080}],
            "env": [{"name": "POSTGRES_PASSWORD", "value": "x"}]}]),
        );
        assert_eq!(
            postgres_container(&spec, None).unwrap_err(),
            ContainerProblem::NoServer {
                have: vec!["api (billing/api:2)".into()]
            }
        );
    }

    #[test]
    fn a_custom_image_is_known_by_its_command_port_and_volume() {
        let spec = pod(json!([
            {"name": "sidecar", "image": "busybox:1.36", "command": ["sh", "-c", "sleep infinity"]},
            {"name": "db", "image": "mycorp/db:3", "args": ["postgres", "-c", "max_connections=50"],
             "ports": [{"containerPort": 5432}]},
        ]));
        let c = postgres_container(&spec, None).unwrap();
        assert_eq!((c.name.as_str(), c.unsure), ("db", false));
    }

    #[test]
    fn two_servers_are_ambiguous_and_a_named_container_must_exist() {
        let spec = pod(json!([
            {"name": "a", "image": "postgres:15"},
            {"name": "b", "image": "postgres:16"},
        ]));
        assert_eq!(
            postgres_container(&spec, None).unwrap_err(),
            ContainerProblem::Ambiguous(vec!["a".into(), "b".into()])
        );
        assert_eq!(postgres_container(&spec, Some("b")).unwrap().name, "b");
        assert_eq!(
            postgres_container(&spec, Some("c")).unwrap_err(),
            ContainerProblem::Missing {
                wanted: "c".into(),
                have: vec!["a".into(), "b".into()]
            }
        );
    }
}
