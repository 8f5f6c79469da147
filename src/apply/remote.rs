//! The journal's copy in the cluster (`--state cluster`, the default when
//! there is a cluster): a Secret `pgplan-journal-{placements}` in the
//! namespace of the placement's Lease, one data key per record
//! (`record-00000001`, …), so each record adds one small key instead of
//! rewriting the whole journal. Every write carries the resourceVersion this
//! apply last read or wrote: a writer that is not the last one to have
//! touched it (another pgplan took the placement over) is refused with 409,
//! and stops. The records are the local journal's, redacted the same way: the
//! Secret holds no secret value (a Secret, not a ConfigMap, so that who may
//! read the journal is decided like who may read credentials).
//!
//! With it, `apply --resume` works from any machine with the same
//! kubeconfig and spec: a missing or shorter local journal is brought up to
//! date from the copy before it is reopened.

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::journal::{write_err, JournalError};
use crate::cluster::{Cluster, ClusterError, Write};
use crate::observed::str_at;
use crate::plan::ObjectRef;

/// The prefix of every record's data key.
const KEY_PREFIX: &str = "record-";

/// What a Secret can hold (the API server refuses larger ones).
pub const MAX_BYTES: usize = 1 << 20;

/// The Secret's name for a set of placements (sorted, like the local file's).
pub fn secret_name(placements: &[&str]) -> String {
    let mut names: Vec<&str> = placements.to_vec();
    names.sort();
    format!("pgplan-journal-{}", names.join("."))
}

fn key(seq: u64) -> String {
    format!("{KEY_PREFIX}{seq:08}")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// The copy of one apply's journal in the cluster.
pub struct Remote<'c> {
    cluster: &'c Cluster,
    secret: ObjectRef,
    placements: Vec<String>,
    /// The resourceVersion this apply last read or wrote; `None` before the
    /// Secret exists (as far as this apply knows).
    rv: Option<String>,
    /// The record keys the Secret holds.
    keys: Vec<String>,
    /// The bytes of the records it holds.
    bytes: usize,
}

impl<'c> Remote<'c> {
    pub fn new(cluster: &'c Cluster, namespace: &str, placements: &[&str]) -> Remote<'c> {
        Remote {
            cluster,
            secret: ObjectRef::new("v1", "Secret", namespace, &secret_name(placements)),
            placements: placements.iter().map(|s| s.to_string()).collect(),
            rv: None,
            keys: Vec::new(),
            bytes: 0,
        }
    }

    /// `Secret ns/name`, for messages and the Lease.
    pub fn describe(&self) -> String {
        format!("Secret {}/{}", self.secret.namespace, self.secret.name)
    }

    fn remote_err(&self, cause: ClusterError) -> JournalError {
        if let ClusterError::Rejected { code: 409, .. } | ClusterError::Rejected { code: 404, .. } =
            cause
        {
            return JournalError::Fenced {
                secret: self.describe(),
            };
        }
        JournalError::Remote {
            secret: self.describe(),
            cause: super::journal::ClusterCause(Box::new(cause)),
        }
    }

    /// The records the copy holds, as the journal's text (lines in order),
    /// or `None` when there is no copy.
    pub async fn load(&mut self) -> Result<Option<String>, JournalError> {
        let live = self
            .cluster
            .get(&self.secret)
            .await
            .map_err(|e| self.remote_err(e))?;
        let Some(live) = live else {
            self.rv = None;
            self.keys.clear();
            self.bytes = 0;
            return Ok(None);
        };
        self.rv = str_at(&live, &["metadata", "resourceVersion"]).map(str::to_string);
        let data = live.get("data").and_then(Value::as_object);
        let mut keys: Vec<&String> = data
            .map(|d| d.keys().filter(|k| k.starts_with(KEY_PREFIX)).collect())
            .unwrap_or_default();
        keys.sort();
        let mut text = String::new();
        for k in &keys {
            let encoded = data
                .and_then(|d| d.get(k.as_str()))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| JournalError::Damaged {
                    path: self.describe(),
                    line: text.lines().count() + 1,
                    problem: format!("data key `{k}` is not base64 of UTF-8 text"),
                    help: "the copy cannot be trusted: resume from the machine that has the local journal, or see docs/recovery.md".into(),
                })?;
            text.push_str(&decoded);
        }
        self.keys = keys.into_iter().cloned().collect();
        self.bytes = text.len();
        Ok(Some(text))
    }

