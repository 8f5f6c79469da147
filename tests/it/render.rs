//! The four renderers (text, JSON, markdown, DOT), fed by the examples.
//!
//! One snapshot helper per renderer (`check_text`, `check_json`,
//! `check_markdown`, `check_dot`); the plans are built through the library
//! with a fixed environment, so snapshots never depend on the process that
//! runs them. `INSTA_UPDATE=always cargo test --test it render` rewrites the
//! snapshots; read the diff before committing it.
//!
//! Beyond the snapshots: a canary secret must appear in no rendering, text
//! without colour holds no escape code, a huge plan's markdown fits a GitHub
//! comment, and the DOT graph holds one edge per dependency.

use std::collections::BTreeMap;

use pgplan::diff::{self, Inputs};
use pgplan::plan::{Action, ObjectRef, Operation, PlacementPlan, Plan, Risk, Step, Wait};
use pgplan::redact::Redactor;
use pgplan::render::{self, Format, RenderOptions, COMMENT_BUDGET, GITHUB_COMMENT_LIMIT};
use pgplan::spec::{self, LoadOptions, SourceFile};
use serde_json::{json, Value};

/// The password the examples read from `RDS_MASTER_PASSWORD` in tests.
const TEST_PASSWORD: &str = "test-master-password";

fn test_env(name: &str) -> Option<String> {
    (name == "RDS_MASTER_PASSWORD").then(|| TEST_PASSWORD.to_string())
}

/// Plan an example against its saved live state, as `pgplan plan --example`
/// does, but with [`test_env`] instead of the process environment.
fn example_plan(example: &str, env: Option<&str>) -> (Plan, Redactor) {
    let ex = pgplan::examples::find(example).expect("example exists");
    let files: BTreeMap<String, String> = ex
        .files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    plan_of(
        &format!("examples/{example}/pgplan.yaml"),
        ex.spec,
        ex.live,
        env,
        &test_env,
        &files,
    )
}

fn plan_of(
    name: &str,
    spec_text: &str,
    live: &str,
    env: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
    files: &BTreeMap<String, String>,
) -> (Plan, Redactor) {
    let spec = spec::load(
        SourceFile::new(name, spec_text),
        &LoadOptions {
            environment: env,
            all_environments: false,
            lookup,
        },
    )
    .expect("spec loads");
    let observed =
        pgplan::observed::load_snapshot("live.yaml", live.as_bytes()).expect("snapshot loads");
    let plan = diff::plan(
        &spec,
        &Inputs {
            observed: &observed,
            env: lookup,
            files,
        },
    )
    .expect("plans");
    crate::diff::assert_one_writer(&plan, &observed);
    let redactor = Redactor::new(spec.secrets.iter().cloned());
    (plan, redactor)
}

fn text(plan: &Plan, redactor: &Redactor, color: bool) -> String {
    render::render(plan, Format::Text, redactor, &RenderOptions { color }).unwrap()
}

fn json_of(plan: &Plan, redactor: &Redactor) -> String {
    render::render(plan, Format::Json, redactor, &RenderOptions::default()).unwrap()
}

fn markdown(plan: &Plan, redactor: &Redactor) -> String {
    render::render(plan, Format::Markdown, redactor, &RenderOptions::default()).unwrap()
}

fn snapshot_name(kind: &str, example: &str, env: Option<&str>) -> String {
    match env {
        Some(e) => format!("{kind}-{example}-{e}"),
        None => format!("{kind}-{example}"),
    }
}

// ---------------------------------------------------------------------------
// Snapshot helpers, one per renderer.

fn check_text(example: &str, env: Option<&str>) {
    let (plan, redactor) = example_plan(example, env);
    let out = text(&plan, &redactor, false);
    insta::assert_snapshot!(snapshot_name("text", example, env), out);
}

fn check_json(example: &str, env: Option<&str>) {
    let (plan, redactor) = example_plan(example, env);
    let out = json_of(&plan, &redactor);
    let v: Value = serde_json::from_str(&out).expect("the JSON plan parses");
    assert_eq!(v["pgplan_version"], env!("CARGO_PKG_VERSION"));
    // The version changes with every release; the snapshot should not.
    let out = out.replace(
        &format!("\"pgplan_version\": \"{}\"", env!("CARGO_PKG_VERSION")),
        "\"pgplan_version\": \"[version]\"",
    );
    insta::assert_snapshot!(snapshot_name("json", example, env), out);
}

