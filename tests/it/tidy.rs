//! Tidy tests (rust-analyzer's kind): rules about the source tree itself.
//! `core_is_pure` keeps the Architecture Invariant that the core does no IO
//! and imports no tokio, kube or aws crates, nor the edge modules that do.

use std::path::{Path, PathBuf};

/// The pure core: these files and directories of `src/`.
const CORE: &[&str] = &[
    "spec",
    "observed",
    "diff",
    "graph",
    "plan",
    "render",
    "yaml",
    "names",
    "quantity",
    "redact",
    "addr",
    "preflight",
];

/// Crates that talk to the world (or run it).
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "tokio_rustls",
    "kube",
    "kube_client",
    "kube_runtime",
    "k8s_openapi",
    "hyper",
    "hyper_util",
    "tower",
    "rustls",
    "reqwest",
    "aws_config",
    "aws_sdk_rds",
    "aws_types",
    "aws_smithy_types",
    "aws_smithy_runtime_api",
    "aws_credential_types",
    "futures",
];

/// pgplan's edge modules: importing one brings its IO in.
const EDGE_MODULES: &[&str] = &[
    "apply",
    "aws",
    "cli",
    "cluster",
    "examples",
    "logging",
    "ops",
    "pgtools",
    "private",
    "testhooks",
];

/// IO of the standard library.
const STD_IO: &[&str] = &["fs", "net", "process", "env"];

/// Each line of `source` (outside `#[cfg(test)]` code and comments) that
/// breaks the core's purity, with why.
pub fn impurities(source: &str) -> Vec<(usize, String)> {
    // Local modules (`mod kube;`) are not the crates of the same name.
    let local: Vec<&str> = source
        .lines()
        .filter_map(|l| {
            let l = l
                .trim_start()
                .strip_prefix("pub ")
                .unwrap_or(l.trim_start());
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")
                .map(|m| m.trim_end_matches([';', '{', ' ']))
        })
        .collect();
    let mut found = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("").trim();
        if code.starts_with("#[cfg(test)]") {
            // Tests sit at the end of a module and may read files.
            break;
        }
        for word in path_roots(code) {
            let (root, next) = word;
            if FORBIDDEN_CRATES.contains(&root) && !local.contains(&root) {
                found.push((i + 1, format!("uses the crate `{root}`")));
            }
            if root == "crate" && EDGE_MODULES.contains(&next) {
                found.push((i + 1, format!("uses the edge module `crate::{next}`")));
            }
            if root == "std" && STD_IO.contains(&next) {
                found.push((i + 1, format!("does IO through `std::{next}`")));
            }
        }
        // `use std::{fs, io};`
        if let Some(group) = code.strip_prefix("use std::{") {
            for item in group.split([',', '}', ' ']).map(|s| s.trim()) {
                let item = item.split("::").next().unwrap_or("");
                if STD_IO.contains(&item) {
                    found.push((i + 1, format!("does IO through `std::{item}`")));
                }
            }
        }
    }
    found
}

