//! The markdown plan, for pull-request comments: the summary line as the
//! title, a table of the placements, a risk table naming the steps that can
//! cause downtime or lose data, then one collapsed `<details>` per step
//! with its reason, dependencies and diff.
//!
//! A comment must fit GitHub's limit of 65,535 characters. When the full
//! plan would not fit in [`COMMENT_BUDGET`], details are shortened in a
//! fixed order — diffs of safe steps first, then long diffs of risky steps
//! are truncated, then dropped, then steps are listed without details, and
//! only as a last resort left out, from the end — and a closing note says
//! what was left out. The title and the tables always stay (the risk table
//! names the first 50 risky steps and counts the rest).

use super::{
    blocking_line, count, databases_phrase, detail, downtime_phrase, groups, journey_label,
    summary_line, Detail, DiffLine, Positions,
};
use crate::plan::{Plan, Risk, Step, Warning};

/// GitHub rejects comments longer than this many characters.
pub const GITHUB_COMMENT_LIMIT: usize = 65_535;

/// What the markdown plan is kept within, in UTF-16 code units (which
/// count no fewer than characters do), leaving room for a bot to add its
/// own header or footer and stay under [`GITHUB_COMMENT_LIMIT`].
pub const COMMENT_BUDGET: usize = 60_000;

/// Room kept for the closing note and the "not shown" line.
const NOTE_RESERVE: usize = 600;

/// A truncated diff keeps this many lines.
const TRUNCATED_DIFF_LINES: usize = 40;

/// The risk table names at most this many steps.
const ATTENTION_ROWS: usize = 50;

pub(super) fn render(plan: &Plan) -> String {
    render_within(plan, COMMENT_BUDGET)
}

/// How much of a step the comment shows; later variants show less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shown {
    Full,
    DiffTruncated,
    DiffOmitted,
    /// One line, no `<details>`.
    Brief,
    Hidden,
}

/// One step's section and how much of it is shown.
struct Section<'p> {
    position: usize,
    step: &'p Step,
    detail: Detail,
    diff_lines: usize,
    shown: Shown,
}

impl Section<'_> {
    fn risky(&self) -> bool {
        self.step.risk != Risk::Safe
    }
}

fn render_within(plan: &Plan, budget: usize) -> String {
    let mut out = head(plan);
    if plan.has_changes() {
        out.push_str(&steps(plan, budget.saturating_sub(size(&out))));
    }
    cut_to(out, budget)
}

/// The steps, shortened to fit `budget` when they would not.
fn steps(plan: &Plan, budget: usize) -> String {
    let positions = Positions::new(plan);
    let groups = groups(plan);
    let many = groups.len() > 1;
    let mut sections: Vec<Section<'_>> = Vec::new();
    let mut group_of: Vec<usize> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (position, step) in &group.steps {
            let detail = detail(step);
            let diff_lines = match &detail {
                Detail::Diff(d) => d.len(),
                _ => 0,
            };
            sections.push(Section {
                position: *position,
                step,
                detail,
                diff_lines,
                shown: Shown::Full,
            });
            group_of.push(g);
        }
    }
    let group_heads: Vec<String> = groups
        .iter()
        .map(|g| {
            if many {
                format!(
                    "#### {} — {}\n\n",
                    md_text(&g.title()),
                    md_text(&g.journey())
                )
            } else {
                String::new()
            }
        })
        .collect();

    let fixed: usize = group_heads.iter().map(|h| size(h)).sum();
    let mut lengths: Vec<usize> = sections.iter().map(|s| cost(s, &positions)).collect();
    let mut total = fixed + lengths.iter().sum::<usize>();
    if total > budget {
        let limit = budget.saturating_sub(NOTE_RESERVE);
        'stages: for (order, shown) in shortening(&sections) {
            for i in order {
                if total <= limit {
                    break 'stages;
                }
                if sections[i].shown >= shown {
                    continue;
                }
                sections[i].shown = shown;
                let new_len = cost(&sections[i], &positions);
                total = total - lengths[i] + new_len;
                lengths[i] = new_len;
            }
        }
    }

    let mut out = String::new();
    for (g, group_head) in group_heads.iter().enumerate() {
        out.push_str(group_head);
        // Brief lines form a tight list, which needs a blank line after it.
        let mut in_list = false;
        for (i, s) in sections.iter().enumerate() {
            if group_of[i] != g || s.shown == Shown::Hidden {
                continue;
            }
            if in_list && s.shown != Shown::Brief {
                out.push('\n');
            }
            in_list = s.shown == Shown::Brief;
            out.push_str(&section(s, &positions));
        }
        if in_list {
            out.push('\n');
        }
    }
    if let Some(note) = note(&sections) {
        out.push_str(&note);
    }
    out
}

