//! Routing rules: which new instances are forwarded to which registered
//! peer or DICOMweb server. A rule names a destination and any of the
//! conditions below; an instance that meets all of a rule's conditions is
//! queued for its destination, alone or (with `stable_seconds`) as part of
//! its study once the study has been quiet that long. The queue is the
//! index's `jobs` table, worked by the binary's `forward` loop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::query::{Key, KeyKind, fold_case, wildcard};

/// One `[[route]]` of custos.toml. Patterns take `*` and `?`; text is
/// compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteRule {
    /// Named in logs, the audit trail and `custos jobs list`.
    pub name: String,
    /// AE title of a registered peer with an address and port, or the name
    /// of a `[[dicomweb_destination]]`.
    pub destination: String,
    /// The AE title that sent the instance (STOW-RS: none, so a rule with
    /// this condition takes only DIMSE arrivals).
    pub calling_ae: String,
    pub modality: String,
    pub sop_class: String,
    pub study_description: String,
    /// 0: each instance is forwarded as it arrives. Otherwise the whole study
    /// is sent once no instance of it has arrived for this many seconds (and
    /// again, whole, if more arrive later).
    pub stable_seconds: u64,
    /// Any indexed attribute by keyword (`[route.attributes]`, e.g.
    /// `PatientID = "RES-*"`, `StudyDate = "20260101-20261231"`): a pattern,
    /// or for dates an inclusive range.
    pub attributes: BTreeMap<String, String>,
}

/// What a rule looks at in a newly stored instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceFacts {
    pub study_instance_uid: String,
    pub calling_ae: String,
    pub modality: String,
    pub sop_class: String,
    pub study_description: String,
    /// The values of the attributes some rule names in `attributes`.
    pub attributes: BTreeMap<Key, String>,
}

fn holds(pattern: &str, value: &str) -> bool {
    pattern.is_empty() || wildcard(&fold_case(pattern.trim()), &fold_case(value.trim()))
}

impl RouteRule {
    pub fn matches(&self, f: &InstanceFacts) -> bool {
        holds(&self.calling_ae, &f.calling_ae)
            && holds(&self.modality, &f.modality)
            && holds(&self.sop_class, &f.sop_class)
            && holds(&self.study_description, &f.study_description)
            && self.attributes.iter().all(|(name, pattern)| {
                let Some(key) = attribute_key(name) else {
                    return false;
                };
                let value = f.attributes.get(&key).map(String::as_str).unwrap_or("");
                match pattern.split_once('-') {
                    Some((from, to)) if key.kind() == KeyKind::Date => {
                        !value.is_empty()
                            && (from.is_empty() || value >= from.trim())
                            && (to.is_empty() || value <= to.trim())
                    }
                    _ => holds(pattern, value),
                }
            })
    }

