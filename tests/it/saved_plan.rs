//! Saved plans (`plan --out FILE`): `show FILE` renders them again without
//! a cluster, and a file whose versions are unknown or whose content was
//! changed after pgplan wrote it is refused by `show` and `apply` before
//! anything is read from or written to the cluster.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::apply::{ok, pgplan_in, spec, text};
use crate::cli::pgplan_command;
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

/// pgplan in `dir` with no reachable cluster.
fn offline(dir: &Path, args: &[&str]) -> Output {
    pgplan_command()
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("RDS_MASTER_PASSWORD", "canary-Xq7-password")
        .output()
        .expect("run pgplan")
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[test]
fn show_renders_a_saved_plan_exactly_as_plan_printed_it() {
    let dir = tempfile::tempdir().unwrap();
    for example in [
        &["--example", "healthcare"][..],
        &["--example", "backstage-to-rds"],
        &["--example", "pyairtable", "--env", "staging"],
        &["--example", "pyairtable", "--env", "dev"],
    ] {
        let saved = offline(
            dir.path(),
            &[&["plan", "--out", "p.json"][..], example].concat(),
        );
        assert_eq!(saved.status.code(), Some(0), "{}", text(&saved.stderr));
        for format in ["text", "json", "markdown"] {
            let planned = offline(
                dir.path(),
                &[&["plan", "--format", format][..], example].concat(),
            );
            let shown = offline(dir.path(), &["show", "p.json", "--format", format]);
            assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
            assert_eq!(
                text(&shown.stdout),
                text(&planned.stdout),
                "{example:?} as {format}"
            );
            assert!(!text(&shown.stdout).contains("canary-Xq7-password"));
        }
        // The text plan is what `plan --out` itself printed.
        assert_eq!(
            text(&offline(dir.path(), &["show", "p.json"]).stdout),
            text(&saved.stdout)
        );
    }
}

/// One way of tampering with a saved plan, and what pgplan must say.
struct Tamper {
    name: &'static str,
    change: fn(&mut Value),
    says: &'static str,
}

const TAMPERS: &[Tamper] = &[
    Tamper {
        name: "outer format version",
        change: |v| v["format_version"] = "3.0".into(),
        says: "its saved-plan format is 3.0, and this pgplan reads format 2.0",
    },
    Tamper {
        name: "old camelCase envelope",
        change: |v| {
            let o = v.as_object_mut().unwrap();
            let f = o.remove("format_version").unwrap();
            o.insert("formatVersion".into(), f);
        },
        says: "its saved-plan format is 2.0 (camelCase keys, no checksum), and this pgplan reads format 2.0",
    },
    Tamper {
        name: "inner format_version changed",
        change: |v| v["plan"]["format_version"] = "1.1".into(),
        says: "its JSON plan has format_version 1.1, and this pgplan reads 1.0",
    },
    Tamper {
        name: "inner format_version removed",
        change: |v| {
            v["plan"].as_object_mut().unwrap().remove("format_version");
        },
        says: "its JSON plan has no format_version, and this pgplan reads 1.0",
    },
    Tamper {
        name: "pgplan version",
        change: |v| v["pgplan_version"] = "9.9.9".into(),
        says: "it was saved by pgplan 9.9.9, and this is pgplan 0.1.0",
    },
    Tamper {
        name: "inner pgplan version",
        change: |v| v["plan"]["pgplan_version"] = "9.9.9".into(),
        says: "its JSON plan was made by pgplan 9.9.9, and this is pgplan 0.1.0",
    },
    Tamper {
        name: "steps reordered",
        change: |v| v["plan"]["steps"].as_array_mut().unwrap().swap(0, 1),
        says: "was modified after pgplan wrote it",
    },
    Tamper {
        name: "spec file changed",
        change: |v| v["spec_file"] = "/elsewhere/pgplan.yaml".into(),
        says: "was modified after pgplan wrote it",
    },
    Tamper {
        name: "spec text changed",
        change: |v| {
            let t = v["spec_text"].as_str().unwrap().replace("size: 5Gi", "size: 6Gi");
            v["spec_text"] = t.into();
        },
        says: "was modified after pgplan wrote it",
    },
    Tamper {
        name: "environment added",
        change: |v| v["environment"] = "prod".into(),
        says: "was modified after pgplan wrote it",
    },
    Tamper {
        name: "checksum removed",
        change: |v| {
            v.as_object_mut().unwrap().remove("checksum");
        },
        says: "missing field `checksum`",
    },
];

#[test]
fn a_tampered_saved_plan_is_refused_naming_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    ok(&offline(
        dir.path(),
        &["plan", "--example", "healthcare", "--out", "good.json"],
    ));
    let original = read(&good);
    assert!(original["checksum"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // Reformatting the file (another JSON writer) is not a change.
    write(&good, &original);
    ok(&offline(dir.path(), &["show", "good.json"]));
    for t in TAMPERS {
        let mut v = original.clone();
        (t.change)(&mut v);
        assert_ne!(v, original, "{}", t.name);
        let path = dir.path().join("tampered.json");
        write(&path, &v);
        for command in ["show", "apply"] {
            let out = offline(dir.path(), &[command, "tampered.json"]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{} / {command}: {err}", t.name);
            assert!(
                err.contains(t.says),
                "{} / {command}: expected {:?} in:\n{err}",
                t.name,
                t.says
            );
            // Refused before the cluster is even looked for.
            assert!(!err.contains("kubeconfig"), "{} / {command}: {err}", t.name);
            assert!(
                out.stdout.is_empty(),
                "{} / {command} printed:\n{}",
                t.name,
                text(&out.stdout)
            );
        }
    }
}

#[test]
fn a_tampered_saved_plan_changes_nothing_on_the_cluster() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let plan_file = state.path().join("plan.json");
    let plan = plan_file.to_str().unwrap();
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &spec(), "--out", plan],
        &[],
    ));
    let original = read(&plan_file);
    for (change, says) in [
        (
            (|v: &mut Value| v["plan"]["steps"].as_array_mut().unwrap().swap(2, 3))
                as fn(&mut Value),
            "the saved plan file",
        ),
        (
            |v: &mut Value| v["pgplan_version"] = "9.9.9".into(),
            "saved by pgplan 9.9.9",
        ),
    ] {
        let mut v = original.clone();
        change(&mut v);
        write(&plan_file, &v);
        cluster.requests().clear();
        let out = pgplan_in(&cluster, state.path(), &["apply", plan], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains("live state has changed"), "{err}");
        assert!(
            cluster.requests().all().is_empty(),
            "a refused plan file reached the cluster: {:?}",
            cluster.requests().all()
        );
    }
    assert!(cluster
        .get_json("deployments", hc::NAMESPACE, hc::DEPLOYMENT)
        .is_some());
    assert!(cluster
        .get_json("statefulsets", hc::NAMESPACE, "postgres")
        .is_none());
    // The file as pgplan wrote it still applies.
    write(&plan_file, &original);
    ok(&pgplan_in(&cluster, state.path(), &["apply", plan], &[]));
    assert!(cluster
        .get_json("deployments", hc::NAMESPACE, hc::DEPLOYMENT)
        .is_none());
}