fn check_markdown(example: &str, env: Option<&str>) {
    let (plan, redactor) = example_plan(example, env);
    let out = markdown(&plan, &redactor);
    if plan.has_changes() {
        assert_eq!(
            out.matches("<details>").count(),
            plan.steps.len(),
            "one <details> per step"
        );
        assert_eq!(out.matches("</details>").count(), plan.steps.len());
    }
    assert!(!out.contains("Shortened to fit"), "the examples fit whole");
    insta::assert_snapshot!(snapshot_name("markdown", example, env), out);
}

fn check_dot(example: &str, env: Option<&str>) {
    let (plan, redactor) = example_plan(example, env);
    let out = render::dot(&plan, &redactor).unwrap();
    assert_dot_matches(&plan, &out);
    insta::assert_snapshot!(snapshot_name("dot", example, env), out);
}

/// The graph is well formed in spirit: braces balance outside strings, one
/// node per step, and exactly one edge per dependency.
fn assert_dot_matches(plan: &Plan, out: &str) {
    assert!(out.starts_with("digraph pgplan {\n"));
    assert!(out.ends_with("}\n"));
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    for c in out.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                assert!(depth >= 0, "a closing brace without an opening one");
            }
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unbalanced braces");
    assert!(!in_string, "an unterminated string");

    let nodes = out
        .lines()
        .filter(|l| l.trim_start().starts_with('s') && l.contains(" [label="))
        .count();
    assert_eq!(nodes, plan.steps.len());
    let edges: Vec<&str> = out.lines().filter(|l| l.contains(" -> ")).collect();
    let deps: usize = plan.steps.iter().map(|s| s.depends_on.len()).sum();
    assert_eq!(edges.len(), deps);
    for (i, step) in plan.steps.iter().enumerate() {
        for dep in &step.depends_on {
            let from = plan
                .position(dep)
                .expect("a dependency is a step of the plan");
            let edge = format!("  s{from} -> s{};", i + 1);
            assert!(edges.contains(&edge.as_str()), "missing edge {edge}");
        }
    }
    let clusters = out.matches("subgraph cluster_").count();
    assert_eq!(clusters, plan.placements.len());
}

// ---------------------------------------------------------------------------
// The examples, in every format.

#[test]
fn text_healthcare() {
    check_text("healthcare", None);
}
#[test]
fn text_backstage_to_rds() {
    check_text("backstage-to-rds", None);
}
#[test]
fn text_pyairtable_dev() {
    check_text("pyairtable", Some("dev"));
}
#[test]
fn text_pyairtable_staging() {
    check_text("pyairtable", Some("staging"));
}
#[test]
fn text_pyairtable_prod() {
    check_text("pyairtable", Some("prod"));
}

#[test]
fn json_healthcare() {
    check_json("healthcare", None);
}
#[test]
fn json_backstage_to_rds() {
    check_json("backstage-to-rds", None);
}
#[test]
fn json_pyairtable_dev() {
    check_json("pyairtable", Some("dev"));
}
#[test]
fn json_pyairtable_staging() {
    check_json("pyairtable", Some("staging"));
}
#[test]
fn json_pyairtable_prod() {
    check_json("pyairtable", Some("prod"));
}

#[test]
fn markdown_healthcare() {
    check_markdown("healthcare", None);
}
#[test]
fn markdown_backstage_to_rds() {
    check_markdown("backstage-to-rds", None);
}
#[test]
fn markdown_pyairtable_dev() {
    check_markdown("pyairtable", Some("dev"));
}
#[test]
fn markdown_pyairtable_staging() {
    check_markdown("pyairtable", Some("staging"));
}
#[test]
fn markdown_pyairtable_prod() {
    check_markdown("pyairtable", Some("prod"));
}

#[test]
fn dot_healthcare() {
    check_dot("healthcare", None);
}
#[test]
fn dot_backstage_to_rds() {
    check_dot("backstage-to-rds", None);
}
#[test]
fn dot_pyairtable_dev() {
    check_dot("pyairtable", Some("dev"));
}
#[test]
fn dot_pyairtable_staging() {
    check_dot("pyairtable", Some("staging"));
}
#[test]
fn dot_pyairtable_prod() {
    check_dot("pyairtable", Some("prod"));
}

