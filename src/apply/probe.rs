//! The checks a plan runs against the result: a pod of the target deleted
//! to see its data come back with it, and a consumer's health endpoint.
//! Nothing to undo: they change nothing that stays.

use super::outcome::{Outcome, StepError};
use super::servers;
use super::world::World;
use crate::plan::ObjectRef;

/// Delete a pod of the target and check its database has its rows again.
pub async fn self_heal(
    w: &World<'_>,
    pod: &ObjectRef,
    database: &str,
    expect_rows: u64,
) -> Result<Outcome, StepError> {
    servers::restart_pod(w, pod).await?;
    let rows = count_rows(w, pod, database).await?;
    if rows != expect_rows {
        return Err(StepError::new(format!(
            "after {} was recreated, {database} has {rows} rows instead of {expect_rows}: the volume did not come back",
            pod.display()
        )));
    }
    Ok(Outcome::Healed { rows })
}

/// Row count of a database's tables, by exec in a pod.
async fn count_rows(w: &World<'_>, pod: &ObjectRef, database: &str) -> Result<u64, StepError> {
    let runner = servers::runner_in_pod(w, pod).await?;
    let inv = crate::pgtools::inventory::server(&runner, &pod.name, &|d| d == database).await?;
    let db = inv
        .databases
        .iter()
        .find(|d| d.name == database)
        .ok_or_else(|| {
            StepError::new(format!(
                "database {database} is missing on pod {}/{}",
                pod.namespace, pod.name
            ))
        })?;
    Ok(db.total_rows())
}

/// GET a consumer's URL: the status it must answer, and text it must contain.
pub async fn http_check(
    url: &str,
    expect: u16,
    contains: Option<&str>,
) -> Result<Outcome, StepError> {
    let (status, body) = http_get(url).await?;
    if status != expect {
        return Err(StepError::new(format!(
            "GET {url} answered {status}, expected {expect}"
        )));
    }
    if let Some(text) = contains {
        if !body.contains(text) {
            return Err(StepError::new(format!(
                "GET {url} did not contain `{text}`"
            )));
        }
    }
    Ok(Outcome::Answered { status })
}

/// A minimal HTTP/1.1 GET for the spec's health checks (http only).
async fn http_get(url: &str) -> Result<(u16, String), StepError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        StepError::new(format!(
            "{url}: only http:// checks are supported; check https endpoints through a Service"
        ))
    })?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .map_err(|_| StepError::new(format!("GET {url} timed out")))?
        .map_err(|e| StepError::new(format!("GET {url}: {e}")))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| StepError::new(format!("GET {url}: not an HTTP response")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