/// The stages of shortening, in order: which sections, in which order,
/// and what each is reduced to. Each stage goes only as far as needed.
fn shortening(sections: &[Section<'_>]) -> Vec<(Vec<usize>, Shown)> {
    let pick = |pred: &dyn Fn(&Section<'_>) -> bool| -> Vec<usize> {
        (0..sections.len())
            .filter(|&i| pred(&sections[i]))
            .collect()
    };
    let largest_diff_first = |mut v: Vec<usize>| {
        v.sort_by(|&a, &b| {
            sections[b]
                .diff_lines
                .cmp(&sections[a].diff_lines)
                .then(a.cmp(&b))
        });
        v
    };
    let last_first = |mut v: Vec<usize>| {
        v.sort_by_key(|&i| std::cmp::Reverse(sections[i].position));
        v
    };
    vec![
        (
            largest_diff_first(pick(&|s| !s.risky() && s.diff_lines > 0)),
            Shown::DiffOmitted,
        ),
        (
            largest_diff_first(pick(&|s| s.risky() && s.diff_lines > TRUNCATED_DIFF_LINES)),
            Shown::DiffTruncated,
        ),
        (
            largest_diff_first(pick(&|s| s.risky() && s.diff_lines > 0)),
            Shown::DiffOmitted,
        ),
        (last_first(pick(&|s| !s.risky())), Shown::Brief),
        (last_first(pick(&|s| s.risky())), Shown::Brief),
        (last_first(pick(&|_| true)), Shown::Hidden),
    ]
}

/// The last net: a comment whose tables alone exceed the budget (thousands
/// of placements or warnings) is cut, and says so.
fn cut_to(mut out: String, budget: usize) -> String {
    if size(&out) <= budget {
        return out;
    }
    let cut =
        "\n\n*(cut to fit GitHub's comment limit; run `pgplan plan` locally for the full plan)*\n";
    let keep = budget.saturating_sub(size(cut));
    let mut used = 0;
    let end = out
        .char_indices()
        .find(|(_, c)| {
            used += c.len_utf16();
            used > keep
        })
        .map_or(out.len(), |(i, _)| i);
    out.truncate(end);
    out.push_str(cut);
    out
}

/// Title, warnings, the placement table and the risk table.
fn head(plan: &Plan) -> String {
    let mut out = format!("### {}\n\n", md_text(&summary_line(plan)));

    let destructive: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.risk == Risk::Destructive)
        .map(|(i, _)| i + 1)
        .collect();
    if !destructive.is_empty() {
        let refs: Vec<String> = destructive.iter().map(|n| format!("#{n}")).collect();
        out.push_str(&format!(
            "> [!CAUTION]\n> {} can lose data if run at the wrong time: {}.\n\n",
            count(destructive.len(), "destructive step", "destructive steps"),
            short_list(&refs, ATTENTION_ROWS)
        ));
    }
    for u in &plan.unfinished {
        out.push_str(&format!(
            "> [!CAUTION]\n> Not planned: {}.\n",
            md_text(&super::unfinished_headline(u))
        ));
        for line in super::unfinished_details(u) {
            out.push_str(&format!("> - {}\n", md_text(&line)));
        }
        out.push('\n');
    }
    if !plan.findings.is_empty() {
        let blocking = plan.blocking_findings().len();
        if blocking > 0 {
            out.push_str(&format!(
                "> [!CAUTION]\n> Preflight: {} apply.\n\n",
                count(blocking, "finding blocks", "findings block")
            ));
        }
        out.push_str("| Preflight | Code | Object | Finding |\n|---|---|---|---|\n");
        for f in &plan.findings {
            let severity = if f.accepted {
                format!("{} (accepted)", f.severity.as_str())
            } else {
                f.severity.as_str().to_string()
            };
            out.push_str(&format!(
                "| {severity} | {} | {} | {} — {} |\n",
                code_span(&f.code),
                md_text(&f.object),
                md_text(&f.message),
                md_text(&f.help)
            ));
        }
        out.push('\n');
    }
    let step_warnings: Vec<(usize, &Warning)> = plan
        .steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.warnings.iter().map(move |w| (i + 1, w)))
        .collect();
    if !plan.warnings.is_empty() || !step_warnings.is_empty() {
        out.push_str("> [!WARNING]\n");
        for w in &plan.warnings {
            out.push_str(&format!("> - {}\n", md_text(w)));
        }
        for (n, w) in step_warnings.iter().take(ATTENTION_ROWS) {
            out.push_str(&format!(
                "> - `#{n}` {} {}\n",
                code_span(w.code.as_str()),
                md_text(&w.message)
            ));
        }
        if step_warnings.len() > ATTENTION_ROWS {
            out.push_str(&format!(
                "> - … and {} more step warnings\n",
                step_warnings.len() - ATTENTION_ROWS
            ));
        }
        if let Some(line) = blocking_line(plan) {
            out.push_str(&format!("> - **{}.**\n", md_text(&line)));
        }
        out.push('\n');
    }

    out.push_str("| Placement | Environment | Journey | Steps | Databases | Downtime |\n");
    out.push_str("|---|---|---|--:|---|---|\n");
    for g in groups(plan) {
        let (environment, databases, downtime) = match g.placement {
            Some(pp) => (
                pp.environment.clone(),
                databases_phrase(pp),
                downtime_phrase(plan, pp),
            ),
            None => (None, None, None),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&g.name),
            cell(environment.as_deref().unwrap_or("—")),
            cell(&journey_label(
                g.placement
                    .map_or(crate::addr::Journey::None, |pp| pp.journey)
            )),
            g.steps.len(),
            cell(databases.as_deref().unwrap_or("—")),
            cell(downtime.as_deref().unwrap_or("—")),
        ));
    }
    out.push('\n');

    if !plan.has_changes() {
        return out;
    }
    let n = |r: Risk| plan.steps.iter().filter(|s| s.risk == r).count();
    out.push_str("| Risk | Steps |\n|---|--:|\n");
    out.push_str(&format!(
        "| 🔴 destructive: can lose data | {} |\n",
        n(Risk::Destructive)
    ));
    out.push_str(&format!(
        "| 🟠 disruptive: downtime | {} |\n",
        n(Risk::Disruptive)
    ));
    out.push_str(&format!("| 🟢 safe | {} |\n\n", n(Risk::Safe)));

    let risky: Vec<(usize, &Step)> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.risk != Risk::Safe)
        .map(|(i, s)| (i + 1, s))
        .collect();
    if !risky.is_empty() {
        out.push_str("| # | Risk | Action | Address | What happens |\n|--:|---|:-:|---|---|\n");
        for (pos, s) in risky.iter().take(ATTENTION_ROWS) {
            out.push_str(&format!(
                "| {pos} | {} | {} | {} | {} |\n",
                risk_label(s.risk),
                code_cell(s.action.symbol()),
                code_cell(&s.address),
                cell(&s.summary),
            ));
        }
        if risky.len() > ATTENTION_ROWS {
            out.push_str(&format!(
                "| | | | … and {} more | |\n",
                risky.len() - ATTENTION_ROWS
            ));
        }
        out.push('\n');
    }
    out.push_str("### Steps\n\n");
    out
}

