//! The one way tests run the `pgplan` binary. Every command starts from the
//! same environment: no `PGPLAN_TEST_*` hook the test did not ask for
//! (inherited ones are removed, so a hook set for one test never leaks into
//! another's child), `NO_COLOR=1`, no `KUBECONFIG` (a test names its
//! cluster), and the repository as working directory. A test asks for a
//! hook, a cluster or colours by setting them on the returned `Command`.

use std::path::Path;
use std::process::{Command, Output};

/// The fault-injection hooks pgplan reads (src/testhooks.rs, the backup).
pub const HOOKS: &[&str] = &[
    "PGPLAN_TEST_FAIL",
    "PGPLAN_TEST_CRASH",
    "PGPLAN_TEST_HOLD",
    "PGPLAN_TEST_CORRUPT_BACKUP",
];

pub fn pgplan_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgplan")
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `pgplan` with the clean environment described above.
pub fn pgplan_command() -> Command {
    let mut cmd = Command::new(pgplan_bin());
    clean_env(&mut cmd);
    cmd
}

/// The runner's environment and working directory on `cmd`, for a program
/// that runs pgplan itself (a shell running a printed resume line, the
/// memory-measuring reaper).
pub fn clean_env(cmd: &mut Command) {
    cmd.current_dir(repo())
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG");
    for hook in HOOKS {
        cmd.env_remove(hook);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PGPLAN_TEST_") {
            cmd.env_remove(key);
        }
    }
}

/// Runs `pgplan args` with `envs` set on top of the clean environment.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = pgplan_command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgplan")
}

#[test]
fn the_runner_scrubs_hooks_not_asked_for_and_sets_no_color() {
    let mut cmd = pgplan_command();
    cmd.env("PGPLAN_TEST_FAIL", "2");
    let envs: Vec<(String, Option<String>)> = cmd
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let get = |k: &str| {
        envs.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("NO_COLOR"), Some(Some("1".into())));
    assert_eq!(get("KUBECONFIG"), Some(None), "removed");
    assert_eq!(get("PGPLAN_TEST_FAIL"), Some(Some("2".into())), "asked for");
    for hook in &HOOKS[1..] {
        assert_eq!(get(hook), Some(None), "{hook} removed");
    }
}
