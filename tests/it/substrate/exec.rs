//! Exec and port-forward: exit statuses, stdin/stdout streaming, pg_dump piped into psql between
//! pods, the v4 protocol (and a kubelet that speaks only v4), and port-forward to a pod's server
//! with real psql.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{collect, exec, from_json, raw_websocket, CONVERGE};
use crate::support::sim::scenario::healthcare;
use crate::support::sim::ExecProtocols;
use crate::support::{pg, Scenario, SimCluster, SimOptions};

#[tokio::test]
async fn exec_reports_output_and_exit_codes_like_the_kubelet() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let api = c.pod_names("default", "app=healthcare-api").remove(0);
    let ok = exec(
        &pods,
        &api,
        &["sh", "-c", "echo out; echo err >&2; echo $DATABASE_HOST"],
    )
    .await;
    assert_eq!(ok.stdout_str(), "out\npostgres\n");
    assert_eq!(ok.stderr, "err\n");
    assert!(ok.succeeded());
    let failed = exec(&pods, &api, &["sh", "-c", "exit 3"]).await;
    assert_eq!(failed.exit_code().as_deref(), Some("3"));
    let status = failed.status.expect("a status");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(cause.reason.as_deref(), Some("ExitCode"));
    let missing = exec(&pods, &api, &["no-such-binary"]).await;
    assert!(missing
        .status
        .unwrap()
        .message
        .unwrap()
        .contains("executable file not found"));
    assert_eq!(c.requests().count("create", "pods/exec"), 3);
}

/// The bytes a stream carries through the API server are counted (what
/// `scripts/bench-journeys` reports per GB moved): an exec's output, a log.
#[tokio::test]
async fn stream_bytes_through_the_api_server_are_counted() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let api = c.pod_names("default", "app=healthcare-api").remove(0);
    let before = c.requests().stream_bytes();
    let out = exec(&pods, &api, &["head", "-c", "100000", "/dev/zero"]).await;
    assert_eq!(out.stdout.len(), 100_000);
    let counted = c.requests().stream_bytes() - before;
    // The output, and the small status frame.
    assert!((100_000..100_200).contains(&counted), "{counted}");
    let db = c.pod_names("default", "app=postgres").remove(0);
    let before = c.requests().stream_bytes();
    let log = pods
        .logs(&db, &kube::api::LogParams::default())
        .await
        .expect("the log");
    assert!(!log.is_empty());
    assert_eq!(c.requests().stream_bytes() - before, log.len() as u64);
}

/// 64 MiB through `cat` (in by stdin, out by stdout, at the same time, every byte compared) and
/// 64 MiB into `wc -c`: the streams are copied as they come, with backpressure both ways.
#[tokio::test]
async fn exec_streams_stdin_and_stdout() {
    const TOTAL: usize = 64 << 20;
    let c = SimCluster::start();
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let p: Pod = from_json(
        json!({"metadata": {"name": "tools"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    c.wait_until_async(CONVERGE, "the pod runs", |c| {
        c.pod_ready("default", "tools")
    })
    .await;
    let block: Vec<u8> = (0..1u32 << 16).map(|i| (i * 7 % 251) as u8).collect();
    let ap = AttachParams::default()
        .stdin(true)
        .stderr(true)
        .max_stdin_buf_size(1 << 16)
        .max_stdout_buf_size(1 << 16);

    let mut echo = pods.exec("tools", ["cat"], &ap).await.unwrap();
    let (mut stdin, mut stdout) = (echo.stdin().unwrap(), echo.stdout().unwrap());
    let status = echo.take_status().unwrap();
    let writer = async {
        for _ in 0..TOTAL / block.len() {
            stdin.write_all(&block).await.unwrap();
        }
        stdin.shutdown().await.unwrap();
    };
    let reader = async {
        let (mut got, mut buf) = (0usize, vec![0u8; 1 << 16]);
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    *b,
                    block[(got + i) % block.len()],
                    "byte {} differs",
                    got + i
                );
            }
            got += n;
        }
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(got, TOTAL);
    assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));

    let mut count = pods.exec("tools", ["wc", "-c"], &ap).await.unwrap();
    let mut stdin = count.stdin().unwrap();
    let writer = async move {
        for _ in 0..TOTAL / block.len() {
            stdin.write_all(&block).await.unwrap();
        }
        stdin.shutdown().await.unwrap();
    };
    let ((), counted) = tokio::join!(writer, collect(count));
    assert_eq!(counted.stdout_str().trim(), TOTAL.to_string());
}

