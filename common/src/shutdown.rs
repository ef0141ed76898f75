//! The explicit shutdown signal handed to every task (the mini-redis pattern).
//!
//! Intake (HTTP accept, Kafka poll) stops when it fires; work already taken is
//! finished, produced, committed; then the task returns.
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default, Debug)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown has been requested.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }

    /// Fires this shutdown on SIGTERM (what Kubernetes sends) or Ctrl-C.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = term.recv() => {},
                            _ = ctrl_c => {},
                            _ = this.wait() => return,
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                        tokio::select! { _ = ctrl_c => {}, _ = this.wait() => return }
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutdown requested: stopping intake and draining");
            this.trigger();
        });
    }
}
