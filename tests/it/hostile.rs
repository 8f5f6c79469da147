//! Hostile input: whatever bytes a spec or a snapshot holds, pgplan answers
//! with located diagnostics of bounded size, never a panic. A seeded mutation
//! test runs the examples' specs and snapshots, damaged in the ways fuzzing
//! found, through `spec::load`, the snapshot loader and miette's graphical
//! handler (as the binary renders them).

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Output;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};
use pgplan::spec::{self, LoadOptions, SpecErrors};

use crate::cli::pgplan;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write");
    path.display().to_string()
}

/// Exit 1, no panic, the code and the location present, and every line of
/// the diagnostic short enough to read.
fn assert_bounded(out: &Output, code: &str, location: &str) {
    let err = text(&out.stderr);
    let head: String = err.chars().take(3000).collect();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{head}");
    assert!(!err.contains("panicked"), "panicked:\n{head}");
    assert!(err.contains(code), "expected {code} in:\n{head}");
    assert!(err.contains(location), "expected {location} in:\n{head}");
    let longest = err.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(longest <= 400, "a line of {longest} characters in:\n{head}");
    assert!(err.len() < 64 * 1024, "{} bytes of diagnostics", err.len());
}

const HEALTHCARE: &str = include_str!("../../examples/healthcare/pgplan.yaml");
const HEALTHCARE_LIVE: &str = include_str!("../../examples/healthcare/live.yaml");

#[test]
fn a_key_longer_than_65535_characters_is_located_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "k".repeat(70_000);
    // A plain key over YAML's 1024-character limit for implicit keys: a
    // syntax error at column 70,001.
    let spec = HEALTHCARE.replace(
        "kind: Placement\n",
        &format!("kind: Placement\n{long}: 1\n"),
    );
    let path = write(&dir, "long-key.yaml", &spec);
    let line = spec[..spec.find(&long).unwrap()].lines().count() + 1;
    assert_bounded(
        &pgplan(&["validate", "-f", &path], &[]),
        "pgplan::yaml::",
        &format!("long-key.yaml:{line}:"),
    );
    assert_bounded(
        &pgplan(
            &[
                "plan",
                "-f",
                &path,
                "--live-state",
                "examples/healthcare/live.yaml",
            ],
            &[],
        ),
        "pgplan::yaml::",
        &format!("long-key.yaml:{line}:"),
    );
    // An explicit key may be any length: then it is an unknown field whose
    // label is 70,000 columns long.
    let spec = HEALTHCARE.replace("  backup:\n", &format!("  ? {long}\n  : 1\n  backup:\n"));
    let path = write(&dir, "quoted-key.yaml", &spec);
    let line = spec[..spec.find(&long).unwrap()].lines().count();
    assert_bounded(
        &pgplan(&["validate", "-f", &path], &[]),
        "pgplan::spec::unknown-field",
        &format!("quoted-key.yaml:{line}:5"),
    );
}

#[test]
fn a_scalar_longer_than_65535_characters_is_located_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = format!("{}y", "x".repeat(70_000));
    let spec = HEALTHCARE.replace("  name: healthcare\n", &format!("  name: {long}\n"));
    let path = write(&dir, "long-value.yaml", &spec);
    assert_bounded(
        &pgplan(&["validate", "-f", &path], &[]),
        "pgplan::spec::name",
        "long-value.yaml:7:9",
    );
    // The same in a snapshot: a label 70,000 columns to the right of the
    // start of its line, behind a long scalar.
    let live = HEALTHCARE_LIVE.replace(
        "formatVersion: 1\n",
        &format!("formatVersion: 1\nnote: {long}\n"),
    );
    let live = write(&dir, "live.yaml", &live);
    assert_bounded(
        &pgplan(
            &[
                "plan",
                "-f",
                "examples/healthcare/pgplan.yaml",
                "--live-state",
                &live,
            ],
            &[],
        ),
        "pgplan::snapshot::invalid",
        "live.yaml:",
    );
    let flow = HEALTHCARE_LIVE.replace(
        "formatVersion: 1\n",
        &format!("formatVersion: 1\norigin: {{context: {long}, server: x, context: y}}\n"),
    );
    let flow = write(&dir, "flow.yaml", &flow);
    assert_bounded(
        &pgplan(
            &[
                "plan",
                "-f",
                "examples/healthcare/pgplan.yaml",
                "--live-state",
                &flow,
            ],
            &[],
        ),
        "pgplan::yaml::duplicate-key",
        "flow.yaml:",
    );
}

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same cases on every machine, so a failure names its case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Offsets of the starts of lines.
fn line_starts(b: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            b.iter()
                .enumerate()
                .filter(|(_, c)| **c == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|&i| i < b.len())
        .collect()
}

