//! What a step did, as typed facts: the leaf every other apply module
//! depends on and that depends on none of them.
//!
//! An act returns an [`Outcome`]; the journal stores it as it is (serde
//! tagged by `kind`), and a compensation or a later step reads it back by
//! field. A renamed field is a compile error in every reader, and an
//! outcome of another shape is a journal of another format
//! ([`super::journal::FORMAT_VERSION`]), refused as a whole.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pgtools::{Prepared, Verified};
use crate::quantity::human_bytes;

/// Why a step (or a compensation) failed: what is printed and journaled,
/// and the code and help of the diagnostic it came from, kept to the end
/// of the apply (`--json` events carry the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    message: String,
    code: Option<String>,
    help: Option<String>,
}

impl StepError {
    /// A failure pgplan's executor itself found (no diagnostic under it).
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            code: None,
            help: None,
        }
    }

    /// The code of the diagnostic the failure came from (`pgplan::pg::stalled`).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// What to do about it, as that diagnostic said.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }
}

/// The message, then the help in parentheses: one line for a step's
/// failure in the log, the journal and the final error.
impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, " (help: {h})")?;
        }
        Ok(())
    }
}

impl<E: miette::Diagnostic> From<E> for StepError {
    fn from(e: E) -> Self {
        StepError {
            message: e.to_string(),
            code: e.code().map(|c| c.to_string()),
            help: e.help().map(|h| h.to_string()),
        }
    }
}

/// A [`StepError`] as a diagnostic, for the error an apply ends with: its
/// message (with its help, as everywhere it is shown) under the code it
/// came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure(pub StepError);

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StepFailure {}

impl miette::Diagnostic for StepFailure {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0
            .code()
            .map(|c| Box::new(c) as Box<dyn std::fmt::Display + 'a>)
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Outcome {
    /// The object the plan creates (or replaces) exists as planned:
    /// `created` now, or found so (a resumed apply).
    Created { created: bool },
    /// The object is gone; `existed` when this step deleted it.
    Deleted { existed: bool },
    /// The object carries the patch; `changed` when this step patched it.
    Patched { changed: bool },
    /// A workload (or a custom resource's field) at its new count.
    Scaled { replicas_before: u32 },
    /// A volume on reclaim policy Retain; `from` was its policy.
    VolumeProtected { from: String },
    /// A Secret pgplan writes holds the values the plan resolved.
    SecretWritten { change: SecretChange },
    /// A verified backup of one database.
    BackedUp(BackedUp),
    /// The target's roles and databases, as prepare left them.
    Prepared { prepared: Prepared, note: String },
    /// One database restored: `entries` archive entries, or `None` when a
    /// complete copy was found there already (a resumed apply).
    Restored { entries: Option<u64> },
    /// The knex migration locks emptied (table names).
    LocksReleased { released: Vec<String> },
    /// The target matches the backup.
    Verified { verified: Verified, note: String },
    /// A target tuned for loading (`settings` as `name=value`).
    Tuned {
        restarted: bool,
        settings: Vec<String>,
    },
    /// The loading settings put back, the data checkpointed and synced.
    Untuned { restarted: bool },
    /// An RDS instance available; `created` when this apply created it.
    RdsInstanceReady {
        created: bool,
        endpoint: Option<String>,
    },
    /// An RDS instance modified towards the spec.
    RdsInstanceModified { changes: Vec<String> },
    /// A DB snapshot taken and available.
    RdsSnapshotTaken { snapshot: String },
    /// A pod recreated, and its database has its rows.
    Healed { rows: u64 },
    /// A health check answered as expected.
    Answered { status: u16 },
}

/// What writing a Secret changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretChange {
    Created,
    Updated,
    Unchanged,
}

/// A backup that was read back and listed by `pg_restore` before it was
/// committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackedUp {
    /// The placement whose source it backs up.
    pub placement: String,
    /// The claim the backup is on (`backup.dataPath: cluster`): then
    /// `archive`, `manifest` and the verifiers' `path` are paths in a tools
    /// pod that mounts it. `None`: paths on the machine running pgplan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<crate::plan::ObjectRef>,
    pub archive: PathBuf,
    pub manifest: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
    /// The source's role verifiers, when this backup read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifiers: Option<VerifiersRead>,
}

/// The source's roles and password verifiers, kept beside the archive
/// (0600); the journal records only where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiersRead {
    pub path: PathBuf,
    /// Whether the source let pgplan read the passwords.
    pub readable: bool,
    /// How many passwords were read.
    pub passwords: usize,
    /// The server they were read on, as the tools name it.
    pub server: String,
}

