//! Where a server's PostgreSQL tools run: a `ServerRef` resolved to a
//! [`Runner`] (a pod's exec, or libpq over the network, an RDS instance's
//! endpoint looked up), and a server in a pod restarted. Shared by the
//! family modules; depends only on [`super::world`] and [`super::outcome`].

use super::outcome::StepError;
use super::world::{World, READY_TIMEOUT};
use crate::cluster::Write;
use crate::observed::str_at;
use crate::pgtools::{self, ConnInfo, Runner};
use crate::plan::{ObjectRef, ServerRef};

/// Where a server's tools run.
pub async fn runner<'a>(w: &'a World<'_>, server: &ServerRef) -> Result<Runner<'a>, StepError> {
    match server {
        ServerRef::Pod {
            workload,
            selector,
            container,
        } => {
            let c = w.cluster()?;
            let pod = c.ready_pod(&workload.namespace, selector).await?;
            Ok(Runner::Pod {
                cluster: c,
                namespace: workload.namespace.clone(),
                pod,
                container: container.clone(),
            })
        }
        ServerRef::Direct {
            in_cluster: Some(_),
            ..
        } => super::datapod::client(w, server).await,
        ServerRef::Direct { .. } => Ok(Runner::Local {
            conn: conn_info(w, server).await?,
        }),
    }
}

/// A tool runner in one named pod of a `ServerRef::Pod` server.
pub fn pod_runner<'a>(
    w: &'a World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
) -> Result<Runner<'a>, StepError> {
    let container = match server {
        ServerRef::Pod { container, .. } => container.clone(),
        ServerRef::Direct { .. } => {
            return Err(StepError::new(format!(
                "{} is not in a pod: only servers pgplan created in the cluster are tuned",
                server.locator()
            )))
        }
    };
    Ok(Runner::Pod {
        cluster: w.cluster()?,
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        container,
    })
}

/// A tool runner in the container of `pod` that runs the server (never a
/// sidecar listed first).
pub async fn runner_in_pod<'a>(w: &'a World<'_>, pod: &ObjectRef) -> Result<Runner<'a>, StepError> {
    let c = w.cluster()?;
    let live = c.get(pod).await?.unwrap_or(serde_json::Value::Null);
    let container = crate::diff::source::postgres_container(&live["spec"], None)
        .ok()
        .map(|choice| choice.name);
    Ok(Runner::Pod {
        cluster: c,
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        container,
    })
}

/// Waits until a server accepts sessions again (its workload back, a pod
/// ready, PostgreSQL answering), for a rollback that brought it back.
pub async fn wait_serving(
    w: &World<'_>,
    server: &ServerRef,
    timeout: std::time::Duration,
) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match runner(w, server).await {
            Ok(r) => match r.query("postgres", "SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) => StepError::from(e),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::new(format!(
                "{} does not serve again within {} s: {last}",
                server.locator(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// libpq settings for a server reached over the network.
pub async fn conn_info(w: &World<'_>, server: &ServerRef) -> Result<ConnInfo, StepError> {
    let ServerRef::Direct {
        locator,
        host,
        port,
        connect,
        user,
        password_var,
        sslmode,
        ca_file,
        in_cluster: None,
    } = server
    else {
        return Err(StepError::new(format!(
            "{} is reached from inside the cluster: its tools run there, not on this machine",
            server.locator()
        )));
    };
    let (host, port) = match (connect, host) {
        (Some(c), _) => (c.host.clone(), c.port),
        (None, Some(h)) => (h.clone(), port.unwrap_or(5432)),
        (None, None) => endpoint(w, locator).await?,
    };
    let password = match password_var {
        Some(v) => Some(w.var(v, "")?),
        None => None,
    };
    Ok(ConnInfo {
        host,
        port,
        user: user.clone(),
        password,
        sslmode: sslmode.as_str().into(),
        sslrootcert: ca_file.as_ref().map(|f| w.base_dir.join(f)),
    })
}

/// The endpoint of an RDS instance (`rds/{region}/{id}`).
pub async fn endpoint(
    w: &World<'_>,
    locator: &crate::addr::Locator,
) -> Result<(String, u16), StepError> {
    let id = locator
        .rds_instance()
        .ok_or_else(|| StepError::new(format!("{locator} is not an RDS instance")))?;
    let instance = w
        .rds()?
        .describe_instance(id)
        .await?
        .ok_or_else(|| StepError::new(format!("RDS instance {id} does not exist")))?;
    instance
        .endpoint
        .map(|e| (e.address, e.port))
        .ok_or_else(|| {
            StepError::new(format!(
                "RDS instance {id} has no endpoint yet (status {})",
                instance.status
            ))
        })
}

/// Deletes a pod of a StatefulSet and waits until its replacement (a new
/// uid) is Ready: how a server in a pod is restarted.
pub async fn restart_pod(w: &World<'_>, pod: &ObjectRef) -> Result<(), StepError> {
    let c = w.cluster()?;
    let before = c
        .get(pod)
        .await?
        .ok_or_else(|| StepError::new(format!("{} does not exist", pod.display())))?;
    let uid = str_at(&before, &["metadata", "uid"])
        .unwrap_or_default()
        .to_string();
    c.delete(pod, Write::Apply).await?;
    c.wait(pod, READY_TIMEOUT, |o| {
        let o = o.ok_or_else(|| "not recreated yet".to_string())?;
        let new = str_at(o, &["metadata", "uid"]) != Some(uid.as_str());
        let ready = o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if new && ready {
            Ok(true)
        } else {
            Err("waiting for the recreated pod to be ready".into())
        }
    })
    .await?;
    Ok(())
}

/// Restarts the pod of a server and waits until PostgreSQL accepts sessions.
pub async fn restart_server<'a>(
    w: &'a World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
) -> Result<Runner<'a>, StepError> {
    w.events
        .note(&format!("  restarting {} for its settings", pod.display()));
    restart_pod(w, pod).await?;
    let r = pod_runner(w, server, pod)?;
    pgtools::wait_accepting(&r, READY_TIMEOUT).await?;
    Ok(r)
}
