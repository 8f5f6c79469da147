//! Running a command inside a pod (the exec subresource), streaming: stdin
//! from any reader, stdout into any writer, stderr kept for messages, and
//! the exit status as the kubelet reports it. This is how pgplan runs
//! `pg_dump`, `pg_restore` and `psql` next to an in-cluster server.
//!
//! The session speaks the websocket channel protocol itself, over kube's
//! upgraded connection, because the two versions a server may agree to end
//! a command's input differently. kube offers `v5.channel.k8s.io` first and
//! `v4.channel.k8s.io` second; the server picks one and says which in the
//! upgrade response's `Sec-WebSocket-Protocol` (kube's
//! `Connection::supports_stream_close`). v5 (Kubernetes 1.30 and later, and
//! proxies that speak it) has a close signal for stdin alone. v4 has none:
//! closing the client's side closes the whole session, and the kubelet
//! drops the rest of the output and the exit status. So over either
//! version, input whose length is known goes through `head -c N` in the
//! pod, which ends the command's input after exactly those bytes, and the
//! client's side is never closed before the exit status has arrived. Only
//! over v5 is the end of stdin also signalled.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use kube::Resource;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Cluster, ClusterError};

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The command's exit code (0 on success).
    pub code: i32,
    /// The last part of what it wrote to stderr.
    pub stderr: String,
}

/// What a command reads on stdin, and so how the end of its input is told.
pub enum Stdin<R> {
    /// Nothing: stdin is not attached.
    None,
    /// Exactly this many bytes from the reader (an archive, a script). The
    /// command sees its input end after them over every protocol; a reader
    /// that ends sooner fails the exec.
    Sized(R, u64),
    /// A stream the command ends on by itself, from what it reads (a psql
    /// session that ends with `\q`). Its end is signalled where the protocol
    /// can (v5); over v4 it is not, so a command that waits for the end of
    /// its input would wait for ever.
    Open(R),
}

impl Stdin<tokio::io::Empty> {
    /// No stdin (a typed [`Stdin::None`]).
    pub fn none() -> Self {
        Stdin::None
    }
}

/// How much of stderr is kept for messages.
const STDERR_KEEP: usize = 64 * 1024;

/// Keeps the last [`STDERR_KEEP`] bytes of what is appended.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > STDERR_KEEP {
            self.0.drain(..self.0.len() - STDERR_KEEP);
        }
    }

    fn text(self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Reads a command's stderr to its end, keeping only the last
/// [`STDERR_KEEP`] bytes (a verbose tool writes a line per archive entry),
/// so memory does not grow with the database.
pub(crate) async fn stderr_tail<R: AsyncRead + Unpin>(err: &mut R) -> String {
    let mut kept = Tail::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => kept.push(&buf[..n]),
        }
    }
    kept.text()
}

/// Stdin goes out in frames of at most this much (the kubelet's own
/// frames are 32 KiB; servers accept messages of megabytes).
const CHUNK: usize = 64 * 1024;

/// A ping this often keeps an otherwise quiet session open through
/// proxies and load balancers that close idle connections (kube does the
/// same).
const PING: Duration = Duration::from_secs(30);

/// The channels of the protocol: the first byte of every binary message.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5 only: `[CLOSE, STDIN]` says stdin has ended.
const CLOSE: u8 = 255;

/// The shell line that hands a command exactly `$0` bytes of stdin.
const SIZED: &str = r#"head -c "$0" | "$@""#;

/// `argv` run so that it reads exactly `len` bytes of stdin.
fn sized_argv(argv: &[String], len: u64) -> Vec<String> {
    let mut full = vec!["sh".to_string(), "-c".into(), SIZED.into(), len.to_string()];
    full.extend(argv.iter().cloned());
    full
}

/// Why a session ended without an exit status.
enum Broken {
    /// The stream ended or broke, or the caller's writer failed.
    Stream(String),
    /// The caller's stdin failed or ended short.
    Input(String),
}

/// The exit code a kubelet's `Status` reports.
fn exit_code(s: &Status) -> i32 {
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok())
        .unwrap_or(1)
}

