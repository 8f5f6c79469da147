//! Diagnostic logging: the `tracing` subscriber the binary installs, which
//! writes to stderr and only through the redactor.
//!
//! Quiet by default: only warnings from pgplan itself are shown, because
//! stdout and stderr already carry the plan, the progress and the errors.
//! `-v` shows pgplan's info lines, `-vv` its debug lines (with info from
//! the Kubernetes and AWS clients), `-vvv` everything at trace. `RUST_LOG`,
//! when set, replaces that choice entirely (`RUST_LOG=pgplan=debug,kube=trace`).
//!
//! Every value that may be secret is registered here as soon as pgplan
//! learns it ([`redact_also`]: each `${VAR}` looked up, each password
//! verifier read at apply); a log line is redacted as a whole, after it
//! is formatted and before it is written, so a secret cannot reach stderr
//! through a field, a debug format or an error message.

use std::io::Write;
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::redact::Redactor;

/// Values never to be written into a log line.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a value that must never appear in a log line.
pub fn redact_also(secret: &str) {
    if secret.len() < crate::redact::MIN_SECRET_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_string());
    }
}

/// The log redactor as it stands now.
fn redactor() -> Redactor {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    Redactor::new(all.iter().cloned())
}

/// Redacts `text` with every secret registered so far.
pub fn redacted(text: &str) -> String {
    redactor().text(text)
}

/// The filter for `-v` given `count` times, when `RUST_LOG` is not set.
pub fn default_filter(count: u8) -> &'static str {
    match count {
        0 => "pgplan=warn",
        1 => "pgplan=info",
        2 => "pgplan=debug,kube=info,aws_config=info,aws_sdk_rds=info",
        _ => "trace",
    }
}

/// Installs the subscriber: `RUST_LOG` if set (and valid), else the level
/// `-v` asks for; lines go to stderr, redacted. Called once by the binary;
/// a second call changes nothing.
pub fn install(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            let _ = writeln!(
                std::io::stderr(),
                "warning: RUST_LOG={v:?} is not a valid filter ({e}); using {}",
                default_filter(verbose)
            );
            EnvFilter::new(default_filter(verbose))
        }),
        _ => EnvFilter::new(default_filter(verbose)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr)
        .with_ansi(false)
        .with_target(true)
        .try_init();
}

/// Makes a [`LineWriter`] per event.
struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::new())
    }
}

/// Collects one formatted event, then writes it redacted, in one write, when
/// dropped: redacting whole lines means a secret split over several writes
/// by the formatter is still found.
pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = redacted(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_secret_is_replaced_in_a_whole_line() {
        redact_also("log-canary-secret-913");
        redact_also("ab");
        let mut w = LineWriter(Vec::new());
        // The formatter may write a line in pieces.
        w.write_all(b"connecting with log-canary-").unwrap();
        w.write_all(b"secret-913 to ab\n").unwrap();
        assert_eq!(
            redacted(&String::from_utf8_lossy(&w.0)),
            "connecting with (sensitive) to ab\n"
        );
        w.0.clear();
    }

    #[test]
    fn verbosity_widens_the_filter() {
        assert_eq!(default_filter(0), "pgplan=warn");
        assert!(default_filter(2).starts_with("pgplan=debug"));
        assert_eq!(default_filter(7), "trace");
        for n in 0..4 {
            assert!(EnvFilter::try_new(default_filter(n)).is_ok());
        }
    }
}