    /// The indexed attributes the rule's `attributes` name; an error for a
    /// name that is not one (refused at start).
    pub fn attribute_keys(&self) -> Result<Vec<Key>, String> {
        self.attributes
            .keys()
            .map(|name| {
                attribute_key(name).ok_or_else(|| {
                    format!(
                        "[[route]] `{}`: `{name}` is not an indexed attribute (one of {})",
                        self.name,
                        Key::ALL
                            .iter()
                            .filter(|k| k.kind() != KeyKind::Computed)
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect()
    }
}

/// An indexed, stored attribute by its keyword.
fn attribute_key(name: &str) -> Option<Key> {
    Key::ALL
        .iter()
        .copied()
        .find(|k| k.name() == name.trim() && k.kind() != KeyKind::Computed)
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

/// What a job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobScope {
    /// One instance, by SOP Instance UID.
    Instance,
    /// Every instance of a study, by Study Instance UID.
    Study,
    /// A storage commitment report (N-EVENT-REPORT) for the peer, by
    /// Transaction UID; what it reports is the job's payload.
    Commitment,
    /// A webhook delivery (destination `webhook:ID`), by change sequence or
    /// `stable:` and a Study Instance UID; the body is the payload.
    Webhook,
}

impl JobScope {
    pub fn name(self) -> &'static str {
        match self {
            JobScope::Instance => "instance",
            JobScope::Study => "study",
            JobScope::Commitment => "commitment",
            JobScope::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<JobScope> {
        [
            JobScope::Instance,
            JobScope::Study,
            JobScope::Commitment,
            JobScope::Webhook,
        ]
        .into_iter()
        .find(|j| j.name() == s)
    }
}

/// One instance or study to forward to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub scope: JobScope,
    /// The SOP Instance UID, Study Instance UID or Transaction UID, as
    /// `scope` says.
    pub uid: String,
    /// What a commitment report says (empty for other jobs, and in listings).
    pub payload: String,
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

/// A DICOMweb server new instances can be forwarded to by STOW-RS
/// (`[[dicomweb_destination]]` in custos.toml). Credentials come from files,
/// never from the configuration itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebDestination {
    /// What rules and manual sends call it; not a registered peer's AE title.
    pub name: String,
    /// The service's base URL; instances are POSTed to `{url}/studies`.
    /// `https://`, or `http://` to a loopback address only.
    pub url: String,
    /// HTTP Basic authentication: this user, the password in `password_file`.
    pub username: String,
    pub password_file: String,
    /// Or a bearer token in this file.
    pub token_file: String,
    /// PEM certificates trusted besides the system's roots (a private CA).
    pub ca_file: String,
}

impl WebDestination {
    /// Why this destination cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.trim().is_empty() || name.len() > 16 || name.contains('\\') {
            return Err(format!(
                "[[dicomweb_destination]] `{name}`: a name is 1 to 16 characters, like an AE title"
            ));
        }
        outbound_url(&self.url).map_err(|e| format!("dicomweb destination `{name}`: {e}"))?;
        if !self.username.is_empty() && self.password_file.is_empty() {
            return Err(format!(
                "dicomweb destination `{name}`: username without password_file"
            ));
        }
        if !self.token_file.is_empty() && !self.username.is_empty() {
            return Err(format!(
                "dicomweb destination `{name}`: both username and token_file"
            ));
        }
        Ok(())
    }
}

/// Whether Custos may send to `url`: https anywhere, plain http only to a
/// loopback address (patient data crosses no network in clear). The host,
/// if so. The host read here must be the one the HTTP client connects to:
/// so a URL with anything a URL parser reads differently from this plain
/// split is refused — a backslash (which ends the host for WHATWG parsers:
/// `https://evil\@allowed/`), whitespace or control characters (removed),
/// non-ASCII text (IDNA-mapped), and credentials (`user@`; they go in the
/// password or token settings).
pub fn outbound_url(url: &str) -> Result<String, String> {
    if !url.is_ascii()
        || url
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
    {
        return Err(format!(
            "`{}` holds characters a URL here must not (spaces, backslashes, control or non-ASCII characters)",
            url.escape_default()
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.contains('@') {
        return Err(
            "credentials in the URL are not taken: use the password or token settings".into(),
        );
    }
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(host.to_ascii_lowercase()),
        "http" if is_loopback(host) => Ok(host.to_ascii_lowercase()),
        "http" => Err("plain http is allowed only to a loopback address; use https".into()),
        _ => Err("the url must be https".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host check reads is what a URL parser connects to: forms
    /// that parsers read differently are refused, not judged by their look.
    #[test]
    fn urls_read_differently_by_a_parser_are_refused() {
        assert_eq!(
            outbound_url("https://Hooks.Example.org/x").unwrap(),
            "hooks.example.org"
        );
        assert_eq!(
            outbound_url("http://127.0.0.1:8080/hook").unwrap(),
            "127.0.0.1"
        );
        for bad in [
            "https://evil.example\\@hooks.example.org/x",
            "http://evil.example\\@127.0.0.1/",
            "https://user:pw@hooks.example.org/x",
            "https://evil.example@hooks.example.org/",
            "https://hooks.exa\tmple.org/",
            "https://evil.example /x",
            "https://hooks\u{ff0e}example.org/",
            "http://evil.example/",
            "ftp://hooks.example.org/",
        ] {
            assert!(outbound_url(bad).is_err(), "{bad}");
        }
    }

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
            study_instance_uid: "1.2.3".into(),
            calling_ae: "CT01".into(),
            modality: modality.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_description: desc.into(),
            attributes: Default::default(),
        };
        assert!(rule.matches(&facts("CT", "CT HEAD W/O")));
        assert!(!rule.matches(&facts("MR", "CT HEAD W/O")));
        assert!(!rule.matches(&facts("CT", "CHEST")));
        let mut research = RouteRule {
            destination: "RES".into(),
            ..Default::default()
        };
        research
            .attributes
            .insert("PatientID".into(), "res-*".into());
        research
            .attributes
            .insert("StudyDate".into(), "20260101-20261231".into());
        assert_eq!(
            research.attribute_keys(),
            Ok(vec![Key::PatientID, Key::StudyDate])
        );
        let mut f = facts("MR", "");
        assert!(!research.matches(&f), "no values: no match");
        f.attributes.insert(Key::PatientID, "RES-0042".into());
        f.attributes.insert(Key::StudyDate, "20260704".into());
        assert!(research.matches(&f));
        f.attributes.insert(Key::StudyDate, "20250704".into());
        assert!(!research.matches(&f), "outside the date range");
        let mut bad = research.clone();
        bad.attributes
            .insert("NumberOfStudyRelatedInstances".into(), "3".into());
        assert!(
            bad.attribute_keys().is_err(),
            "computed attributes are not matched"
        );
        let any = RouteRule {
            destination: "OFFSITE".into(),
            ..Default::default()
        };
        assert!(any.matches(&facts("MR", "")));
    }

    #[test]
    fn dicomweb_destinations_need_tls_beyond_loopback() {
        let d = |url: &str| WebDestination {
            name: "W".into(),
            url: url.into(),
            ..Default::default()
        };
        assert!(d("https://pacs.example.org/dicom-web").check().is_ok());
        assert!(d("http://127.0.0.1:8042/dicom-web").check().is_ok());
        assert!(d("http://[::1]:8042/").check().is_ok());
        assert!(d("http://localhost/").check().is_ok());
        assert!(d("http://pacs.example.org/dicom-web").check().is_err());
        assert!(d("http://127.0.0.1.example.org/").check().is_err());
        assert!(d("ftp://127.0.0.1/").check().is_err());
        assert!(d("pacs").check().is_err());
        let mut basic = d("https://x/");
        basic.username = "u".into();
        assert!(basic.check().is_err(), "a user needs a password file");
        basic.password_file = "/p".into();
        assert!(basic.check().is_ok());
    }
}