// ---------------------------------------------------------------------------
// Summary lines, exactly.

fn last_line(s: &str) -> &str {
    s.trim_end().lines().last().unwrap_or_default()
}

#[test]
fn summary_lines_of_the_examples() {
    let cases = [
        (
            "healthcare",
            None,
            "Plan: 3 to add, 3 to change, 2 to destroy, 5 to run; 1 database (7.4 MiB) to copy; downtime: consumers stopped during steps 3–12.",
        ),
        (
            "backstage-to-rds",
            None,
            "Plan: 3 to add, 3 to change, 3 to destroy, 21 to run; 6 databases (44.8 MiB) to copy; downtime: consumers stopped during steps 4–27.",
        ),
        ("pyairtable", Some("dev"), "No changes. The live state matches the spec."),
        (
            "pyairtable",
            Some("staging"),
            "Plan: 3 to add, 1 to change, 0 to destroy, 0 to run.",
        ),
    ];
    for (example, env, line) in cases {
        let (plan, redactor) = example_plan(example, env);
        assert_eq!(last_line(&text(&plan, &redactor, false)), line, "{example}");
        let md = markdown(&plan, &redactor);
        assert_eq!(
            md.lines().next(),
            Some(format!("### {line}").as_str()),
            "{example}"
        );
        let json: Value = serde_json::from_str(&json_of(&plan, &redactor)).unwrap();
        assert_eq!(json["summary"]["line"], line, "{example}");
    }
}

#[test]
fn downtime_without_consumers_says_the_database_is_unavailable() {
    let mut plan = synthetic_plan(4, 0);
    plan.placements[0].downtime = Some((2, 3));
    for s in &mut plan.steps[1..3] {
        s.in_downtime = true;
    }
    let out = text(&plan, &Redactor::default(), false);
    assert!(
        last_line(&out).ends_with("; downtime: database unavailable during steps 2–3."),
        "{}",
        last_line(&out)
    );
    assert!(out.contains("┌─ ⏸ downtime: database unavailable during steps 2–3\n"));
    assert!(out.contains("└─ ▶ downtime ends after step 3\n"));
}

#[test]
fn placements_are_grouped_and_windows_named() {
    // Two placements whose steps interleave: `big` owns #1–#4, `small` #5
    // and #6 … except that #3 moves to `small`.
    let mut plan = synthetic_plan(6, 0);
    for i in [2, 4, 5] {
        plan.steps[i].placement = "small".into();
    }
    plan.placements.push(PlacementPlan {
        name: "small".into(),
        environment: Some("staging".into()),
        journey: pgplan::addr::Journey::Day2,
        databases: vec![],
        downtime: Some((5, 6)),
    });
    plan.placements[0].downtime = Some((2, 4));
    for i in [1, 3, 4, 5] {
        plan.steps[i].in_downtime = true;
    }
    let out = text(&plan, &Redactor::default(), false);
    assert_eq!(
        last_line(&out),
        "Plan: 3 to add, 3 to change, 0 to destroy, 0 to run; downtime: database unavailable during \
         steps 2–4 (big), database unavailable during steps 5–6 (small)."
    );
    let big = out.find("big: Deployment → StatefulSet\n  3 steps · downtime: database unavailable during steps 2–4\n").unwrap();
    let small = out.find("small (staging): day-2 changes\n  3 steps · downtime: database unavailable during steps 5–6\n").unwrap();
    assert!(big < small);
    // Each group lists its own steps, with their plan-wide numbers.
    let in_big = &out[big..small];
    assert!(in_big.contains("#4 k8s/big/ConfigMap/config-0003"));
    assert!(!in_big.contains("#3 k8s/big/ConfigMap/config-0002"));
    assert!(out[small..].contains("#3 k8s/big/ConfigMap/config-0002"));

    let md = markdown(&plan, &Redactor::default());
    assert!(md.contains(
        "| small | staging | day-2 changes | 3 | — | database unavailable during steps 5–6 |"
    ));
    assert!(md.contains("#### big — Deployment → StatefulSet\n"));
    assert!(md.contains("#### small (staging) — day-2 changes\n"));

    let dot = render::dot(&plan, &Redactor::default()).unwrap();
    assert_dot_matches(&plan, &dot);
}

