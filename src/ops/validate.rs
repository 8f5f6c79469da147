//! `pgplan validate`: load the spec with every environment and report.

use crate::ops::{OpsError, SpecSource};

pub struct ValidateOptions {
    pub source: SpecSource,
}

/// Returns a one-line confirmation; errors carry every finding.
pub fn run(opts: &ValidateOptions) -> Result<String, OpsError> {
    let (spec, _) = opts.source.load(None, true)?;
    let envs: usize = spec
        .placements
        .iter()
        .map(|p| p.spec().environments.len())
        .sum();
    Ok(format!(
        "{} is valid: {} placement(s){}",
        spec.file.name,
        spec.placements.len(),
        if envs > 0 {
            format!(", {envs} environment(s) checked")
        } else {
            String::new()
        }
    ))
}
