//! Renderers: the same plan as text (terminals), JSON (machines), markdown
//! (pull-request comments) and DOT (`pgplan graph`). All four are fed the
//! plan after redaction, so no renderer can leak a secret by forgetting to.
//!
//! This module owns the entry points the CLI calls and what the renderers
//! share: the summary line, journey names, dependency numbering, and the
//! "detail" of a step (its manifest diff, the one line of a deletion, or the
//! facts of a run step), computed once here so that text and markdown show
//! the same thing.
//!
//! Architecture invariant: rendering is pure. No IO, no clock, no
//! environment: the same plan always renders to the same bytes, which is
//! what lets `pgplan apply FILE` compare a saved JSON plan with a fresh one.

mod dot;
mod json;
mod markdown;
mod text;

use std::collections::HashMap;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::observed::{ApplyLock, LockState, UnfinishedApply};
use crate::plan::{Action, ObjectRef, Operation, PlacementPlan, Plan, ScalePurpose, Step};
use crate::quantity::human_bytes;
use crate::redact::Redactor;

pub use markdown::{COMMENT_BUDGET, GITHUB_COMMENT_LIMIT};

/// How to render.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// ANSI colour (only when writing to a terminal and not disabled).
    pub color: bool,
}

/// The output formats of `pgplan plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// Redaction could not produce a plan to show; nothing is printed then.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the plan could not be redacted for output: {0}")]
#[diagnostic(
    code(pgplan::render::redaction),
    help("a secret value collides with a field name; use a longer, random secret")
)]
pub struct RedactionError(String);

/// Render a plan in a format; the plan is redacted first.
pub fn render(
    plan: &Plan,
    format: Format,
    redactor: &Redactor,
    opts: &RenderOptions,
) -> Result<String, RedactionError> {
    Ok(redact(plan.clone(), redactor)?.render(format, redactor, opts))
}

/// The DOT graph of a plan (`pgplan graph`); the plan is redacted first.
pub fn dot(plan: &Plan, redactor: &Redactor) -> Result<String, RedactionError> {
    Ok(redact(plan.clone(), redactor)?.dot(redactor))
}

/// The plan a JSON plan document (`plan --format json`, the `plan` of a
/// saved plan) describes, for rendering it again (`pgplan show`).
pub fn plan_from_json(doc: &Value) -> Result<Plan, String> {
    json::read(doc)
}

/// A plan with every secret value replaced (strings anywhere in steps,
/// before/after, operations) and Secret data hidden. Renderers only take
/// this type, so none of them can print an unredacted plan.
pub struct Redacted(Plan);

/// Redact a plan, consuming it so that a large plan is not held twice.
pub fn redact(plan: Plan, redactor: &Redactor) -> Result<Redacted, RedactionError> {
    let mut v = serde_json::to_value(&plan).map_err(|e| RedactionError(e.to_string()))?;
    drop(plan);
    redactor.value_in_place(&mut v);
    serde_json::from_value(v)
        .map(Redacted)
        .map_err(|e| RedactionError(e.to_string()))
}

impl Redacted {
    pub fn plan(&self) -> &Plan {
        &self.0
    }

    /// Render in a format. The final textual pass catches anything a
    /// renderer composed from several fields.
    pub fn render(&self, format: Format, redactor: &Redactor, opts: &RenderOptions) -> String {
        let out = match format {
            Format::Text => text::render(&self.0, opts),
            Format::Json => json::render(&self.0),
            Format::Markdown => markdown::render(&self.0),
        };
        redactor.text(&out)
    }

    pub fn dot(&self, redactor: &Redactor) -> String {
        redactor.text(&dot::render(&self.0))
    }
}