// ---------------------------------------------------------------------------
// Secrets never leave.

const CANARY: &str = "pgplan-canary-7f3a9e";

#[test]
fn canary_secret_appears_in_no_rendering() {
    let ex = pgplan::examples::find("backstage-to-rds").unwrap();
    // A `${VAR}` expansion that lands in the plan (an RDS tag), the
    // password variable, and a live Secret whose data holds the canary.
    let spec_text = ex
        .spec
        .replace("team: platform", "team: ${PGPLAN_TEST_TEAM}");
    assert_ne!(
        spec_text, ex.spec,
        "the example still has the tag to replace"
    );
    let secret = format!(
        "  - apiVersion: v1\n    kind: Secret\n    metadata:\n      name: backstage-rds-credentials\n      namespace: backstage\n      resourceVersion: \"299\"\n    type: Opaque\n    data:\n      POSTGRES_PASSWORD: {CANARY}-data\n"
    );
    let live = ex.live.replacen(
        "kubernetes:\n  objects:\n",
        &format!("kubernetes:\n  objects:\n{secret}"),
        1,
    );
    assert_ne!(
        live, ex.live,
        "the snapshot still lists objects where expected"
    );
    let lookup = |name: &str| match name {
        "RDS_MASTER_PASSWORD" => Some(format!("{CANARY}-password")),
        "PGPLAN_TEST_TEAM" => Some(format!("{CANARY}-team")),
        _ => None,
    };
    let files: BTreeMap<String, String> = ex
        .files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (plan, redactor) = plan_of("pgplan.yaml", &spec_text, &live, None, &lookup, &files);

    // The canary really is in the plan in memory, so the test can fail.
    let raw = serde_json::to_string(&plan).unwrap();
    assert!(
        raw.contains(&format!("{CANARY}-team")),
        "the expanded tag is in the plan"
    );
    // A live Secret's data never even reaches the plan: the snapshot loader
    // keeps keys only (the live text above did hold it).
    assert!(live.contains(&format!("{CANARY}-data")));
    assert!(
        !raw.contains(&format!("{CANARY}-data")),
        "the live Secret's data was dropped on load"
    );
    let secret_step = plan
        .step("k8s/backstage/Secret/backstage-rds-credentials")
        .expect("the existing Secret is updated");
    assert_eq!(secret_step.action, Action::Update);

    let spec = spec::load(
        SourceFile::new("pgplan.yaml", spec_text.as_str()),
        &LoadOptions {
            environment: None,
            all_environments: false,
            lookup: &lookup,
        },
    )
    .unwrap();
    let planned = pgplan::ops::plan::Planned {
        spec,
        spec_text: spec_text.clone(),
        plan: plan.clone(),
        redactor: redactor.clone(),
        observed: Default::default(),
    };
    let outputs = [
        ("text", text(&plan, &redactor, false)),
        ("text with colour", text(&plan, &redactor, true)),
        ("json", json_of(&plan, &redactor)),
        ("markdown", markdown(&plan, &redactor)),
        ("dot", render::dot(&plan, &redactor).unwrap()),
        (
            "saved plan",
            pgplan::ops::plan::saved_plan(&planned, None).unwrap(),
        ),
    ];
    for (what, out) in &outputs {
        assert!(!out.contains(CANARY), "the canary leaked into the {what}");
        // The graph shows addresses only; everything else shows the tag.
        if *what != "dot" {
            assert!(
                out.contains("team: (sensitive)") || out.contains("\"team\": \"(sensitive)\""),
                "the {what} shows where a value was hidden"
            );
        }
    }
    // The Secret is still shown, keys without values.
    assert!(outputs[0].1.contains("POSTGRES_PASSWORD: (sensitive)"));
}

// ---------------------------------------------------------------------------
// Colour.

