//! Tests of the test substrate itself — the simulated API server through the unmodified kube
//! client, its controllers and kubelet with real PostgreSQL, and moto — so the end-to-end tests
//! built on it can trust it. One module per capability.

mod exec;
mod gaps;
mod hygiene;
mod postgres;
mod rds;
mod rest;
mod volumes;
mod workloads;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status as ExecStatus;
use kube::api::{AttachParams, AttachedProcess};
use kube::core::Status;
use kube::Api;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// How long tests wait for the simulated cluster to converge.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// A typed object from JSON (test fixtures are written as JSON, like manifests).
pub fn from_json<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture decodes into its k8s-openapi type")
}

/// What an exec produced.
#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: Option<ExecStatus>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The exit code the status reports (0 on success).
    pub fn exit_code(&self) -> Option<String> {
        let s = self.status.as_ref()?;
        if s.status.as_deref() == Some("Success") {
            return Some("0".into());
        }
        s.details
            .as_ref()?
            .causes
            .as_ref()?
            .first()?
            .message
            .clone()
    }

    pub fn succeeded(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.status.as_deref() == Some("Success"))
    }
}

/// Drains stdout and stderr of an attached process concurrently and waits for its status.
pub async fn collect(mut p: AttachedProcess) -> ExecOutput {
    let mut stdout = p.stdout().expect("stdout attached");
    let mut stderr = p.stderr().expect("stderr attached");
    let status = p.take_status().expect("status channel");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    a.expect("read stdout");
    b.expect("read stderr");
    let status = status.await;
    p.join().await.expect("exec session ends cleanly");
    ExecOutput {
        stdout: out,
        stderr: String::from_utf8_lossy(&err).into_owned(),
        status,
    }
}

/// Runs `cmd` in `pod` through kube's exec and collects the result.
pub async fn exec(pods: &Api<Pod>, pod: &str, cmd: &[&str]) -> ExecOutput {
    let p = pods
        .exec(pod, cmd.to_vec(), &AttachParams::default().stderr(true))
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?} in {pod}: {e}"));
    collect(p).await
}

/// The `kube::Error::Api` status of a failed call.
pub fn api_status<T: std::fmt::Debug>(r: kube::Result<T>) -> Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}
