//! Routing rules: which new instances are forwarded to which registered
//! peer. A rule names a destination AE title and any of the conditions
//! below; an instance that meets all of a rule's conditions is queued for
//! its destination (the queue is the index's `jobs` table, worked by
//! `custos-dimse::router`).

use serde::{Deserialize, Serialize};

use crate::query::{fold_case, wildcard};

/// One `[[route]]` of custos.toml. Patterns take `*` and `?`; text is
/// compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteRule {
    /// Named in logs, the audit trail and `custos jobs list`.
    pub name: String,
    /// AE title of a registered peer with an address and port.
    pub destination: String,
    /// The AE title that sent the instance (STOW-RS: none, so a rule with
    /// this condition takes only DIMSE arrivals).
    pub calling_ae: String,
    pub modality: String,
    pub sop_class: String,
    pub study_description: String,
}

/// What a rule looks at in a newly stored instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceFacts {
    pub calling_ae: String,
    pub modality: String,
    pub sop_class: String,
    pub study_description: String,
}

impl RouteRule {
    pub fn matches(&self, f: &InstanceFacts) -> bool {
        let holds = |pattern: &str, value: &str| {
            pattern.is_empty() || wildcard(&fold_case(pattern.trim()), &fold_case(value.trim()))
        };
        holds(&self.calling_ae, &f.calling_ae)
            && holds(&self.modality, &f.modality)
            && holds(&self.sop_class, &f.sop_class)
            && holds(&self.study_description, &f.study_description)
    }
}

/// Where a forwarding job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its next attempt (or being attempted, until its lease ends).
    Pending,
    Done,
    /// Dead letter: every attempt failed; `custos jobs retry` puts it back.
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Pending,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.name() == s)
    }
}

/// One instance to forward to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub sop_instance_uid: String,
    pub destination: String,
    /// The rule that queued it, or `manual`.
    pub reason: String,
    pub state: JobState,
    pub attempts: i64,
    /// Unix seconds of the next attempt (pending jobs).
    pub next_at: i64,
    pub last_error: String,
    pub created: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_needs_all_its_conditions() {
        let rule = RouteRule {
            name: "ct".into(),
            destination: "AI".into(),
            modality: "ct".into(),
            study_description: "*head*".into(),
            ..Default::default()
        };
        let facts = |modality: &str, desc: &str| InstanceFacts {
            calling_ae: "CT01".into(),
            modality: modality.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_description: desc.into(),
        };
        assert!(rule.matches(&facts("CT", "CT HEAD W/O")));
        assert!(!rule.matches(&facts("MR", "CT HEAD W/O")));
        assert!(!rule.matches(&facts("CT", "CHEST")));
        let any = RouteRule {
            destination: "OFFSITE".into(),
            ..Default::default()
        };
        assert!(any.matches(&facts("MR", "")));
    }
}