#[test]
fn colour_only_when_asked() {
    for (example, env) in [
        ("healthcare", None),
        ("backstage-to-rds", None),
        ("pyairtable", Some("dev")),
        ("pyairtable", Some("staging")),
    ] {
        let (plan, redactor) = example_plan(example, env);
        let plain = text(&plan, &redactor, false);
        assert!(
            !plain.contains('\x1b'),
            "{example}: an escape code without colour"
        );
        let coloured = text(&plan, &redactor, true);
        assert!(
            coloured.contains("\x1b["),
            "{example}: no colour when asked"
        );
        // Colour changes nothing but the escape codes.
        assert_eq!(strip_ansi(&coloured), plain, "{example}");
        // JSON, markdown and DOT never colour.
        for out in [
            json_of(&plan, &redactor),
            markdown(&plan, &redactor),
            render::dot(&plan, &redactor).unwrap(),
        ] {
            assert!(!out.contains('\x1b'));
        }
    }
}

#[test]
fn colours_follow_the_action_and_risk() {
    let (plan, redactor) = example_plan("backstage-to-rds", None);
    let out = text(&plan, &redactor, true);
    assert!(out.contains("\x1b[32m  +\x1b[0m #1 "), "create is green");
    assert!(out.contains("\x1b[33m  ~\x1b[0m #4 "), "update is yellow");
    assert!(out.contains("\x1b[36m  >\x1b[0m #5 "), "run is cyan");
    assert!(out.contains("\x1b[31m  -\x1b[0m #28"), "delete is red");
    assert!(
        out.contains("\x1b[1;31m[destructive]\x1b[0m"),
        "destructive is red and bold"
    );
    let (plan, redactor) = example_plan("healthcare", None);
    assert!(
        text(&plan, &redactor, true).contains("\x1b[35m-/+\x1b[0m #6 "),
        "replace is magenta"
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Text details.

#[test]
fn text_shows_each_kind_of_step_as_intended() {
    let (plan, redactor) = example_plan("healthcare", None);
    let out = text(&plan, &redactor, false);
    // Every step, numbered, in plan order.
    let mut from = 0;
    for (i, step) in plan.steps.iter().enumerate() {
        let head = format!(
            "{:>3} {:<3} {}",
            step.action.symbol(),
            format!("#{}", i + 1),
            step.address
        );
        let at = out[from..]
            .find(&head)
            .unwrap_or_else(|| panic!("no block `{head}` after byte {from}"));
        from += at;
    }
    // A delete is one line, not the manifest.
    assert!(
        out.contains("- apps/v1 Deployment default/postgres (its manifest is kept for rollback)\n")
    );
    assert!(!out.contains("- apiVersion: apps/v1"));
    // A replace is a diff of the changed fields.
    assert!(out.contains("-   clusterIP: 10.96.146.248\n"));
    assert!(out.contains("+   clusterIP: None\n"));
    // A create is its manifest, line by line.
    assert!(out.contains("+ kind: StatefulSet\n"));
    // Risk, reason, dependencies and facts.
    assert!(out.contains("k8s/default/Deployment/postgres  [disruptive]\n"));
    assert!(out.contains("why: the old volume is the rollback path"));
    assert!(out.contains("depends on #2, #5, #6\n"));
    assert!(out.contains("size: 7.4 MiB"));
    // Steps 3 to 12 are inside the window, 1 and 2 outside.
    let window_start = out
        .find("┌─ ⏸ downtime: consumers stopped during steps 3–12")
        .unwrap();
    assert!(out.find("#2  k8s/PersistentVolume/postgres-pv-0").unwrap() < window_start);
    assert!(out.contains("│   ~ #3  k8s/default/Deployment/healthcare-api:quiesce"));
    assert!(out.contains("│   ~ #12 k8s/default/Deployment/healthcare-api:resume"));
    assert!(out.contains("└─ ▶ downtime ends after step 12"));
}

#[test]
fn warnings_are_printed() {
    let mut plan = synthetic_plan(2, 0);
    plan.warnings = vec!["big: the volume snapshot class is missing".into()];
    let out = text(&plan, &Redactor::default(), false);
    assert!(out.contains("\nWarning: big: the volume snapshot class is missing\n"));
    let md = markdown(&plan, &Redactor::default());
    assert!(md.contains("> [!WARNING]\n> - big: the volume snapshot class is missing\n"));
    let json: Value = serde_json::from_str(&json_of(&plan, &Redactor::default())).unwrap();
    assert_eq!(
        json["warnings"][0],
        "big: the volume snapshot class is missing"
    );
}

// ---------------------------------------------------------------------------
// JSON.

#[test]
fn json_is_versioned_snake_case_and_deterministic() {
    let (plan, redactor) = example_plan("healthcare", None);
    let out = json_of(&plan, &redactor);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format_version"], "1.0");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), plan.steps.len());
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["position"], i + 1);
        assert_eq!(
            s.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "position",
                "address",
                "placement",
                "actions",
                "risk",
                "summary",
                "reason",
                "depends_on",
                "in_downtime",
                "before",
                "after",
                "operation"
            ]
        );
    }
    let service = steps
        .iter()
        .find(|s| s["address"] == "k8s/default/Service/postgres")
        .unwrap();
    assert_eq!(service["actions"], json!(["delete", "create"]));
    assert_eq!(service["risk"], "disruptive");
    assert_eq!(service["in_downtime"], true);
    assert_eq!(
        service["before"]["spec"]["clusterIP"], "10.96.146.248",
        "manifests keep their keys"
    );
    let restore = steps
        .iter()
        .find(|s| s["address"] == "pg/healthcare/healthcare/restore")
        .unwrap();
    assert_eq!(
        restore["operation"]["backup_step"],
        "pg/healthcare/healthcare/backup"
    );
    assert_eq!(restore["operation"]["database"]["size_bytes"], 7724391);
    assert_eq!(
        v["placements"][0]["downtime"],
        json!({"first_step": 3, "last_step": 12})
    );
    assert_eq!(v["summary"]["add"], 3);
    assert_eq!(v["summary"]["bytes"], 7724391);

    let mut camel = Vec::new();
    camel_keys(&v, "", &mut camel);
    assert!(camel.is_empty(), "keys not in snake_case: {camel:?}");

    // Planning and rendering again gives the same bytes.
    let (again, redactor) = example_plan("healthcare", None);
    assert_eq!(json_of(&again, &redactor), out);
}