/// Seed 002 step 1 and 5 between pods: pg_dump by exec in one pod, piped into psql by exec in
/// another.
#[tokio::test]
async fn pg_dump_in_one_pod_piped_into_psql_in_another_moves_the_rows() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let client = c.client().await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let target: StatefulSet = from_json(json!({"metadata": {"name": "target"}, "spec": {
        "serviceName": "target", "replicas": 1, "selector": {"matchLabels": {"app": "target"}},
        "template": {"metadata": {"labels": {"app": "target"}}, "spec": {"containers": [
            {"name": "postgres", "image": "postgres:15", "env": [
                {"name": "POSTGRES_USER", "value": "healthcare_user"},
                {"name": "POSTGRES_PASSWORD", "value": "other"},
                {"name": "POSTGRES_DB", "value": "healthcare"}]}]}}}}));
    sets.create(&PostParams::default(), &target).await.unwrap();
    c.wait_until_async(CONVERGE, "target-0 is ready", |c| {
        c.pod_ready("default", "target-0")
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let source = c.pod_names("default", "app=postgres").remove(0);

    let mut dump = pods
        .exec(
            &source,
            ["pg_dump", "-U", healthcare::USER, healthcare::DATABASE],
            &AttachParams::default().stderr(true),
        )
        .await
        .unwrap();
    let mut restore = pods
        .exec(
            "target-0",
            [
                "psql",
                "-U",
                healthcare::USER,
                "-d",
                healthcare::DATABASE,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
            ],
            &AttachParams::default().stdin(true).stderr(true),
        )
        .await
        .unwrap();
    let mut from = dump.stdout().unwrap();
    let mut to = restore.stdin().unwrap();
    let dump_status = dump.take_status().unwrap();
    let restore_status = restore.take_status().unwrap();
    let mut dump_err = dump.stderr().unwrap();
    let mut restore_err = restore.stderr().unwrap();
    let mut restore_out = restore.stdout().unwrap();
    let (mut err, mut rerr, mut rout) = (String::new(), String::new(), Vec::new());
    let pipe = async {
        let n = tokio::io::copy(&mut from, &mut to).await.unwrap();
        to.shutdown().await.unwrap();
        n
    };
    let (piped, _, _, _) = tokio::join!(
        pipe,
        dump_err.read_to_string(&mut err),
        restore_err.read_to_string(&mut rerr),
        restore_out.read_to_end(&mut rout),
    );
    assert_eq!(
        dump_status.await.unwrap().status.as_deref(),
        Some("Success"),
        "pg_dump: {err}"
    );
    assert_eq!(
        restore_status.await.unwrap().status.as_deref(),
        Some("Success"),
        "psql: {rerr}"
    );
    dump.join().await.unwrap();
    restore.join().await.unwrap();
    assert!(piped > 1000, "a real dump went through ({piped} bytes)");
    let rows = c.query(
        "default",
        "target-0",
        "healthcare",
        "SELECT name FROM patients ORDER BY registered_at",
    );
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, healthcare::PATIENTS);
}

#[tokio::test]
async fn exec_speaks_the_v4_channel_protocol_too() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let pod = c.pod_names("default", "app=postgres").remove(0);
    let (mut ws, resp) = raw_websocket(
        &c,
        &format!("/api/v1/namespaces/default/pods/{pod}/exec?command=sh&command=-c&command=echo%20v4%3B%20exit%202&stdout=true&stderr=true"),
        "v4.channel.k8s.io",
    )
    .await
    .unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let (mut stdout, mut status) = (Vec::new(), None);
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            tokio_tungstenite::tungstenite::Message::Binary(b) if b.len() > 1 => match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                3 => status = Some(serde_json::from_slice::<serde_json::Value>(&b[1..]).unwrap()),
                _ => {}
            },
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    assert_eq!(stdout, b"v4\n");
    let status = status.expect("a status frame");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
}

