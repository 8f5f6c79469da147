//! The `pgplan` binary as users run it: exit codes, and bad input that must
//! be answered with a located error (exit 1), never a panic or a hang.

use std::path::{Path, PathBuf};
use std::process::Output;

pub use crate::run::{pgplan_bin, pgplan_command, repo};

/// Run pgplan from the repository root with the runner's clean environment.
pub fn pgplan(args: &[&str], envs: &[(&str, &str)]) -> Output {
    crate::run::run(args, envs)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A spec file in a fresh temp dir.
fn file(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write spec");
    (dir, path)
}

/// Exit code 1, no panic, the diagnostic code and `file:line:col` present.
fn assert_located(out: &Output, code: &str, location: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert!(err.contains(code), "expected code {code} in:\n{err}");
    assert!(
        err.contains(location),
        "expected location {location} in:\n{err}"
    );
}

fn validate(name: &str, content: &[u8]) -> Output {
    let (_dir, path) = file(name, content);
    pgplan(&["validate", "-f", path.to_str().unwrap()], &[])
}

const GOOD: &str = "apiVersion: pgplan.dev/v1alpha1
kind: Placement
metadata:
  name: healthcare
spec:
  source:
    kubernetes:
      workload:
        kind: Deployment
        name: postgres
  target:
    kubernetes:
      statefulSet:
        name: postgres
        storage:
          size: 5Gi
  databases:
    - healthcare
";

#[test]
fn a_valid_file_validates() {
    let out = validate("ok.yaml", GOOD.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid: 1 placement(s)"));
}

#[test]
fn yaml_syntax_error() {
    let out = validate("syntax.yaml", b"a: [1, 2\nb: 3\n");
    assert_located(&out, "pgplan::yaml::syntax", "syntax.yaml:");
}

#[test]
fn tab_indentation() {
    let out = validate(
        "tabs.yaml",
        b"apiVersion: pgplan.dev/v1alpha1\nspec:\n\tsource: {}\n",
    );
    assert_located(&out, "pgplan::yaml::tab", "tabs.yaml:3:1");
    assert!(text(&out.stderr).contains("replace the tab characters with spaces"));
}

#[test]
fn non_mapping_root() {
    let out = validate("list.yaml", b"- a\n- b\n");
    assert_located(&out, "pgplan::spec::not-a-mapping", "list.yaml:1:1");
}

#[test]
fn empty_file() {
    let out = validate("empty.yaml", b"");
    assert_located(&out, "pgplan::spec::empty", "empty.yaml:1:1");
    let out = validate("comments.yaml", b"# nothing here\n---\n");
    assert_located(&out, "pgplan::spec::empty", "comments.yaml:1:1");
}

#[test]
fn duplicate_keys() {
    let spec = GOOD.replace("kind: Placement\n", "kind: Placement\nkind: Placement\n");
    let out = validate("dup.yaml", spec.as_bytes());
    assert_located(&out, "pgplan::yaml::duplicate-key", "dup.yaml:3:1");
    assert!(text(&out.stderr).contains("first defined here"));
}

#[test]
fn alias_bomb() {
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 9].join(", ")
        ));
    }
    let out = validate("bomb.yaml", bomb.as_bytes());
    assert_located(&out, "pgplan::yaml::alias-bomb", "bomb.yaml:");
}

#[test]
fn twenty_thousand_levels_of_nesting() {
    let flow = "[".repeat(20_000) + &"]".repeat(20_000);
    assert_located(
        &validate("flow.yaml", flow.as_bytes()),
        "pgplan::yaml::too-deep",
        "flow.yaml:1:",
    );
    let mut block = String::new();
    for i in 0..20_000 {
        block.push_str(&" ".repeat(i));
        block.push_str("k:\n");
    }
    assert_located(
        &validate("block.yaml", block.as_bytes()),
        "pgplan::yaml::too-deep",
        "block.yaml:",
    );
    let seqs = "- ".repeat(20_000) + "x\n";
    assert_located(
        &validate("seqs.yaml", seqs.as_bytes()),
        "pgplan::yaml::too-deep",
        "seqs.yaml:1:",
    );
}

