//! Fault-injection hooks for the test suite, and the only place that reads
//! them: `PGPLAN_TEST_CRASH=before:N|after:N|undone:N` kills the process
//! (SIGKILL) around step N (`undone:N` once step N's compensation acted and
//! before the journal records it), `PGPLAN_TEST_FAIL=ADDRESS` makes that
//! step fail after it acted, `PGPLAN_TEST_CORRUPT_BACKUP=DATABASE` damages
//! that database's archive before it is read back, `PGPLAN_TEST_HOLD=step:N:DIR`
//! holds step N once it has started (journaled and reported) and before it
//! acts — the file `DIR/held-N` says so, and the step goes on once
//! `DIR/release-N` exists — and `lock:DIR` holds an apply the same way after
//! its plan and before it takes its locks (`held-lock`, `release-lock`), so a
//! test can interrupt a step, or run a second apply, at a known moment. They exist so that crash
//! recovery, rollback and backup verification are tested on the real code
//! path.
//!
//! They are live only in builds made for the tests (`cargo test --features
//! test-hooks`, as scripts/test and CI run): an inherited variable must not
//! be able to make a production apply fail or kill itself. Both behaviours
//! are always compiled; the feature only decides which one [`hooks`] uses,
//! so a unit test can check the one release builds use.

use std::sync::OnceLock;

/// Whether this build reads the hooks (the `test-hooks` feature).
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// The variables the hooks are read from.
pub const VARIABLES: [&str; 4] = [
    "PGPLAN_TEST_CRASH",
    "PGPLAN_TEST_FAIL",
    "PGPLAN_TEST_CORRUPT_BACKUP",
    "PGPLAN_TEST_HOLD",
];

/// The hooks in force for this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `before:N`, `after:N` or `undone:N`.
    pub crash: Option<String>,
    /// A step address.
    pub fail: Option<String>,
    /// A database name.
    pub corrupt_backup: Option<String>,
    /// `step:N:DIR` or `lock:DIR`.
    pub hold: Option<String>,
}

/// The hooks given by `lookup`, or none at all when `enabled` is false (the
/// variables are then not even read).
pub fn read(enabled: bool, lookup: &dyn Fn(&str) -> Option<String>) -> Hooks {
    if !enabled {
        return Hooks::default();
    }
    Hooks {
        crash: lookup("PGPLAN_TEST_CRASH"),
        fail: lookup("PGPLAN_TEST_FAIL"),
        corrupt_backup: lookup("PGPLAN_TEST_CORRUPT_BACKUP"),
        hold: lookup("PGPLAN_TEST_HOLD"),
    }
}

/// This process's hooks, read once from its environment.
pub fn hooks() -> &'static Hooks {
    static HOOKS: OnceLock<Hooks> = OnceLock::new();
    HOOKS.get_or_init(|| read(ENABLED, &|v| std::env::var(v).ok()))
}

/// Kill the process if `PGPLAN_TEST_CRASH` is `{when}:{position}`.
pub fn crash(when: &str, position: usize) {
    if hooks().crash.as_deref() == Some(format!("{when}:{position}").as_str()) {
        // SAFETY: sending SIGKILL to ourselves; nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Whether `PGPLAN_TEST_FAIL` names this step.
pub fn fail(address: &str) -> bool {
    hooks().fail.as_deref() == Some(address)
}

/// Whether `PGPLAN_TEST_CORRUPT_BACKUP` names this database.
pub fn corrupt_backup(database: &str) -> bool {
    hooks().corrupt_backup.as_deref() == Some(database)
}

/// Where `PGPLAN_TEST_HOLD` holds `point` (`lock` or `step:N`): the
/// directory of its `held-…`/`release-…` files, when it names that point.
pub fn hold_dir(point: &str) -> Option<std::path::PathBuf> {
    let (at, dir) = hooks().hold.as_deref()?.rsplit_once(':')?;
    (at == point).then(|| std::path::PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_hook_set(v: &str) -> Option<String> {
        match v {
            "PGPLAN_TEST_CRASH" => Some("before:3".into()),
            "PGPLAN_TEST_FAIL" => Some("pg/healthcare/healthcare/restore".into()),
            "PGPLAN_TEST_CORRUPT_BACKUP" => Some("healthcare".into()),
            "PGPLAN_TEST_HOLD" => Some("lock:/tmp".into()),
            _ => None,
        }
    }

    #[test]
    fn a_build_without_the_feature_ignores_every_hook_variable() {
        let read_vars = std::cell::RefCell::new(Vec::new());
        let lookup = |v: &str| {
            read_vars.borrow_mut().push(v.to_string());
            every_hook_set(v)
        };
        assert_eq!(read(false, &lookup), Hooks::default());
        assert!(
            read_vars.borrow().is_empty(),
            "read {:?}",
            read_vars.borrow()
        );
    }

    #[test]
    fn a_test_build_reads_every_hook_variable() {
        let hooks = read(true, &every_hook_set);
        assert_eq!(hooks.crash.as_deref(), Some("before:3"));
        assert_eq!(
            hooks.fail.as_deref(),
            Some("pg/healthcare/healthcare/restore")
        );
        assert_eq!(hooks.corrupt_backup.as_deref(), Some("healthcare"));
        assert_eq!(hooks.hold.as_deref(), Some("lock:/tmp"));
        // Every variable the module documents is one it reads.
        for v in VARIABLES {
            assert!(every_hook_set(v).is_some(), "{v}");
        }
    }

    #[test]
    fn the_feature_alone_decides() {
        assert_eq!(ENABLED, cfg!(feature = "test-hooks"));
    }
}
