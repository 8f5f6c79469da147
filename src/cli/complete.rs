//! Dynamic shell completion of values: `--example` completes the examples
//! built into pgplan, `--env` the environments of the spec being used
//! (`-f FILE`, `--example NAME`, or `pgplan.yaml`), `--context` the contexts
//! of the kubeconfig (`--kubeconfig FILE`, `$KUBECONFIG`, `~/.kube/config`).
//!
//! The shell calls pgplan back (`COMPLETE=bash pgplan -- pgplan plan --env …`,
//! clap_complete's `CompleteEnv`); a completer is only handed the word being
//! completed, so the other words of the line are read from the process's
//! arguments. A completer never fails: what cannot be read completes nothing.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap_complete::engine::CompletionCandidate;

/// The words of the command line being completed: the process's arguments
/// after clap_complete's `--` separator (all of them otherwise).
fn line_words() -> Vec<String> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let after = args
        .iter()
        .position(|a| a == "--")
        .map(|i| i + 1)
        .unwrap_or(0);
    args[after..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The value given to a flag on the line (`--flag V`, `--flag=V`, `-sV`,
/// `-s V`); the last one wins, as clap would take it.
fn flag_value(words: &[String], long: &str, short: Option<char>) -> Option<String> {
    let mut found = None;
    let long_eq = format!("{long}=");
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let next = || words.get(i + 1).cloned();
        if w == long {
            found = next().or(found);
            i += 1;
        } else if let Some(v) = w.strip_prefix(&long_eq) {
            found = Some(v.to_string());
        } else if let Some(s) = short {
            let flag = format!("-{s}");
            if *w == flag {
                found = next().or(found);
                i += 1;
            } else if let Some(v) = w.strip_prefix(&flag).filter(|v| !v.is_empty()) {
                found = Some(v.trim_start_matches('=').to_string());
            }
        }
        i += 1;
    }
    found
}

fn matching(current: &OsStr, names: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(prefix.as_ref()))
        .collect();
    names.sort();
    names.dedup();
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// `--example`: the examples built into pgplan.
pub fn examples(current: &OsStr) -> Vec<CompletionCandidate> {
    matching(
        current,
        crate::examples::names().into_iter().map(str::to_string),
    )
}

/// `--env`: the environments defined by the spec the line names.
pub fn environments(current: &OsStr) -> Vec<CompletionCandidate> {
    matching(current, environment_names(&line_words(), None))
}

/// `--context`: the contexts of the kubeconfig the line names.
pub fn contexts(current: &OsStr) -> Vec<CompletionCandidate> {
    matching(current, context_names(&line_words()))
}

/// Every environment name under `spec.environments` of every document of
/// the spec that `words` name (relative paths from `dir`, or the current
/// directory). The file is only parsed, not validated or expanded.
pub fn environment_names(words: &[String], dir: Option<&Path>) -> Vec<String> {
    let text = match flag_value(words, "--example", None) {
        Some(name) => match crate::examples::find(&name) {
            Some(e) => e.spec.to_string(),
            None => return Vec::new(),
        },
        None => {
            let file = PathBuf::from(
                flag_value(words, "--file", Some('f')).unwrap_or_else(|| "pgplan.yaml".into()),
            );
            let path = match dir {
                Some(d) if file.is_relative() => d.join(file),
                _ => file,
            };
            match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(_) => return Vec::new(),
            }
        }
    };
    let Ok(docs) = crate::yaml::parse(&text) else {
        return Vec::new();
    };
    docs.iter()
        .filter_map(|d| d.root.get("spec")?.get("environments"))
        .filter_map(|envs| match &envs.kind {
            crate::yaml::NodeKind::Map(entries) => Some(entries.iter().map(|e| e.key.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The context names of the kubeconfig `--kubeconfig` names, or of the
/// default one (`$KUBECONFIG`, `~/.kube/config`).
pub fn context_names(words: &[String]) -> Vec<String> {
    let kubeconfig = match flag_value(words, "--kubeconfig", None) {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    };
    kubeconfig
        .map(|kc| kc.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn flag_values_in_every_spelling() {
        let w = words("pgplan plan -f a.yaml --env x");
        assert_eq!(
            flag_value(&w, "--file", Some('f')).as_deref(),
            Some("a.yaml")
        );
        let w = words("pgplan plan --file=b.yaml -fc.yaml");
        assert_eq!(
            flag_value(&w, "--file", Some('f')).as_deref(),
            Some("c.yaml")
        );
        let w = words("pgplan plan --example healthcare");
        assert_eq!(flag_value(&w, "--file", Some('f')), None);
    }

    #[test]
    fn environments_of_an_example_and_of_a_file() {
        assert_eq!(
            environment_names(&words("pgplan plan --example pyairtable --env "), None),
            ["dev", "staging", "prod"]
        );
        assert!(environment_names(&words("pgplan plan --example healthcare"), None).is_empty());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pgplan.yaml"),
            "spec:\n  environments:\n    qa: {}\n    live: {}\n---\nspec:\n  environments: {eu: {}}\n",
        )
        .unwrap();
        assert_eq!(
            environment_names(&words("pgplan plan --env "), Some(dir.path())),
            ["qa", "live", "eu"]
        );
        assert!(environment_names(&words("pgplan plan -f nope.yaml"), Some(dir.path())).is_empty());
    }

    #[test]
    fn candidates_are_filtered_by_the_word_typed() {
        let got: Vec<String> = examples(OsStr::new("p"))
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["pyairtable"]);
    }
}
