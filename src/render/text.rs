//! The text plan, for terminals and CI logs: one header per placement, one
//! block per step in plan order (symbol, number, address, risk, summary,
//! reason, dependencies, manifest diff or facts), the downtime window drawn
//! as a bar in the left gutter, and the closing summary line.
//!
//! Colour is ANSI and only when asked for; without it the output contains
//! no escape code at all, so it can be pasted, grepped and snapshotted.

use super::{
    blocking_line, count, databases_phrase, detail, downtime_phrase, groups, summary_line, Detail,
    DiffLine, Group, Positions,
};
use crate::plan::{Action, Plan, Risk, Step};
use crate::render::RenderOptions;

/// Facts of a run step are wrapped to lines of about this many characters.
const FACTS_WIDTH: usize = 96;

pub(super) fn render(plan: &Plan, opts: &RenderOptions) -> String {
    let p = Paint(opts.color);
    let mut out = String::new();
    if plan.has_changes() || plan.is_blocked() {
        let positions = Positions::new(plan);
        let width = plan.steps.len().to_string().len() + 1;
        for group in groups(plan) {
            placement(&mut out, &p, plan, &group, &positions, width);
        }
    }
    if !plan.findings.is_empty() {
        out.push_str(&p.bold("Preflight:"));
        out.push('\n');
        for f in &plan.findings {
            let line = format!("  {}", super::finding_line(f));
            out.push_str(&if f.blocks() {
                p.red_bold(&line)
            } else {
                p.yellow(&line)
            });
            out.push('\n');
            out.push_str(&format!("    help: {}\n", f.help));
        }
        out.push('\n');
    }
    out.push_str(&p.bold(&summary_line(plan)));
    out.push('\n');
    for w in &plan.warnings {
        out.push('\n');
        out.push_str(&p.yellow(&format!("Warning: {w}")));
        out.push('\n');
    }
    if let Some(line) = blocking_line(plan) {
        out.push('\n');
        out.push_str(&p.yellow(&format!("Warning: {line}.")));
        out.push('\n');
    }
    out
}

fn placement(
    out: &mut String,
    p: &Paint,
    plan: &Plan,
    group: &Group<'_>,
    positions: &Positions<'_>,
    width: usize,
) {
    out.push_str(&p.bold(&format!("{}: {}", group.title(), group.journey())));
    out.push('\n');
    if let Some(u) = plan.unfinished.iter().find(|u| u.placement == group.name) {
        out.push_str(&format!(
            "  {}\n",
            p.red_bold(&super::unfinished_headline(u))
        ));
        for line in super::unfinished_details(u) {
            out.push_str(&format!("    {line}\n"));
        }
        out.push('\n');
        return;
    }
    if group.steps.is_empty() {
        out.push_str("  No changes.\n\n");
        return;
    }
    let mut facts = vec![count(group.steps.len(), "step", "steps")];
    if let Some(pp) = group.placement {
        facts.extend(databases_phrase(pp).map(|d| format!("{d} to copy")));
        facts.extend(downtime_phrase(plan, pp).map(|d| format!("downtime: {d}")));
    }
    out.push_str(&format!("  {}\n\n", facts.join(" · ")));
    let window = group
        .placement
        .and_then(|pp| downtime_phrase(plan, pp))
        .unwrap_or_else(|| "the database or its consumers are stopped".into());
    let mut in_window = false;
    for (i, (position, step)) in group.steps.iter().enumerate() {
        if step.in_downtime && !in_window {
            out.push_str(&p.yellow(&format!("┌─ ⏸ downtime: {window}")));
            out.push('\n');
        }
        in_window = step.in_downtime;
        let gutter = if in_window {
            p.yellow("│ ")
        } else {
            "  ".into()
        };
        for line in step_block(p, *position, step, positions, width) {
            out.push_str(&gutter);
            out.push_str(&line);
            out.push('\n');
        }
        let next_in_window = group.steps.get(i + 1).is_some_and(|(_, s)| s.in_downtime);
        if in_window && !next_in_window {
            out.push_str(&p.yellow(&format!("└─ ▶ downtime ends after step {position}")));
            out.push('\n');
            in_window = false;
        } else if in_window {
            out.push_str(&p.yellow("│"));
        }
        out.push('\n');
    }
}

