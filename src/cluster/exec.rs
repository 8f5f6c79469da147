//! Running a command inside a pod (the exec subresource), streaming: stdin
//! from any reader, stdout into any writer, stderr kept for messages, and
//! the exit status as the kubelet reports it. This is how pgplan runs
//! `pg_dump`, `pg_restore` and `psql` next to an in-cluster server.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Cluster, ClusterError};

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The command's exit code (0 on success).
    pub code: i32,
    /// The last part of what it wrote to stderr.
    pub stderr: String,
}

/// How much of stderr is kept for messages.
const STDERR_KEEP: usize = 64 * 1024;

/// Reads a command's stderr to its end, keeping only the last
/// [`STDERR_KEEP`] bytes (a verbose tool writes a line per archive entry),
/// so memory does not grow with the database.
pub(crate) async fn stderr_tail<R: AsyncRead + Unpin>(err: &mut R) -> String {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEEP {
                    kept.drain(..kept.len() - STDERR_KEEP);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Buffer between the websocket and the caller's streams.
const BUF: usize = 1 << 20;

impl Cluster {
    /// Run `argv` in a pod's container, streaming stdin and stdout.
    pub async fn exec<R, W>(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        stdin: Option<R>,
        stdout: &mut W,
    ) -> Result<ExecOutcome, ClusterError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let pods: Api<Pod> = Api::namespaced(self.client().clone(), namespace);
        let mut ap = AttachParams::default()
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true);
        ap.max_stdin_buf_size = Some(BUF);
        ap.max_stdout_buf_size = Some(BUF);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let what = format!("exec in pod {namespace}/{pod}");
        let mut attached = pods.exec(pod, argv.to_vec(), &ap).await.map_err(|e| {
            self.classify(
                e,
                "create",
                "pods/exec",
                namespace,
                &format!("pod {namespace}/{pod}"),
            )
        })?;
        let status = attached.take_status();
        let mut out = attached.stdout().ok_or_else(|| ClusterError::Exec {
            what: what.clone(),
            message: "no stdout stream".into(),
        })?;
        let mut err = attached.stderr().ok_or_else(|| ClusterError::Exec {
            what: what.clone(),
            message: "no stderr stream".into(),
        })?;
        let writer = attached.stdin();

        let feed = async {
            if let (Some(mut input), Some(mut w)) = (stdin, writer) {
                // A command that exits early closes its stdin; that is its
                // exit status's business, not a transport error.
                let _ = tokio::io::copy(&mut input, &mut w).await;
                let _ = w.shutdown().await;
            }
        };
        let drain = async {
            let copied = tokio::io::copy(&mut out, stdout).await;
            let _ = stdout.flush().await;
            copied
        };
        let errors = stderr_tail(&mut err);
        // The session is over when stdout and stderr end (kube ends them
        // once the exit status arrives). A command may exit without reading
        // all its input: feeding stops then, since nothing would read the
        // rest. If the stream breaks instead, kube's task ends with an error
        // and leaves stdout open: that ends the exec too, as a failure,
        // since the exit status is unknown.
        let outputs = async { tokio::join!(drain, errors) };
        let task = attached.join();
        tokio::pin!(feed, outputs, task);
        let mut fed = false;
        let mut joined = false;
        let (copied, stderr) = loop {
            tokio::select! {
                () = &mut feed, if !fed => fed = true,
                done = &mut outputs => break done,
                r = &mut task, if !joined => match r {
                    Ok(()) => joined = true,
                    Err(e) => {
                        return Err(ClusterError::Exec {
                            what,
                            message: format!("the exec stream broke before the command's exit status arrived: {e}"),
                        })
                    }
                },
            }
        };
        copied.map_err(|e| ClusterError::Exec {
            what: what.clone(),
            message: format!("writing the command's output failed: {e}"),
        })?;
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        if !joined {
            let _ = task.await;
        }
        let code = match status {
            None => {
                return Err(ClusterError::Exec {
                    what,
                    message: "the exec stream ended without the command's exit status".into(),
                })
            }
            Some(s) if s.status.as_deref() == Some("Success") => 0,
            Some(s) => s
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
                .and_then(|c| c.message.as_deref())
                .and_then(|m| m.parse().ok())
                .unwrap_or(1),
        };
        Ok(ExecOutcome { code, stderr })
    }

    /// Run a command with no stdin and return its stdout as text.
    pub async fn exec_output(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
    ) -> Result<(String, ExecOutcome), ClusterError> {
        let mut out = Vec::new();
        let outcome = self
            .exec(
                namespace,
                pod,
                container,
                argv,
                None::<tokio::io::Empty>,
                &mut out,
            )
            .await?;
        Ok((String::from_utf8_lossy(&out).into_owned(), outcome))
    }
}