fn line_at(b: &[u8], rng: &mut Rng) -> (usize, usize) {
    let starts = line_starts(b);
    if starts.is_empty() {
        return (0, 0);
    }
    let start = *rng.pick(&starts);
    let end = b[start..]
        .iter()
        .position(|c| *c == b'\n')
        .map_or(b.len(), |p| start + p);
    (start, end)
}

fn long_text(rng: &mut Rng) -> String {
    let n = *rng.pick(&[1_100, 65_536, 70_000]);
    match rng.below(4) {
        0 => "k".repeat(n),
        1 => "é".repeat(n),
        2 => "x ".repeat(n / 2),
        _ => "🦀".repeat(n / 4),
    }
}

const TAGS: &[&str] = &[
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!map",
    "!!seq",
    "!!binary",
    "!!python/object:os.system",
    "!!timestamp",
    "!!set",
    "!local",
    "!<tag:yaml.org,2002:str>",
    "!<tag:example.com,2024:x>",
    "!!merge",
];

const SNIPPETS: &[&str] = &[
    "\t",
    "\r",
    "\r\n",
    "\u{2028}",
    "\u{feff}",
    "\u{85}",
    "é",
    "\u{301}",
    "\u{202e}",
    "🦀",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    ": ",
    "- ",
    "? ",
    "&a ",
    "*a",
    "*missing",
    "#",
    "|",
    ">",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "${X}",
    "${",
    "$${",
    "<<: *a\n",
    "~",
    "null",
    " ",
];

