//! The websocket stream protocols of `pods/exec` and `pods/portforward`, as kube's
//! `Api::<Pod>::exec` and `Api::<Pod>::portforward` speak them.
//!
//! Exec (`v4.channel.k8s.io` / `v5.channel.k8s.io`): each binary frame starts with a channel byte
//! — 0 stdin, 1 stdout, 2 stderr, 3 the final `Status` (JSON; `NonZeroExitCode` with the exit
//! code as the real kubelet reports it), 4 terminal resize; v5 adds 255 = close, whose payload
//! `[0]` means "stdin reached EOF". The command runs as a local process (see the kubelet for its
//! working directory and environment). Streams are copied in 64 KiB frames through bounded
//! channels, so gigabytes pass without being held in memory and a slow reader slows the writer.
//!
//! Port-forward: for the i-th requested port, channel 2i carries data and 2i+1 errors; each starts
//! with a frame holding the port number (little-endian u16). Each websocket forwards one TCP
//! connection per port to the pod's server, at the pod's address.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::kubelet::ExecTarget;
use super::reqlog::RequestLog;
use crate::support::proc::{self, SpawnOptions};

const CHUNK: usize = 64 * 1024;

/// What the exec request asked for.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut b = Vec::with_capacity(data.len() + 1);
    b.push(channel);
    b.extend_from_slice(data);
    Message::Binary(Bytes::from(b))
}

/// Forwards the websocket's outgoing messages from a bounded channel (the one writer).
async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    log: Arc<RequestLog>,
) {
    while let Some(m) = rx.recv().await {
        if let Message::Binary(b) = &m {
            log.add_stream_bytes(b.len().saturating_sub(1));
        }
        let closing = matches!(m, Message::Close(_));
        if sink.send(m).await.is_err() || closing {
            break;
        }
    }
    let _ = sink.close().await;
}

async fn pump<R: AsyncRead + Unpin>(r: R, channel: u8, tx: mpsc::Sender<Message>) {
    pump_until(r, channel, tx, None).await
}

/// [`pump`], which once `dropped` is cancelled goes on reading and drops what it reads (a closed
/// v4 session: the command's writes still succeed).
async fn pump_until<R: AsyncRead + Unpin>(
    mut r: R,
    channel: u8,
    tx: mpsc::Sender<Message>,
    dropped: Option<tokio_util::sync::CancellationToken>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut tx = Some(tx);
    loop {
        let n = match &dropped {
            Some(d) if tx.is_some() => tokio::select! {
                read = r.read(&mut buf) => read,
                () = d.cancelled() => {
                    tx = None;
                    continue;
                }
            },
            _ => r.read(&mut buf).await,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(t) = &tx {
                    if t.send(frame(channel, &buf[..n])).await.is_err() && dropped.is_none() {
                        return;
                    }
                }
            }
        }
    }
}

fn exit_status_json(command: &[String], code: Option<i32>) -> serde_json::Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        None => json!({
            "metadata": {}, "status": "Failure",
            "message": "command terminated by a signal", "reason": "InternalError",
            "details": {"causes": [{"reason": "ExitCode", "message": "137"}]},
        }),
    }
}

