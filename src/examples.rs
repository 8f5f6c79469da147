//! The examples shipped inside the binary (`--example NAME`), so that a
//! newcomer's first command needs no file and no cluster.

/// An example spec with its saved live state and the files it names.
pub struct Example {
    pub name: &'static str,
    pub spec: &'static str,
    pub live: &'static str,
    /// (path as written in the spec, contents)
    pub files: &'static [(&'static str, &'static str)],
}

pub const EXAMPLES: &[Example] = &[
    Example {
        name: "healthcare",
        spec: include_str!("../examples/healthcare/pgplan.yaml"),
        live: include_str!("../examples/healthcare/live.yaml"),
        files: &[],
    },
    Example {
        name: "backstage-to-rds",
        spec: include_str!("../examples/backstage-to-rds/pgplan.yaml"),
        live: include_str!("../examples/backstage-to-rds/live.yaml"),
        files: &[(
            "rds-ca.pem",
            include_str!("../examples/backstage-to-rds/rds-ca.pem"),
        )],
    },
    Example {
        name: "pyairtable",
        spec: include_str!("../examples/pyairtable/pgplan.yaml"),
        live: include_str!("../examples/pyairtable/live.yaml"),
        files: &[],
    },
];

pub fn find(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name)
}

pub fn names() -> Vec<&'static str> {
    EXAMPLES.iter().map(|e| e.name).collect()
}

/// A generated spec and live state: `placements` copies of the healthcare
/// placement in their own namespaces, each moving `databases` databases.
/// Used by the benchmark and by scale tests.
pub fn generated(placements: usize, databases: usize) -> (String, String) {
    use serde_json::json;
    let Some(base) = find("healthcare") else {
        return (String::new(), String::new());
    };
    let Ok(live) = crate::observed::load_snapshot("live.yaml", base.live.as_bytes()) else {
        return (String::new(), String::new());
    };
    let mut docs = Vec::with_capacity(placements);
    let mut out = crate::observed::Observed {
        format_version: crate::observed::SNAPSHOT_FORMAT_VERSION,
        ..Default::default()
    };
    for p in 0..placements {
        let ns = format!("team-{p:03}");
        let names: Vec<String> = (0..databases)
            .map(|d| format!("db_{p:03}_{d:03}"))
            .collect();
        let listed: String = names.iter().map(|n| format!("    - {n}\n")).collect();
        docs.push(
            base.spec
                .replace("name: healthcare\n", &format!("name: {ns}\n"))
                .replace("namespace: default", &format!("namespace: {ns}"))
                .replace("    - healthcare\n", &listed)
                .replace(
                    "database: healthcare",
                    &format!("database: {}", names.first().cloned().unwrap_or_default()),
                )
                .replace("name: postgres-pv-0", &format!("name: pv-{ns}"))
                .replace("path: /data/postgres-0", &format!("path: /data/{ns}"))
                .replace("backups/healthcare", &format!("backups/{ns}")),
        );
        for obj in &live.kubernetes.objects {
            let mut obj = obj.clone();
            let kind = obj["kind"].as_str().map(str::to_string);
            match kind.as_deref() {
                Some("StorageClass") if p > 0 => continue,
                Some("StorageClass") => {}
                Some("PersistentVolume") => {
                    obj["metadata"]["name"] = json!(format!("old-{ns}"));
                    obj["spec"]["hostPath"]["path"] = json!(format!("/data/old-{ns}"));
                    obj["spec"]["claimRef"]["namespace"] = json!(ns);
                }
                Some(kind) => {
                    obj["metadata"]["namespace"] = json!(ns);
                    if kind == "PersistentVolumeClaim" {
                        obj["spec"]["volumeName"] = json!(format!("old-{ns}"));
                    }
                }
                None => continue,
            }
            out.kubernetes.objects.push(obj);
        }
        for server in &live.servers {
            let mut server = server.clone();
            server.locator = crate::addr::Locator::k8s(&ns, "Deployment", "postgres").to_string();
            let Some(template) = server.databases.first().cloned() else {
                continue;
            };
            server.databases = names
                .iter()
                .map(|n| {
                    let mut d = template.clone();
                    d.name = n.clone();
                    d
                })
                .collect();
            out.servers.push(server);
        }
    }
    let live_text = crate::observed::to_yaml(&out).unwrap_or_default();
    (docs.join("---\n"), live_text)
}
