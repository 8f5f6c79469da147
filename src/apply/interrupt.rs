//! Interrupts (SIGINT from Ctrl-C, SIGTERM from a CI system cancelling a
//! job) while an apply runs. The first stops the apply cleanly: no new step
//! starts, the running ones finish, the journal and the Lease record the
//! stop, and the user is told what state the world is in and the exact
//! command that resumes it. A second stops at once (the running steps are
//! abandoned and run again on resume), and still says all that. The
//! process exits 1, as Terraform does.

use std::sync::Arc;

use tokio::sync::watch;

/// Interrupts received since [`Interrupts::install`].
pub struct Interrupts {
    count: watch::Receiver<usize>,
    last: Arc<std::sync::Mutex<&'static str>>,
}

impl Interrupts {
    /// Catch SIGINT and SIGTERM from now on (in a tokio runtime). Before
    /// this the default applies: the process ends at once, which is right
    /// while nothing has been changed.
    pub fn install() -> Interrupts {
        let (tx, rx) = watch::channel(0usize);
        let last = Arc::new(std::sync::Mutex::new("SIGINT"));
        let name = last.clone();
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::spawn(async move {
                    loop {
                        let which = tokio::select! {
                            s = int.recv() => s.map(|()| "SIGINT"),
                            s = term.recv() => s.map(|()| "SIGTERM"),
                        };
                        let Some(which) = which else { return };
                        if let Ok(mut n) = name.lock() {
                            *n = which;
                        }
                        tx.send_modify(|c| *c += 1);
                    }
                });
            }
            // Without handlers the default stays: an interrupt ends the
            // process, and the journal and the Lease tell what was left.
            _ => drop(tx),
        }
        Interrupts { count: rx, last }
    }

    /// No interrupt will ever be seen (tests of the executor, resumes
    /// driven by code).
    pub fn none() -> Interrupts {
        let (_, rx) = watch::channel(0usize);
        Interrupts {
            count: rx,
            last: Arc::new(std::sync::Mutex::new("SIGINT")),
        }
    }

    /// How many interrupts arrived so far.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// The name of the last signal (`SIGINT`, `SIGTERM`).
    pub fn signal(&self) -> &'static str {
        self.last.lock().map(|n| *n).unwrap_or("SIGINT")
    }

    /// Resolves once `n` interrupts have arrived (never, if they cannot).
    pub async fn reached(&self, n: usize) {
        let mut rx = self.count.clone();
        if rx.wait_for(|c| *c >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
