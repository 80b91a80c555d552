//! `custos audit verify|export`: check the hash chain, and read the trail as
//! JSON lines or as DICOM Audit Messages (PS3.15 A.5, XML).

use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;

use custos_archive::audit::AuditTrail;
use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_index::AuditLog;

use crate::config::Config;
use crate::data::open_index;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; report the first record where it breaks.
    Verify,
    /// Print records from a date on (YYYY-MM-DD or an RFC 3339 time).
    Export {
        #[arg(long, default_value = "1970-01-01")]
        since: String,
        /// JSON lines (the default).
        #[arg(long, conflicts_with = "xml")]
        json: bool,
        /// DICOM Audit Messages (PS3.15 A.5.1) in one XML document.
        #[arg(long)]
        xml: bool,
    },
}

const PAGE: usize = 10_000;

/// Records a change made from the command line (peers, users, tokens).
pub async fn record_change(data: &Path, index: &dyn AuditLog, detail: String) {
    record(data, index, EventId::SecurityAlert, 'E', detail).await;
}

pub async fn run(data: &Path, command: AuditCommand) -> Result<bool> {
    let config = Config::load(data)?;
    let index = open_index(data, &config).await?;
    match command {
        AuditCommand::Verify => {
            let trail = AuditTrail::open(data, index.as_ref()).await?;
            let check = trail.verify(index.as_ref()).await?;
            let (count, legacy) = (check.walk.good, check.walk.legacy);
            if let Some(why) = check.broken {
                println!("audit trail BROKEN: {why} (after {count} good records)");
                // The finding itself goes into the trail (a security alert).
                let why: String = why.chars().take(400).collect();
                record_outcome(
                    data,
                    index.as_ref(),
                    EventId::SecurityAlert,
                    'E',
                    Outcome::SeriousFailure,
                    format!("audit trail verification found a break: {why}"),
                )
                .await;
                return Ok(false);
            }
            let head = check.walk.head;
            record(
                data,
                index.as_ref(),
                EventId::AuditLogUsed,
                'R',
                format!("verified {count} records"),
            )
            .await;
            let legacy = if legacy > 0 {
                format!(" ({legacy} oldest written before the chain was keyed)")
            } else {
                String::new()
            };
            println!("audit trail intact: {count} records{legacy}, chain head {head}");
            Ok(true)
        }
        AuditCommand::Export {
            since,
            json: _,
            xml,
        } => {
            let since = normalise_since(&since)?;
            let mut after = 0i64;
            let mut n = 0u64;
            if xml {
                println!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AuditMessages>");
            }
            loop {
                let page = index.audit_after(after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for r in page.iter().filter(|r| r.time.as_str() >= since.as_str()) {
                    n += 1;
                    let body: serde_json::Value = serde_json::from_str(&r.body)?;
                    if xml {
                        println!("{}", audit_message_xml(&body));
                    } else {
                        let line = serde_json::json!({ "seq": r.seq, "record": body, "hash": r.hash, "prev_hash": r.prev_hash });
                        println!("{line}");
                    }
                }
            }
            if xml {
                println!("</AuditMessages>");
            }
            record(
                data,
                index.as_ref(),
                EventId::AuditLogUsed,
                'R',
                format!("exported {n} records since {since}"),
            )
            .await;
            Ok(true)
        }
    }
}

/// The command line's user as audit records name them (`cli:$USER`).
pub fn cli_user() -> String {
    std::env::var("USER")
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}

/// Appends one event by the command line's user, loudly if that fails.
pub async fn record(data: &Path, index: &dyn AuditLog, id: EventId, action: char, detail: String) {
    record_outcome(data, index, id, action, Outcome::Success, detail).await
}

/// [`record`] with an outcome other than success.
pub async fn record_outcome(
    data: &Path,
    index: &dyn AuditLog,
    id: EventId,
    action: char,
    outcome: Outcome,
    detail: String,
) {
    let mut e = AuditEvent::new(id, action, outcome);
    e.user = cli_user();
    e.detail = detail;
    let written = match AuditTrail::open(data, index).await {
        Ok(trail) => trail.append_now(index, vec![e]).await.map_err(Into::into),
        Err(e) => Err(e),
    };
    if let Err(err) = written {
        eprintln!("AUDIT TRAIL CANNOT BE WRITTEN: {err}");
    }
}

fn normalise_since(s: &str) -> Result<String> {
    let s = s.trim();
    let ok = s.len() >= 10
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-'
        && s[..4].chars().all(|c| c.is_ascii_digit());
    if !ok {
        bail!("--since takes YYYY-MM-DD or an RFC 3339 time");
    }
    Ok(s.to_string())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The EventTypeCode (DCM) a message of event `code` carries, by what its
/// record says (PS3.15 A.5.3: Application Activity, User Authentication and
/// Security Alert name their kind).
fn event_type(code: u64, detail: &str) -> Option<(u32, &'static str)> {
    let has = |w: &str| detail.contains(w);
    match code {
        110100 if has("stop") => Some((110121, "Application Stop")),
        110100 => Some((110120, "Application Start")),
        110114 if has("logout") || has("logged out") => Some((110123, "Logout")),
        110114 => Some((110122, "Login")),
        110113 if has("refused") => Some((110132, "Use of Restricted Function")),
        110113 if has("user ") || has("token") => {
            Some((110137, "User Security Attributes Changed"))
        }
        110113 if has("webhook") => Some((110131, "Software Configuration")),
        110113 => Some((110129, "Security Configuration")),
        _ => None,
    }
}

/// One record as a DICOM Audit Message (PS3.15 A.5.1; validated against the
/// schema in tests/data by the audit test). The record's text goes into
/// EventOutcomeDescription; patient and study identifiers become participant
/// objects (names are not in the trail, so ParticipantObjectName is empty); a
/// query's keys become ParticipantObjectQuery (base64, as the schema wants).
pub fn audit_message_xml(b: &serde_json::Value) -> String {
    use base64::Engine as _;
    let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    let detail = s("detail");
    let description = if detail.is_empty() {
        String::new()
    } else {
        format!(
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            esc(&detail)
        )
    };
    let code = b["event"]["code"].as_u64().unwrap_or(0);
    let type_code = event_type(code, &detail)
        .map(|(c, name)| {
            format!(
                "<EventTypeCode csd-code=\"{c}\" codeSystemName=\"DCM\" originalText=\"{name}\"/>"
            )
        })
        .unwrap_or_default();
    let mut x = format!(
        "<AuditMessage><EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\"><EventID csd-code=\"{code}\" codeSystemName=\"DCM\" originalText=\"{}\"/>{type_code}{description}</EventIdentification>",
        esc(&s("action")),
        esc(&s("time")),
        b["outcome"].as_u64().unwrap_or(0),
        esc(b["event"]["display"].as_str().unwrap_or_default()),
    );
    let (user, peer, source) = (s("user"), s("peer"), s("source"));
    // Instances Transferred (A.5.3.10) names who sent and who received:
    // the peer sent what was stored ('C'), Custos what was read ('R').
    let role = |id: u32, name: &str| {
        format!("<RoleIDCode csd-code=\"{id}\" codeSystemName=\"DCM\" originalText=\"{name}\"/>")
    };
    let (source_role, destination_role) = (
        role(110153, "Source Role ID"),
        role(110152, "Destination Role ID"),
    );
    let (peer_role, own_role) = match (code, s("action").as_str()) {
        (110104, "C") => (source_role, destination_role),
        (110104, "R") => (destination_role, source_role),
        _ => (String::new(), String::new()),
    };
    if !user.is_empty() || !peer.is_empty() {
        // The requestor: the user if one was identified, else the peer's AE title.
        let id = if user.is_empty() { &peer } else { &user };
        x.push_str(&format!("<ActiveParticipant UserID=\"{}\"", esc(id)));
        if !peer.is_empty() {
            x.push_str(&format!(" AlternativeUserID=\"AETITLES={}\"", esc(&peer)));
        }
        x.push_str(" UserIsRequestor=\"true\"");
        if !source.is_empty() {
            x.push_str(&format!(
                " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
                esc(&source)
            ));
        }
        x.push_str(&format!(">{peer_role}</ActiveParticipant>"));
    }
    x.push_str(&format!(
        "<ActiveParticipant UserID=\"custos@{}\" UserIsRequestor=\"false\">{own_role}</ActiveParticipant><AuditSourceIdentification AuditSourceID=\"custos@{}\"><AuditSourceTypeCode csd-code=\"4\"/></AuditSourceIdentification>",
        esc(&s("node")),
        esc(&s("node"))
    ));
    for p in b["patients"].as_array().into_iter().flatten() {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\"><ParticipantObjectIDTypeCode csd-code=\"2\" codeSystemName=\"RFC-3881\" originalText=\"Patient Number\"/><ParticipantObjectName></ParticipantObjectName></ParticipantObjectIdentification>",
            esc(p.as_str().unwrap_or_default())
        ));
    }
    for st in b["studies"].as_array().into_iter().flatten() {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\"><ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" originalText=\"Study Instance UID\"/><ParticipantObjectName></ParticipantObjectName></ParticipantObjectIdentification>",
            esc(st.as_str().unwrap_or_default())
        ));
    }
    if b["event"]["code"].as_u64() == Some(u64::from(custos_core::audit::EventId::Query.code())) {
        // PS3.15 A.5.3.12: the query, identified by its SOP Class (Study
        // Root C-FIND for DIMSE; QIDO-RS has none, so the service is named).
        let class = if detail.starts_with("C-FIND") {
            "1.2.840.10008.5.1.4.1.2.2.1"
        } else {
            "QIDO-RS"
        };
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{class}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"24\"><ParticipantObjectIDTypeCode csd-code=\"110181\" codeSystemName=\"DCM\" originalText=\"SOP Class UID\"/><ParticipantObjectQuery>{}</ParticipantObjectQuery></ParticipantObjectIdentification>",
            base64::engine::general_purpose::STANDARD.encode(detail.as_bytes())
        ));
    }
    x.push_str("</AuditMessage>");
    x
}
