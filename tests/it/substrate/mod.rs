//! Tests of the test substrate itself — the simulated API server through the unmodified kube
//! client, its controllers and kubelet with real PostgreSQL, and moto — so the end-to-end tests
//! built on it can trust it. One module per capability.

mod containers;
mod exec;
mod gaps;
mod hygiene;
mod kubectl;
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

/// A websocket opened by hand on the cluster (over its HTTPS trusting its CA, or plain HTTP),
/// asking for `protocol`, with the kubeconfig's token: how a client other than kube would open
/// exec.
pub async fn raw_websocket(
    c: &crate::support::SimCluster,
    path_and_query: &str,
    protocol: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<Box<dyn RawStream>>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let scheme = if c.ca_der().is_some() { "wss" } else { "ws" };
    let mut req = format!("{scheme}://localhost:{}{path_and_query}", c.addr().port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    req.headers_mut().insert(
        "Authorization",
        "Bearer pgplan-simcluster-token".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(c.addr()).await.unwrap();
    let Some(ca) = c.ca_der() else {
        return tokio_tungstenite::client_async(req, Box::new(tcp) as Box<dyn RawStream>).await;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tokio_tungstenite::client_async(req, Box::new(tls) as Box<dyn RawStream>).await
}

/// A byte stream a raw websocket runs on (TCP, or TLS over it).
pub trait RawStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawStream for T {}

/// The `kube::Error::Api` status of a failed call.
pub fn api_status<T: std::fmt::Debug>(r: kube::Result<T>) -> Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}