#[test]
fn nul_bytes() {
    let spec = GOOD.replace("name: healthcare", "name: health\0care");
    let out = validate("nul.yaml", spec.as_bytes());
    assert_located(&out, "pgplan::yaml::control-character", "nul.yaml:4:15");
    assert!(text(&out.stderr).contains("NUL"));
}

#[test]
fn invalid_utf8() {
    let mut bytes = GOOD.as_bytes().to_vec();
    let at = GOOD.find("postgres").unwrap();
    bytes[at] = 0xff;
    let out = validate("latin1.yaml", &bytes);
    assert_located(&out, "pgplan::yaml::utf8", "latin1.yaml:10:15");
}

#[test]
fn binary_garbage() {
    // A PNG header followed by pseudo-random bytes.
    let mut bytes = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    let mut x: u32 = 0x2545_f491;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push((x & 0xff) as u8);
    }
    let out = validate("garbage.bin", &bytes);
    assert_located(&out, "pgplan::yaml::", "garbage.bin:1:1");
}

#[test]
fn one_bad_document_among_good_ones() {
    let second = GOOD
        .replace("healthcare", "billing")
        .replace("size: 5Gi", "size: five");
    let third = GOOD.replace("healthcare", "reports");
    let spec = format!("{GOOD}---\n{second}---\n{third}");
    let out = validate("multi.yaml", spec.as_bytes());
    // The bad size is in the second document: line 16 of it, 19 + 16 overall.
    assert_located(&out, "pgplan::spec::quantity", "multi.yaml:35:17");
    assert!(
        text(&out.stderr).contains("1 error"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_error_is_reported_at_once_with_did_you_mean() {
    let spec = GOOD
        .replace("kind: Deployment", "kind: Deploymnet")
        .replace("size: 5Gi", "size: 5Gi\n          stroageClassName: fast")
        .replace("  databases:", "  databses:");
    let out = validate("many.yaml", spec.as_bytes());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("did you mean `Deployment`?"), "{err}");
    assert!(err.contains("did you mean `storageClassName`?"), "{err}");
    assert!(err.contains("did you mean `databases`?"), "{err}");
    assert!(err.contains("missing field `databases`"), "{err}");
    assert!(err.contains("4 errors"), "{err}");
}

#[test]
fn semantic_checks_name_the_field() {
    let spec = GOOD
        .replace("name: healthcare", "name: Health_Care")
        .replace("size: 5Gi", "size: 5GB");
    let out = validate("names.yaml", spec.as_bytes());
    assert_located(&out, "pgplan::spec::name", "names.yaml:4:9");
    assert!(text(&out.stderr).contains("pgplan::spec::quantity"));
    let rds = "apiVersion: pgplan.dev/v1alpha1
kind: Placement
metadata: {name: x}
spec:
  source: {kubernetes: {workload: {kind: StatefulSet, name: db}}}
  target:
    rds:
      region: useast
      instanceIdentifier: 1-bad--id
      engineVersion: \"15.4\"
      instanceClass: t3.medium
      allocatedStorage: 5
  credentials:
    target: {username: postgres, password: hunter2}
  databases: [a]
";
    let out = validate("rds.yaml", rds.as_bytes());
    let err = text(&out.stderr);
    assert_located(&out, "pgplan::spec::rds", "rds.yaml:9:27");
    for needle in [
        "`useast` is not an AWS region",
        "must start with a letter",
        "not a DB instance class",
        "outside RDS",
        "pgplan::spec::literal-secret",
    ] {
        assert!(err.contains(needle), "missing {needle}:\n{err}");
    }
}

#[test]
fn unset_variable_is_named() {
    let spec = GOOD.replace("size: 5Gi", "size: ${PGPLAN_TEST_UNSET_SIZE}");
    let out = validate("env.yaml", spec.as_bytes());
    assert_located(&out, "pgplan::spec::env-unset", "env.yaml:16:17");
    assert!(text(&out.stderr).contains("`PGPLAN_TEST_UNSET_SIZE` is not set"));
}

#[test]
fn a_huge_valid_file_is_accepted() {
    let mut spec = GOOD.to_string();
    for i in 0..300_000 {
        spec.push_str(&format!("    - db_{i:06}\n"));
    }
    let out = validate("huge.yaml", spec.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let out = pgplan(&["validate", "-f", "does/not/exist.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read does/not/exist.yaml"));
}

#[test]
fn plan_exit_codes() {
    // Changes: 0 without --detailed-exitcode, 2 with it.
    // Colours allowed: they must still not appear when not on a terminal.
    let out = pgplan_command()
        .args(["plan", "--example", "healthcare"])
        .env_remove("NO_COLOR")
        .output()
        .expect("run pgplan");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = pgplan(
        &["plan", "--example", "healthcare", "--detailed-exitcode"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    // The dev environment of pyairtable is what is live: no changes.
    let out = pgplan(
        &[
            "plan",
            "--example",
            "pyairtable",
            "--env",
            "dev",
            "--detailed-exitcode",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // An error is 1, also with --detailed-exitcode.
    let out = pgplan(
        &[
            "plan",
            "--example",
            "pyairtable",
            "--env",
            "qa",
            "--detailed-exitcode",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no environment `qa`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_from_files_equals_the_embedded_example() {
    let embedded = pgplan(
        &["plan", "--example", "healthcare", "--format", "json"],
        &[],
    );
    let files = pgplan(
        &[
            "plan",
            "-f",
            "examples/healthcare/pgplan.yaml",
            "--live-state",
            "examples/healthcare/live.yaml",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(files.status.code(), Some(0), "{}", text(&files.stderr));
    assert_eq!(text(&embedded.stdout), text(&files.stdout));
}

#[test]
fn online_plan_without_a_cluster_says_what_to_do() {
    let out = pgplan(
        &["plan", "-f", "examples/healthcare/pgplan.yaml"],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let out = pgplan(&["schema"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let checked_in =
        std::fs::read_to_string(repo().join("schemas/pgplan.schema.json")).expect("schema file");
    assert_eq!(text(&out.stdout).trim_end(), checked_in.trim_end());
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = pgplan(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        // The script calls pgplan back for the candidates.
        assert!(
            text(&out.stdout).contains("COMPLETE"),
            "{shell}: {}",
            text(&out.stdout)
        );
    }
}

/// What the shell gets back when it asks pgplan to complete the last word
/// of `line` (as the bash script registered by `pgplan completions bash` does).
fn complete(dir: &Path, line: &[&str], envs: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = pgplan_command();
    cmd.arg("--")
        .arg("pgplan")
        .args(line)
        .current_dir(dir)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", line.len().to_string())
        .env("_CLAP_IFS", "\n");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pgplan");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn completion_offers_examples_environments_and_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        complete(d, &["plan", "--example", ""], &[]),
        ["backstage-to-rds", "healthcare", "pyairtable"]
    );
    assert_eq!(
        complete(d, &["validate", "--example", "h"], &[]),
        ["healthcare"]
    );
    // Environments of the spec the line names: an example, -f FILE, or ./pgplan.yaml.
    assert_eq!(
        complete(d, &["plan", "--example", "pyairtable", "--env", ""], &[]),
        ["dev", "prod", "staging"]
    );
    assert_eq!(
        complete(d, &["apply", "--example", "pyairtable", "--env", "st"], &[]),
        ["staging"]
    );
    std::fs::write(
        d.join("other.yaml"),
        GOOD.replace(
            "  databases:",
            "  environments:\n    qa: {}\n    eu-live: {}\n  databases:",
        ),
    )
    .unwrap();
    assert_eq!(
        complete(d, &["plan", "-f", "other.yaml", "--env", ""], &[]),
        ["eu-live", "qa"]
    );
    assert!(
        complete(d, &["plan", "--env", ""], &[]).is_empty(),
        "no ./pgplan.yaml here"
    );
    std::fs::copy(d.join("other.yaml"), d.join("pgplan.yaml")).unwrap();
    assert_eq!(complete(d, &["graph", "--env", "q"], &[]), ["qa"]);
    // Contexts of --kubeconfig FILE, else of $KUBECONFIG.
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {}}]\ncontexts:\n- {name: prod-eu, context: {cluster: c, user: u}}\n- {name: staging, context: {cluster: c, user: u}}\n- {name: prod-us, context: {cluster: c, user: u}}\ncurrent-context: staging\n",
    )
    .unwrap();
    let k = kubeconfig.to_str().unwrap();
    assert_eq!(
        complete(d, &["plan", "--kubeconfig", k, "--context", "prod"], &[]),
        ["prod-eu", "prod-us"]
    );
    assert_eq!(
        complete(d, &["observe", "--context", ""], &[("KUBECONFIG", k)]),
        ["prod-eu", "prod-us", "staging"]
    );
}

#[test]
fn the_readme_first_command_prints_steps_in_order_with_risk_and_the_summary() {
    let out = pgplan(&["plan", "--example", "healthcare"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    let order = [
        "#1  k8s/PersistentVolume/postgres-pv:protect",
        "#3  k8s/default/Deployment/healthcare-api:quiesce  [disruptive]",
        "#4  pg/healthcare/healthcare/backup",
        "#5  k8s/default/Deployment/postgres  [disruptive]",
        "#7  k8s/default/StatefulSet/postgres",
        "#8  pg/healthcare/prepare",
        "#9  pg/healthcare/healthcare/restore",
        "#10 pg/healthcare/healthcare/verify",
        "#12 k8s/default/Deployment/healthcare-api:resume",
    ];
    let mut at = 0;
    for step in order {
        let found = stdout[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} not found in order:\n{stdout}"));
        at += found + step.len();
    }
    assert!(stdout.trim_end().ends_with(
        "Plan: 3 to add, 3 to change, 2 to destroy, 5 to run; 1 database (7.4 MiB) to copy; downtime: consumers stopped during steps 3–12."
    ));
    assert!(!stdout.contains('\x1b'), "no colour when not on a terminal");
}

/// Run pgplan in `dir` (so that files it might write land there).
fn pgplan_at(dir: &Path, args: &[&str]) -> Output {
    pgplan_command()
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run pgplan")
}

#[test]
fn usage_errors_exit_1_even_with_detailed_exitcode() {
    // clap exits 2 for these, which under --detailed-exitcode reads as
    // "changes present"; pgplan exits 1, with clap's own message.
    for (args, says) in [
        (
            &[
                "plan",
                "--example",
                "healthcare",
                "--bogus",
                "--detailed-exitcode",
            ][..],
            "unexpected argument '--bogus'",
        ),
        (
            &["plan", "-detailed-exitcode", "--example", "healthcare"][..],
            "unexpected argument '-d'",
        ),
        (
            &[
                "plan",
                "--example",
                "healthcare",
                "--format",
                "yaml",
                "--detailed-exitcode",
            ][..],
            "invalid value 'yaml'",
        ),
        (
            &["frobnicate", "--detailed-exitcode"][..],
            "unrecognized subcommand 'frobnicate'",
        ),
        (
            &["plan", "--detailed-exitcode", "--parallelism", "3"][..],
            "unexpected argument",
        ),
        (&[][..], "Usage: pgplan"),
    ] {
        let out = pgplan(args, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}:\n{err}");
        assert!(err.contains(says), "{args:?}: expected {says:?} in:\n{err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a plan");
    }
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["help", "show"],
        &["--version"],
    ] {
        let out = pgplan(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(
        text(&pgplan(&["--version"], &[]).stdout).trim(),
        format!("pgplan {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn dash_o_is_the_format_and_never_writes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = pgplan_at(
        dir.path(),
        &["plan", "--example", "healthcare", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON plan");
    assert_eq!(plan["format_version"], "1.0");
    for alias in [&["--output", "json"][..], &["--format", "json"]] {
        let again = pgplan_at(
            dir.path(),
            &[&["plan", "--example", "healthcare"][..], alias].concat(),
        );
        assert_eq!(again.stdout, out.stdout, "{alias:?}");
    }
    // A file name where the format goes is refused, and nothing is written.
    let out = pgplan_at(
        dir.path(),
        &["plan", "--example", "healthcare", "-o", "plan.json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid value 'plan.json'"));
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(written.is_empty(), "files written: {written:?}");
    // The plan file is --out.
    let out = pgplan_at(
        dir.path(),
        &["plan", "--example", "healthcare", "--out", "p.json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("p.json")).unwrap()).unwrap();
    assert_eq!(saved["format_version"], "2.0");
    assert_eq!(saved["plan"]["format_version"], "1.0");
}

#[test]
fn each_command_takes_only_the_flags_it_honours() {
    let refused: &[&[&str]] = &[
        &["graph", "--example", "healthcare", "--format", "json"],
        &["graph", "--example", "healthcare", "-o", "json"],
        &["graph", "--example", "healthcare", "--out", "g.dot"],
        &["graph", "--example", "healthcare", "--detailed-exitcode"],
        &["validate", "--example", "pyairtable", "--env", "dev"],
        &["observe", "--example", "healthcare", "-o", "live.yaml"],
        &["apply", "plan.json", "-f", "pgplan.yaml"],
        &["show", "plan.json", "--detailed-exitcode"],
    ];
    for args in refused {
        let out = pgplan(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let help = text(&pgplan(&["graph", "--help"], &[]).stdout);
    for flag in ["--format", "-o", "--output", "--detailed-exitcode", "--out"] {
        assert!(
            !help
                .split_whitespace()
                .any(|w| w.trim_end_matches(',') == flag),
            "graph --help advertises {flag}:\n{help}"
        );
    }
    let out = pgplan(&["graph", "--example", "healthcare"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("digraph"));
}

/// pgplan in the repository without RDS_MASTER_PASSWORD and without a cluster.
fn without_password(args: &[&str]) -> Output {
    pgplan_command()
        .args(args)
        .env_remove("RDS_MASTER_PASSWORD")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run pgplan")
}

#[test]
fn validate_and_plan_need_no_password_and_apply_names_the_missing_one() {
    let out = without_password(&["validate", "-f", "examples/backstage-to-rds/pgplan.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = without_password(&[
        "plan",
        "--example",
        "backstage-to-rds",
        "--detailed-exitcode",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let with = pgplan(
        &["plan", "--example", "backstage-to-rds"],
        &[("RDS_MASTER_PASSWORD", "anything-at-all")],
    );
    assert_eq!(
        out.stdout, with.stdout,
        "the plan records the reference only"
    );
    // Apply resolves it, before anything is contacted or changed.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("p.json");
    let out = without_password(&[
        "plan",
        "--example",
        "backstage-to-rds",
        "--out",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for args in [
        &[
            "apply",
            "-f",
            "examples/backstage-to-rds/pgplan.yaml",
            "--auto-approve",
        ][..],
        &["apply", saved.to_str().unwrap()],
    ] {
        let out = without_password(args);
        assert_located(&out, "pgplan::spec::env-unset", "pgplan.yaml:34:17");
        let err = text(&out.stderr);
        assert!(
            err.contains("environment variable `RDS_MASTER_PASSWORD` is not set; apply needs it for the target password"),
            "{args:?}:\n{err}"
        );
        assert!(
            !err.contains("kubeconfig"),
            "{args:?} went on to the cluster:\n{err}"
        );
    }
}

#[test]
fn a_consumer_listed_twice_is_refused_at_the_second_entry() {
    let spec = GOOD.to_string()
        + "  consumers:\n    - kind: Deployment\n      name: healthcare-api\n    - kind: StatefulSet\n      name: healthcare-api\n    - kind: Deployment\n      namespace: default\n      name: healthcare-api\n";
    let out = validate("consumers.yaml", spec.as_bytes());
    // The third entry (line 26) repeats the first (line 21): same kind,
    // namespace (the source's, `default`) and name. The StatefulSet of the
    // same name is another object.
    assert_located(&out, "pgplan::spec::duplicate", "consumers.yaml:26:13");
    let err = text(&out.stderr);
    assert!(
        err.contains("the consumer Deployment default/healthcare-api is listed twice"),
        "{err}"
    );
    assert!(err.contains("first listed here"), "{err}");
    assert!(err.contains("1 error"), "{err}");
    assert!(!err.contains("pgplan::graph"), "{err}");
    // And plan says the same, located, instead of the graph's unlocated error.
    let (_dir, path) = file("consumers.yaml", spec.as_bytes());
    let out = pgplan(
        &[
            "plan",
            "-f",
            path.to_str().unwrap(),
            "--live-state",
            "examples/healthcare/live.yaml",
        ],
        &[],
    );
    assert_located(&out, "pgplan::spec::duplicate", "consumers.yaml:26:13");
}