/// The first two segments of every path in `code` that starts at a root
/// (not after `::`): `kube::Api` → (`kube`, `Api`).
fn path_roots(code: &str) -> Vec<(&str, &str)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = code[i..].find("::") {
        let at = i + off;
        let mut start = at;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        let preceded_by_path = start >= 2 && &code[start - 2..start] == "::";
        if start < at && !preceded_by_path {
            let rest = &code[at + 2..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push((&code[start..at], &rest[..end]));
        }
        i = at + 2;
    }
    out
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("read src")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn core_is_pure() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for m in CORE {
        rust_files(&src.join(m), &mut files);
        rust_files(&src.join(format!("{m}.rs")), &mut files);
    }
    assert!(files.len() > 20, "the core's files were found: {files:?}");
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read a source file");
        for (line, why) in impurities(&text) {
            problems.push(format!(
                "{}:{line}: {why}",
                f.strip_prefix(&src).unwrap_or(f).display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the pure core must not do IO or import tokio/kube/aws (ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_purity_check_finds_what_it_must() {
    let sample = "use std::collections::BTreeMap;
use kube::Api;
use std::{fs, io::Read};
mod kube_free;
fn f() {
    let _ = std::env::var(\"HOME\");
    let _ = tokio::spawn(async {});
    let _ = crate::cluster::Cluster::connect;
    let _ = std::process::Command::new(\"sh\");
    let _ = aws_sdk_rds::Client::new;
    // tokio::spawn in a comment is fine
    let _ = crate::spec::load;
}
#[cfg(test)]
mod tests { fn t() { std::fs::read(\"x\"); } }
";
    let found: Vec<usize> = impurities(sample).into_iter().map(|(l, _)| l).collect();
    assert_eq!(found, [2, 3, 6, 7, 8, 9, 10]);
    // A local module named like a crate is the module.
    assert!(impurities("mod kube;\nfn f() { kube::plan(); }\n").is_empty());
    assert!(impurities("fn f() { super::kube::plan(); }\n").is_empty());
}

/// Where decisions must not be read back out of addresses, locators or
/// lock holders (src/addr.rs gives them typed parts).
const NO_STRING_DECISIONS: &[&str] = &["apply", "render", "ops"];

/// `file:line` of what parses an identity string, and the allowed ones
/// with why (none are addresses, locators or holders).
const STRING_DECISIONS_ALLOWED: &[(&str, &str)] = &[];

fn string_decisions(text: &str) -> Vec<(usize, &'static str)> {
    const PATTERNS: &[(&str, &str)] = &[
        (
            ".ends_with(\":",
            "a step's kind read from its address suffix",
        ),
        ("rsplit('/')", "a locator taken apart by `/`"),
        ("split(':')", "a lock holder or address taken apart by `:`"),
        ("rsplit(':')", "an address taken apart by `:`"),
    ];
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (p, why) in PATTERNS {
            if code.contains(p) {
                out.push((n + 1, *why));
            }
        }
    }
    out
}

#[test]
fn no_decision_is_read_out_of_an_identity_string() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for m in NO_STRING_DECISIONS {
        rust_files(&src.join(m), &mut files);
    }
    assert!(files.len() > 10, "the files were found: {files:?}");
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap_or(f).display().to_string();
        let text = std::fs::read_to_string(f).expect("read a source file");
        for (line, why) in string_decisions(&text) {
            let at = format!("{rel}:{line}");
            if !STRING_DECISIONS_ALLOWED.iter().any(|(a, _)| *a == at) {
                problems.push(format!("{at}: {why}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "use the typed parts of pgplan::addr (Address::phase, Locator::rds_instance, LockId) instead:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_string_decision_check_finds_what_it_must() {
    let sample = "fn f(a: &str) {
    if a.ends_with(\":reconfigure\") {}
    let id = a.rsplit('/').next();
    let host = a.split(':').next();
    // a.ends_with(\":x\") in a comment is fine
    let ok = a.ends_with(\".json\");
}
";
    let found: Vec<usize> = string_decisions(sample)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(found, [2, 3, 4]);
}

/// No planner or executor function over this many lines: the planner has
/// one function per step group, the executor one per phase of a walk.
const MAX_FN_LINES: usize = 100;

/// Each `fn` and its length: from its line to the closing brace at its
/// own indentation (rustfmt's layout).
fn fn_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let rest = trimmed
            .strip_prefix("pub ")
            .or_else(|| {
                trimmed
                    .strip_prefix("pub(")
                    .and_then(|r| r.split_once(") ").map(|(_, r)| r))
            })
            .unwrap_or(trimmed);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(sig) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if trimmed.ends_with('}') || trimmed.ends_with(';') {
            out.push((name, 1)); // one line, or a declaration
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            out.push((name, end + 2));
        }
    }
    out
}

/// The executor's dispatch: one arm per operation of the closed set, and
/// nothing else. Its length is the set's, not a sign of a function doing
/// many things; it may not grow past `MAX_FN_LINES` + 10.
const DISPATCH_MATCHES: &[&str] = &["src/apply/dispatch.rs::act"];

#[test]
fn no_planner_or_executor_function_is_over_100_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for dir in ["src/diff", "src/apply"] {
        let dir = root.join(dir);
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        assert!(files.len() > 5, "the files were found: {files:?}");
        for f in &files {
            let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
            let text = std::fs::read_to_string(f).expect("read a source file");
            for (name, len) in fn_lengths(&text) {
                let at = format!("{rel}::{name}");
                let room = if DISPATCH_MATCHES.contains(&at.as_str()) {
                    10
                } else {
                    0
                };
                if len > MAX_FN_LINES + room {
                    problems.push(format!("{at}: {len} lines"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "split these into one function per step group or phase (at most {MAX_FN_LINES} lines):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_function_length_check_counts_what_it_must() {
    let sample = "fn a() {\n    x();\n}\n\nimpl T {\n    pub(crate) fn b(&self) {\n        if y {\n        }\n    }\n}\npub async fn c() {}\n";
    assert_eq!(
        fn_lengths(sample),
        [
            ("a".to_string(), 3),
            ("b".to_string(), 4),
            ("c".to_string(), 1)
        ]
    );
}

/// The sibling modules a file of `src/apply` names (`super::x`,
/// `super::{x, y}`, `crate::apply::x`; from `mod.rs`, `x::`), test code
/// left out. A `super::` item that is no module is `mod.rs`'s.
fn apply_imports(file: &str, text: &str, modules: &[String]) -> Vec<String> {
    // Test code and comments (doc links) left out.
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut out = std::collections::BTreeSet::new();
    let mut named = |first: &str| {
        let first = first.trim().trim_start_matches("self::");
        let head = first
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if head.is_empty() || head == "self" {
            return;
        }
        if modules.iter().any(|m| m == head) {
            out.insert(head.to_string());
        } else {
            out.insert("mod".to_string());
        }
    };
    for prefix in ["super::", "crate::apply::"] {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // The group's top-level items: `a::{b, c}, d` is `a`, `d`.
                let mut depth = 0usize;
                let mut start = 0usize;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            named(&group[start..i]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            named(&group[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                named(rest);
            }
        }
    }
    if file == "mod" {
        for m in modules {
            let called = code.match_indices(&format!("{m}::")).any(|(at, _)| {
                !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if called {
                out.insert(m.clone());
            }
        }
    }
    out.remove(file);
    out.into_iter().collect()
}

/// A cycle in `edges` (module → the modules it imports), if any.
fn import_cycle(edges: &std::collections::BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &std::collections::BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        finished: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if finished.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, finished) {
                return Some(c);
            }
        }
        path.pop();
        finished.insert(n.to_string());
        None
    }
    let mut finished = std::collections::BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut finished))
}

fn apply_sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apply");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    files
        .iter()
        .filter(|f| f.parent() == Some(dir.as_path()))
        .map(|f| {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            (
                name,
                std::fs::read_to_string(f).expect("read a source file"),
            )
        })
        .collect()
}

/// The executor's files depend one way: dispatch (and the walk in
/// `mod.rs`) → the family modules → `servers` → `world`/`outcome`; the
/// outcome types import nothing of apply.
#[test]
fn apply_modules_import_one_way() {
    let sources = apply_sources();
    let modules: Vec<String> = sources
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n != "mod")
        .collect();
    assert!(
        modules.len() > 8,
        "the apply modules were found: {modules:?}"
    );
    let edges: std::collections::BTreeMap<String, Vec<String>> = sources
        .iter()
        .map(|(n, text)| (n.clone(), apply_imports(n, text, &modules)))
        .collect();
    assert_eq!(
        edges["outcome"],
        Vec::<String>::new(),
        "outcome is the leaf"
    );
    assert!(edges["mod"].contains(&"dispatch".to_string()), "{edges:?}");
    assert!(
        edges["dispatch"].contains(&"pgdata".to_string()),
        "{edges:?}"
    );
    if let Some(cycle) = import_cycle(&edges) {
        panic!(
            "src/apply imports in a cycle: {}; move what both need into a module below them (servers, world, outcome)",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_import_check_finds_what_it_must() {
    let modules: Vec<String> = ["act", "data", "undo", "journal"]
        .map(String::from)
        .to_vec();
    let act = "//! See [`super::journal::Record`].\nuse super::data::runner;\nuse super::World;\nfn f() { super::undo::x(); }\n#[cfg(test)]\nmod tests { use super::super::data; }";
    assert_eq!(apply_imports("act", act, &modules), ["data", "mod", "undo"]);
    let data = "use super::{act::{self, cluster}, undo::Undo};";
    assert_eq!(apply_imports("data", data, &modules), ["act", "undo"]);
    let edges = [
        ("act".to_string(), vec!["data".to_string()]),
        ("data".to_string(), vec!["undo".to_string()]),
        ("undo".to_string(), vec!["act".to_string()]),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        import_cycle(&edges),
        Some(["act", "data", "undo", "act"].map(String::from).to_vec())
    );
    let acyclic = [
        ("act".to_string(), vec!["data".to_string()]),
        ("data".to_string(), vec![]),
    ]
    .into_iter()
    .collect();
    assert_eq!(import_cycle(&acyclic), None);
}

/// One exhaustive `match` for the act and one for the compensation: a new
/// operation does not compile until both say what it does.
#[test]
fn the_dispatch_has_no_fallback_arm() {
    let sources = apply_sources();
    let dispatch = &sources
        .iter()
        .find(|(n, _)| n == "dispatch")
        .expect("dispatch.rs")
        .1;
    assert!(dispatch.contains("pub async fn act(") && dispatch.contains("pub async fn undo("));
    for (i, line) in dispatch.lines().enumerate() {
        assert!(
            !line.trim_start().starts_with("_ =>") && !line.contains("| _ =>"),
            "src/apply/dispatch.rs:{}: a fallback arm hides a new operation from the compiler: {line}",
            i + 1
        );
    }
    // And no family module falls back to "not a … step" either.
    for (n, text) in &sources {
        assert!(
            !text.contains("is not a data step") && !text.contains("is not an RDS step"),
            "src/apply/{n}.rs re-dispatches on the operation"
        );
    }
}

/// What an act returns, the journal stores and a compensation reads is
/// typed: no `serde_json::Value` in the outcome, the dispatch or the
/// journal's record of a finished step.
#[test]
fn no_untyped_value_crosses_act_journal_undo() {
    let sources = apply_sources();
    let text = |n: &str| &sources.iter().find(|(m, _)| m == n).expect(n).1;
    for n in ["outcome", "dispatch"] {
        let code = text(n).split("#[cfg(test)]").next().unwrap();
        assert!(
            !code.contains("Value"),
            "src/apply/{n}.rs uses an untyped JSON value"
        );
    }
    let journal = text("journal");
    let done = &journal[journal.find("    Done {").expect("Record::Done")..];
    let done = &done[..done.find('}').unwrap()];
    assert!(done.contains("outcome: Outcome"), "{done}");
    assert!(!done.contains("Value"), "{done}");
}
