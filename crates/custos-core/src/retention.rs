//! Retention: which studies a policy says may go, decided with a clock the
//! caller passes in (the server's, or a planning date). A study is kept when
//! in doubt: protected, still receiving, without the date a policy needs, or
//! matching no policy.

use serde::{Deserialize, Serialize};

use crate::query::{fold_case, wildcard};

/// One `[[retention.policy]]`: studies of `modality` (a pattern; empty:
/// any) older than `study_age_days` by Study Date, or than
/// `received_age_days` by their last arrival (0: that age is not used; a
/// policy with both needs both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    pub name: String,
    pub modality: String,
    pub study_age_days: u32,
    pub received_age_days: u32,
}

/// What retention looks at in a stored study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyActivity {
    pub study_uid: String,
    pub patient_id: String,
    /// YYYYMMDD, or empty.
    pub study_date: String,
    /// Modalities in the study, backslash-separated.
    pub modalities: String,
    /// Unix seconds of the last instance received.
    pub last_received: i64,
    pub protected: bool,
}

/// The decision for one study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deleted under this policy.
    Delete(String),
    Protected,
    /// An instance arrived less than the quiet period ago.
    Receiving,
    /// No policy applies (yet).
    Keep,
}

impl RetentionPolicy {
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a [[retention.policy]] needs a name".into());
        }
        if self.study_age_days == 0 && self.received_age_days == 0 {
            return Err(format!(
                "[[retention.policy]] `{}`: set study_age_days or received_age_days",
                self.name
            ));
        }
        Ok(())
    }

    fn applies(&self, s: &StudyActivity, now: i64) -> bool {
        let modality = self.modality.trim().is_empty()
            || s.modalities
                .split('\\')
                .any(|m| wildcard(&fold_case(self.modality.trim()), &fold_case(m.trim())));
        let by_date = self.study_age_days == 0
            || (s.study_date.len() == 8
                && s.study_date.bytes().all(|b| b.is_ascii_digit())
                && s.study_date < ymd(now - i64::from(self.study_age_days) * 86_400));
        let by_arrival = self.received_age_days == 0
            || s.last_received < now - i64::from(self.received_age_days) * 86_400;
        modality && by_date && by_arrival
    }
}

/// What happens to `study` at `now` under `policies`, with `quiet_secs` of
/// silence needed after its last instance.
pub fn verdict(
    policies: &[RetentionPolicy],
    study: &StudyActivity,
    now: i64,
    quiet_secs: i64,
) -> Verdict {
    if study.protected {
        return Verdict::Protected;
    }
    if study.last_received > now - quiet_secs {
        return Verdict::Receiving;
    }
    match policies.iter().find(|p| p.applies(study, now)) {
        Some(p) => Verdict::Delete(p.name.clone()),
        None => Verdict::Keep,
    }
}

/// The UTC calendar date of unix time `t` as YYYYMMDD.
pub fn ymd(t: i64) -> String {
    let (y, m, d) = crate::calendar::civil_from_days(t.div_euclid(86_400));
    format!("{y:04}{m:02}{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// 2026-12-04T00:00:00Z
    const NOW: i64 = 1_796_342_400;

    fn study(date: &str, modalities: &str, received_days_ago: i64) -> StudyActivity {
        StudyActivity {
            study_uid: "1.2".into(),
            patient_id: "P".into(),
            study_date: date.into(),
            modalities: modalities.into(),
            last_received: NOW - received_days_ago * DAY,
            protected: false,
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(ymd(0), "19700101");
        assert_eq!(ymd(NOW), "20261204");
        assert_eq!(ymd(951_782_400), "20000229");
        assert_eq!(ymd(-DAY), "19691231");
    }

    #[test]
    fn policies_delete_only_what_they_name_and_doubt_keeps() {
        let ct10 = RetentionPolicy {
            name: "ct-10y".into(),
            modality: "CT".into(),
            study_age_days: 3650,
            received_age_days: 0,
        };
        let any30 = RetentionPolicy {
            name: "all-30d".into(),
            received_age_days: 30,
            ..Default::default()
        };
        let hour = 3600;
        let v = |s: &StudyActivity, p: &[RetentionPolicy]| verdict(p, s, NOW, hour);
        let old_ct = study("20010101", "CT\\SR", 400);
        assert_eq!(
            v(&old_ct, std::slice::from_ref(&ct10)),
            Verdict::Delete("ct-10y".into())
        );
        assert_eq!(
            v(&study("20200101", "CT", 400), std::slice::from_ref(&ct10)),
            Verdict::Keep
        );
        assert_eq!(
            v(&study("20010101", "MR", 400), std::slice::from_ref(&ct10)),
            Verdict::Keep
        );
        assert_eq!(
            v(&study("", "CT", 400), std::slice::from_ref(&ct10)),
            Verdict::Keep,
            "no date: kept"
        );
        assert_eq!(
            v(&study("20260101", "MR", 31), &[ct10.clone(), any30.clone()]),
            Verdict::Delete("all-30d".into())
        );
        assert_eq!(
            v(&study("20260101", "MR", 29), std::slice::from_ref(&any30)),
            Verdict::Keep
        );
        let mut protected = old_ct.clone();
        protected.protected = true;
        assert_eq!(
            v(&protected, std::slice::from_ref(&ct10)),
            Verdict::Protected
        );
        let mut arriving = old_ct.clone();
        arriving.last_received = NOW - 60;
        assert_eq!(
            v(&arriving, std::slice::from_ref(&ct10)),
            Verdict::Receiving
        );
        assert!(
            RetentionPolicy {
                name: "x".into(),
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }
}