    fn manifest(&self, data: Map<String, Value>) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.secret.name,
                "namespace": self.secret.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "pgplan",
                    "pgplan.dev/journal": "true",
                },
                "annotations": {
                    "pgplan.dev/placements": self.placements.join(","),
                    "pgplan.dev/journal-format": super::journal::FORMAT_VERSION.to_string(),
                },
            },
            "data": data,
        })
    }

    /// Writes `data` (keys → base64, or null to remove), creating the
    /// Secret when this apply has not seen one, else guarded by the
    /// resourceVersion it last saw.
    async fn write(&mut self, data: Map<String, Value>) -> Result<(), JournalError> {
        let written = match &self.rv {
            None => {
                let data: Map<String, Value> =
                    data.into_iter().filter(|(_, v)| !v.is_null()).collect();
                self.cluster
                    .create(&self.manifest(data), Write::Apply)
                    .await
            }
            Some(rv) => {
                let patch = json!({"metadata": {"resourceVersion": rv}, "data": data});
                self.cluster
                    .merge_patch(&self.secret, &patch, Write::Apply)
                    .await
            }
        }
        .map_err(|e| self.remote_err(e))?;
        self.rv = str_at(&written, &["metadata", "resourceVersion"]).map(str::to_string);
        Ok(())
    }

    /// Makes the copy hold exactly the records of `text`, replacing what it
    /// held (a new apply's journal, or a local journal that got ahead).
    pub async fn reset(&mut self, text: &str) -> Result<(), JournalError> {
        self.check_size(text.len())?;
        let mut data = Map::new();
        for old in &self.keys {
            data.insert(old.clone(), Value::Null);
        }
        let mut keys = Vec::new();
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let k = key(i as u64 + 1);
            data.insert(k.clone(), json!(b64(line)));
            keys.push(k);
        }
        self.write(data).await?;
        self.keys = keys;
        self.bytes = text.len();
        Ok(())
    }

    /// Adds record `seq` (its line as written locally, newline included).
    pub async fn append(&mut self, seq: u64, line: &str) -> Result<(), JournalError> {
        self.check_size(self.bytes + line.len())?;
        let k = key(seq);
        let mut data = Map::new();
        data.insert(k.clone(), json!(b64(line)));
        self.write(data).await?;
        self.keys.push(k);
        self.bytes += line.len();
        Ok(())
    }

    fn check_size(&self, bytes: usize) -> Result<(), JournalError> {
        // base64 makes 4 bytes of 3; leave room for the keys and metadata.
        if bytes / 3 * 4 + 64 * (self.keys.len() + 1) > MAX_BYTES {
            return Err(JournalError::TooLarge {
                secret: self.describe(),
                bytes,
            });
        }
        Ok(())
    }
}

/// Brings the journal at `path` up to date from the copy in the cluster,
/// before `--resume` reads it: a missing local journal, or one the copy
/// extends, becomes the copy's — but only when the copy is an unfinished
/// apply's (a finished one's copy is history and stays where it is). A
/// local journal that extends the copy is kept (the copy is made whole
/// once the apply holds the lock); two that neither extends are refused.
pub async fn sync_local(remote: &mut Remote<'_>, path: &Path) -> Result<(), JournalError> {
    let Some(copy) = remote.load().await? else {
        return Ok(());
    };
    if copy.is_empty() {
        return Ok(());
    }
    let local = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(JournalError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        }
    };
    if local.is_some() {
        // A journal here is trusted whole or not at all, whatever the copy
        // says: a damaged one is refused with its line.
        super::journal::read(path)?;
    }
    if local.as_deref().is_some_and(|l| l.starts_with(&copy)) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::private::create_dir_all(dir).map_err(|e| write_err(path, e))?;
    }
    let fetched = path.with_extension("jsonl.from-cluster");
    let _ = std::fs::remove_file(&fetched);
    {
        use std::io::Write as _;
        let mut f = crate::private::create_new(&fetched).map_err(|e| write_err(&fetched, e))?;
        f.write_all(copy.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| write_err(&fetched, e))?;
    }
    let unfinished = super::journal::read(&fetched).map(|r| r.unfinished());
    let extends = local.as_deref().is_none_or(|l| copy.starts_with(l));
    match unfinished {
        Ok(true) if extends => std::fs::rename(&fetched, path).map_err(|e| write_err(path, e)),
        Ok(true) => {
            let _ = std::fs::remove_file(&fetched);
            Err(JournalError::Diverged {
                path: path.display().to_string(),
                secret: remote.describe(),
            })
        }
        Ok(false) => {
            let _ = std::fs::remove_file(&fetched);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&fetched);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_sort_in_record_order_and_names_are_stable() {
        assert!(super::key(9) < super::key(10));
        assert!(super::key(99_999_999) > super::key(1));
        assert_eq!(
            super::secret_name(&["b", "a"]),
            super::secret_name(&["a", "b"])
        );
        assert_eq!(
            super::secret_name(&["healthcare"]),
            "pgplan-journal-healthcare"
        );
    }
}
