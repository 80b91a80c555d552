//! The change feed and webhooks: every instance, series and study stored,
//! updated or deleted gets a gap-free sequence number (`/api/changes`), and
//! registered webhooks receive the events they subscribed to, signed with
//! HMAC-SHA256 over the body with their secret.

use hmac::{KeyInit, Mac};
use serde::Serialize;

/// What happened: `{level}.{kind}`.
pub const EVENTS: [&str; 8] = [
    "instance.stored",
    "instance.updated",
    "instance.deleted",
    "series.stored",
    "series.deleted",
    "study.stored",
    "study.deleted",
    // Fired once a study has had no new instance for a while (configured).
    STUDY_STABLE,
];

pub const STUDY_STABLE: &str = "study.stable";

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub seq: i64,
    /// `stored`, `updated` or `deleted`.
    pub kind: String,
    /// `instance`, `series` or `study`.
    pub level: String,
    pub study: String,
    /// Empty when not known (study-level changes, deleted instances).
    pub series: String,
    pub instance: String,
    /// Unix seconds.
    pub at: i64,
}

impl Change {
    pub fn event(&self) -> String {
        format!("{}.{}", self.level, self.kind)
    }

    /// Whether this change re-arms its study's "stable" timer.
    pub fn touches_study(&self) -> bool {
        self.level == "instance" && self.kind != "deleted"
    }
}

/// A webhook's delivery body for a change.
#[derive(Serialize)]
pub struct ChangeEvent<'a> {
    pub event: String,
    #[serde(flatten)]
    pub change: &'a Change,
}

/// The delivery body of "study.stable": the study, stable as of change
/// `seq` (its last instance's), which tells one firing from the next.
#[derive(Serialize)]
pub struct StableEvent<'a> {
    pub event: &'static str,
    pub study: &'a str,
    pub seq: i64,
}

/// A registered webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    /// Signs deliveries; never shown after it is set.
    pub secret: String,
    pub created: i64,
}

impl Webhook {
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// Events as given (`a,b`), checked against [`EVENTS`].
pub fn parse_events(list: &str) -> Result<Vec<String>, String> {
    let events: Vec<String> = list
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if events.is_empty() {
        return Err(format!("name at least one event: {}", EVENTS.join(", ")));
    }
    for e in &events {
        if !EVENTS.contains(&e.as_str()) {
            return Err(format!(
                "unknown event `{e}` (one of {})",
                EVENTS.join(", ")
            ));
        }
    }
    Ok(events)
}

/// The `X-Custos-Signature` header value of `body` under `secret`:
/// `sha256=` and the hex HMAC-SHA256.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked() {
        assert_eq!(
            parse_events("study.stable, instance.stored"),
            Ok(vec![
                "study.stable".to_string(),
                "instance.stored".to_string()
            ])
        );
        assert!(parse_events("instance.moved").is_err());
        assert!(parse_events(" , ").is_err());
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
