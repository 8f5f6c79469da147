//! The validated model of one placement: what the spec means, worked out
//! once by `spec::load` and read by every later stage (observe, the
//! planner). The raw types in `spec::types` are for parsing and the JSON
//! Schema; derived facts live here, so no stage compiles a glob, parses a
//! size or joins a path again (cargo's `TomlManifest` → `Manifest`).

use std::path::{Path, PathBuf};

use super::types::{Login, PlacementSpec, Source, SslMode, Target, Tls};

/// Databases every server has that a glob never selects; they are moved
/// only when named exactly.
pub const SYSTEM_DATABASES: [&str; 4] = ["template0", "template1", "postgres", "rdsadmin"];

/// One entry of `databases`: an exact name, or a glob.
#[derive(Debug, Clone)]
pub enum DatabaseEntry {
    Exact(String),
    /// The text as written and its compiled pattern.
    Glob(String, glob::Pattern),
}

impl DatabaseEntry {
    /// The entry as the user wrote it.
    pub fn text(&self) -> &str {
        match self {
            DatabaseEntry::Exact(s) | DatabaseEntry::Glob(s, _) => s,
        }
    }

    pub fn is_glob(&self) -> bool {
        matches!(self, DatabaseEntry::Glob(..))
    }

    /// The one meaning of "selects": an exact name only itself; a glob any
    /// name it matches that is not a system database.
    pub fn selects(&self, name: &str) -> bool {
        match self {
            DatabaseEntry::Exact(s) => s == name,
            DatabaseEntry::Glob(_, g) => !SYSTEM_DATABASES.contains(&name) && g.matches(name),
        }
    }
}

/// `databases` compiled once: exact names and globs, in the spec's order
/// (positions are the list indices diagnostics point at).
#[derive(Debug, Clone, Default)]
pub struct DatabaseSelector {
    /// `None` where the entry is not a valid glob (already reported by the
    /// validator; such an entry selects nothing).
    entries: Vec<Option<DatabaseEntry>>,
}

impl DatabaseSelector {
    /// Whether an entry is a glob: it holds `*`, `?` or `[`.
    pub fn is_glob(text: &str) -> bool {
        text.contains(['*', '?', '['])
    }

    /// Compiles each entry; the error of an invalid glob is returned at its
    /// index for the validator to report.
    pub fn compile(list: &[String]) -> (DatabaseSelector, Vec<(usize, glob::PatternError)>) {
        let mut errors = Vec::new();
        let entries = list
            .iter()
            .enumerate()
            .map(|(i, text)| {
                if !Self::is_glob(text) {
                    return Some(DatabaseEntry::Exact(text.clone()));
                }
                match glob::Pattern::new(text) {
                    Ok(g) => Some(DatabaseEntry::Glob(text.clone(), g)),
                    Err(e) => {
                        errors.push((i, e));
                        None
                    }
                }
            })
            .collect();
        (DatabaseSelector { entries }, errors)
    }

    /// The valid entries with their index in `databases`.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &DatabaseEntry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
    }

    /// Whether any entry selects `name`.
    pub fn selects(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// The index of the first entry that selects `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.entries()
            .find(|(_, e)| e.selects(name))
            .map(|(i, _)| i)
    }

    /// The exact names, in the spec's order.
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.entries()
            .filter(|(_, e)| !e.is_glob())
            .map(|(_, e)| e.text())
    }
}

/// How to reach a server the spec names by address (an external source, an
/// RDS target's `connect`), with its TLS settings and the CA path already
/// resolved against the spec's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Where to connect (`connect` when given, else the server's address).
    pub host: String,
    pub port: u16,
    pub tls_mode: SslMode,
    /// `tls.caFile`, relative to the spec's directory.
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    fn new(host: &str, port: u16, tls: &Tls, spec_dir: &Path) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            port,
            tls_mode: tls.mode,
            ca_file: tls.ca_file.as_ref().map(|f| spec_dir.join(f)),
        }
    }
}