/// Sends the last frames (the writer) while reading and dropping whatever
/// the client still sends, then waits (bounded) for the client's Close, as
/// a real server's closing handshake does.
async fn drain_until(
    writer: tokio::task::JoinHandle<()>,
    mut incoming: futures::stream::SplitStream<WebSocket>,
) {
    let drain = async {
        while let Some(m) = incoming.next().await {
            if matches!(m, Ok(Message::Close(_)) | Err(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let ((), _) = tokio::join!(drain, writer);
    })
    .await;
}

/// Serves one exec session on an upgraded websocket, speaking v5 (`v5`) or v4.
///
/// When the client closes its side (or goes away) before the command has exited: over v4, as a
/// kubelet before 1.30 does (`wsstream.Conn`), the command's stdin ends, its output from then on
/// is dropped (its stdout and stderr are closed: a write to them fails), the websocket is closed
/// and no exit status is sent, while the command runs on to its end. Over v5 the command is
/// killed.
pub async fn exec(
    socket: WebSocket,
    target: ExecTarget,
    req: ExecRequest,
    v5: bool,
    log: Arc<RequestLog>,
) {
    let (sink, mut incoming) = socket.split();
    let (tx, rx) = mpsc::channel::<Message>(4);
    let writer = tokio::spawn(write_loop(sink, rx, log.clone()));
    let finish = |tx: mpsc::Sender<Message>, status: serde_json::Value| async move {
        let _ = tx.send(frame(3, status.to_string().as_bytes())).await;
        let _ = tx.send(Message::Close(None)).await;
    };
    let Some(program) = req.command.first() else {
        finish(
            tx,
            json!({"metadata": {}, "status": "Failure", "reason": "BadRequest",
            "message": "you must specify at least 1 command", "code": 400}),
        )
        .await;
        drain_until(writer, incoming).await;
        return;
    };
    let resolved = match &target.sandbox {
        Some(sb) => {
            let path = target
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            sb.resolve(program, &path)
        }
        None => Some(program.clone()),
    };
    let mut cmd = Command::new(resolved.as_deref().unwrap_or(program));
    cmd.args(&req.command[1..])
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if req.stdout || req.tty {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if req.stderr || req.tty {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let spawned = match &target.sandbox {
        None => {
            cmd.current_dir(&target.cwd);
            proc::spawn(cmd, SpawnOptions::UNPRIVILEGED)
        }
        Some(_) if resolved.is_none() => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        Some(sb) => sb
            .apply(&mut cmd)
            .and_then(|()| proc::spawn(cmd, SpawnOptions::AS_IS)),
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "OCI runtime exec failed: exec failed: unable to start container process: \
                     exec: \"{program}\": executable file not found in $PATH: unknown"
                )
            } else {
                format!("OCI runtime exec failed: exec failed: unable to start container process: {e}: unknown")
            };
            finish(
                tx,
                json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": message, "code": 500}),
            )
            .await;
            drain_until(writer, incoming).await;
            return;
        }
    };
    let pid = child.id();
    let stdin = child
        .stdin
        .take()
        .and_then(|s| tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(s)).ok());
    let stdout = child
        .stdout
        .take()
        .and_then(|s| tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
    let stderr = child
        .stderr
        .take()
        .and_then(|s| tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
    let err_channel = if req.tty { 1 } else { 2 };
    // Client → stdin, in its own task so that it keeps reading the client's
    // frames after the process exits, as a real server does: while the exit
    // status goes out (a client still writing stdin would otherwise block on
    // a full socket while we block sending it the status), and until the
    // client answers our Close (dropping a socket with unread data resets
    // the connection, and the client loses the status). Finishes when the
    // client goes away.
    let exited = tokio_util::sync::CancellationToken::new();
    let mut reader = {
        let exited = exited.clone();
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(msg) = incoming.next().await {
                match msg {
                    Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                        0 => {
                            log.add_stream_bytes(b.len() - 1);
                            if let Some(w) = stdin.as_mut() {
                                // A background child may hold the pipe open
                                // without reading: stop feeding at exit.
                                let wrote = tokio::select! {
                                    r = w.write_all(&b[1..]) => r.is_ok(),
                                    () = exited.cancelled() => false,
                                };
                                if !wrote {
                                    stdin = None;
                                }
                            }
                        }
                        // v4 has no close signal: a kubelet before 1.30 ignores channel 255.
                        255 if v5 && b.get(1) == Some(&0) => stdin = None,
                        _ => {}
                    },
                    Ok(Message::Close(_)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
    };
    let (tx_out, tx_err) = (tx.clone(), tx.clone());
    // v4: cancelled when the client closes the session; output is dropped from then on.
    let dropped = (!v5).then(tokio_util::sync::CancellationToken::new);
    let (drop_out, drop_err) = (dropped.clone(), dropped.clone());
    let outputs = async move {
        let out = async move {
            if let Some(r) = stdout {
                pump_until(r, 1, tx_out, drop_out).await;
            }
        };
        let err = async move {
            if let Some(r) = stderr {
                pump_until(r, err_channel, tx_err, drop_err).await;
            }
        };
        tokio::join!(out, err);
    };
    // Output flows while the process runs.
    let mut outputs = tokio::spawn(outputs);
    let stop = target.stop.clone();
    let mut client_gone = false;
    let completed = tokio::select! {
        status = proc::wait_child(&mut child) => {
            // Then whatever it left in the pipes (bounded, in case a background child holds
            // them open).
            if tokio::time::timeout(Duration::from_secs(5), &mut outputs).await.is_err() {
                proc::signal_group(pid, libc::SIGKILL);
                let _ = (&mut outputs).await;
            }
            Some(status)
        }
        _ = &mut reader => {
            client_gone = true;
            None
        }
        _ = stop.cancelled() => None,
    };
    exited.cancel();
    match completed {
        Some(status) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .ok()
                .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)));
            finish(tx, exit_status_json(&req.command, code)).await;
        }
        None if !v5 && !stop.is_cancelled() => {
            // v4: the client closed the session. Its stdin has ended (the reader dropped it),
            // the rest of the output is dropped, the socket closes, and the command runs on.
            if let Some(d) = &dropped {
                d.cancel();
            }
            drop(tx);
            tokio::select! {
                _ = proc::wait_child(&mut child) => {}
                _ = stop.cancelled() => {
                    proc::signal_group(pid, libc::SIGKILL);
                    let _ = proc::wait_child(&mut child).await;
                }
            }
            outputs.abort();
        }
        None => {
            // The client went away or the pod stopped: the process goes too.
            proc::signal_group(pid, libc::SIGKILL);
            let _ = proc::wait_child(&mut child).await;
            outputs.abort();
            drop(tx);
        }
    }
    // Whatever is still in the process group (background jobs) goes with the session.
    proc::signal_group(pid, libc::SIGKILL);
    let _ = writer.await;
    // The closing handshake: the client's Close (or its going away), bounded.
    if !client_gone
        && tokio::time::timeout(Duration::from_secs(2), &mut reader)
            .await
            .is_err()
    {
        reader.abort();
    }
}

