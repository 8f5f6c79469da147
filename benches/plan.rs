//! Offline planning speed and memory: `cargo bench --bench plan`.
//!
//! For each example, a generated spec of 1,000 databases across 100
//! placements, and a 300,000-name spec for validation, it prints the
//! in-process time of load → plan → render (median of several runs) and the
//! `pgplan` process's wall time and peak RSS (median/max over runs, from
//! wait4). The generated spec's budget, release build: under 1 s, under 100 MB.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgplan::diff::{self, Inputs};
use pgplan::redact::Redactor;
use pgplan::render::{self, Format, RenderOptions};
use pgplan::spec::{self, LoadOptions, SourceFile};

const RUNS: usize = 7;

fn env(name: &str) -> Option<String> {
    (name == "RDS_MASTER_PASSWORD").then(|| "bench-password".to_string())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// load + plan + render, in process.
fn in_process(
    spec_text: &str,
    live_text: &str,
    environment: Option<&str>,
    files: &BTreeMap<String, String>,
) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut steps = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let opts = LoadOptions {
            environment,
            all_environments: false,
            lookup: &env,
        };
        let spec =
            spec::load(SourceFile::new("pgplan.yaml", spec_text), &opts).expect("spec loads");
        let observed = pgplan::observed::load_snapshot("live.yaml", live_text.as_bytes())
            .expect("snapshot loads");
        let plan = diff::plan(
            &spec,
            &Inputs {
                observed: &observed,
                env: &env,
                files,
            },
        )
        .expect("plans");
        let out = render::render(
            &plan,
            Format::Text,
            &Redactor::new(spec.secrets.clone()),
            &RenderOptions::default(),
        )
        .expect("renders");
        std::hint::black_box(out);
        steps = plan.steps.len();
        times.push(t.elapsed());
    }
    (median(times), steps)
}

/// The pgplan binary: median wall time and max peak RSS (bytes) over runs.
// The child is reaped with wait4 (to read its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn process(args: &[&str]) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut peak = 0u64;
    for _ in 0..RUNS {
        let t = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_pgplan"))
            .args(args)
            .env("RDS_MASTER_PASSWORD", "bench-password")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn pgplan");
        let mut status = 0;
        // SAFETY: rusage is plain data, zero-initialised; the pid is our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = child.id() as libc::pid_t;
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(rc, pid, "wait4");
        times.push(t.elapsed());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "pgplan {args:?} failed"
        );
        peak = peak.max(usage.ru_maxrss as u64 * 1024);
    }
    (median(times), peak)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tempdir");
    // PGPLAN_BENCH_DIR=DIR keeps the generated files there, for profiling.
    let keep = std::env::var_os("PGPLAN_BENCH_DIR").map(std::path::PathBuf::from);
    let work = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let ca =
        std::fs::read_to_string(repo.join("examples/backstage-to-rds/rds-ca.pem")).expect("ca");
    let files = BTreeMap::from([("rds-ca.pem".to_string(), ca)]);

    println!("pgplan offline plan benchmark ({RUNS} runs each; release build)");
    println!(
        "{:<34} {:>7} {:>14} {:>14} {:>12}",
        "case", "steps", "in-process", "process wall", "peak RSS"
    );
    let mut cases: Vec<(String, String, String, Option<&str>)> = Vec::new();
    for (name, envs) in [
        ("healthcare", vec![None]),
        ("backstage-to-rds", vec![None]),
        (
            "pyairtable",
            vec![Some("dev"), Some("staging"), Some("prod")],
        ),
    ] {
        let dir = repo.join("examples").join(name);
        for e in envs {
            cases.push((
                match e {
                    Some(e) => format!("{name} --env {e}"),
                    None => name.to_string(),
                },
                dir.join("pgplan.yaml").display().to_string(),
                dir.join("live.yaml").display().to_string(),
                e,
            ));
        }
    }
    let (gen_spec, gen_live) = pgplan::examples::generated(100, 10);
    let gen_spec_path = work.join("generated.yaml");
    let gen_live_path = work.join("generated-live.yaml");
    std::fs::write(&gen_spec_path, &gen_spec).expect("write");
    std::fs::write(&gen_live_path, &gen_live).expect("write");
    cases.push((
        "generated: 100 placements × 10 dbs".into(),
        gen_spec_path.display().to_string(),
        gen_live_path.display().to_string(),
        None,
    ));

    let mut generated = None;
    for (label, spec_path, live_path, e) in &cases {
        let spec_text = std::fs::read_to_string(spec_path).expect("spec");
        let live_text = std::fs::read_to_string(live_path).expect("live");
        let (t, steps) = in_process(&spec_text, &live_text, *e, &files);
        let mut args = vec![
            "plan",
            "-f",
            spec_path.as_str(),
            "--live-state",
            live_path.as_str(),
        ];
        if let Some(e) = e {
            args.extend(["--env", e]);
        }
        let (wall, peak) = process(&args);
        println!(
            "{label:<34} {steps:>7} {:>11.1} ms {:>11.1} ms {:>9.1} MB",
            t.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            mb(peak)
        );
        if label.starts_with("generated") {
            generated = Some((wall, peak));
        }
    }

    let names: String = (0..300_000).map(|i| format!("    - db_{i:06}\n")).collect();
    let huge = include_str!("../examples/healthcare/pgplan.yaml")
        .replace("    - healthcare\n", &format!("    - healthcare\n{names}"));
    let huge_path = work.join("huge.yaml");
    std::fs::write(&huge_path, &huge).expect("write");
    let (wall, peak) = process(&["validate", "-f", huge_path.to_str().expect("utf-8 path")]);
    println!(
        "{:<34} {:>7} {:>14} {:>11.1} ms {:>9.1} MB",
        "validate: 300,000 database names",
        "-",
        "-",
        wall.as_secs_f64() * 1e3,
        mb(peak)
    );

    if let Some((wall, peak)) = generated {
        let ok = wall < Duration::from_secs(1) && peak < 100 * 1024 * 1024;
        println!(
            "budget (generated, process): < 1000 ms and < 100 MB: {:.1} ms, {:.1} MB — {}",
            wall.as_secs_f64() * 1e3,
            mb(peak),
            if ok { "within budget" } else { "OVER BUDGET" }
        );
    }
}
