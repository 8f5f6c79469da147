//! pgplan's exec (`Cluster::exec`) against both kubelets the simulated cluster can be: one that
//! speaks `v5.channel.k8s.io` (Kubernetes 1.30 and later) and one that speaks only
//! `v4.channel.k8s.io` (before 1.30, or behind a proxy without v5), where closing the client's
//! side ends the session and loses the exit status. Every exec must end with the command's exit
//! status and all its output over both, whatever its stdin.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use pgplan::cluster::exec::Stdin;
use pgplan::cluster::Cluster;
use serde_json::json;

use crate::support::sim::ExecProtocols;
use crate::support::{SimCluster, SimOptions};

/// A cluster with one ready pod `tools` (a no-op container; exec runs the host's tools).
async fn cluster(exec: ExecProtocols) -> (SimCluster, Cluster) {
    let c = SimCluster::start_with(SimOptions {
        exec,
        ..SimOptions::default()
    })
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "tools"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    c.wait_until_async(std::time::Duration::from_secs(60), "the pod runs", |c| {
        c.pod_ready("default", "tools")
    })
    .await;
    let cluster = Cluster::connect(Some(c.kubeconfig_path()), None)
        .await
        .unwrap();
    (c, cluster)
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// What one exec gave: stdout, exit code, stderr.
async fn run<R: tokio::io::AsyncRead + Unpin + Send>(
    cluster: &Cluster,
    argv: &[String],
    stdin: Stdin<R>,
) -> (Vec<u8>, i32, String) {
    let mut out = Vec::new();
    let outcome = cluster
        .exec("default", "tools", None, argv, stdin, &mut out)
        .await
        .unwrap_or_else(|e| panic!("exec {argv:?}: {e}"));
    (out, outcome.code, outcome.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exec_ends_with_its_status_and_output_over_v4_and_v5() {
    crate::support::sim::install_crypto_provider();
    for exec in [ExecProtocols::V4Only, ExecProtocols::V5] {
        let (c, cluster) = cluster(exec).await;

        // No stdin: output, stderr and the exit code.
        let (out, code, err) = run(
            &cluster,
            &sh("echo out; echo err >&2; exit 3"),
            Stdin::none(),
        )
        .await;
        assert_eq!(
            (out.as_slice(), code, err.as_str()),
            (&b"out\n"[..], 3, "err\n"),
            "{exec:?}"
        );

        // A known number of bytes: the command sees its input end after them, and its
        // status arrives after all its output (16 MiB out, echoed by cat: backpressure both ways).
        let data: Vec<u8> = (0..16u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let (out, code, _) = run(
            &cluster,
            &sh("cat; exit 4"),
            Stdin::Sized(data.as_slice(), data.len() as u64),
        )
        .await;
        assert_eq!(code, 4, "{exec:?}");
        assert!(
            out == data,
            "{exec:?}: {} of {} bytes back",
            out.len(),
            data.len()
        );
        let (out, code, _) = run(&cluster, &sh("wc -c"), Stdin::Sized(data.as_slice(), 1000)).await;
        assert_eq!(
            (String::from_utf8_lossy(&out).trim(), code),
            ("1000", 0),
            "{exec:?}"
        );

        // A command that reads a little and exits: the rest is not waited for.
        let (out, code, _) = run(
            &cluster,
            &sh("head -c 5; exit 6"),
            Stdin::Sized(data.as_slice(), data.len() as u64),
        )
        .await;
        assert_eq!((out.len(), code), (5, 6), "{exec:?}");

        // Input that ends before its length is an error, not a command run on a short input.
        let mut out = Vec::new();
        let e = cluster
            .exec(
                "default",
                "tools",
                None,
                &sh("wc -c"),
                Stdin::Sized(&b"short"[..], 100),
                &mut out,
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("ended after 5 of its 100 bytes"),
            "{exec:?}: {e}"
        );

        // A stream the command ends by itself.
        let (out, code, _) = run(
            &cluster,
            &sh("while read l; do [ \"$l\" = quit ] && exit 5; echo \"$l\"; done"),
            Stdin::Open(&b"a\nb\nquit\n"[..]),
        )
        .await;
        assert_eq!((out.as_slice(), code), (&b"a\nb\n"[..], 5), "{exec:?}");

        assert_eq!(c.requests().count("create", "pods/exec"), 6, "{exec:?}");
    }
}

/// `--request-timeout` bounds an exec until its session is open, not while
/// it streams: a command quiet for longer than the bound ends normally; an
/// upgrade the server never answers fails within it, naming the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_bounds_opening_an_exec_not_its_stream() {
    crate::support::sim::install_crypto_provider();
    let (c, _) = cluster(ExecProtocols::V5).await;
    let limit = std::time::Duration::from_secs(1);
    let cluster = Cluster::connect_with(Some(c.kubeconfig_path()), None, Some(limit))
        .await
        .unwrap();
    let (out, code, _) = run(&cluster, &sh("sleep 2.5; echo done"), Stdin::none()).await;
    assert_eq!((out.as_slice(), code), (&b"done\n"[..], 0));

    c.faults().hang("create", "pods/exec");
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let e = cluster
        .exec(
            "default",
            "tools",
            None,
            &sh("true"),
            Stdin::none(),
            &mut out,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took >= limit && took < limit * 10, "{took:?}");
    let e = e.to_string();
    assert!(
        e.contains(&c.url()) && e.contains("did not answer within 1 s"),
        "{e}"
    );
}