fn risk_label(r: Risk) -> &'static str {
    match r {
        Risk::Safe => "🟢 safe",
        Risk::Disruptive => "🟠 disruptive",
        Risk::Destructive => "🔴 **destructive**",
    }
}

/// What a section adds to the comment, counting the blank line that may
/// end a list of brief steps.
fn cost(s: &Section<'_>, positions: &Positions<'_>) -> usize {
    size(&section(s, positions)) + usize::from(s.shown == Shown::Brief)
}

/// One step as the comment shows it.
fn section(s: &Section<'_>, positions: &Positions<'_>) -> String {
    let step = s.step;
    let tags = |html: bool| {
        let mut tags = Vec::new();
        match step.risk {
            Risk::Safe => {}
            Risk::Disruptive => tags.push("🟠 disruptive"),
            Risk::Destructive if html => tags.push("🔴 <b>destructive</b>"),
            Risk::Destructive => tags.push("🔴 **destructive**"),
        }
        if step.in_downtime {
            tags.push("⏸ downtime");
        }
        if !step.warnings.is_empty() {
            tags.push("⚠️ warning");
        }
        tags.iter().map(|t| format!(" · {t}")).collect::<String>()
    };
    match s.shown {
        Shown::Hidden => return String::new(),
        Shown::Brief => {
            return format!(
                "- `#{}` `{}` {} — {}{}\n",
                s.position,
                step.action.symbol(),
                code_span(&step.address),
                md_text(&step.summary),
                tags(false),
            );
        }
        _ => {}
    }
    let mut out = format!(
        "<details><summary><code>#{}</code> <code>{}</code> <code>{}</code> — {}{}</summary>\n\n",
        s.position,
        html(step.action.symbol()),
        html(&step.address),
        html_text(&step.summary),
        tags(true),
    );
    let mut lines = Vec::new();
    if !step.reason.is_empty() {
        lines.push(format!("**Why:** {}", md_text(&step.reason)));
    }
    if !step.depends_on.is_empty() {
        lines.push(format!(
            "**Depends on:** {}",
            positions.refs(&step.depends_on)
        ));
    }
    for w in &step.warnings {
        lines.push(format!(
            "⚠️ **Warning** {}: {} **Help:** {}",
            code_span(w.code.as_str()),
            md_text(&w.message),
            md_text(&w.help)
        ));
    }
    match &s.detail {
        Detail::None | Detail::Diff(_) => {}
        Detail::Gone(what) => lines.push(format!("**Deletes:** {}", md_text(what))),
        Detail::Facts(facts) => lines.push(
            facts
                .iter()
                .map(|(k, v)| format!("{}: {}", md_text(k), md_text(v)))
                .collect::<Vec<_>>()
                .join(" · "),
        ),
    }
    if !lines.is_empty() {
        out.push_str(&lines.join("<br>\n"));
        out.push_str("\n\n");
    }
    if let Detail::Diff(diff) = &s.detail {
        let body: Vec<String> = match s.shown {
            Shown::Full => diff.iter().map(DiffLine::unified).collect(),
            Shown::DiffTruncated => {
                let mut v: Vec<String> = diff
                    .iter()
                    .take(TRUNCATED_DIFF_LINES)
                    .map(DiffLine::unified)
                    .collect();
                v.push(format!(
                    "… {} more lines",
                    diff.len().saturating_sub(TRUNCATED_DIFF_LINES)
                ));
                v
            }
            _ => Vec::new(),
        };
        if body.is_empty() {
            out.push_str("*Diff omitted to fit the comment limit.*\n\n");
        } else {
            let fence = fence_for(&body);
            out.push_str(&format!("{fence}diff\n"));
            for line in body {
                out.push_str(line.trim_end());
                out.push('\n');
            }
            out.push_str(&fence);
            out.push_str("\n\n");
        }
    }
    out.push_str("</details>\n\n");
    out
}

