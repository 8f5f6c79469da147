//! The DOT graph (`pgplan graph`): one node per step, labelled with its
//! number, symbol and address, coloured and shaped by risk; one cluster per
//! placement; one edge per dependency, from the step depended on to the
//! step that waits for it. The summary is the node's tooltip. Steps inside
//! a downtime window get a double border and a `(downtime)` line, in plain
//! text because a symbol may be missing from the font Graphviz uses.
//!
//! Node ids are `s{position}`, so no address ever needs quoting as an id;
//! every label and attribute value is a quoted, escaped DOT string.

use super::{groups, journey_label, summary_line, Positions};
use crate::plan::{Plan, Risk, Step};

pub(super) fn render(plan: &Plan) -> String {
    let positions = Positions::new(plan);
    let mut out = String::from("digraph pgplan {\n");
    out.push_str(&format!(
        "  graph [label={}, labelloc=t, fontname=\"Helvetica\", rankdir=TB];\n",
        quote(&summary_line(plan))
    ));
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=11];\n",
    );
    out.push_str("  edge [color=\"#666666\"];\n");
    for (g, group) in groups(plan).iter().enumerate() {
        out.push_str(&format!("  subgraph cluster_{g} {{\n"));
        out.push_str(&format!(
            "    label={};\n    style=\"rounded,dashed\";\n    color=\"#999999\";\n",
            quote(&format!("{}: {}", group.title(), group.journey()))
        ));
        if group.steps.is_empty() {
            // A cluster needs a node to be drawn at all.
            out.push_str(&format!(
                "    empty_{g} [label={}, shape=plaintext, style=\"\"];\n",
                quote(&journey_label(crate::addr::Journey::None))
            ));
        }
        for (position, step) in &group.steps {
            out.push_str(&format!("    {};\n", node(*position, step)));
        }
        out.push_str("  }\n");
    }
    for (i, step) in plan.steps.iter().enumerate() {
        for dep in &step.depends_on {
            match positions.get(dep) {
                Some(from) => out.push_str(&format!("  s{from} -> s{};\n", i + 1)),
                // Never expected: the planner only depends on its own steps.
                None => out.push_str(&format!("  {} -> s{} [style=dashed];\n", quote(dep), i + 1)),
            }
        }
    }
    out.push_str("}\n");
    out
}

fn node(position: usize, step: &Step) -> String {
    let mut label = vec![format!(
        "#{position} {} {}",
        step.action.symbol(),
        step.address
    )];
    if step.risk != Risk::Safe {
        label.push(format!("[{}]", step.risk.as_str()));
    }
    if step.in_downtime {
        label.push("(downtime)".into());
    }
    let (fill, border, shape, width) = match step.risk {
        Risk::Safe => ("#e8f5e9", "#2e7d32", "box", "1"),
        Risk::Disruptive => ("#fff3e0", "#ef6c00", "box", "2"),
        Risk::Destructive => ("#ffebee", "#c62828", "octagon", "3"),
    };
    let label = label
        .iter()
        .map(|l| escape(l))
        .collect::<Vec<_>>()
        .join("\\n");
    let mut attrs = format!(
        "s{position} [label=\"{label}\", shape={shape}, fillcolor=\"{fill}\", color=\"{border}\", penwidth={width}, tooltip={}",
        quote(&step.summary)
    );
    if step.in_downtime {
        attrs.push_str(", peripheries=2");
    }
    attrs.push(']');
    attrs
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// Escape for inside a DOT string: backslashes and quotes, and line breaks
/// as DOT's own `\n`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a \"b\" \\ c\nd"), "\"a \\\"b\\\" \\\\ c\\nd\"");
    }
}