/// Serves one port-forward session: `ports` are the requested ports and the local port each
/// reaches (or why it cannot).
pub async fn portforward(
    socket: WebSocket,
    ports: Vec<(u16, Result<std::net::SocketAddr, String>)>,
    log: Arc<RequestLog>,
) {
    let (sink, mut incoming) = socket.split();
    let (tx, rx) = mpsc::channel::<Message>(8);
    let writer = tokio::spawn(write_loop(sink, rx, log.clone()));
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut pumps = Vec::new();
    for (i, (port, target)) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let _ = tx.send(frame(data_ch, &port.to_le_bytes())).await;
        let _ = tx.send(frame(data_ch + 1, &port.to_le_bytes())).await;
        let conn = match target {
            Ok(addr) => tokio::net::TcpStream::connect(*addr)
                .await
                .map_err(|e| format!("error forwarding port {port} to pod: {e}")),
            Err(e) => Err(e.clone()),
        };
        match conn {
            Ok(stream) => {
                let (r, w) = stream.into_split();
                writers.push(Some(w));
                pumps.push(tokio::spawn(pump(r, data_ch, tx.clone())));
            }
            Err(e) => {
                let _ = tx.send(frame(data_ch + 1, e.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    let all_done = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    let reader = async {
        while let Some(msg) = incoming.next().await {
            match msg {
                Ok(Message::Binary(b)) if b.len() > 1 && b[0] % 2 == 0 => {
                    log.add_stream_bytes(b.len() - 1);
                    let i = (b[0] / 2) as usize;
                    if let Some(Some(w)) = writers.get_mut(i) {
                        let data: Bytes = b.slice(1..);
                        if w.write_all(&data).await.is_err() {
                            writers[i] = None;
                        }
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = all_done => {
            let _ = tx.send(Message::Close(None)).await;
        }
        _ = reader => {}
    }
    drop(tx);
    drain_until(writer, incoming).await;
}