#[tokio::test]
async fn port_forward_reaches_the_pods_server() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let pod = c.pod_names("default", "app=postgres").remove(0);
    // Like `kubectl port-forward`: a local listener, one forwarded stream per connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().port();
    let forward = {
        let pods = pods.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut pf = pods.portforward(&pod, &[5432]).await.unwrap();
                let mut upstream = pf.take_stream(5432).unwrap();
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    drop(upstream);
                    let _ = pf.join().await;
                });
            }
        })
    };
    let out = tokio::process::Command::new(pg::bin("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &local.to_string(),
            "-U",
            healthcare::USER,
            "-d",
            healthcare::DATABASE,
            "-Atc",
            "SELECT string_agg(name, ',' ORDER BY registered_at) FROM patients",
        ])
        .env("PGPASSWORD", healthcare::PASSWORD)
        .env("PGSSLMODE", "disable")
        .output()
        .await
        .unwrap();
    forward.abort();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Alice,Bob,Ibrahim",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.requests().count("create", "pods/portforward") >= 1);

    // A port nothing listens on reports the error on the error channel.
    let api = c.pod_names("default", "app=healthcare-api").remove(0);
    let mut pf = pods.portforward(&api, &[8000]).await.unwrap();
    let err = pf
        .take_error(8000)
        .unwrap()
        .await
        .expect("an error message");
    assert!(err.contains("connection refused"), "{err}");
    let _ = pf.take_stream(8000).unwrap().write_all(b"x").await;
}

/// A kubelet before 1.30 (`ExecProtocols::V4Only`): kube offers v5 and v4 and gets v4; a client
/// asking only for v5 is refused. Closing the client's side (kube does it when stdin is shut,
/// having no close signal over v4) closes the whole session: the command's stdin ends, it runs
/// on to its end, and its later output and its exit status never arrive.
#[tokio::test]
async fn a_v4_kubelet_ends_the_session_when_the_client_closes_its_side() {
    let c = SimCluster::start_with(SimOptions {
        exec: ExecProtocols::V4Only,
        ..SimOptions::default()
    })
    .unwrap();
    let client = c.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = from_json(
        json!({"metadata": {"name": "tools"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    c.wait_until_async(CONVERGE, "the pod runs", |c| {
        c.pod_ready("default", "tools")
    })
    .await;

    // The negotiated protocol, as kube reads it from the upgrade response.
    let ap = AttachParams::default().stdin(true).stderr(true);
    let request = kube::core::Request::new("/api/v1/namespaces/default/pods")
        .exec("tools", ["true"], &ap)
        .unwrap();
    let connection = client.connect(request).await.unwrap();
    assert!(
        !connection.supports_stream_close(),
        "v4 negotiated, without stdin's close signal"
    );
    drop(connection);
    match raw_websocket(
        &c,
        "/api/v1/namespaces/default/pods/tools/exec?command=true&stdout=true",
        "v5.channel.k8s.io",
    )
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        Err(e) => panic!("a v5-only request must be refused with 400: {e}"),
        Ok(_) => panic!("a v5-only request must be refused"),
    }

    // stdin shut: kube closes the websocket; the command reads its end, and what it writes
    // after (and its status) is dropped. It still ran to its end: its marker file is there.
    let script = "read line; echo \"got $line\"; sleep 0.3; echo after; echo done > \"$HOME/marker\"; exit 3";
    let mut p = pods.exec("tools", ["sh", "-c", script], &ap).await.unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"one\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let out = collect(p).await;
    assert!(
        out.status.is_none(),
        "no exit status over a closed v4 session: {out:?}"
    );
    assert!(!out.stdout_str().contains("after"), "{out:?}");
    let mut marker = String::new();
    for _ in 0..100 {
        marker = exec(
            &pods,
            "tools",
            &["sh", "-c", "cat \"$HOME/marker\" 2>/dev/null"],
        )
        .await
        .stdout_str();
        if !marker.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(marker, "done\n");

    // Without stdin, and with stdin kept open until the status: output and status arrive.
    let ok = exec(&pods, "tools", &["sh", "-c", "echo v4; exit 2"]).await;
    assert_eq!(ok.stdout_str(), "v4\n");
    assert_eq!(ok.exit_code().as_deref(), Some("2"));
}
