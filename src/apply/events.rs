//! What an apply tells its user while it runs: one line per step on a
//! terminal or in a CI log (with a progress bar for long transfers on a
//! terminal), or one JSON object per line with `--json`.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::outcome::StepError;
use crate::plan::Step;
use crate::redact::Redactor;

/// One placement's measured downtime window (reported once the apply is done).
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub placement: String,
    pub steps: (usize, usize),
    pub total: Duration,
    pub dump_and_restore: Duration,
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human { color: bool, tty: bool },
    Json,
}

/// The apply's event sink (stdout). All text passes the redactor.
pub struct Events {
    mode: Mode,
    redactor: Redactor,
    total: usize,
    /// The bar of the running transfer and the template it is drawn with.
    bar: Mutex<Option<(indicatif::ProgressBar, &'static str)>>,
    began: std::time::Instant,
}

impl Events {
    pub fn new(mode: Mode, redactor: Redactor, total: usize) -> Self {
        Events {
            mode,
            redactor,
            total,
            bar: Mutex::new(None),
            began: std::time::Instant::now(),
        }
    }

    /// One JSON line; `at` is the seconds since the apply began, so that a
    /// pipeline can place every event on one clock.
    fn emit_json(&self, mut v: serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            o.insert("at".into(), json!(self.began.elapsed().as_secs_f64()));
        }
        let line = self.redactor.text(&v.to_string());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    fn line(&self, text: &str) {
        let text = self.redactor.text(text);
        if let Ok(bar) = self.bar.lock() {
            if let Some((b, _)) = bar.as_ref() {
                b.println(&text);
                return;
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }

    fn paint(&self, code: &str, text: &str) -> String {
        match self.mode {
            Mode::Human { color: true, .. } => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }

    pub fn begin(&self, run: &str, lock_ids: &[String], resumed: usize) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "apply_started", "run": run, "steps": self.total, "locks": lock_ids, "resumed_done": resumed})),
            Mode::Human { .. } => {
                for id in lock_ids {
                    self.line(&format!("Lock acquired: {id}"));
                }
                if resumed > 0 {
                    self.line(&format!("Resuming: {resumed} of {} steps were already done.", self.total));
                }
            }
        }
    }

    pub fn started(&self, position: usize, step: &Step) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "step_started", "position": position, "address": step.address, "action": step.action.verb(), "risk": step.risk.as_str()})),
            Mode::Human { .. } => self.line(&format!(
                "[{position}/{}] {} {} {}",
                self.total,
                step.action.symbol(),
                step.address,
                self.paint("2", &format!("— {}", step.summary))
            )),
        }
    }

    pub fn done(&self, position: usize, step: &Step, took: Duration, note: &str) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "step_done", "position": position, "address": step.address, "seconds": took.as_secs_f64(), "note": note})),
            Mode::Human { .. } => {
                let note = if note.is_empty() { String::new() } else { format!(": {note}") };
                self.line(&format!("[{position}/{}]   {}{note} ({:.1}s)", self.total, self.paint("32", "done"), took.as_secs_f64()));
            }
        }
    }

    pub fn skipped(&self, position: usize, step: &Step) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "step_skipped", "position": position, "address": step.address, "reason": "done before the interruption"})),
            Mode::Human { .. } => self.line(&format!("[{position}/{}] = {} (done before the interruption)", self.total, step.address)),
        }
    }

    /// A step failed; `--json` carries the code and help of the diagnostic
    /// it failed with, when it had one.
    pub fn failed(&self, position: usize, step: &Step, error: &StepError) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "step_failed", "position": position, "address": step.address, "error": error.to_string(), "code": error.code(), "help": error.help()})),
            Mode::Human { .. } => self.line(&format!("[{position}/{}]   {}: {error}", self.total, self.paint("1;31", "FAILED"))),
        }
    }

    /// A compensation that failed: the step is not undone.
    pub fn rollback_failed(&self, address: &str, error: &StepError) {
        let detail = format!("could not be undone: {error}");
        match self.mode {
            Mode::Json => self.emit_json(
                json!({"event": "rollback_kept", "address": address, "detail": detail, "code": error.code()}),
            ),
            Mode::Human { .. } => self.rollback("kept", address, &detail),
        }
    }

    pub fn rollback(&self, what: &str, address: &str, detail: &str) {
        match self.mode {
            Mode::Json => self.emit_json(
                json!({"event": format!("rollback_{what}"), "address": address, "detail": detail}),
            ),
            Mode::Human { .. } => {
                let tag = match what {
                    "undone" => self.paint("33", "undone"),
                    "kept" => self.paint("1;33", "NOT undone"),
                    other => other.to_string(),
                };
                self.line(&format!("  rollback {tag} {address}: {detail}"))
            }
        }
    }

    /// The first interrupt: which steps are being finished.
    pub fn interrupt_received(&self, signal: &str, running: &[(usize, &Step)]) {
        let steps: Vec<String> = running
            .iter()
            .map(|(n, s)| format!("step {n} ({})", s.address))
            .collect();
        let what = if steps.is_empty() {
            "no step is running".to_string()
        } else {
            format!("finishing {}", steps.join(", "))
        };
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "interrupt_received", "signal": signal, "finishing": running.iter().map(|(n, s)| json!({"position": n, "address": s.address})).collect::<Vec<_>>()})),
            Mode::Human { .. } => self.line(&self.paint("1;33", &format!(
                "Interrupt received ({signal}): {what}; no new step starts. Interrupt again to stop at once."
            ))),
        }
    }

    /// A second interrupt: the running steps are abandoned.
    pub fn stopping_at_once(&self, running: &[(usize, &Step)]) {
        let steps: Vec<String> = running
            .iter()
            .map(|(n, s)| format!("step {n} ({})", s.address))
            .collect();
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "stopping_at_once", "abandoned": running.iter().map(|(n, s)| json!({"position": n, "address": s.address})).collect::<Vec<_>>()})),
            Mode::Human { .. } => self.line(&self.paint("1;33", &if steps.is_empty() {
                "Second interrupt: stopping at once.".to_string()
            } else {
                format!("Second interrupt: stopping at once; {} did not finish and run(s) again on resume.", steps.join(", "))
            })),
        }
    }

    /// The apply stopped on an interrupt: the state of the world and how to resume.
    pub fn interrupted(
        &self,
        signal: &str,
        state: &[String],
        resume: &str,
        journal: &std::path::Path,
    ) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "apply_interrupted", "signal": signal, "state": state, "resume": resume, "journal": journal.display().to_string()})),
            Mode::Human { .. } => {
                self.line(&self.paint("1;31", &format!("Apply interrupted ({signal}). The world is part-way:")));
                for s in state {
                    self.line(&format!("  {s}"));
                }
                self.line(&format!("  journal: {}", journal.display()));
                self.line(&self.paint("1", &format!("Resume with: {resume}")));
            }
        }
    }

    pub fn note(&self, text: &str) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": "note", "text": text})),
            Mode::Human { .. } => self.line(text),
        }
    }

    pub fn finished(&self, summary: &str, ok: bool) {
        match self.mode {
            Mode::Json => self.emit_json(json!({"event": if ok { "apply_finished" } else { "apply_failed" }, "summary": summary})),
            Mode::Human { .. } => self.line(&if ok { self.paint("1;32", summary) } else { self.paint("1;31", summary) }),
        }
    }

    /// How long a placement's consumers were stopped, once the apply is done.
    pub fn downtime(&self, m: &Measured) {
        let other = m.total.saturating_sub(m.dump_and_restore);
        match self.mode {
            Mode::Json => self.emit_json(json!({
                "event": "downtime",
                "placement": m.placement,
                "first_step": m.steps.0,
                "last_step": m.steps.1,
                "seconds": m.total.as_secs_f64(),
                "dump_and_restore_seconds": m.dump_and_restore.as_secs_f64(),
                "other_seconds": other.as_secs_f64(),
            })),
            Mode::Human { .. } => self.line(&format!(
                "Downtime of {}: {:.1}s (steps {}–{}; dump and restore {:.1}s, everything else {:.1}s).",
                m.placement,
                m.total.as_secs_f64(),
                m.steps.0,
                m.steps.1,
                m.dump_and_restore.as_secs_f64(),
                other.as_secs_f64()
            )),
        }
    }

    /// Bytes moved so far by a transfer (dump or restore). `total` when it
    /// is known; otherwise `estimate`, a figure it will likely come near
    /// (a dump's database size), shown as such; otherwise no total at all.
    pub fn progress(&self, address: &str, bytes: u64, total: Option<u64>, estimate: Option<u64>) {
        let estimate = if total.is_some() { None } else { estimate };
        match self.mode {
            Mode::Json => self.emit_json(
                json!({"event": "progress", "address": address, "bytes": bytes, "total": total, "estimate": estimate}),
            ),
            Mode::Human { tty: true, .. } => {
                let (template, length) = bar_layout(total, estimate);
                if let Ok(mut bar) = self.bar.lock() {
                    let (b, drawn) =
                        bar.get_or_insert_with(|| (indicatif::ProgressBar::new(0), ""));
                    // One bar per step, whose phases may know their total or not.
                    if *drawn != template {
                        b.set_style(
                            indicatif::ProgressStyle::with_template(template)
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                        );
                        *drawn = template;
                    }
                    if let Some(t) = length {
                        b.set_length(t.max(bytes));
                    }
                    b.set_message(address.to_string());
                    b.set_position(bytes);
                }
            }
            Mode::Human { tty: false, .. } => {}
        }
    }

    /// End the current progress bar, if any.
    pub fn progress_done(&self) {
        if let Ok(mut bar) = self.bar.lock() {
            if let Some((b, _)) = bar.take() {
                b.finish_and_clear();
            }
        }
    }
}