/// The closing line: `Plan: 3 to add, 2 to change, 1 to destroy, 5 to run;
/// 1 database (7.4 MiB) to copy; downtime: consumers stopped during steps 3–12.`
/// A placement whose apply is running or unfinished is named instead
/// ("Not planned: …"), never reported as "No changes".
pub(crate) fn summary_line(plan: &Plan) -> String {
    let blocked: Vec<String> = plan.unfinished.iter().map(unfinished_headline).collect();
    let not_planned = format!("Not planned: {}.", blocked.join("; "));
    if !plan.has_changes() {
        if plan.is_blocked() {
            return not_planned;
        }
        return "No changes. The live state matches the spec.".into();
    }
    let s = plan.summary();
    let mut out = format!(
        "Plan: {} to add, {} to change, {} to destroy, {} to run",
        s.add, s.change, s.destroy, s.run
    );
    if s.databases > 0 {
        out.push_str(&format!(
            "; {} ({}) to copy",
            count(s.databases, "database", "databases"),
            human_bytes(s.bytes)
        ));
    }
    let windows: Vec<String> = plan
        .placements
        .iter()
        .filter_map(|pp| {
            let w = downtime_phrase(plan, pp)?;
            Some(if plan.placements.len() > 1 {
                format!("{w} ({})", pp.name)
            } else {
                w
            })
        })
        .collect();
    if !windows.is_empty() {
        out.push_str("; downtime: ");
        out.push_str(&windows.join(", "));
    }
    out.push('.');
    if plan.is_blocked() {
        out.push(' ');
        out.push_str(&not_planned);
    }
    out
}

/// One phrase for an apply the live state shows running or unfinished:
/// `an apply of healthcare is in progress (lock held by host:1:ab since …)`.
pub fn unfinished_headline(u: &UnfinishedApply) -> String {
    let who = |l: &ApplyLock| match &l.since {
        Some(t) => format!("{} since {t}", l.holder),
        None => l.holder.clone(),
    };
    match &u.lock {
        Some(l) if l.state == LockState::Running => format!(
            "an apply of {} is in progress (lock held by {})",
            u.placement,
            who(l)
        ),
        Some(l) if l.state == LockState::Stopped => format!(
            "an apply of {} stopped unfinished (lock held by {})",
            u.placement,
            who(l)
        ),
        Some(l) => format!(
            "an apply of {} was interrupted (lock held by {}; the holder is gone)",
            u.placement,
            who(l)
        ),
        None => format!(
            "an apply of {} did not finish (pgplan's bookkeeping is still on the cluster)",
            u.placement
        ),
    }
}

/// A preflight finding's first line: `error pgplan::preflight::… Kind/name: message`,
/// `accepted` before an accepted one.
pub fn finding_line(f: &crate::plan::Finding) -> String {
    format!(
        "{}{} {} ({}) {}: {}",
        if f.accepted { "accepted " } else { "" },
        f.severity.as_str(),
        f.code,
        f.placement,
        f.object,
        f.message
    )
}

/// What an unfinished apply left, one fact a line, and what to do about it.
pub fn unfinished_details(u: &UnfinishedApply) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(l) = &u.lock {
        let mut line = format!(
            "lock: {} held by {} ({}",
            l.lease,
            l.holder,
            l.state.as_str()
        );
        if let Some(p) = &l.phase {
            line.push_str(&format!(", {p}"));
        }
        if let Some(t) = &l.since {
            line.push_str(&format!(", since {t}"));
        }
        if let Some(t) = &l.renewed {
            line.push_str(&format!(", renewed {t}"));
        }
        line.push(')');
        out.push(line);
        if let Some(j) = &l.journal {
            out.push(format!("journal: {j}"));
        }
    }
    for c in &u.stopped_consumers {
        out.push(format!(
            "stopped: {} at {} replicas ({} before pgplan stopped it)",
            c.object, c.replicas, c.quiesced_from
        ));
    }
    for t in &u.tuned_servers {
        out.push(format!(
            "tuned for loading: {} still runs with {}",
            t.pod,
            t.settings.join(", ")
        ));
    }
    let resume = u
        .lock
        .as_ref()
        .and_then(|l| l.resume.clone())
        .unwrap_or_else(|| "pgplan apply --resume".into());
    if u.is_running() {
        out.push(format!(
            "what to do: wait for it to finish (`pgplan apply --lock-timeout 10m` waits for its lock), then plan again; if its process is gone, resume it: `{resume}`"
        ));
    } else {
        out.push(format!(
            "what to do: resume it where its journal is: `{resume}`; `pgplan status` shows what it left; without its journal, docs/recovery.md"
        ));
    }
    out
}

