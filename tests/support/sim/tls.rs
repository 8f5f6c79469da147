//! HTTPS for the simulated API server, as a real cluster serves it: a certificate authority made
//! for each cluster (its certificate goes into the kubeconfig as `certificate-authority-data`)
//! and a server certificate it signs for `127.0.0.1` and `localhost`. Clients verify the server
//! as they would a real one; kubectl sends the kubeconfig's bearer token only over TLS.
//!
//! The listener accepts TCP connections and completes each TLS handshake in its own task (bounded,
//! so a client that never finishes one holds nothing up), handing finished connections to axum.
//! A connection dropped without a TLS shutdown (an upgraded exec session that ends) still sends
//! `close_notify`, as Go's `tls.Conn.Close` does: a client then reads a clean end of stream, not
//! a truncation error.

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A cluster's certificate authority and the server's TLS configuration.
pub struct Tls {
    /// The CA certificate, PEM (the kubeconfig's `certificate-authority-data`, decoded).
    pub ca_pem: String,
    /// The CA certificate, DER (kube's `Config::root_cert`).
    pub ca_der: Vec<u8>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// A fresh CA and a server certificate signed by it.
    pub fn generate() -> Result<Tls, String> {
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pgplan simulated cluster CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().map_err(e)?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(e)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server.signed_by(&server_key, &issuer).map_err(e)?;

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
        .map_err(|e| e.to_string())?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Serves TLS on `listener`: connections come out of the returned listener once their
    /// handshake is done.
    pub fn listen(&self, listener: TcpListener) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                let Ok((tcp, peer)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        let _ = tx.send((Closing(tls), peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

/// Connections whose TLS handshake is done, for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(Closing, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = Closing;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accepting task is gone (the runtime is stopping): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A server TLS connection that sends `close_notify` when dropped without having been shut down.
pub struct Closing(TlsStream<TcpStream>);

/// Writes TLS records to the socket without waiting (a full socket drops the rest).
struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let (tcp, conn) = self.0.get_mut();
        conn.send_close_notify();
        while conn.wants_write() {
            if conn.write_tls(&mut TryWrite(tcp)).is_err() {
                break;
            }
        }
    }
}

impl AsyncRead for Closing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Closing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