/// How a transfer's bar is drawn: against its total when known; against an
/// estimate, marked as one (`~`), when only that is known; otherwise with
/// no total at all (never "of 0 B").
fn bar_layout(total: Option<u64>, estimate: Option<u64>) -> (&'static str, Option<u64>) {
    match (total, estimate) {
        (Some(t), _) => (
            "  {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            Some(t),
        ),
        (None, Some(e)) => (
            "  {msg} {bar:30} {bytes} of ~{total_bytes} (the database's size) {bytes_per_sec}",
            Some(e),
        ),
        (None, None) => ("  {msg} {spinner} {bytes} {bytes_per_sec}", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_total_is_an_estimate_or_no_total_never_zero() {
        assert_eq!(bar_layout(Some(10), Some(99)).1, Some(10));
        let (estimated, len) = bar_layout(None, Some(7 << 20));
        assert_eq!(len, Some(7 << 20));
        assert!(estimated.contains("~{total_bytes}"), "{estimated}");
        let (unknown, len) = bar_layout(None, None);
        assert_eq!(len, None);
        assert!(!unknown.contains("total"), "{unknown}");
        for (t, e) in [(Some(1), None), (None, Some(1)), (None, None)] {
            assert!(indicatif::ProgressStyle::with_template(bar_layout(t, e).0).is_ok());
        }
    }
}
