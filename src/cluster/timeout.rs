//! The bound on every request to the API server (`--request-timeout`): a
//! tower layer on the kube client that fails a request whose response has
//! not begun within the limit (connecting, sending, the server's answer),
//! and a response body that stalls for longer than the limit between two
//! reads. A server that accepts connections and never answers is an error
//! naming it, never a silent hang.
//!
//! Streams are bounded only until they are established: an exec or
//! port-forward once its upgrade is answered (`101`), a watch once its
//! response has begun. Their later silence is not a dead server — a
//! command may write nothing for minutes, a watch waits for changes — so
//! the read bound does not apply to them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or a read that took longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {}", seconds(*.limit))]
pub struct TimedOut {
    pub limit: Duration,
}

/// A duration as people read it: `30 s`, `1.5 s`.
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Bounds every request of the service it wraps by `limit`.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer {
    pub limit: Duration,
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    limit: Duration,
}

/// Whether a request is a watch (`watch=true` or `watch=1`), whose body
/// is a stream of changes that may be quiet for long.
fn is_watch<B>(req: &Request<B>) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1"))
    })
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<ReadTimeout<ResBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let limit = self.limit;
        let watch = is_watch(&req);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = tokio::time::timeout(limit, answer)
                .await
                .map_err(|_| Box::new(TimedOut { limit }) as BoxError)?
                .map_err(Into::into)?;
            let streaming = watch || res.status() == StatusCode::SWITCHING_PROTOCOLS;
            Ok(res.map(|body| ReadTimeout {
                body,
                limit: (!streaming).then_some(limit),
                stall: None,
            }))
        })
    }
}

/// A response body whose every read must complete within `limit` (none:
/// unbounded).
pub struct ReadTimeout<B> {
    body: B,
    limit: Option<Duration>,
    /// Armed while a read is waiting.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Body for ReadTimeout<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(limit) = this.limit else {
                    return Poll::Pending;
                };
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TimedOut { limit })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The limit of a request that timed out, if `e` (or what caused it) says
/// so: this layer's bound, or a connect timeout of the client.
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> Option<Option<Duration>> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TimedOut>() {
            return Some(Some(t.limit));
        }
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return Some(None);
        }
        cur = err.source();
    }
    None
}

/// Parses a `--request-timeout` value as kubectl does: a whole number of
/// seconds, or a duration with units (`30s`, `1m30s`, `500ms`, `2m`); `0`
/// means no bound.
pub fn parse_request_timeout(s: &str) -> Option<Option<Duration>> {
    let s = s.trim();
    let d = if let Ok(n) = s.parse::<u64>() {
        Duration::from_secs(n)
    } else {
        let mut total = Duration::ZERO;
        let mut rest = s;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, tail) = rest.split_at(digits);
            let number: f64 = number.parse().ok()?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            total += Duration::try_from_secs_f64(number * scale).ok()?;
            rest = tail;
        }
        total
    };
    Some((!d.is_zero()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeouts_read_as_kubectl_reads_them() {
        let secs = |n| Some(Some(Duration::from_secs(n)));
        assert_eq!(parse_request_timeout("30"), secs(30));
        assert_eq!(parse_request_timeout("30s"), secs(30));
        assert_eq!(parse_request_timeout("1m30s"), secs(90));
        assert_eq!(parse_request_timeout("2h"), secs(7200));
        assert_eq!(
            parse_request_timeout("500ms"),
            Some(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_request_timeout("0"), Some(None));
        assert_eq!(parse_request_timeout("0s"), Some(None));
        for bad in ["", "s", "30 seconds", "-1", "1x", "m5"] {
            assert_eq!(parse_request_timeout(bad), None, "{bad}");
        }
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }

    /// A body that never yields a frame: a server that sent its headers and stalled.
    struct Stalled;

    impl Body for Stalled {
        type Data = std::io::Cursor<Vec<u8>>;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    async fn next_frame<B: Body + Unpin>(body: &mut ReadTimeout<B>) -> Option<String>
    where
        B::Error: Into<BoxError>,
    {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|r| r.err().map(|e| e.to_string()).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_stalled_body_fails_within_the_limit_and_a_stream_waits() {
        let limit = Duration::from_millis(100);
        let mut bounded = ReadTimeout {
            body: Stalled,
            limit: Some(limit),
            stall: None,
        };
        let read = tokio::time::timeout(Duration::from_secs(5), next_frame(&mut bounded)).await;
        assert_eq!(
            read.ok().flatten().as_deref(),
            Some("no answer within 0.1 s")
        );
        let mut stream = ReadTimeout {
            body: Stalled,
            limit: None,
            stall: None,
        };
        let read = tokio::time::timeout(Duration::from_millis(300), next_frame(&mut stream)).await;
        assert!(read.is_err(), "a stream is not cut by the read bound");
    }

    #[test]
    fn watches_are_told_apart() {
        let req = |uri: &str| Request::get(uri).body(()).unwrap();
        assert!(is_watch(&req("/api/v1/pods?watch=true&resourceVersion=1")));
        assert!(is_watch(&req("/api/v1/pods?labelSelector=a&watch=1")));
        assert!(!is_watch(&req("/api/v1/pods?labelSelector=watch%3Dtrue")));
        assert!(!is_watch(&req("/api/v1/pods")));
    }
}