/// Keys with an upper-case letter, outside the objects written verbatim.
fn camel_keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k.chars().any(|c| c.is_ascii_uppercase()) {
                    out.push(format!("{path}.{k}"));
                }
                if ![
                    "before",
                    "after",
                    "manifest",
                    "patch",
                    "selector",
                    "tags",
                    "fingerprints",
                ]
                .contains(&k.as_str())
                {
                    camel_keys(v, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| camel_keys(i, path, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Markdown within GitHub's limit.

#[test]
fn markdown_of_a_huge_plan_fits_a_comment() {
    let plan = synthetic_plan(600, 120);
    let out = markdown(&plan, &Redactor::default());
    assert!(
        out.chars().count() < GITHUB_COMMENT_LIMIT,
        "{} characters",
        out.chars().count()
    );
    assert!(out.encode_utf16().count() <= COMMENT_BUDGET);
    assert!(
        out.contains("diffs omitted"),
        "the note says diffs were left out"
    );
    assert!(out.contains("run `pgplan plan` locally for the full plan"));
    // The title and the tables are always there.
    assert!(out.starts_with("### Plan: 300 to add, 300 to change, 0 to destroy, 0 to run."));
    assert!(out.contains("| big | — | Deployment → StatefulSet | 600 |"));
    assert!(out.contains("| 🟠 disruptive: downtime | 120 |"));
    // So many steps cannot all keep their <details>.
    assert!(out.contains("steps listed without details"));
    assert!(out.matches("<details>").count() < plan.steps.len());
}

#[test]
fn markdown_drops_safe_diffs_before_risky_ones() {
    // Enough safe diffs to overflow the budget, a few small risky ones.
    let plan = synthetic_plan(150, 5);
    let out = markdown(&plan, &Redactor::default());
    assert!(out.encode_utf16().count() <= COMMENT_BUDGET);
    let note = out.lines().last().unwrap();
    assert!(
        note.starts_with("> Shortened to fit GitHub's comment limit: "),
        "{note}"
    );
    assert!(note.contains("diffs omitted"), "{note}");
    assert!(!note.contains("not shown"), "{note}");
    assert!(!note.contains("without details"), "{note}");
    assert!(!note.contains("truncated"), "{note}");
    // Every step keeps its <details>, and every risky step keeps its diff.
    assert_eq!(out.matches("<details>").count(), 150);
    for step in plan.steps.iter().filter(|s| s.risk != Risk::Safe) {
        let at = out.find(&format!("<code>{}</code>", step.address)).unwrap();
        let section = &out[at..at + out[at..].find("</details>").unwrap()];
        assert!(
            section.contains("```diff\n"),
            "{} lost its diff",
            step.address
        );
    }
    let omitted = out
        .matches("*Diff omitted to fit the comment limit.*")
        .count();
    assert!(omitted > 0);
    assert!(note.contains(&format!("{omitted} diffs omitted")), "{note}");
}

#[test]
fn markdown_escapes_what_would_break_tables_and_html() {
    let mut plan = synthetic_plan(2, 1);
    plan.steps[1].summary = "swap a|b <script> for `x|y`".into();
    plan.steps[1].reason = "because <b>bold</b> | pipes".into();
    let out = markdown(&plan, &Redactor::default());
    assert!(
        out.contains("| swap a\\|b &lt;script&gt; for `x\\|y` |"),
        "{out}"
    );
    assert!(
        out.contains("— swap a|b &lt;script&gt; for <code>x|y</code> · 🟠 disruptive</summary>")
    );
    assert!(out.contains("**Why:** because &lt;b&gt;bold&lt;/b&gt; \\| pipes"));
    assert!(!out.contains("<script>"));
}

// ---------------------------------------------------------------------------
// DOT.

#[test]
fn dot_escapes_labels() {
    let mut plan = synthetic_plan(3, 1);
    plan.steps[0].summary = "a \"quoted\" {brace} \\ back".into();
    let out = render::dot(&plan, &Redactor::default()).unwrap();
    assert!(out.contains("tooltip=\"a \\\"quoted\\\" {brace} \\\\ back\""));
    assert_dot_matches(&plan, &out);
}

// ---------------------------------------------------------------------------
// A generated plan: `n` steps of one placement, every other one a create of
// a large manifest and the rest updates; the first `risky` updates are
// disruptive. Each step depends on the one before.

fn synthetic_plan(n: usize, risky: usize) -> Plan {
    let mut steps = Vec::new();
    let mut disruptive = 0;
    for i in 0..n {
        let object = ObjectRef::new("v1", "ConfigMap", "big", &format!("config-{i:04}"));
        // Versions differ in one key: an update's diff is a few lines, a
        // create's manifest over sixty.
        let manifest = |version: usize| {
            let data: serde_json::Map<String, Value> = (0..60)
                .map(|k| {
                    let v = if k == 30 {
                        format!("version {version}")
                    } else {
                        format!("value {k} of config {i}")
                    };
                    (format!("key-{k:02}"), json!(v))
                })
                .collect();
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": object.name, "namespace": "big"},
                "data": data,
            })
        };
        let (action, before, operation) = if i % 2 == 0 {
            (
                Action::Create,
                None,
                Operation::Create {
                    object: object.clone(),
                    wait: Wait::None,
                },
            )
        } else {
            (
                Action::Update,
                Some(manifest(0)),
                Operation::Patch {
                    object: object.clone(),
                    patch: json!({}),
                },
            )
        };
        let risk = if action == Action::Update && disruptive < risky {
            disruptive += 1;
            Risk::Disruptive
        } else {
            Risk::Safe
        };
        steps.push(Step {
            address: object.address(),
            placement: "big".into(),
            action,
            risk,
            summary: format!("{} {}", action.verb(), object.display()),
            reason: "generated".into(),
            depends_on: if i == 0 {
                vec![]
            } else {
                vec![
                    ObjectRef::new("v1", "ConfigMap", "big", &format!("config-{:04}", i - 1))
                        .address(),
                ]
            },
            in_downtime: false,
            before,
            after: Some(manifest(1)),
            operation,
            warnings: Vec::new(),
        });
    }
    Plan {
        placements: vec![PlacementPlan {
            name: "big".into(),
            environment: None,
            journey: pgplan::addr::Journey::DeploymentToStatefulset,
            databases: vec![],
            downtime: None,
        }],
        steps,
        fingerprints: BTreeMap::new(),
        warnings: vec![],
        unfinished: vec![],
        findings: vec![],
    }
}