/// Said after the plan when it has warnings apply will not go past.
pub(crate) fn blocking_line(plan: &Plan) -> Option<String> {
    let blocking = plan.blocking_warnings();
    if blocking.is_empty() {
        return None;
    }
    let mut codes: Vec<&str> = blocking.iter().map(|(_, _, w)| w.code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut steps: Vec<String> = blocking.iter().map(|(n, _, _)| format!("#{n}")).collect();
    steps.dedup();
    let one = steps.len() == 1;
    Some(format!(
        "apply will refuse this plan: {} {} {} that `spec.gitops.acknowledge` does not acknowledge ({})",
        if one { "step" } else { "steps" },
        steps.join(", "),
        if one { "has a warning" } else { "have warnings" },
        codes.join(", ")
    ))
}

/// `consumers stopped during steps 3–12`, or `database unavailable during
/// steps 5–9` when the window does not start by stopping a consumer.
pub(crate) fn downtime_phrase(plan: &Plan, pp: &PlacementPlan) -> Option<String> {
    let (first, last) = pp.downtime?;
    let first_step = first.checked_sub(1).and_then(|i| plan.steps.get(i));
    let starts_with_quiesce = first_step.is_some_and(|s| {
        matches!(
            s.operation,
            Operation::Scale {
                purpose: ScalePurpose::Quiesce,
                ..
            }
        )
    });
    let what = if starts_with_quiesce {
        "consumers stopped"
    } else {
        "database unavailable"
    };
    Some(format!("{what} during {}", steps_range(first, last)))
}

/// `step 4` or `steps 3–12` (an en dash, as in print).
pub(crate) fn steps_range(first: usize, last: usize) -> String {
    if first == last {
        format!("step {first}")
    } else {
        format!("steps {first}–{last}")
    }
}

/// `1 database`, `6 databases`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How people name a journey.
pub(crate) fn journey_label(journey: crate::addr::Journey) -> String {
    journey.label().into()
}

/// `healthcare` or `pyairtable (staging)`.
pub(crate) fn placement_title(pp: &PlacementPlan) -> String {
    match &pp.environment {
        Some(e) => format!("{} ({e})", pp.name),
        None => pp.name.clone(),
    }
}

/// The databases a placement copies: `1 database (7.4 MiB)`, or `none`.
pub(crate) fn databases_phrase(pp: &PlacementPlan) -> Option<String> {
    if pp.databases.is_empty() {
        return None;
    }
    let bytes: u64 = pp.databases.iter().map(|d| d.size_bytes).sum();
    Some(format!(
        "{} ({})",
        count(pp.databases.len(), "database", "databases"),
        human_bytes(bytes)
    ))
}

/// 1-based positions by address, for `depends on #3`.
pub(crate) struct Positions<'p>(HashMap<&'p str, usize>);

