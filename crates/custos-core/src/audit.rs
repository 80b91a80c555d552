//! Audit records (PS3.15 A.5: DICOM Audit Message format, event codes of the
//! DCM coding scheme) and the hash chain that makes the trail tamper-evident:
//! each record's hash covers its canonical body and the previous record's
//! hash, so changing or removing any record breaks every hash after it.

use sha2::{Digest, Sha256};

/// The DICOM audit event IDs Custos records (code, display name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventId {
    ApplicationActivity,
    AuditLogUsed,
    InstancesAccessed,
    InstancesTransferred,
    StudyDeleted,
    Import,
    Query,
    SecurityAlert,
    UserAuthentication,
}

impl EventId {
    pub fn code(self) -> u32 {
        match self {
            EventId::ApplicationActivity => 110100,
            EventId::AuditLogUsed => 110101,
            EventId::InstancesAccessed => 110103,
            EventId::InstancesTransferred => 110104,
            EventId::StudyDeleted => 110105,
            EventId::Import => 110107,
            EventId::Query => 110112,
            EventId::SecurityAlert => 110113,
            EventId::UserAuthentication => 110114,
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            EventId::ApplicationActivity => "Application Activity",
            EventId::AuditLogUsed => "Audit Log Used",
            EventId::InstancesAccessed => "DICOM Instances Accessed",
            EventId::InstancesTransferred => "DICOM Instances Transferred",
            EventId::StudyDeleted => "DICOM Study Deleted",
            EventId::Import => "Import",
            EventId::Query => "Query",
            EventId::SecurityAlert => "Security Alert",
            EventId::UserAuthentication => "User Authentication",
        }
    }
}

/// EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious, 12 major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success = 0,
    MinorFailure = 4,
    SeriousFailure = 8,
}

/// One thing that happened, as the code that saw it describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub event: EventId,
    /// EventActionCode: C(reate), R(ead), U(pdate), D(elete), E(xecute).
    pub action: char,
    pub outcome: Outcome,
    /// The user (web or user identity), empty when none.
    pub user: String,
    /// The DICOM peer's AE title, empty over HTTP.
    pub peer: String,
    /// Source address.
    pub source: String,
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    /// What exactly: the query keys, the destination, the reason.
    pub detail: String,
}

impl AuditEvent {
    pub fn new(event: EventId, action: char, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            event,
            action,
            outcome,
            user: String::new(),
            peer: String::new(),
            source: String::new(),
            patient_ids: Vec::new(),
            study_uids: Vec::new(),
            detail: String::new(),
        }
    }
}

/// A stored record: the event, when, and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    /// The canonical body the hash covers (JSON).
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash a record carries: SHA-256 over the previous hash and the body.
pub fn chain_hash(prev_hash: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first record (by position in `records`, which must be in order) whose
/// link or hash does not hold, if any.
pub fn first_break(records: &[AuditRecord], mut prev: String, mut prev_seq: i64) -> Option<i64> {
    for r in records {
        let gap = prev_seq != 0 && r.seq != prev_seq + 1;
        if gap || r.prev_hash != prev || chain_hash(&r.prev_hash, &r.body) != r.hash {
            return Some(r.seq);
        }
        prev = r.hash.clone();
        prev_seq = r.seq;
    }
    None
}

impl AuditEvent {
    /// Records what `q` asks for: the study UIDs and patient IDs it names go
    /// to the event; the keys and values, as text, are returned for `detail`.
    pub fn name_query(&mut self, q: &crate::query::Query) -> String {
        let (keys, studies, patients) = describe_query(q);
        self.study_uids = studies;
        self.patient_ids = patients;
        keys
    }
}

/// A query as the trail records it (the keys and values asked for), and the
/// study UIDs and patient IDs it names.
fn describe_query(q: &crate::query::Query) -> (String, Vec<String>, Vec<String>) {
    use crate::query::{Key, Matcher};
    let mut text = q.level.name().to_string();
    let (mut studies, mut patients) = (Vec::new(), Vec::new());
    for (key, m) in &q.conditions {
        let value = match m {
            Matcher::Universal => continue,
            Matcher::Single(v) | Matcher::Wildcard(v) => v.clone(),
            Matcher::Range { from, to } => format!(
                "{}-{}",
                from.as_deref().unwrap_or(""),
                to.as_deref().unwrap_or("")
            ),
            Matcher::List(v) => v.join("\\"),
        };
        text.push_str(&format!(" {}={}", key.name(), value));
        match (key, m) {
            (Key::StudyInstanceUID, Matcher::Single(v)) => studies.push(v.clone()),
            (Key::StudyInstanceUID, Matcher::List(v)) => studies.extend(v.iter().cloned()),
            (Key::PatientID, Matcher::Single(v)) => patients.push(v.clone()),
            _ => {}
        }
    }
    (text, studies, patients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: i64, prev: &str, body: &str) -> AuditRecord {
        AuditRecord {
            seq,
            time: "2026-01-01T00:00:00.000Z".into(),
            body: body.into(),
            prev_hash: prev.into(),
            hash: chain_hash(prev, body),
        }
    }

    #[test]
    fn chain_detects_edits_and_gaps() {
        let a = rec(1, GENESIS, "{\"a\":1}");
        let b = rec(2, &a.hash, "{\"b\":2}");
        let c = rec(3, &b.hash, "{\"c\":3}");
        let good = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(first_break(&good, GENESIS.into(), 0), None);
        let mut edited = good.clone();
        edited[1].body = "{\"b\":3}".into();
        assert_eq!(first_break(&edited, GENESIS.into(), 0), Some(2));
        let removed = vec![a, c];
        assert_eq!(first_break(&removed, GENESIS.into(), 0), Some(3));
        assert_eq!(EventId::Query.code(), 110112);
    }
}
