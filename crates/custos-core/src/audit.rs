//! Audit records (PS3.15 A.5: DICOM Audit Message format, event codes of the
//! DCM coding scheme) and the keyed chain that makes the trail tamper-evident:
//! each record's link is an HMAC-SHA256, under a key kept outside the index,
//! of every stored field (sequence number, time, previous link, body), so
//! whoever can write the database but not read the key cannot change, insert
//! or remove a record without breaking every link after it. Removing the
//! newest records is caught by checkpoints kept outside the index
//! (`custos_archive::audit`).

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The DICOM audit event IDs Custos records (code, display name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventId {
    ApplicationActivity,
    AuditLogUsed,
    InstancesAccessed,
    InstancesTransferred,
    StudyDeleted,
    Export,
    Import,
    /// A scheduled procedure (worklist item) created, changed or removed.
    OrderRecord,
    /// Patient or study attributes corrected, patients merged.
    PatientRecord,
    /// A performed procedure step reported (MPPS).
    ProcedureRecord,
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
            EventId::Export => 110106,
            EventId::Import => 110107,
            EventId::OrderRecord => 110109,
            EventId::PatientRecord => 110110,
            EventId::ProcedureRecord => 110111,
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
            EventId::Export => "Export",
            EventId::Import => "Import",
            EventId::OrderRecord => "Order Record",
            EventId::PatientRecord => "Patient Record",
            EventId::ProcedureRecord => "Procedure Record",
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

/// Which audit records a reader wants: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSearch {
    /// Records after this sequence number (0: from the start).
    pub after: i64,
    /// Records before this sequence number.
    pub before: Option<i64>,
    /// The newest matches first (else the oldest first).
    pub newest_first: bool,
    pub limit: usize,
    /// The web user or DICOM user identity, exactly.
    pub user: Option<String>,
    /// A patient ID the record names.
    pub patient_id: Option<String>,
    /// The event ID's code (110100 ...).
    pub event_code: Option<u32>,
    /// Only records about a DICOM peer (associations, DIMSE operations).
    pub dicom_peers_only: bool,
    /// Record time bounds, RFC 3339 UTC (`2026-12-01`, or a full time):
    /// `from` inclusive, `to` exclusive.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The secret that keys the chain (32 random bytes, hex in a 0600 file).
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn generate() -> AuditKey {
        AuditKey(rand::random())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<AuditKey> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(AuditKey(bytes.try_into().ok()?))
    }

    /// The link a record carries: HMAC-SHA256 over every stored field.
    pub fn link(&self, seq: i64, time: &str, prev_hash: &str, body: &str) -> String {
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        for part in [seq.to_string().as_str(), time, prev_hash, body] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        hex::encode(m.finalize().into_bytes())
    }
}

/// The unkeyed hash of trails written before the chain was keyed: SHA-256
/// over the previous hash and the body. Accepted only for a trail's oldest
/// records, before the first keyed one.
pub fn legacy_hash(prev_hash: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Walks a trail in order, page by page, and stops at the first record whose
/// number, link or hash does not hold.
#[derive(Debug, Clone)]
pub struct ChainWalk {
    pub head: String,
    pub head_seq: i64,
    /// Records that verified.
    pub good: u64,
    /// Of those, legacy (unkeyed) records at the start of the trail.
    pub legacy: u64,
}

impl Default for ChainWalk {
    fn default() -> Self {
        ChainWalk {
            head: GENESIS.into(),
            head_seq: 0,
            good: 0,
            legacy: 0,
        }
    }
}

impl ChainWalk {
    /// Checks the next records; returns the sequence number of the first
    /// that breaks the chain, if any.
    pub fn step(&mut self, key: &AuditKey, records: &[AuditRecord]) -> Option<i64> {
        for r in records {
            let in_order = r.seq == self.head_seq + 1;
            let keyed = r.hash == key.link(r.seq, &r.time, &r.prev_hash, &r.body);
            // Legacy records only while nothing keyed came before them.
            let legacy =
                !keyed && self.legacy == self.good && r.hash == legacy_hash(&r.prev_hash, &r.body);
            if !in_order || r.prev_hash != self.head || !(keyed || legacy) {
                return Some(r.seq);
            }
            self.head = r.hash.clone();
            self.head_seq = r.seq;
            self.good += 1;
            self.legacy += u64::from(legacy);
        }
        None
    }
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

    fn key() -> AuditKey {
        AuditKey([7; 32])
    }

    fn rec(seq: i64, prev: &str, body: &str) -> AuditRecord {
        let time = "2026-01-01T00:00:00.000Z";
        AuditRecord {
            seq,
            time: time.into(),
            body: body.into(),
            prev_hash: prev.into(),
            hash: key().link(seq, time, prev, body),
        }
    }

    fn first_break(records: &[AuditRecord]) -> Option<i64> {
        ChainWalk::default().step(&key(), records)
    }

    #[test]
    fn chain_detects_edits_gaps_and_renumbering() {
        let a = rec(1, GENESIS, "{\"a\":1}");
        let b = rec(2, &a.hash, "{\"b\":2}");
        let c = rec(3, &b.hash, "{\"c\":3}");
        let good = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(first_break(&good), None);
        let mut edited = good.clone();
        edited[1].body = "{\"b\":3}".into();
        assert_eq!(first_break(&edited), Some(2));
        let mut retimed = good.clone();
        retimed[1].time = "2025-01-01T00:00:00.000Z".into();
        assert_eq!(first_break(&retimed), Some(2), "the time is covered");
        assert_eq!(first_break(&[a.clone(), c.clone()]), Some(3));
        // Rewritten with the unkeyed hash by someone without the key.
        let mut forged = good.clone();
        forged[2].body = "{\"c\":4}".into();
        forged[2].hash = legacy_hash(&forged[2].prev_hash, &forged[2].body);
        assert_eq!(first_break(&forged), Some(3));
        // Another key does not verify.
        let mut walk = ChainWalk::default();
        assert_eq!(walk.step(&AuditKey([8; 32]), &good), Some(1));
        assert_eq!(EventId::Query.code(), 110112);
    }

    #[test]
    fn an_old_unkeyed_trail_verifies_as_legacy_before_its_first_keyed_record() {
        let a_body = "{\"a\":1}";
        let a = AuditRecord {
            seq: 1,
            time: "t".into(),
            body: a_body.into(),
            prev_hash: GENESIS.into(),
            hash: legacy_hash(GENESIS, a_body),
        };
        let b = rec(2, &a.hash, "{\"b\":2}");
        let mut walk = ChainWalk::default();
        assert_eq!(walk.step(&key(), &[a.clone(), b.clone()]), None);
        assert_eq!((walk.good, walk.legacy), (2, 1));
        let c_body = "{\"c\":3}";
        let c = AuditRecord {
            seq: 3,
            time: "t".into(),
            body: c_body.into(),
            prev_hash: b.hash.clone(),
            hash: legacy_hash(&b.hash, c_body),
        };
        assert_eq!(
            walk.step(&key(), &[c]),
            Some(3),
            "no legacy after a keyed record"
        );
    }

    #[test]
    fn keys_round_trip_as_hex_and_never_print() {
        let k = AuditKey::generate();
        assert_eq!(AuditKey::from_hex(&k.to_hex()), Some(k.clone()));
        assert_eq!(format!("{k:?}"), "AuditKey(..)");
        assert_eq!(AuditKey::from_hex("abcd"), None);
    }
}