impl Outcome {
    /// What the step did, in one line for the user (empty: nothing to add).
    pub fn note(&self) -> String {
        match self {
            Outcome::BackedUp(b) => b.note(),
            Outcome::Prepared { note, .. } | Outcome::Verified { note, .. } => note.clone(),
            Outcome::Restored { entries: None } => "already restored".into(),
            Outcome::Restored { entries: Some(n) } => format!("{n} archive entries restored"),
            Outcome::LocksReleased { released } if released.is_empty() => {
                "nothing was locked".into()
            }
            Outcome::LocksReleased { released } => format!("released {}", released.join(", ")),
            Outcome::Tuned {
                restarted,
                settings,
            } => format!(
                "{}{}",
                settings.join(", "),
                if *restarted { "; restarted" } else { "" }
            ),
            Outcome::Untuned { restarted: true } => {
                "settings back, restarted, checkpointed and synced".into()
            }
            Outcome::Untuned { restarted: false } => {
                "settings back, checkpointed and synced".into()
            }
            Outcome::Created { .. }
            | Outcome::Deleted { .. }
            | Outcome::Patched { .. }
            | Outcome::Scaled { .. }
            | Outcome::VolumeProtected { .. }
            | Outcome::SecretWritten { .. }
            | Outcome::RdsInstanceReady { .. }
            | Outcome::RdsInstanceModified { .. }
            | Outcome::RdsSnapshotTaken { .. }
            | Outcome::Healed { .. }
            | Outcome::Answered { .. } => String::new(),
        }
    }

    /// The backup, for an outcome of a backup step.
    pub fn backup(&self) -> Option<&BackedUp> {
        match self {
            Outcome::BackedUp(b) => Some(b),
            _ => None,
        }
    }
}

impl BackedUp {
    /// Where the archive is, as people find it: a path on this machine, or
    /// `claim ns/name: path` (the path under a tools pod's mount).
    pub fn location(&self) -> String {
        match &self.claim {
            None => self.archive.display().to_string(),
            Some(c) => format!(
                "claim {}/{}: {}",
                c.namespace,
                c.name,
                self.archive.display()
            ),
        }
    }

    fn note(&self) -> String {
        let mut out = format!(
            "{} in {}, {} rows, sha256 {}…, read back with pg_restore --list",
            human_bytes(self.bytes),
            self.location(),
            self.rows,
            &self.sha256[..12.min(self.sha256.len())]
        );
        match &self.verifiers {
            Some(v) if v.readable => out.push_str(&format!(
                "; {} role password(s) read for the target",
                v.passwords
            )),
            Some(v) => out.push_str(&format!(
                "; role passwords cannot be read on {} (no access to pg_authid)",
                v.server
            )),
            None => {}
        }
        out
    }
}

/// What a compensation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Undone, with what was done.
    Undone(String),
    /// Left as is, with why.
    Kept(String),
    /// Nothing to undo.
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_tagged_by_kind_and_read_back_as_written() {
        let o = Outcome::BackedUp(BackedUp {
            claim: None,
            placement: "app".into(),
            archive: "/b/run/p/app.dump".into(),
            manifest: "/b/run/p/app.manifest.json".into(),
            bytes: 2048,
            sha256: "0123456789abcdef".into(),
            rows: 7,
            verifiers: None,
        });
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["kind"], "backed-up");
        assert_eq!(v["manifest"], "/b/run/p/app.manifest.json");
        assert_eq!(serde_json::from_value::<Outcome>(v).unwrap(), o);
        let s = Outcome::Scaled { replicas_before: 3 };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"kind":"scaled","replicasBefore":3}"#
        );
        // An outcome of another shape is not silently read as an empty one.
        assert!(serde_json::from_str::<Outcome>(r#"{"kind":"scaled"}"#).is_err());
        assert!(serde_json::from_str::<Outcome>(r#"{"created":true}"#).is_err());
    }

    #[derive(Debug, thiserror::Error, miette::Diagnostic)]
    #[error("the server went away")]
    #[diagnostic(code(pgplan::test::gone), help("start it again"))]
    struct Gone;

    #[test]
    fn a_step_error_keeps_the_code_and_help_of_its_diagnostic() {
        let e = StepError::from(Gone);
        assert_eq!(e.code(), Some("pgplan::test::gone"));
        assert_eq!(e.help(), Some("start it again"));
        assert_eq!(e.to_string(), "the server went away (help: start it again)");
        let own = StepError::new("no manifest to create");
        assert_eq!(
            (own.code(), own.to_string().as_str()),
            (None, "no manifest to create")
        );
    }

    #[test]
    fn notes_say_what_was_done() {
        let b = BackedUp {
            claim: None,
            placement: "app".into(),
            archive: "/b/app.dump".into(),
            manifest: "/b/app.manifest.json".into(),
            bytes: 2048,
            sha256: "0123456789abcdef".into(),
            rows: 7,
            verifiers: Some(VerifiersRead {
                path: "/b/app.roles.json".into(),
                readable: true,
                passwords: 2,
                server: "pod/x".into(),
            }),
        };
        assert_eq!(
            Outcome::BackedUp(b).note(),
            "2 KiB in /b/app.dump, 7 rows, sha256 0123456789ab…, read back with pg_restore --list; 2 role password(s) read for the target"
        );
        assert_eq!(
            Outcome::Restored { entries: None }.note(),
            "already restored"
        );
        assert_eq!(
            Outcome::Tuned {
                restarted: true,
                settings: vec!["fsync=off".into()]
            }
            .note(),
            "fsync=off; restarted"
        );
        assert_eq!(Outcome::Created { created: true }.note(), "");
    }
}