/// One damage of the kinds fuzzing found to matter.
fn mutate(input: &mut Vec<u8>, rng: &mut Rng) {
    let len = input.len();
    match rng.below(13) {
        0 => {
            let at = rng.below(len);
            if at < len {
                input[at] = rng.next() as u8;
            }
        }
        1 => {
            let (start, _) = line_at(input, rng);
            let indent = " ".repeat(rng.below(8));
            let long = long_text(rng);
            let line = match rng.below(4) {
                0 => format!("{indent}{long}: 1\n"),
                1 => format!("{indent}key: {long}\n"),
                2 => format!("{indent}- {long}\n"),
                _ => format!("{indent}? {long}\n{indent}: \"{long}\"\n"),
            };
            input.splice(start..start, line.into_bytes());
        }
        2 | 3 => {
            // A key or a value of the line replaced by a long one.
            let (start, end) = line_at(input, rng);
            let line = String::from_utf8_lossy(&input[start..end]).into_owned();
            let Some(colon) = line.find(':') else { return };
            let indent = line.len() - line.trim_start().len();
            let long = long_text(rng);
            let new = if rng.below(2) == 0 {
                format!("{}{long}{}", &line[..indent], &line[colon..])
            } else {
                let quoted = if rng.below(2) == 0 {
                    format!("\"{long}\"")
                } else {
                    long
                };
                format!("{}: {quoted}", &line[..colon])
            };
            input.splice(start..end, new.into_bytes());
        }
        4 => {
            let (start, _) = line_at(input, rng);
            let depth = 60 + rng.below(300);
            let nest = match rng.below(3) {
                0 => format!("deep: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
                1 => format!("deep: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
                _ => (0..depth)
                    .map(|i| format!("{}k:\n", " ".repeat(i)))
                    .collect(),
            };
            input.splice(start..start, nest.into_bytes());
        }
        5 => {
            // An anchor on a large scalar and aliases of it in many places.
            let long = long_text(rng);
            let head = format!("a: &a \"{long}\"\nb: &b [*a, *a, *a, *a]\n");
            input.splice(0..0, head.into_bytes());
            for _ in 0..1 + rng.below(30) {
                let (start, end) = line_at(input, rng);
                let line = String::from_utf8_lossy(&input[start..end]).into_owned();
                if let Some(colon) = line.find(": ") {
                    let alias = if rng.below(2) == 0 { "*a" } else { "*b" };
                    let new = format!("{}: {alias}", &line[..colon]);
                    input.splice(start..end, new.into_bytes());
                }
            }
        }
        6 => {
            let (start, end) = line_at(input, rng);
            let line = String::from_utf8_lossy(&input[start..end]).into_owned();
            let tag = rng.pick(TAGS);
            let new = match line.find(": ") {
                Some(colon) => format!("{}: {tag} {}", &line[..colon], &line[colon + 2..]),
                None => format!("{tag} {line}"),
            };
            input.splice(start..end, new.into_bytes());
        }
        7 => input.truncate(rng.below(len + 1)),
        8 => {
            let (start, end) = line_at(input, rng);
            input.drain(start..(end + 1).min(input.len()));
        }
        9 => {
            let (start, end) = line_at(input, rng);
            let line = input[start..(end + 1).min(input.len())].to_vec();
            input.splice(start..start, line);
        }
        10 => {
            // Snap to a character boundary sometimes, and not always.
            let at = rng.below(len + 1);
            input.splice(at..at, rng.pick(SNIPPETS).bytes());
        }
        11 => {
            let (start, _) = line_at(input, rng);
            if rng.below(2) == 0 {
                input.splice(start..start, *b"  ");
            } else if input.get(start) == Some(&b' ') {
                input.remove(start);
            }
        }
        _ => {
            // Swap two lines.
            let (a0, a1) = line_at(input, rng);
            let (b0, b1) = line_at(input, rng);
            if a1 < b0 {
                let a = input[a0..a1].to_vec();
                let b = input[b0..b1].to_vec();
                input.splice(b0..b1, a);
                input.splice(a0..a1, b);
            }
        }
    }
}

/// Renders as the binary does (graphical, no colour; wrapped on a
/// terminal, one line per message in pipes).
fn render(diagnostic: &dyn Diagnostic) -> String {
    let mut out = String::new();
    for handler in [
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()),
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_wrap_lines(false),
    ] {
        out.clear();
        handler
            .render_report(&mut out, diagnostic)
            .expect("a diagnostic renders");
    }
    out
}

fn check_rendered(errors: &SpecErrors) -> Result<(), String> {
    let out = render(errors);
    let longest = out.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    if longest > 400 {
        let line = out
            .lines()
            .find(|l| l.chars().count() == longest)
            .unwrap_or("");
        let line: String = line.chars().take(300).collect();
        return Err(format!("a line of {longest} characters: {line}"));
    }
    if out.len() > 256 * 1024 {
        return Err(format!("{} bytes of diagnostics", out.len()));
    }
    for e in &errors.errors {
        if !out.contains(e.code) {
            return Err(format!("{} is not shown", e.code));
        }
    }
    Ok(())
}

/// The streaming reader (snapshots) and the tree (specs) agree on a
/// one-document file: the same value, or both an error (the streaming one
/// may refuse earlier: anchors nested in anchors count once each).
fn streaming_reads_as_the_tree(bytes: &[u8]) -> Result<(), String> {
    let Ok(text) = pgplan::yaml::check_text(bytes) else {
        return Ok(());
    };
    if text.contains("---") || text.contains("...") || text.contains('%') {
        return Ok(());
    }
    let tree = pgplan::yaml::parse(text).map(|docs| {
        docs.into_iter()
            .find(|d| !d.root.is_null())
            .map(|d| d.root.to_json())
    });
    let streamed = pgplan::yaml::from_str::<serde_json::Value>(text);
    match (tree, streamed) {
        (Ok(Some(a)), Ok(b)) if a == b.value => Ok(()),
        (Ok(None), Err(pgplan::yaml::ReadError::Empty)) => Ok(()),
        (Err(a), Err(pgplan::yaml::ReadError::Yaml(b)))
            if a.code == b.code && a.span.start == b.span.start =>
        {
            Ok(())
        }
        (Ok(_), Err(pgplan::yaml::ReadError::Yaml(b))) if b.code == "pgplan::yaml::alias-bomb" => {
            Ok(())
        }
        (a, b) => Err(format!("the tree read {a:?}, streaming {b:?}")),
    }
}

/// Runs one input through everything that reads user files; `Err` says
/// what went wrong (a panic included).
fn exercise(name: &str, bytes: &[u8], example: &pgplan::examples::Example) -> Result<(), String> {
    let lookup = |v: &str| (v.len() % 3 != 0).then(|| format!("value-of-{v}"));
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let opts = LoadOptions {
            environment: None,
            all_environments: true,
            lookup: &lookup,
        };
        match spec::load_bytes(name, bytes, &opts) {
            Ok(_) => {}
            Err(e) => check_rendered(&e)?,
        }
        streaming_reads_as_the_tree(bytes)?;
        let snapshot = pgplan::observed::load_snapshot(name, bytes);
        if let Err(e) = &snapshot {
            check_rendered(e)?;
        }
        // What loads is planned: against the example's live state, or with
        // the example's spec.
        let opts = LoadOptions {
            environment: None,
            all_environments: false,
            lookup: &lookup,
        };
        let files = std::collections::BTreeMap::new();
        let live = pgplan::observed::load_snapshot("live.yaml", example.live.as_bytes())
            .map_err(|e| e.to_string())?;
        let pairs = [
            (spec::load_bytes(name, bytes, &opts).ok(), Some(live)),
            (
                spec::load_bytes("pgplan.yaml", example.spec.as_bytes(), &opts).ok(),
                snapshot.ok(),
            ),
        ];
        for (spec, observed) in pairs {
            let (Some(spec), Some(observed)) = (spec, observed) else {
                continue;
            };
            let inputs = pgplan::diff::Inputs {
                observed: &observed,
                env: &lookup,
                files: &files,
            };
            if let Err(pgplan::diff::PlanError::Spec(e)) = pgplan::diff::plan(&spec, &inputs) {
                check_rendered(&e)?;
            }
        }
        Ok(())
    }));
    match outcome {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// The suite's fuzz target: a fixed number of seeded mutations of every
/// example's spec and snapshot (PGPLAN_FUZZ_CASES=N runs more).
#[test]
fn mutated_specs_and_snapshots_never_panic_and_stay_bounded() {
    let cases: usize = std::env::var("PGPLAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    let seed: u64 = std::env::var("PGPLAN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_9a71);
    // Panics are caught and reported as failures with their case.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = String::new();
    let mut ran = 0;
    for example in pgplan::examples::EXAMPLES {
        for (kind, base) in [("spec", example.spec), ("live", example.live)] {
            for case in 0..cases {
                let mut rng = Rng(seed ^ ((case as u64 + 1) << 20) ^ base.len() as u64);
                let mut input = base.as_bytes().to_vec();
                for _ in 0..1 + rng.below(3) {
                    mutate(&mut input, &mut rng);
                }
                ran += 1;
                let t = std::time::Instant::now();
                let r = exercise("input.yaml", &input, example);
                if std::env::var_os("PGPLAN_FUZZ_TIMES").is_some() {
                    eprintln!(
                        "{} {kind} {case}: {:?} {} bytes",
                        example.name,
                        t.elapsed(),
                        input.len()
                    );
                }
                if let Err(why) = r {
                    let _ = writeln!(failures, "{} {kind} case {case}: {why}", example.name);
                }
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(ran >= 6 * cases);
    assert!(
        failures.is_empty(),
        "failed cases (seed {seed}):\n{failures}"
    );
}

/// A finished `pgplan` process: exit code, peak RSS (bytes, from wait4),
/// wall time and what it printed on stderr.
struct Measured {
    code: Option<i32>,
    peak: u64,
    wall: std::time::Duration,
    stderr: String,
}

/// Runs pgplan as the child of a small Python process that reaps it with
/// `os.wait4` and prints its peak RSS. Not as our own child: Linux starts a
/// forked child's peak RSS at its parent's (the kernel copies the high-water
/// mark with the address space, and exec keeps it), and this test process
/// is large when other tests run beside it.
fn measure(args: &[&str]) -> Measured {
    const REAP: &str = r#"
import os, sys, time
t = time.monotonic()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
print(f"{usage.ru_maxrss} {code} {time.monotonic() - t}")
"#;
    let python = std::env::var("PGPLAN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut reaper = std::process::Command::new(&python);
    crate::run::clean_env(&mut reaper);
    let out = reaper
        .arg("-c")
        .arg(REAP)
        .arg(crate::cli::pgplan_bin())
        .args(args)
        .output()
        .expect("run python3 (the tests need it: PGPLAN_TEST_PYTHON)");
    let report = text(&out.stdout);
    let fields: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(
        fields.len(),
        3,
        "reaper said {report:?}, {}",
        text(&out.stderr)
    );
    Measured {
        peak: fields[0].parse::<u64>().expect("maxrss") * 1024,
        code: fields[1].parse().ok(),
        wall: std::time::Duration::from_secs_f64(fields[2].parse().expect("seconds")),
        stderr: text(&out.stderr),
    }
}

#[test]
fn a_one_megabyte_alias_file_is_refused_quickly_in_little_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One anchored 1 MB scalar and 5,000 aliases of it: 5 GB if expanded.
    let big = "x".repeat(1 << 20);
    let aliases = vec!["*big"; 5000].join(", ");
    let spec = HEALTHCARE.replace(
        "  databases:\n    - healthcare\n",
        &format!("  databases: [&big {big}, {aliases}]\n"),
    );
    let path = write(&dir, "aliases.yaml", &spec);
    let m = measure(&["validate", "-f", &path]);
    let head: String = m.stderr.chars().take(2000).collect();
    eprintln!(
        "1 MB alias file: {:.0} ms, peak RSS {:.1} MiB",
        m.wall.as_secs_f64() * 1e3,
        m.peak as f64 / (1 << 20) as f64
    );
    assert_eq!(m.code, Some(1), "{head}");
    assert!(m.stderr.contains("pgplan::yaml::alias-bomb"), "{head}");
    assert!(m.stderr.contains("4 times the size of the file"), "{head}");
    assert!(m.peak < 100 << 20, "peak RSS {} bytes", m.peak);
    assert!(
        m.stderr.len() < 16 * 1024,
        "{} bytes of stderr",
        m.stderr.len()
    );
    // The alias named is the fifth (four fit in four times the file).
    let fifth = spec.match_indices("*big").nth(4).unwrap().0;
    let col = spec[..fifth].len() - spec[..fifth].rfind('\n').unwrap();
    let line = spec[..fifth].lines().count();
    assert!(
        m.stderr.contains(&format!("aliases.yaml:{line}:{col}")),
        "{head}"
    );
}

#[test]
fn errors_about_aliased_values_print_little() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Twenty aliases of a 40 KB value, each a bad database name: within
    // the alias budget, so 42 errors (a bad name and a duplicate each but
    // the first), each quoting a little of the value.
    let big = "X".repeat(40_000);
    let spec = HEALTHCARE.replace(
        "  databases:\n    - healthcare\n",
        &format!(
            "  databases:\n    - &big {big}\n{}",
            "    - *big\n".repeat(20)
        ),
    );
    let path = write(&dir, "aliases.yaml", &spec);
    let m = measure(&["validate", "-f", &path]);
    assert_eq!(m.code, Some(1), "{}", &m.stderr[..m.stderr.len().min(2000)]);
    assert!(
        m.stderr.contains("42 errors"),
        "{}",
        &m.stderr[..m.stderr.len().min(2000)]
    );
    assert!(
        m.stderr.len() < 64 * 1024,
        "{} bytes of stderr",
        m.stderr.len()
    );
}

#[test]
fn tags_outside_the_core_schema_are_located_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (tag, code) in [
        ("!!python/object:os.system", "is not supported"),
        ("!!binary", "is not supported"),
        ("!!int", "does not fit the value `postgres`"),
    ] {
        let spec = HEALTHCARE.replace(
            "        name: postgres\n        serviceName",
            &format!("        name: {tag} postgres\n        serviceName"),
        );
        let path = write(&dir, "tags.yaml", &spec);
        let out = pgplan(&["validate", "-f", &path], &[]);
        assert_bounded(&out, "pgplan::yaml::tag", "tags.yaml:18:15");
        assert!(text(&out.stderr).contains(code), "{}", text(&out.stderr));
    }
    // A tag on a mapping that does not fit it.
    let spec = HEALTHCARE.replace("  backup:\n", "  backup: !!seq\n");
    let path = write(&dir, "tags.yaml", &spec);
    let out = pgplan(&["validate", "-f", &path], &[]);
    assert_bounded(&out, "pgplan::yaml::tag", "tags.yaml:");
    assert!(
        text(&out.stderr).contains("`!!seq` does not fit a mapping"),
        "{}",
        text(&out.stderr)
    );
    // The core schema's tags where they fit are fine.
    let spec = HEALTHCARE
        .replace("        replicas: 1\n", "        replicas: !!int \"1\"\n")
        .replace("  name: healthcare\n", "  name: !!str healthcare\n")
        .replace("  backup:\n", "  backup: !!map\n");
    let path = write(&dir, "tags.yaml", &spec);
    let out = pgplan(&["validate", "-f", &path], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