/// Feeds the caller's stdin to the session: `len` bytes exactly when it is
/// known, else to the reader's end; then, where the protocol has one, the
/// close signal. Returns once all is sent; a send that fails (the session
/// is ending) stops the feeding quietly, since the exit status tells the
/// rest.
async fn feed<R, S>(
    reader: &mut R,
    len: Option<u64>,
    close_signal: bool,
    sink: &mut S,
) -> Result<(), Broken>
where
    R: AsyncRead + Unpin,
    S: futures::Sink<Message> + Unpin,
{
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK + 1];
    loop {
        let want = match len {
            Some(l) => (l - sent).min(CHUNK as u64) as usize,
            None => CHUNK,
        };
        if want == 0 {
            break;
        }
        let n = reader
            .read(&mut buf[1..=want])
            .await
            .map_err(|e| Broken::Input(format!("reading the command's input failed: {e}")))?;
        if n == 0 {
            if let Some(l) = len {
                return Err(Broken::Input(format!(
                    "the command's input ended after {sent} of its {l} bytes"
                )));
            }
            break;
        }
        buf[0] = STDIN;
        if sink
            .send(Message::binary(buf[..=n].to_vec()))
            .await
            .is_err()
        {
            return Ok(());
        }
        sent += n as u64;
    }
    if close_signal {
        let _ = sink.send(Message::binary(vec![CLOSE, STDIN])).await;
    }
    Ok(())
}

/// One exec session on an upgraded websocket: stdout into the caller's
/// writer, stderr's tail, stdin fed beside, pings while it lasts. Ends at
/// the exit status, the only end that is a result; the client's side is
/// not closed before it (over v4 that would lose it).
async fn session<S, R, W>(
    ws: S,
    close_signal: bool,
    mut input: Option<(R, Option<u64>)>,
    stdout: &mut W,
) -> Result<(Status, String), Broken>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message>
        + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let receive = async {
        let mut stderr = Tail::default();
        while let Some(message) = stream.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    return Err(Broken::Stream(format!(
                        "the exec stream broke before the command's exit status arrived: {e}"
                    )))
                }
            };
            // A message of the channel byte alone opens a channel.
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                STDOUT if !payload.is_empty() => {
                    stdout.write_all(payload).await.map_err(|e| {
                        Broken::Stream(format!("writing the command's output failed: {e}"))
                    })?;
                }
                STDERR => stderr.push(payload),
                STATUS if !payload.is_empty() => {
                    let status: Status = serde_json::from_slice(payload).map_err(|e| {
                        Broken::Stream(format!("the exit status is not a Status object: {e}"))
                    })?;
                    stdout.flush().await.map_err(|e| {
                        Broken::Stream(format!("writing the command's output failed: {e}"))
                    })?;
                    return Ok((status, stderr.text()));
                }
                _ => {}
            }
        }
        Err(Broken::Stream(
            "the exec stream ended without the command's exit status".into(),
        ))
    };
    // Ends only by failing (its output is why): after the input, it pings
    // until the status ends the session, and once a send fails it waits
    // for that.
    let send = async {
        if let Some((reader, len)) = input.as_mut() {
            if let Err(broken) = feed(reader, *len, close_signal, &mut sink).await {
                return broken;
            }
        }
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        loop {
            ping.tick().await;
            if sink.send(Message::Ping(Default::default())).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        received = receive => received,
        broken = send => Err(broken),
    }
}

impl Cluster {
    /// Run `argv` in a pod's container, streaming stdin and stdout.
    pub async fn exec<R, W>(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        stdin: Stdin<R>,
        stdout: &mut W,
    ) -> Result<ExecOutcome, ClusterError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let (argv, input) = match stdin {
            Stdin::None => (argv.to_vec(), None),
            Stdin::Sized(reader, len) => (sized_argv(argv, len), Some((reader, Some(len)))),
            Stdin::Open(reader) => (argv.to_vec(), Some((reader, None))),
        };
        let mut ap = AttachParams::default()
            .stdin(input.is_some())
            .stdout(true)
            .stderr(true);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let what = format!("exec in pod {namespace}/{pod}");
        let object = format!("pod {namespace}/{pod}");
        let mut request = kube::core::Request::new(Pod::url_path(&(), Some(namespace)))
            .exec(pod, argv, &ap)
            .map_err(|e| ClusterError::Exec {
                what: what.clone(),
                message: format!("the request cannot be built: {e}"),
            })?;
        request.extensions_mut().insert("exec");
        let connection = self
            .client()
            .connect(request)
            .await
            .map_err(|e| self.classify(e, "create", "pods/exec", namespace, &object))?;
        let close_signal = connection.supports_stream_close();
        tracing::debug!(
            pod = %object,
            protocol = if close_signal { "v5.channel.k8s.io" } else { "v4.channel.k8s.io" },
            "exec session open"
        );
        match session(connection.into_stream(), close_signal, input, stdout).await {
            Ok((status, stderr)) => Ok(ExecOutcome {
                code: exit_code(&status),
                stderr,
            }),
            Err(Broken::Stream(message) | Broken::Input(message)) => {
                Err(ClusterError::Exec { what, message })
            }
        }
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
            .exec(namespace, pod, container, argv, Stdin::none(), &mut out)
            .await?;
        Ok((String::from_utf8_lossy(&out).into_owned(), outcome))
    }
}
