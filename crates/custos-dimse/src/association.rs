//! One accepted association: reassembles DIMSE messages from P-DATA, checks
//! each request against the principal's rights, and runs the service.
//! C-STORE data is streamed into the archive as fragments arrive.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::Pdu;
use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use custos_archive::lengths::{self, Encoding};
use custos_archive::part10::MetaInfo;
use custos_archive::{Archive, Ingest};
use custos_core::{Action, Principal};

use crate::command::{Command, field, status};
use crate::identifier::{self, Model};
use crate::link::{LinkError, receive_pdu, send_message};
use crate::server::DimseConfig;
use crate::syntaxes::{self, action_of};

pub(crate) type Assoc = AsyncServerAssociation<TcpStream>;

/// Largest identifier (C-FIND/GET/MOVE data set) we buffer.
const MAX_IDENTIFIER: usize = 1 << 20;

/// Decodes a query/retrieve identifier after checking its element lengths
/// against the bytes received. dicom-ul negotiates transfer syntaxes for all
/// contexts at once, so a deflated identifier can arrive: it is inflated here
/// with the same 1 MiB cap as the received bytes, never more.
pub(crate) fn read_identifier(bytes: Vec<u8>, ts: &str) -> Result<InMemDicomObject, String> {
    let ts = ts.trim_end_matches(['\0', ' ']);
    let (bytes, ts) = if ts == DEFLATED_EXPLICIT_VR_LE {
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(bytes.as_slice())
            .take(MAX_IDENTIFIER as u64 + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| format!("deflated identifier: {e}"))?;
        if inflated.len() > MAX_IDENTIFIER {
            return Err("deflated identifier too large".into());
        }
        (inflated, syntaxes::EXPLICIT_VR_LE)
    } else {
        (bytes, ts)
    };
    lengths::check(bytes.as_slice(), Encoding::of_transfer_syntax(ts), false)
        .map_err(|e| e.to_string())?;
    let t = TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| "unknown transfer syntax".to_string())?;
    InMemDicomObject::read_dataset_with_ts(bytes.as_slice(), t).map_err(|e| e.to_string())
}

const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// Where the data set of the current request goes.
enum Sink<'a> {
    /// C-STORE: straight into a staged blob.
    Store(Box<Ingest<'a>>),
    /// C-STORE we will refuse or fail: read and drop.
    Discard(u16, String),
    /// Query/retrieve identifier: kept in memory (bounded).
    Buffer(Vec<u8>),
}

pub(crate) struct Association {
    pub assoc: Assoc,
    pub principal: Principal,
    pub archive: Arc<Archive>,
    pub config: Arc<DimseConfig>,
    /// Where the association comes from, and its verified user (audit).
    pub source: std::net::SocketAddr,
    pub user: Option<String>,
    /// A storage commitment report sent here and not yet answered.
    pub(crate) report: Option<crate::commitment::PendingReport>,
    /// Message IDs of the requests we send on this association.
    message_ids: u16,
}

impl Association {
    pub fn new(
        assoc: Assoc,
        principal: Principal,
        archive: Arc<Archive>,
        config: Arc<DimseConfig>,
        source: std::net::SocketAddr,
        user: Option<String>,
    ) -> Self {
        Association {
            assoc,
            principal,
            archive,
            config,
            source,
            user,
            report: None,
            message_ids: 0,
        }
    }

    pub(crate) fn next_message_id(&mut self) -> u16 {
        self.message_ids = self.message_ids.wrapping_add(1);
        self.message_ids
    }

    /// An audit event from this association's peer, address and user.
    pub(crate) fn event(
        &self,
        id: custos_core::audit::EventId,
        action: char,
        outcome: custos_core::audit::Outcome,
    ) -> custos_core::audit::AuditEvent {
        let mut e = custos_core::audit::AuditEvent::new(id, action, outcome);
        e.peer = self.peer_ae().to_string();
        e.source = self.source.ip().to_string();
        e.user = self.user.clone().unwrap_or_default();
        e
    }

    /// Records a refused request (a security alert; repeated ones are
    /// coalesced into one record with a count).
    pub(crate) async fn refused(&self, why: &str) {
        let mut e = self.event(
            custos_core::audit::EventId::SecurityAlert,
            'E',
            custos_core::audit::Outcome::MinorFailure,
        );
        e.detail = format!("DIMSE request refused: {why}");
        self.archive.audit(e).await;
    }

    pub fn peer_ae(&self) -> &str {
        self.principal.name()
    }

