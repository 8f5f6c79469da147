//! The Job controller: one pod at a time (`{job}-{random}`) until `completions` pods succeed or
//! more than `backoffLimit` fail; status active/succeeded/failed, startTime, completionTime and
//! the Complete/Failed conditions. CronJobs are stored only: nothing schedules them.

use serde_json::{json, Map, Value};

use super::{pod_from_template, pod_phase, put_count, write_status};
use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry;
use crate::support::sim::store::Store;

pub fn reconcile(store: &Store) {
    let pods = store.list(&kinds::POD, None);
    for job in store.list(&kinds::JOB, None) {
        if obj::is_deleting(&job) {
            continue;
        }
        let ns = obj::namespace(&job);
        let uid = obj::uid(&job);
        let owned: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| obj::owned_by(p, uid))
            .collect();
        let count = |phase: &str| owned.iter().filter(|p| pod_phase(p) == phase).count();
        let prev = |f: &str| obj::i64_at(&job, &format!("/status/{f}")).unwrap_or(0) as usize;
        let succeeded = count("Succeeded").max(prev("succeeded"));
        let failed = count("Failed").max(prev("failed"));
        let active: Vec<&&Value> = owned
            .iter()
            .filter(|p| !obj::is_deleting(p) && !matches!(pod_phase(p), "Succeeded" | "Failed"))
            .collect();
        let completions = obj::i64_at(&job, "/spec/completions").unwrap_or(1).max(1) as usize;
        let backoff = obj::i64_at(&job, "/spec/backoffLimit").unwrap_or(6).max(0) as usize;
        let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
        let complete = succeeded >= completions;
        let failed_out = failed > backoff;
        if !complete && !failed_out && !suspended && active.is_empty() {
            let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let name = obj::name(&job);
            let pod = pod_from_template(
                &job,
                &template,
                &format!("{name}-{}", obj::random_suffix(5)),
                &[
                    ("job-name", name.to_string()),
                    ("batch.kubernetes.io/job-name", name.to_string()),
                    ("controller-uid", uid.to_string()),
                    ("batch.kubernetes.io/controller-uid", uid.to_string()),
                ],
            );
            let _ = registry::create(store, &kinds::POD, ns, pod, false);
        }
        let now = obj::now();
        let mut status = Map::new();
        let start = job
            .pointer("/status/startTime")
            .cloned()
            .unwrap_or(json!(now));
        status.insert("startTime".into(), start);
        put_count(
            &mut status,
            "active",
            if complete || failed_out {
                0
            } else {
                active.len()
            },
        );
        put_count(&mut status, "succeeded", succeeded);
        put_count(&mut status, "failed", failed);
        status.insert("ready".into(), json!(0));
        status.insert("terminating".into(), json!(0));
        status.insert("uncountedTerminatedPods".into(), json!({}));
        if complete {
            let done = job
                .pointer("/status/completionTime")
                .cloned()
                .unwrap_or(json!(now));
            status.insert("completionTime".into(), done);
            status.insert(
                "conditions".into(),
                json!([
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                ]),
            );
        } else if failed_out {
            status.insert(
                "conditions".into(),
                json!([
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": now, "lastTransitionTime": now},
                ]),
            );
        }
        write_status(store, &kinds::JOB, &job, Value::Object(status));
    }
}