/// The closing note when anything was left out.
fn note(sections: &[Section<'_>]) -> Option<String> {
    let with_diff = |s: &&Section<'_>| s.diff_lines > 0;
    let omitted = sections
        .iter()
        .filter(with_diff)
        .filter(|s| s.shown == Shown::DiffOmitted)
        .count();
    let truncated = sections
        .iter()
        .filter(|s| s.shown == Shown::DiffTruncated)
        .count();
    let brief = sections.iter().filter(|s| s.shown == Shown::Brief).count();
    let hidden: Vec<usize> = {
        let mut v: Vec<usize> = sections
            .iter()
            .filter(|s| s.shown == Shown::Hidden)
            .map(|s| s.position)
            .collect();
        v.sort_unstable();
        v
    };
    let mut clauses = Vec::new();
    if omitted > 0 {
        clauses.push(count(omitted, "diff omitted", "diffs omitted"));
    }
    if truncated > 0 {
        clauses.push(count(truncated, "diff truncated", "diffs truncated"));
    }
    if brief > 0 {
        clauses.push(format!(
            "{} listed without details",
            count(brief, "step", "steps")
        ));
    }
    if !hidden.is_empty() {
        clauses.push(format!(
            "{} not shown ({})",
            count(hidden.len(), "step", "steps"),
            ranges(&hidden)
        ));
    }
    if clauses.is_empty() {
        return None;
    }
    Some(format!(
        "> [!NOTE]\n> Shortened to fit GitHub's comment limit: {}; run `pgplan plan` locally for the full plan.\n",
        clauses.join(", ")
    ))
}

/// `#3–#7, #9` from sorted positions.
fn ranges(positions: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < positions.len() {
        let start = positions[i];
        let mut end = start;
        while i + 1 < positions.len() && positions[i + 1] == end + 1 {
            i += 1;
            end = positions[i];
        }
        out.push(if start == end {
            format!("#{start}")
        } else {
            format!("#{start}–#{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// At most `max` items, then `and N more`.
fn short_list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}

/// A code fence longer than any run of backticks in the body.
fn fence_for(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .map(|l| l.split(|c| c != '`').map(str::len).max().unwrap_or(0))
        .max()
        .unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

/// Length as GitHub may count it: UTF-16 code units, never fewer than
/// characters.
fn size(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Escape HTML's three specials.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for an HTML context (`<summary>`): escaped, with `code` spans
/// turned into `<code>` elements.
fn html_text(s: &str) -> String {
    spans(s)
        .into_iter()
        .map(|(code, part)| {
            if code {
                format!("<code>{}</code>", html(part))
            } else {
                html(part)
            }
        })
        .collect()
}

/// Text for a markdown context: characters that would turn into HTML,
/// emphasis, links, strike-through or a table column are escaped outside
/// code spans.
fn md_text(s: &str) -> String {
    markdown(s, false)
}

/// A table cell: markdown text with `|` escaped in code spans too, as
/// GitHub's tables require.
fn cell(s: &str) -> String {
    markdown(s, true)
}

/// An inline code span in a table cell.
fn code_cell(s: &str) -> String {
    code_span(s).replace('|', "\\|")
}

fn markdown(s: &str, table: bool) -> String {
    spans(s)
        .into_iter()
        .map(|(code, part)| {
            if code {
                let span = code_span(part);
                if table {
                    span.replace('|', "\\|")
                } else {
                    span
                }
            } else {
                let mut out = String::with_capacity(part.len());
                for c in part.chars() {
                    match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '\\' | '*' | '_' | '[' | ']' | '~' | '|' => {
                            out.push('\\');
                            out.push(c);
                        }
                        '\n' => out.push(' '),
                        c => out.push(c),
                    }
                }
                out
            }
        })
        .collect()
}

/// An inline code span that survives backticks inside it.
fn code_span(s: &str) -> String {
    let s = s.replace('\n', " ");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    if longest > 0 {
        format!("{ticks} {s} {ticks}")
    } else {
        format!("{ticks}{s}{ticks}")
    }
}

/// Split text at single backticks into (is code, text) parts; an unpaired
/// backtick is plain text.
fn spans(s: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        if open > 0 {
            out.push((false, &rest[..open]));
        }
        out.push((true, &rest[open + 1..open + 1 + len]));
        rest = &rest[open + 1 + len + 1..];
    }
    if !rest.is_empty() {
        out.push((false, rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_outside_code() {
        assert_eq!(
            md_text("a <b> | `x<y|z` *c* plugin_*"),
            "a &lt;b&gt; \\| `x<y|z` \\*c\\* plugin\\_\\*"
        );
        assert_eq!(
            html_text("keep `a<b` & go"),
            "keep <code>a&lt;b</code> &amp; go"
        );
        assert_eq!(cell("`a|b` c|d"), "`a\\|b` c\\|d");
    }

    #[test]
    fn a_comment_over_budget_is_cut_and_says_so() {
        let long = "é".repeat(300);
        let out = cut_to(long.clone(), 200);
        assert!(size(&out) <= 200);
        assert!(out.ends_with("run `pgplan plan` locally for the full plan)*\n"));
        assert!(out.starts_with("éé"));
        assert_eq!(cut_to("short".into(), 200), "short");
    }

    #[test]
    fn fences_and_ranges() {
        assert_eq!(fence_for(&["a ```` b".into()]), "`````");
        assert_eq!(fence_for(&["plain".into()]), "```");
        assert_eq!(ranges(&[3, 4, 5, 9, 11, 12]), "#3–#5, #9, #11–#12");
    }
}