/// What one placement means, beyond its raw fields.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub databases: DatabaseSelector,
    /// A StatefulSet target's `storage.size` in bytes.
    pub target_storage_bytes: Option<u64>,
    /// An external source, by its address (or `connect`).
    pub source_endpoint: Option<Endpoint>,
    /// An RDS target's `connect`, when given: its own endpoint is only known
    /// once observed.
    pub target_connect: Option<Endpoint>,
    /// The login on the source and on the target, when given.
    pub source_login: Option<Login>,
    pub target_login: Option<Login>,
    /// The directory of the spec's file, which relative paths in it are
    /// relative to.
    pub spec_dir: PathBuf,
}

impl Model {
    /// The model of a spec that validated (`spec_dir` is the directory of
    /// the spec's file). Values that did not validate are left out: `load`
    /// then fails, and the model is never read.
    pub fn of(spec: &PlacementSpec, spec_dir: &Path) -> Model {
        let (databases, _) = DatabaseSelector::compile(&spec.databases);
        let target_storage_bytes = match &spec.target {
            Target::Kubernetes(k) => {
                crate::quantity::parse_bytes(&k.stateful_set.storage.size).ok()
            }
            Target::Rds(_) => None,
        };
        let source_endpoint = match &spec.source {
            Source::External(e) => {
                let (host, port) = e
                    .connect
                    .as_ref()
                    .map(|c| (c.host.as_str(), c.port))
                    .unwrap_or((e.host.as_str(), e.port));
                Some(Endpoint::new(host, port, &e.tls, spec_dir))
            }
            Source::Kubernetes(_) => None,
        };
        let target_connect = match &spec.target {
            Target::Rds(r) => r
                .connect
                .as_ref()
                .map(|c| Endpoint::new(&c.host, c.port, &r.tls, spec_dir)),
            Target::Kubernetes(_) => None,
        };
        Model {
            databases,
            target_storage_bytes,
            source_endpoint,
            target_connect,
            source_login: spec.credentials.source.clone(),
            target_login: spec.credentials.target.clone(),
            spec_dir: spec_dir.to_path_buf(),
        }
    }

    /// The RDS target's endpoint once its address is known: `connect` wins.
    pub fn rds_endpoint(&self, tls: &Tls, observed: Option<(&str, u16)>) -> Option<Endpoint> {
        match (&self.target_connect, observed) {
            (Some(c), _) => Some(c.clone()),
            (None, Some((host, port))) => Some(Endpoint::new(host, port, tls, &self.spec_dir)),
            (None, None) => None,
        }
    }
}

/// The directory of a spec file named `file` (`.` for a bare name): what
/// relative paths in it are relative to.
pub fn spec_dir(file: &str) -> PathBuf {
    Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(list: &[&str]) -> DatabaseSelector {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let (s, errors) = DatabaseSelector::compile(&list);
        assert!(errors.is_empty());
        s
    }

    #[test]
    fn one_meaning_of_selects() {
        let s = selector(&["postgres", "backstage_plugin_*", "app?"]);
        assert!(s.selects("postgres"), "an exact system name is selected");
        assert!(s.selects("backstage_plugin_auth"));
        assert!(s.selects("app1"));
        assert!(!s.selects("app12"));
        let all = selector(&["*"]);
        assert!(all.selects("healthcare"));
        for system in SYSTEM_DATABASES {
            assert!(!all.selects(system), "a glob never selects {system}");
        }
        assert_eq!(s.position("app1"), Some(2));
        assert_eq!(s.exact_names().collect::<Vec<_>>(), ["postgres"]);
    }

    #[test]
    fn an_invalid_glob_is_reported_at_its_index_and_selects_nothing() {
        let (s, errors) = DatabaseSelector::compile(&["ok".into(), "bad[".into()]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert_eq!(s.entries().count(), 1);
    }

    #[test]
    fn the_ca_file_is_resolved_against_the_spec_directory() {
        let tls = Tls {
            mode: SslMode::VerifyFull,
            ca_file: Some("ca.pem".into()),
        };
        let e = Endpoint::new("db", 5432, &tls, &spec_dir("deploy/pgplan.yaml"));
        assert_eq!(e.ca_file, Some(PathBuf::from("deploy/ca.pem")));
        assert_eq!(spec_dir("pgplan.yaml"), PathBuf::from("."));
    }
}
