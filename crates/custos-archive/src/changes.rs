//! The change feed and webhooks as use cases: the sequencer that numbers
//! waiting changes (one task per server; the index keeps several servers
//! from numbering at once), reading the feed, and registering webhooks
//! (the CLI and the admin API share these).

use std::sync::Arc;
use std::time::Duration;

use custos_core::changes::{Change, Webhook, parse_events};
use custos_index::IndexError;

use crate::Archive;

/// Changes numbered per transaction.
const SEQUENCE_BATCH: usize = 500;

/// A webhook that cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Secrets shorter than this are refused (they sign every delivery).
pub const MIN_SECRET: usize = 16;

impl Archive {
    /// Numbers waiting changes until `shutdown` turns true, every fifth of
    /// a second (at once again while there is a full batch): a webhook hears
    /// of a change within about that, and numbering stays a few large writes
    /// a second instead of one per stored instance competing with ingest
    /// for the index's writer.
    pub async fn run_sequencer(
        self: Arc<Self>,
        stable_secs: i64,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = crate::routing::now();
            match self
                .index
                .sequence_changes(SEQUENCE_BATCH, now, stable_secs)
                .await
            {
                Ok(n) if n > 0 => {
                    // Webhook deliveries may have been queued.
                    self.queued.notify_one();
                    if n == SEQUENCE_BATCH {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "change feed: cannot number changes"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The hosts webhooks may be sent to (`[webhooks] hosts`; set once).
    pub fn set_webhook_hosts(&self, hosts: Vec<String>) {
        let _ = self.webhook_hosts.set(hosts);
    }

    /// Whether events may be sent to `url`: https (or http to loopback) to
    /// a host `[webhooks] hosts` lists. Checked when a webhook is added and
    /// again at each delivery (the list may have changed).
    pub fn webhook_allowed(&self, url: &str) -> Result<(), String> {
        let host = custos_core::routing::outbound_url(url)?;
        let allowed = self
            .webhook_hosts
            .get()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if allowed.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            Ok(())
        } else {
            Err(format!(
                "`{host}` is not among [webhooks] hosts in custos.toml"
            ))
        }
    }

    /// The feed after `after`, at most `limit`.
    pub async fn changes(&self, after: i64, limit: usize) -> Result<Vec<Change>, IndexError> {
        self.index.changes(after, limit).await
    }

    /// Registers a webhook; returns its id.
    pub async fn add_webhook(
        &self,
        url: &str,
        events: &str,
        secret: &str,
    ) -> Result<i64, WebhookError> {
        self.webhook_allowed(url).map_err(WebhookError::Invalid)?;
        let events = parse_events(events).map_err(WebhookError::Invalid)?;
        if secret.chars().count() < MIN_SECRET {
            return Err(WebhookError::Invalid(format!(
                "the secret needs {MIN_SECRET} characters or more"
            )));
        }
        // Sealed under the data folder's key: the index alone does not
        // give the secret away.
        let sealed = self
            .secrets
            .get()
            .ok_or_else(|| WebhookError::Invalid("no secrets key is loaded".into()))?
            .seal(secret)
            .map_err(|e| WebhookError::Invalid(e.to_string()))?;
        Ok(self
            .index
            .add_webhook(url, &events, &sealed, crate::routing::now())
            .await?)
    }

    /// The key that seals secrets kept in the index (`secrets.key`).
    pub fn set_secret_box(&self, secrets: custos_tls::sealed::SecretBox) {
        let _ = self.secrets.set(secrets);
    }

    /// A webhook's signing secret, unsealed.
    pub fn webhook_secret(&self, hook: &Webhook) -> Result<String, String> {
        self.secrets
            .get()
            .ok_or("no secrets key is loaded")?
            .open(&hook.secret)
            .map_err(|e| e.to_string())
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, IndexError> {
        self.index.webhooks().await
    }

    pub async fn webhook(&self, id: i64) -> Result<Option<Webhook>, IndexError> {
        Ok(self
            .index
            .webhooks()
            .await?
            .into_iter()
            .find(|w| w.id == id))
    }

    /// Removes a webhook and cancels its waiting deliveries.
    pub async fn remove_webhook(&self, id: i64) -> Result<bool, IndexError> {
        self.index.remove_webhook(id).await
    }
}
