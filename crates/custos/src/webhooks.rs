//! Delivering webhook jobs: the queued body POSTed to the receiver with its
//! signature (`X-Custos-Signature: sha256=` HMAC-SHA256 of the body under
//! the webhook's secret), the event and a delivery id (`JOB.SEQ`) that
//! stays the same across retries of one event and differs between two
//! firings of a study's "stable", so a receiver can drop repeats.

use std::time::Duration;

use anyhow::Result;

use custos_archive::Archive;
use custos_archive::routing::Failure;
use custos_core::changes::signature;
use custos_core::routing::Job;

/// The HTTP client deliveries use.
pub fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// One attempt at a delivery.
pub async fn deliver(
    archive: &Archive,
    client: &reqwest::Client,
    job: &Job,
) -> Result<(), Failure> {
    let id = job
        .destination
        .strip_prefix("webhook:")
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or_else(|| Failure::Permanent(format!("`{}` is not a webhook", job.destination)))?;
    let hook = match archive.webhook(id).await {
        Ok(Some(h)) => h,
        Ok(None) => return Err(Failure::Permanent("the webhook was removed".into())),
        Err(e) => return Err(Failure::Transient(format!("index unavailable: {e}"))),
    };
    archive
        .webhook_allowed(&hook.url)
        .map_err(Failure::Permanent)?;
    // A node without the key that sealed it keeps the delivery waiting.
    let secret = archive.webhook_secret(&hook).map_err(Failure::Transient)?;
    let body = serde_json::from_str::<serde_json::Value>(&job.payload).unwrap_or_default();
    let event = body["event"].as_str().unwrap_or_default().to_string();
    let delivery = format!("{}.{}", job.id, body["seq"].as_i64().unwrap_or_default());
    let response = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-custos-event", event)
        .header("x-custos-delivery", delivery)
        .header(
            "x-custos-signature",
            signature(&secret, job.payload.as_bytes()),
        )
        .body(job.payload.clone())
        .send()
        .await
        // Without the URL: a hook's URL may carry its token (it goes to the
        // log and the jobs page).
        .map_err(|e| Failure::Transient(format!("delivery failed: {}", e.without_url())))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(Failure::Transient(format!(
            "the receiver answered HTTP {}",
            response.status()
        )))
    }
}