/// The lines of one step, without the gutter.
fn step_block(
    p: &Paint,
    position: usize,
    step: &Step,
    positions: &Positions<'_>,
    width: usize,
) -> Vec<String> {
    let symbol = p.action(step.action, &format!("{:>3}", step.action.symbol()));
    let number = format!("{:<width$}", format!("#{position}"));
    let mut head = format!("{symbol} {number} {}", p.bold(&step.address));
    match step.risk {
        Risk::Safe => {}
        Risk::Disruptive => head.push_str(&format!("  {}", p.yellow("[disruptive]"))),
        Risk::Destructive => head.push_str(&format!("  {}", p.red_bold("[destructive]"))),
    }
    let indent = " ".repeat(3 + 1 + width + 1);
    let mut lines = vec![head];
    lines.push(format!("{indent}{}", step.summary));
    if !step.reason.is_empty() {
        lines.push(format!(
            "{indent}{}",
            p.dim(&format!("why: {}", step.reason))
        ));
    }
    if !step.depends_on.is_empty() {
        lines.push(format!(
            "{indent}{}",
            p.dim(&format!("depends on {}", positions.refs(&step.depends_on)))
        ));
    }
    for w in &step.warnings {
        lines.push(format!(
            "{indent}{}",
            p.yellow(&format!("⚠ warning[{}]: {}", w.code, w.message))
        ));
        lines.push(format!("{indent}  {}", p.dim(&format!("help: {}", w.help))));
    }
    match detail(step) {
        Detail::None => {}
        Detail::Diff(diff) => {
            for line in diff {
                lines.push(format!("{indent}{}", p.diff_line(&line)));
            }
        }
        Detail::Gone(what) => lines.push(format!("{indent}{}", p.red(&format!("- {what}")))),
        Detail::Facts(facts) => {
            for line in wrap_facts(&facts) {
                lines.push(format!("{indent}{line}"));
            }
        }
    }
    // No trailing spaces: an empty diff context line is still a line.
    lines.iter().map(|l| l.trim_end().to_string()).collect()
}

/// `key: value · key: value`, wrapped.
fn wrap_facts(facts: &[(String, String)]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for (k, v) in facts {
        let item = format!("{k}: {v}");
        if !line.is_empty() && line.chars().count() + 3 + item.chars().count() > FACTS_WIDTH {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push_str(" · ");
        }
        line.push_str(&item);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// ANSI styling, or none at all.
struct Paint(bool);

impl Paint {
    fn style(&self, code: &str, s: &str) -> String {
        if self.0 && !s.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.style("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.style("2", s)
    }
    fn red(&self, s: &str) -> String {
        self.style("31", s)
    }
    fn red_bold(&self, s: &str) -> String {
        self.style("1;31", s)
    }
    fn green(&self, s: &str) -> String {
        self.style("32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.style("33", s)
    }
    fn magenta(&self, s: &str) -> String {
        self.style("35", s)
    }
    fn cyan(&self, s: &str) -> String {
        self.style("36", s)
    }
    fn action(&self, action: Action, s: &str) -> String {
        match action {
            Action::Create => self.green(s),
            Action::Delete => self.red(s),
            Action::Update => self.yellow(s),
            Action::Replace => self.magenta(s),
            Action::Run => self.cyan(s),
        }
    }
    fn diff_line(&self, line: &DiffLine) -> String {
        let text = line.unified();
        match line {
            DiffLine::Hunk(_) => self.cyan(&text),
            DiffLine::Context(_) => text,
            DiffLine::Insert(_) => self.green(&text),
            DiffLine::Delete(_) => self.red(&text),
        }
    }
}