impl<'p> Positions<'p> {
    pub(crate) fn new(plan: &'p Plan) -> Self {
        Positions(
            plan.steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.address.as_str(), i + 1))
                .collect(),
        )
    }
    pub(crate) fn get(&self, address: &str) -> Option<usize> {
        self.0.get(address).copied()
    }
    /// `#1, #2`, in plan order — an address outside the plan (never
    /// expected) is named, last.
    pub(crate) fn refs(&self, addresses: &[String]) -> String {
        let mut known: Vec<usize> = addresses.iter().filter_map(|a| self.get(a)).collect();
        known.sort_unstable();
        known
            .into_iter()
            .map(|n| format!("#{n}"))
            .chain(addresses.iter().filter(|a| self.get(a).is_none()).cloned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The steps of a placement, in plan order, with their 1-based positions.
/// Steps naming a placement the plan does not list are grouped by name
/// after the listed ones, so that nothing is ever left out.
pub(crate) fn groups(plan: &Plan) -> Vec<Group<'_>> {
    let mut out: Vec<Group<'_>> = plan
        .placements
        .iter()
        .map(|pp| Group {
            name: pp.name.clone(),
            placement: Some(pp),
            steps: Vec::new(),
        })
        .collect();
    for (i, step) in plan.steps.iter().enumerate() {
        let idx = match out.iter().position(|g| g.name == step.placement) {
            Some(idx) => idx,
            None => {
                out.push(Group {
                    name: step.placement.clone(),
                    placement: None,
                    steps: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[idx].steps.push((i + 1, step));
    }
    out
}

pub(crate) struct Group<'p> {
    pub name: String,
    pub placement: Option<&'p PlacementPlan>,
    pub steps: Vec<(usize, &'p Step)>,
}

impl Group<'_> {
    pub(crate) fn title(&self) -> String {
        match self.placement {
            Some(pp) => placement_title(pp),
            None => self.name.clone(),
        }
    }
    pub(crate) fn journey(&self) -> String {
        journey_label(
            self.placement
                .map_or(crate::addr::Journey::None, |pp| pp.journey),
        )
    }
}

/// One line of a manifest diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DiffLine {
    /// `@@ -4,7 +4,7 @@`
    Hunk(String),
    Context(String),
    Insert(String),
    Delete(String),
}

impl DiffLine {
    /// The line as a unified diff writes it (`+ `, `- `, two spaces).
    pub(crate) fn unified(&self) -> String {
        match self {
            DiffLine::Hunk(h) => h.clone(),
            DiffLine::Context(l) => format!("  {l}"),
            DiffLine::Insert(l) => format!("+ {l}"),
            DiffLine::Delete(l) => format!("- {l}"),
        }
    }
}

/// What a step shows besides its summary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    /// Nothing more to show.
    None,
    /// Creates: the whole manifest, every line inserted. Updates and
    /// replaces: a unified diff of before and after.
    Diff(Vec<DiffLine>),
    /// Deletions: what goes, in one line (the manifest is in the JSON plan).
    Gone(String),
    /// Run steps: their facts, `key = value`.
    Facts(Vec<(String, String)>),
}

/// Lines of context around each change in a manifest diff.
const DIFF_CONTEXT: usize = 3;

pub(crate) fn detail(step: &Step) -> Detail {
    match step.action {
        Action::Create => match &step.after {
            Some(after) => Detail::Diff(
                yaml_lines(after)
                    .into_iter()
                    .map(DiffLine::Insert)
                    .collect(),
            ),
            None => Detail::None,
        },
        Action::Update | Action::Replace => match (&step.before, &step.after) {
            (Some(b), Some(a)) => Detail::Diff(manifest_diff(b, a)),
            (None, Some(a)) => {
                Detail::Diff(yaml_lines(a).into_iter().map(DiffLine::Insert).collect())
            }
            _ => Detail::None,
        },
        Action::Delete => Detail::Gone(gone_line(step)),
        Action::Run => match &step.after {
            Some(Value::Object(map)) if !map.is_empty() => Detail::Facts(
                map.iter()
                    .map(|(k, v)| fact(k, v))
                    .collect::<Vec<(String, String)>>(),
            ),
            _ => Detail::None,
        },
    }
}

/// `Deployment default/postgres (its manifest is kept for rollback)`.
fn gone_line(step: &Step) -> String {
    let object = match &step.operation {
        Operation::Delete { object, .. } => Some(object.clone()),
        _ => step.before.as_ref().and_then(ObjectRef::of),
    };
    let what = match object {
        Some(o) => format!("{} {}", o.api_version, o.display()),
        None => step.address.clone(),
    };
    if matches!(step.operation, Operation::Delete { .. }) {
        format!("{what} (its manifest is kept for rollback)")
    } else {
        what
    }
}

/// A value as YAML lines; JSON if YAML cannot be written (never expected
/// for a value that came from JSON).
pub(crate) fn yaml_lines(v: &Value) -> Vec<String> {
    let text = crate::yaml::to_string(v)
        .or_else(|_| serde_json::to_string_pretty(v))
        .unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

/// A unified diff of two values rendered as YAML, both written in one key
/// order (sorted, as `kubectl diff` writes them): a live object comes in
/// the server's order and a desired one in pgplan's, and diffing those
/// orders shows moved keys as removed and added, and a removed key next to
/// its unchanged twin elsewhere as if it were kept.
pub(crate) fn manifest_diff(before: &Value, after: &Value) -> Vec<DiffLine> {
    let old = yaml_lines(&sorted(before)).join("\n") + "\n";
    let new = yaml_lines(&sorted(after)).join("\n") + "\n";
    let diff = TextDiff::from_lines(old.as_str(), new.as_str());
    let mut out = Vec::new();
    for group in diff.grouped_ops(DIFF_CONTEXT) {
        if group.is_empty() {
            continue;
        }
        out.push(DiffLine::Hunk(
            similar::udiff::UnifiedHunkHeader::new(&group).to_string(),
        ));
        for op in &group {
            for change in diff.iter_changes(op) {
                let line = change.value().trim_end_matches('\n').to_string();
                out.push(match change.tag() {
                    ChangeTag::Equal => DiffLine::Context(line),
                    ChangeTag::Insert => DiffLine::Insert(line),
                    ChangeTag::Delete => DiffLine::Delete(line),
                });
            }
        }
    }
    out
}

/// A copy with the keys of every mapping sorted (lists keep their order).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// One fact of a run step: `sizeBytes: 7725551` → `size = 7.4 MiB`.
fn fact(key: &str, value: &Value) -> (String, String) {
    if let (Some(stem), Some(n)) = (key.strip_suffix("Bytes"), value.as_u64()) {
        return (words(stem), human_bytes(n));
    }
    (words(key), fact_value(value))
}

/// `expectRows` → `expect rows`.
fn words(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_uppercase() {
            out.push(' ');
            out.extend(c.to_lowercase());
        } else if c == '_' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// A value on one line: lists joined by commas, an object as its first
/// value followed by the rest in parentheses (`healthcare (owner
/// healthcare_user)`).
fn fact_value(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(fact_value).collect::<Vec<_>>().join(", "),
        Value::Object(map) => {
            let mut it = map.iter();
            let Some((_, first)) = it.next() else {
                return "none".into();
            };
            let rest: Vec<String> = it
                .map(|(k, v)| {
                    let (k, v) = fact(k, v);
                    format!("{k} {v}")
                })
                .collect();
            if rest.is_empty() {
                fact_value(first)
            } else {
                format!("{} ({})", fact_value(first), rest.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_shows_only_the_changed_region() {
        let before =
            json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9});
        let mut after = before.clone();
        after["h"] = json!(80);
        let lines: Vec<String> = manifest_diff(&before, &after)
            .iter()
            .map(DiffLine::unified)
            .collect();
        assert_eq!(
            lines,
            [
                "@@ -5,5 +5,5 @@",
                "  e: 5",
                "  f: 6",
                "  g: 7",
                "- h: 8",
                "+ h: 80",
                "  i: 9"
            ]
        );
    }

    #[test]
    fn both_sides_are_diffed_in_one_key_order() {
        // The live object in the server's order, the desired one in pgplan's:
        // only the removed label may show as a change.
        let live = json!({"metadata": {"labels": {"team": "billing", "app": "pg"}, "name": "pg"},
                          "spec": {"type": "ClusterIP", "selector": {"app": "pg"}}});
        let desired = json!({"spec": {"selector": {"app": "pg"}, "type": "ClusterIP"},
                             "metadata": {"name": "pg", "labels": {"app": "pg"}}});
        let changed: Vec<String> = manifest_diff(&live, &desired)
            .iter()
            .filter(|l| matches!(l, DiffLine::Insert(_) | DiffLine::Delete(_)))
            .map(DiffLine::unified)
            .collect();
        assert_eq!(changed, ["-     team: billing"]);
    }

    #[test]
    fn facts_are_worded_and_sized() {
        assert_eq!(
            fact("sizeBytes", &json!(7725551)),
            ("size".into(), "7.4 MiB".into())
        );
        assert_eq!(
            fact(
                "databases",
                &json!([{"name": "a", "owner": "o"}, {"name": "b", "owner": "o"}])
            ),
            ("databases".into(), "a (owner o), b (owner o)".into())
        );
        assert_eq!(
            fact("expectRows", &json!(3)),
            ("expect rows".into(), "3".into())
        );
    }

    #[test]
    fn ranges_and_counts() {
        assert_eq!(steps_range(3, 12), "steps 3–12");
        assert_eq!(steps_range(4, 4), "step 4");
        assert_eq!(count(1, "database", "databases"), "1 database");
        assert_eq!(count(6, "database", "databases"), "6 databases");
    }
}
