//! Snapshots are read by more than pgplan: kubectl (Go's yaml.v2, YAML
//! 1.1) and people's scripts (PyYAML, YAML 1.1). Every snapshot pgplan
//! writes, and the examples' `live.yaml`, must read back in PyYAML as the
//! same types and values as in pgplan.

use std::path::Path;

use serde_json::Value;

use crate::cli::repo;

/// Loads YAML with PyYAML (`yaml.safe_load`, YAML 1.1) and returns it as
/// JSON, with what JSON cannot hold (a date, a non-string key) turned into
/// a marked string so that a comparison shows it.
fn pyyaml(text: &str) -> Value {
    const LOAD: &str = r#"
import json, sys, yaml
def plain(v):
    if isinstance(v, dict):
        return {(k if isinstance(k, str) else f"!key {type(k).__name__} {k!r}"): plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    return f"!{type(v).__name__} {v!r}"
print(json.dumps(plain(yaml.safe_load(sys.stdin.read()))))
"#;
    use std::io::Write;
    let python = std::env::var("PGPLAN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&python)
        .arg("-c")
        .arg(LOAD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (PGPLAN_TEST_PYTHON) runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 ends");
    writer.join().expect("writer").expect("write to python3");
    assert!(
        out.status.success(),
        "PyYAML cannot read it (or is missing: scripts/test installs it with pip):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

/// The document as pgplan reads it.
fn ours(text: &str) -> Value {
    let docs = pgplan::yaml::parse(text).expect("pgplan reads it");
    docs.into_iter()
        .find(|d| !d.root.is_null())
        .map(|d| d.root.to_json())
        .unwrap_or(Value::Null)
}

/// The first place two values differ, as a path.
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = difference(v, w, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}: missing in PyYAML's reading")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}: PyYAML read a key {k}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| difference(v, w, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: pgplan reads {a}, PyYAML reads {b}")),
    }
}

fn assert_same_in_yaml_1_1(name: &str, text: &str) {
    let (a, b) = (ours(text), pyyaml(text));
    if let Some(d) = difference(&a, &b, "") {
        panic!("{name}: {d}");
    }
}

#[test]
fn the_examples_snapshots_read_the_same_in_yaml_1_1() {
    for example in pgplan::examples::EXAMPLES {
        assert_same_in_yaml_1_1(
            &format!("examples/{}/live.yaml", example.name),
            example.live,
        );
    }
}

/// The comment lines a snapshot file starts with.
fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The examples whose snapshot `pgplan observe` wrote (pyairtable's is
/// written by hand) are byte for byte what this pgplan writes.
#[test]
fn the_examples_snapshots_are_as_pgplan_writes_them() {
    let regenerate = std::env::var_os("PGPLAN_REGENERATE_EXAMPLES").is_some();
    for example in pgplan::examples::EXAMPLES
        .iter()
        .filter(|e| ["healthcare", "backstage-to-rds"].contains(&e.name))
    {
        let path = repo().join("examples").join(example.name).join("live.yaml");
        let observed = pgplan::observed::load_snapshot("live.yaml", example.live.as_bytes())
            .expect("the example's snapshot loads");
        let written = header(example.live) + &pgplan::observed::to_yaml(&observed).expect("writes");
        if regenerate {
            std::fs::write(&path, &written).expect("write the example");
        } else {
            assert!(
                written == example.live,
                "{} is not as pgplan writes it; PGPLAN_REGENERATE_EXAMPLES=1 rewrites it",
                Path::new(&path).display()
            );
        }
    }
}

/// Strings YAML 1.1 reads as other types, and neighbours of them.
const TRICKY: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "N",
    "True",
    "NO",
    "~",
    "",
    "null",
    "1e3",
    "1E3",
    "0o12",
    "0x1F",
    "0b101",
    "017",
    "08",
    "1_000",
    "1__0",
    "+1",
    "-1",
    ".5",
    "1.",
    ".inf",
    "-.Inf",
    ".NaN",
    "12:30:00",
    "190:20:30",
    "1:20.5",
    "2024-01-01",
    "2024-1-1",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "2026-11-21T13:30:45Z",
    "<<",
    "=",
    "yes please",
    "on-call",
    "1e3x",
    "0x",
    "v1",
    "5Gi",
    "1.2.3",
    "12:60",
    "'",
    "\"",
    "a: b",
    "- a",
    "#x",
    "x #y",
    "\t",
    "a\nb",
    "a\n",
    "\n",
    " lead",
    "trail ",
    "é",
    "🦀",
    "\u{2028}",
    "\u{85}",
    "\u{feff}x",
];

fn tricky_snapshot(seed: u64) -> pgplan::observed::Observed {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut annotations = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    for i in 0..40 {
        let a = TRICKY[(next() % TRICKY.len() as u64) as usize];
        let b = TRICKY[(next() % TRICKY.len() as u64) as usize];
        annotations.insert(
            format!("example.com/{a}{i}"),
            Value::String(format!("{a}{b}")),
        );
        annotations.insert(a.to_string(), Value::String(b.to_string()));
        labels.insert(format!("l{i}"), Value::String(a.to_string()));
    }
    let numbers = serde_json::json!([0, -1, 1_000_000_000_000u64, 1.5, 1e16, 2.5e-8, true, null]);
    let mut observed = pgplan::observed::Observed {
        format_version: pgplan::observed::SNAPSHOT_FORMAT_VERSION,
        ..Default::default()
    };
    observed.kubernetes.objects.push(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tricky", "namespace": "default", "annotations": annotations, "labels": labels},
        "data": {"numbers": numbers, "yes": "no", "list": TRICKY},
    }));
    observed
}

#[test]
fn snapshots_with_tricky_strings_read_the_same_in_yaml_1_1() {
    for seed in 1..=8u64 {
        let observed = tricky_snapshot(seed * 0x9e37_79b9);
        let text = pgplan::observed::to_yaml(&observed).expect("writes");
        assert_same_in_yaml_1_1(&format!("seed {seed}"), &text);
        // And pgplan reads back what it wrote.
        let back = pgplan::observed::load_snapshot("live.yaml", text.as_bytes()).expect("loads");
        assert_eq!(back, observed, "seed {seed}");
    }
    let (_, live) = pgplan::examples::generated(3, 3);
    assert_same_in_yaml_1_1("generated", &live);
}

#[test]
fn observe_writes_a_snapshot_yaml_1_1_reads_as_pgplan_does() {
    use crate::support::sim::scenario::healthcare as hc;
    use crate::support::{Scenario, SimCluster};
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    // Annotations and labels as people write them: `yes`, `on`, a date.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api: Api<Deployment> = Api::namespaced(cluster.client().await, hc::NAMESPACE);
        let patch = serde_json::json!({"metadata": {
            "annotations": {"example.com/backup": "yes", "example.com/since": "2024-01-01",
                            "example.com/window": "12:30:00", "example.com/ratio": "1e3",
                            "on": "off", "example.com/count": "1_000"},
            "labels": {"team-on-call": "y"},
        }});
        api.patch(
            hc::API_DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .expect("annotate");
    });
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("live.yaml");
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let out = crate::cli::pgplan(
        &[
            "observe",
            "-f",
            "examples/healthcare/pgplan.yaml",
            "--out",
            snap.to_str().unwrap(),
        ],
        &[("KUBECONFIG", &kubeconfig)],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&snap).unwrap();
    for line in [
        "example.com/backup: 'yes'",
        "example.com/since: '2024-01-01'",
        "'on': 'off'",
        "team-on-call: 'y'",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert_same_in_yaml_1_1("observe --out", &text);
}