    /// The accepted presentation context `id`: (abstract syntax, transfer syntax).
    pub fn context(&self, id: u8) -> Option<(String, String)> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == id && pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| {
                (
                    pc.abstract_syntax.trim_end_matches('\0').to_string(),
                    pc.transfer_syntax.trim_end_matches('\0').to_string(),
                )
            })
    }

    pub async fn run(mut self) {
        let ended = self.serve_messages().await;
        self.redeliver_unanswered().await;
        match ended {
            Ok(()) => debug!("association released"),
            Err(LinkError::Aborted) => info!("peer aborted the association"),
            Err(e) => {
                warn!(error = %e, "association ended with an error; aborting");
                let _ = self.assoc.abort().await;
            }
        }
    }

    async fn serve_messages(&mut self) -> Result<(), LinkError> {
        let archive = self.archive.clone();
        let mut command_buf: Vec<u8> = Vec::new();
        // The request being served, where its data set goes, and when its
        // command arrived.
        let mut pending: Option<(u8, Command, Sink<'_>, Instant)> = None;
        loop {
            let pdu = receive_pdu(&mut self.assoc, self.config.idle_timeout).await?;
            let values = match pdu {
                Pdu::PData { data } => data,
                Pdu::ReleaseRQ => {
                    self.assoc.send(&Pdu::ReleaseRP).await?;
                    return Ok(());
                }
                Pdu::AbortRQ { .. } => return Err(LinkError::Aborted),
                other => {
                    return Err(LinkError::Protocol(format!(
                        "unexpected PDU {}",
                        pdu_name(&other)
                    )));
                }
            };
            for pdv in values {
                match pdv.value_type {
                    PDataValueType::Command => {
                        if pending.is_some() {
                            return Err(LinkError::Protocol(
                                "command fragment while a data set was expected".into(),
                            ));
                        }
                        command_buf.extend_from_slice(&pdv.data);
                        if command_buf.len() > 64 * 1024 {
                            return Err(LinkError::Protocol("command set too large".into()));
                        }
                        if !pdv.is_last {
                            continue;
                        }
                        let cmd = Command::decode(&command_buf).map_err(LinkError::Protocol)?;
                        command_buf.clear();
                        let pc = pdv.presentation_context_id;
                        let started = Instant::now();
                        if cmd.has_data_set {
                            let sink = self.open_sink(&archive, pc, &cmd).await;
                            pending = Some((pc, cmd, sink, started));
                        } else {
                            let op = field::op_name(cmd.field);
                            self.dispatch_without_data(pc, cmd).await?;
                            self.timed(op, started);
                        }
                    }
                    PDataValueType::Data => {
                        let Some((pc, _, sink, _)) = pending.as_mut() else {
                            return Err(LinkError::Protocol(
                                "data fragment without a command".into(),
                            ));
                        };
                        if *pc != pdv.presentation_context_id {
                            return Err(LinkError::Protocol(
                                "data set on another presentation context".into(),
                            ));
                        }
                        match sink {
                            Sink::Store(ingest) => {
                                if let Err(e) = ingest.write_owned(pdv.data).await {
                                    warn!(error = %e, "could not write received data");
                                    *sink = Sink::Discard(
                                        status::OUT_OF_RESOURCES,
                                        "storage write failed".into(),
                                    );
                                }
                            }
                            Sink::Discard(..) => {}
                            Sink::Buffer(buf) => {
                                if buf.len() + pdv.data.len() > MAX_IDENTIFIER {
                                    return Err(LinkError::Protocol("identifier too large".into()));
                                }
                                buf.extend_from_slice(&pdv.data);
                            }
                        }
                        if pdv.is_last {
                            let (pc, cmd, sink, started) = pending.take().expect("checked above");
                            let op = field::op_name(cmd.field);
                            self.complete(pc, cmd, sink).await?;
                            self.timed(op, started);
                        }
                    }
                }
            }
        }
    }

    /// Records how long request `op` took, command to last response.
    fn timed(&self, op: &'static str, started: Instant) {
        self.archive.metrics().observe(
            "custos_dimse_request_seconds",
            &[("op", op)],
            started.elapsed(),
        );
    }

    /// Counts an instance received and the status it was answered with.
    fn count_instance(&self, status: u16) {
        let status = format!("{status:04X}");
        self.archive.metrics().inc(
            "custos_instances_total",
            &[("protocol", "dimse"), ("status", &status)],
        );
    }

    /// Decides where a request's data set goes, before any of it arrives.
    async fn open_sink<'a>(&self, archive: &'a Archive, pc: u8, cmd: &Command) -> Sink<'a> {
        if cmd.field != field::C_STORE_RQ {
            return Sink::Buffer(Vec::new());
        }
        let Some((abstract_syntax, ts)) = self.context(pc) else {
            return Sink::Discard(
                status::SOP_CLASS_NOT_SUPPORTED,
                "presentation context not accepted".into(),
            );
        };
        if !self.principal.may(Action::Store) {
            info!(
                calling = self.peer_ae(),
                "C-STORE refused: peer lacks store permission"
            );
            return Sink::Discard(status::NOT_AUTHORIZED, "not authorized to store".into());
        }
        if abstract_syntax != cmd.sop_class_uid || !syntaxes::is_storage(&cmd.sop_class_uid) {
            return Sink::Discard(
                status::SOP_CLASS_NOT_SUPPORTED,
                "SOP class differs from presentation context".into(),
            );
        }
        let meta = MetaInfo {
            sop_class_uid: cmd.sop_class_uid.clone(),
            sop_instance_uid: cmd.sop_instance_uid.clone(),
            transfer_syntax_uid: ts,
            source_ae_title: self.peer_ae().to_string(),
        };
        match archive.begin_network_ingest(meta).await {
            Ok(ingest) => Sink::Store(Box::new(ingest)),
            Err(e) => {
                warn!(error = %e, "cannot start receiving an instance");
                Sink::Discard(status::OUT_OF_RESOURCES, "cannot stage instance".into())
            }
        }
    }

    async fn complete(&mut self, pc: u8, cmd: Command, sink: Sink<'_>) -> Result<(), LinkError> {
        match sink {
            Sink::Store(ingest) => {
                let result = ingest.finish().await;
                let (st, comment) = custos_archive::status::of_store(&result);
                if let Err(e) = &result {
                    self.archive.count_ingest_error(e);
                }
                self.count_instance(st);
                let outcome = if st == status::SUCCESS {
                    custos_core::audit::Outcome::Success
                } else {
                    custos_core::audit::Outcome::MinorFailure
                };
                let mut e = self.event(
                    custos_core::audit::EventId::InstancesTransferred,
                    'C',
                    outcome,
                );
                e.detail = format!("C-STORE status {st:04X}");
                if let Ok((r, _)) = &result {
                    e.patient_ids.push(r.patient_id.clone());
                    e.study_uids.push(r.study_uid.clone());
                    e.detail.push_str(&format!(" {}", r.sop_instance_uid));
                }
                self.archive.audit(e).await;
                let mut rsp = cmd.response(field::C_STORE_RSP, st);
                rsp.error_comment = comment;
                send_message(&mut self.assoc, pc, &rsp, None).await
            }
            Sink::Discard(st, why) => {
                if st == status::NOT_AUTHORIZED {
                    self.refused("store is not granted to this peer").await;
                }
                self.count_instance(st);
                let mut rsp = cmd.response(field::C_STORE_RSP, st);
                rsp.error_comment = Some(why);
                send_message(&mut self.assoc, pc, &rsp, None).await
            }
            Sink::Buffer(bytes) => self.dispatch_with_identifier(pc, cmd, bytes).await,
        }
    }

    async fn dispatch_without_data(&mut self, pc: u8, cmd: Command) -> Result<(), LinkError> {
        match cmd.field {
            field::C_ECHO_RQ => {
                let st = if self.principal.may(Action::Echo) {
                    status::SUCCESS
                } else {
                    info!(
                        calling = self.peer_ae(),
                        "C-ECHO refused: no echo permission"
                    );
                    self.refused("echo is not granted to this peer").await;
                    status::NOT_AUTHORIZED
                };
                let rsp = cmd.response(field::C_ECHO_RSP, st);
                send_message(&mut self.assoc, pc, &rsp, None).await
            }
            // A cancel for a request no longer running: nothing to do.
            field::C_CANCEL_RQ => Ok(()),
            field::N_EVENT_REPORT_RSP => {
                self.report_answered(&cmd).await;
                Ok(())
            }
            other => {
                let rsp = cmd.response(other | 0x8000, status::UNRECOGNIZED_OPERATION);
                send_message(&mut self.assoc, pc, &rsp, None).await
            }
        }
    }

    async fn dispatch_with_identifier(
        &mut self,
        pc: u8,
        cmd: Command,
        bytes: Vec<u8>,
    ) -> Result<(), LinkError> {
        if cmd.field == field::N_EVENT_REPORT_RSP {
            self.report_answered(&cmd).await;
            return Ok(());
        }
        let rsp_field = cmd.field | 0x8000;
        let refuse = |st: u16, why: &str| {
            let mut r = cmd.response(rsp_field, st);
            r.error_comment = Some(why.to_string());
            r
        };
        let Some((abstract_syntax, ts)) = self.context(pc) else {
            let r = refuse(
                status::SOP_CLASS_NOT_SUPPORTED,
                "presentation context not accepted",
            );
            return send_message(&mut self.assoc, pc, &r, None).await;
        };
        let action = match cmd.field {
            field::C_FIND_RQ if abstract_syntax == syntaxes::MODALITY_WORKLIST_FIND => {
                Action::Worklist
            }
            field::C_FIND_RQ => Action::Find,
            field::C_GET_RQ => Action::Get,
            field::C_MOVE_RQ => Action::Move,
            field::N_ACTION_RQ => Action::Commit,
            field::N_CREATE_RQ | field::N_SET_RQ => Action::Mpps,
            _ => {
                let r = refuse(status::UNRECOGNIZED_OPERATION, "unsupported operation");
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        if action_of(&abstract_syntax) != Some(action) {
            let r = refuse(
                status::SOP_CLASS_NOT_SUPPORTED,
                "operation does not fit the presentation context",
            );
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        if !self.principal.may(action) {
            info!(calling = self.peer_ae(), %action, "request refused: not permitted");
            self.refused(&format!("{action} is not granted to this peer"))
                .await;
            let r = refuse(status::NOT_AUTHORIZED, "not authorized");
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        match action {
            Action::Commit => return self.commit(pc, &cmd, bytes, &ts).await,
            Action::Worklist => return self.worklist_find(pc, &cmd, bytes, &ts).await,
            Action::Mpps => return self.performed_step(pc, &cmd, bytes, &ts).await,
            _ => {}
        }
        let model = if abstract_syntax.starts_with("1.2.840.10008.5.1.4.1.2.1.") {
            Model::PatientRoot
        } else {
            Model::StudyRoot
        };
        let obj = match read_identifier(bytes, &ts) {
            Ok(o) => o,
            Err(e) => {
                debug!(error = %e, "unreadable identifier");
                let r = refuse(status::CANNOT_UNDERSTAND, "unreadable identifier");
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        let limit = if action == Action::Find {
            self.config.max_find_results + 1
        } else {
            usize::MAX >> 1
        };
        let ident = match identifier::parse(&obj, model, limit) {
            Ok(i) => i,
            Err(e) => {
                let r = refuse(status::IDENTIFIER_DOES_NOT_MATCH, &e);
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        match action {
            Action::Find => self.find(pc, &cmd, ident, &ts).await,
            Action::Get => self.get(pc, &cmd, ident).await,
            _ => self.move_to(pc, &cmd, ident).await,
        }
    }

    async fn find(
        &mut self,
        pc: u8,
        cmd: &Command,
        ident: identifier::Identifier,
        ts_uid: &str,
    ) -> Result<(), LinkError> {
        let level = ident.query.level;
        info!(calling = self.peer_ae(), level = level.name(), "C-FIND");
        let mut e = self.event(
            custos_core::audit::EventId::Query,
            'E',
            custos_core::audit::Outcome::Success,
        );
        e.detail = format!("C-FIND {}", e.name_query(&ident.query));
        if self.archive.record_access(e).await.is_err() {
            let mut r = cmd.response(field::C_FIND_RSP, status::OUT_OF_RESOURCES);
            r.error_comment = Some(crate::retrieve::TRAIL_DOWN.into());
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        let failed = |cmd: &Command| {
            let mut r = cmd.response(field::C_FIND_RSP, status::CANNOT_UNDERSTAND);
            r.error_comment = Some("query failed".into());
            r
        };
        let mut rows = match self.archive.find_stream(ident.query).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "C-FIND failed");
                return send_message(&mut self.assoc, pc, &failed(cmd), None).await;
            }
        };
        let ts = TransferSyntaxRegistry
            .get(ts_uid)
            .expect("checked when parsing the identifier");
        // Each match goes out as the index reads it.
        let (cap, mut sent) = (self.config.max_find_results, 0);
        while let Some(row) = rows.recv().await {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    warn!(error = %e, "C-FIND failed");
                    return send_message(&mut self.assoc, pc, &failed(cmd), None).await;
                }
            };
            if sent == cap {
                return self.end_find(pc, cmd, true).await;
            }
            sent += 1;
            let obj = identifier::response(&row, level, &ident.requested, &self.config.ae_title);
            if !self.send_find_match(pc, cmd, &obj, ts).await? {
                return Ok(());
            }
        }
        self.end_find(pc, cmd, false).await
    }

    /// Sends each match (at most `max_find_results`) as a pending C-FIND
    /// response, stopping at a C-CANCEL, then the final status.
    pub(crate) async fn send_find_matches(
        &mut self,
        pc: u8,
        cmd: &Command,
        matches: Vec<InMemDicomObject>,
        ts: &dicom_encoding::TransferSyntax,
    ) -> Result<(), LinkError> {
        let cap = self.config.max_find_results;
        for obj in matches.iter().take(cap) {
            if !self.send_find_match(pc, cmd, obj, ts).await? {
                return Ok(());
            }
        }
        self.end_find(pc, cmd, matches.len() > cap).await
    }

    /// One match as a pending C-FIND response; `false` when the C-FIND ended
    /// here: the peer had cancelled (the cancel status sent instead), or the
    /// match could not be encoded (a failure sent: skipping it and ending
    /// with Success would hand over part of the matches as all of them).
    async fn send_find_match(
        &mut self,
        pc: u8,
        cmd: &Command,
        obj: &InMemDicomObject,
        ts: &dicom_encoding::TransferSyntax,
    ) -> Result<bool, LinkError> {
        if self.cancel_requested(cmd.message_id).await? {
            let r = cmd.response(field::C_FIND_RSP, status::CANCEL);
            send_message(&mut self.assoc, pc, &r, None).await?;
            return Ok(false);
        }
        let mut data = Vec::new();
        if let Err(e) = obj.write_dataset_with_ts(&mut data, ts) {
            warn!(error = %e, "cannot encode a C-FIND match; the C-FIND fails");
            let mut r = cmd.response(field::C_FIND_RSP, status::CANNOT_UNDERSTAND);
            r.error_comment = Some("a match cannot be encoded as asked".into());
            send_message(&mut self.assoc, pc, &r, None).await?;
            return Ok(false);
        }
        let mut r = cmd.response(field::C_FIND_RSP, status::PENDING);
        r.has_data_set = true;
        send_message(&mut self.assoc, pc, &r, Some(&data)).await?;
        Ok(true)
    }

    /// The final C-FIND status: success, or A700 when there were more
    /// matches than `max_find_results`.
    async fn end_find(&mut self, pc: u8, cmd: &Command, more: bool) -> Result<(), LinkError> {
        let mut done = cmd.response(field::C_FIND_RSP, status::SUCCESS);
        if more {
            let cap = self.config.max_find_results;
            info!(calling = self.peer_ae(), cap, "C-FIND result cap reached");
            done.status = Some(status::OUT_OF_RESOURCES);
            done.error_comment = Some(format!("more than {cap} matches; refine the query"));
        }
        send_message(&mut self.assoc, pc, &done, None).await
    }

    /// Checks, without waiting, whether the peer sent C-CANCEL for `message_id`.
    /// The answer to a commitment report is taken; any other PDU arriving
    /// mid-operation is a protocol error.
    pub async fn cancel_requested(&mut self, message_id: u16) -> Result<bool, LinkError> {
        // Poll the read once instead of racing a zero timeout: tokio timers tick
        // every millisecond, which would cost 1 ms per C-FIND match or sub-operation.
        let Some(pdu) = poll_once(self.assoc.receive()) else {
            return Ok(false);
        };
        match pdu? {
            Pdu::PData { data } => {
                let bytes: Vec<u8> = data
                    .iter()
                    .filter(|v| v.value_type == PDataValueType::Command)
                    .flat_map(|v| v.data.iter().copied())
                    .collect();
                let cmd = Command::decode(&bytes).map_err(LinkError::Protocol)?;
                if cmd.field == field::C_CANCEL_RQ
                    && cmd.responding_to.unwrap_or(cmd.message_id) == message_id
                {
                    info!(calling = self.peer_ae(), "C-CANCEL received");
                    Ok(true)
                } else if cmd.field == field::N_EVENT_REPORT_RSP {
                    // The answer to a storage commitment report sent on this
                    // association, arriving while the modality's next
                    // request runs: an answer, not a second request.
                    self.report_answered(&cmd).await;
                    Ok(false)
                } else {
                    Err(LinkError::Protocol(
                        "request received while another is running".into(),
                    ))
                }
            }
            Pdu::AbortRQ { .. } => Err(LinkError::Aborted),
            _ => Err(LinkError::Protocol(
                "unexpected PDU during an operation".into(),
            )),
        }
    }
}

/// Polls a future exactly once. Safe for dicom-ul's `receive`, which keeps
/// partially read bytes in the association's buffer when dropped.
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        _ => "unknown PDU",
    }
}
