//! Offline planning speed and memory: `cargo bench --bench plan`.
//!
//! For each example, a generated spec of 1,000 databases across 100
//! placements, a placement planned against a 50 MB snapshot, and a
//! 300,000-name spec for validation, it prints the in-process time of
//! load → plan → render (median of several runs) and the `pgplan` process's
//! wall time and peak RSS (median/max over runs, from wait4). The generated
//! spec's budget, release build: under 1 s, under 100 MB; the 50 MB
//! snapshot's: under 4 times its size.
//!
//! pgplan is started by a copy of this bench in `--reap` mode, which reaps
//! it with wait4 and prints its rusage: Linux starts a child's peak RSS at
//! its parent's, and this process holds the generated files.

// Only the reaper of measure is used here.
#[allow(dead_code)]
mod measure;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgplan::diff::{self, Inputs};
use pgplan::observed::{self, Scope};
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
        let scope = Scope::of(&spec);
        let observed = observed::load_snapshot_in("live.yaml", live_text.as_bytes(), Some(&scope))
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
fn process(args: &[&str]) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut peak = 0u64;
    for _ in 0..RUNS {
        let out = Command::new(std::env::current_exe().expect("this bench"))
            .arg("--reap")
            .arg(env!("CARGO_BIN_EXE_pgplan"))
            .args(args)
            .env("RDS_MASTER_PASSWORD", "bench-password")
            .output()
            .expect("run the reaper");
        let report = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = report
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        assert!(
            f.len() == 3 && f[1] == 0,
            "pgplan {args:?} failed: {report}"
        );
        times.push(Duration::from_nanos(f[2]));
        peak = peak.max(f[0]);
    }
    (median(times), peak)
}

/// `--reap PROGRAM ARGS…`: run it (output discarded), reap it with wait4
/// and print its peak RSS in bytes, exit code and wall time in nanoseconds.
// Reaped with wait4 (to read its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn reap(program: &str, args: &[String]) {
    let t = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let (status, usage) = measure::reap(&child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    println!(
        "{} {code} {}",
        usage.ru_maxrss as u64 * 1024,
        t.elapsed().as_nanos()
    );
}

fn mb(bytes: u64) -> f64 {
    measure::mb(bytes)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--reap") {
        reap(&argv[2], &argv[3..]);
        return;
    }
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

    // A placement planned against a 50 MB snapshot: the generated state of
    // 5,000 placements, the spec of the first.
    let (_, small) = pgplan::examples::generated(10, 10);
    let n = (50 << 20) / small.len() * 10 + 10;
    let (big_spec, big_live) = pgplan::examples::generated(n, 10);
    let big_spec_path = work.join("big.yaml");
    let big_live_path = work.join("big-live.yaml");
    std::fs::write(
        &big_spec_path,
        big_spec.split("---\n").next().unwrap_or_default(),
    )
    .expect("write");
    std::fs::write(&big_live_path, &big_live).expect("write");
    let big_len = big_live.len() as u64;
    drop((big_spec, big_live, small));
    let big_label = format!("snapshot: {:.0} MB live.yaml", mb(big_len));
    cases.push((
        big_label.clone(),
        big_spec_path.display().to_string(),
        big_live_path.display().to_string(),
        None,
    ));

    let mut generated = None;
    let mut big = None;
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
        if *label == big_label {
            big = Some((wall, peak));
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

    if let Some((wall, peak)) = big {
        let ratio = peak as f64 / big_len as f64;
        println!(
            "budget ({big_label}, process): peak < 4 × the file: {:.1} ms, {:.1} MB, {ratio:.2} × — {}",
            wall.as_secs_f64() * 1e3,
            mb(peak),
            if ratio < 4.0 { "within budget" } else { "OVER BUDGET" }
        );
    }
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
