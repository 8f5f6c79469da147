//! The simulated cluster, by hand (see docs/testing.md):
//!
//! ```text
//! cargo run --example simcluster -- healthcare|healthcare-in-pod|backstage|empty   # up until Ctrl-C
//! cargo run --release --example simcluster -- bench [--mib N]    # prints startup and exec figures
//! ```

#[path = "../mod.rs"]
#[allow(dead_code)]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::sim::scenario::{backstage, healthcare};
use support::{Scenario, SimCluster, SimOptions};

const USAGE: &str =
    "usage: simcluster healthcare|healthcare-in-pod|backstage|empty | bench [--mib N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simcluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.first().map(String::as_str) {
        Some("bench") => {
            let mib = args
                .iter()
                .position(|a| a == "--mib")
                .and_then(|i| args.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(512);
            rt.block_on(bench(mib));
            ExitCode::SUCCESS
        }
        Some(name @ ("healthcare" | "healthcare-in-pod" | "backstage" | "empty")) => {
            let scenario = Scenario::from_name(name);
            let started = Instant::now();
            let cluster = match SimCluster::start_with(SimOptions {
                scenario,
                ..SimOptions::default()
            }) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("simcluster: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "simulated cluster up in {:.1?} at {}",
                started.elapsed(),
                cluster.url()
            );
            println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
            match scenario {
                Some(s @ (Scenario::Healthcare | Scenario::HealthcareInPod)) => println!(
                    "scenario {}: namespace {}, Deployment {} (database {}, user {}, password {}), patients {:?}",
                    s.name(), healthcare::NAMESPACE, healthcare::DEPLOYMENT, healthcare::DATABASE,
                    healthcare::USER, healthcare::PASSWORD, healthcare::PATIENTS
                ),
                Some(Scenario::Backstage) => println!(
                    "scenario backstage: namespace {}, Backstage {}, StatefulSet {} (user {}, password {}), databases {:?}",
                    backstage::NAMESPACE, backstage::CR, backstage::STATEFUL_SET, backstage::USER,
                    backstage::PASSWORD, backstage::DATABASES
                ),
                None => println!("empty cluster: namespaces default, kube-system; nodes node1, node2"),
            }
            if let Some(s) = scenario {
                for pod in cluster.pod_names(s.namespace(), "") {
                    if let Some(ep) = cluster.pod_postgres(s.namespace(), &pod) {
                        println!(
                            "pod {pod}: PostgreSQL on {}:{} (socket {})",
                            ep.addr,
                            ep.port,
                            ep.socket_dir.display()
                        );
                    }
                }
            }
            println!(
                "Ctrl-C stops the cluster and removes {}",
                cluster.dir().display()
            );
            if let Err(e) = rt.block_on(tokio::signal::ctrl_c()) {
                eprintln!("simcluster: {e}");
            }
            println!("\n{}", cluster.requests().summary());
            drop(cluster);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn max_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Reads a stream to its end, returning the byte count.
async fn drain(mut r: impl tokio::io::AsyncRead + Unpin) -> u64 {
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return n,
            Ok(k) => n += k as u64,
        }
    }
}

async fn bench(mib: u64) {
    let bare: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let c = SimCluster::start();
            let d = t.elapsed();
            drop(c);
            d
        })
        .collect();
    println!("bare cluster startup (median of 5): {:.0?}", median(bare));
    for s in [Scenario::Healthcare, Scenario::Backstage] {
        let t = Instant::now();
        drop(SimCluster::with_scenario(s));
        println!(
            "{} scenario up, Ready and seeded: {:.2?}",
            s.name(),
            t.elapsed()
        );
    }

    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let pod = c.pod_names("default", "app=postgres").remove(0);
    let bytes = mib << 20;
    let ap = || {
        AttachParams::default()
            .stderr(false)
            .max_stdout_buf_size(1 << 16)
            .max_stdin_buf_size(1 << 16)
    };

    let t = Instant::now();
    let mut p = pods
        .exec(&pod, ["head", "-c", &bytes.to_string(), "/dev/zero"], &ap())
        .await
        .expect("exec head");
    let n = drain(p.stdout().expect("stdout")).await;
    let _ = p.join().await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "exec stdout: {n} bytes in {secs:.2} s = {:.0} MB/s",
        n as f64 / secs / 1e6
    );

    let t = Instant::now();
    let mut p = pods
        .exec(&pod, ["sh", "-c", "cat > /dev/null"], &ap().stdin(true))
        .await
        .expect("exec cat");
    let mut stdin = p.stdin().expect("stdin");
    let block = vec![0x5au8; 1 << 16];
    for _ in 0..bytes / block.len() as u64 {
        stdin.write_all(&block).await.expect("write stdin");
    }
    stdin.shutdown().await.expect("close stdin");
    drop(stdin);
    let _ = p.take_status().expect("status").await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "exec stdin: {bytes} bytes in {secs:.2} s = {:.0} MB/s",
        bytes as f64 / secs / 1e6
    );

    // A real dump: a table of about `mib` MiB, pg_dump'ed through exec.
    let rows = bytes / 1024;
    let t = Instant::now();
    c.psql("default", &pod, healthcare::DATABASE, &format!(
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 31) AS payload FROM generate_series(1, {rows}) g"));
    println!("generated a {rows}-row table in {:.1?}", t.elapsed());
    let t = Instant::now();
    let mut p = pods
        .exec(
            &pod,
            [
                "pg_dump",
                "-U",
                healthcare::USER,
                "-t",
                "big",
                healthcare::DATABASE,
            ],
            &ap(),
        )
        .await
        .expect("exec pg_dump");
    let n = drain(p.stdout().expect("stdout")).await;
    let status = p.take_status().expect("status").await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "pg_dump through exec: {n} bytes in {secs:.2} s = {:.0} MB/s ({})",
        n as f64 / secs / 1e6,
        status.and_then(|s| s.status).unwrap_or_default()
    );
    println!(
        "peak RSS of this process (client and server together): {:.0} MiB",
        max_rss_mib()
    );
}
