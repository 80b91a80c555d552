//! C-GET and C-MOVE: C-STORE sub-operations back over the same association
//! (GET) or over a new association to a registered destination (MOVE).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::association::{AsyncAssociation, ClientAssociationOptions};
use dicom_ul::pdu::PresentationContextResultReason;
use tracing::{info, warn};

use custos_archive::{Archive, DatasetStream, RetrieveError, RetrieveSet};
use custos_core::record::StoredInstance;

use crate::association::Association;
use crate::command::{Command, field, status};
use crate::identifier::Identifier;
use crate::link::{LinkError, Stream, receive_command, send_message, send_streamed};
use crate::syntaxes::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// Failed SOP Instance UIDs listed in a final response at most (~640 KB);
/// past this the counts still say how many failed.
const MAX_FAILED_UIDS: usize = 10_000;
/// The Error Comment of a query or retrieval refused because its audit
/// record could not be written (at most 64 characters).
pub(crate) const TRAIL_DOWN: &str = "audit trail unavailable, try again later";

/// Pending responses go out at most this often. PS3.4 C.4.2.3.1 and
/// C.4.3.3.1 make them optional; each one is a message the requester must
/// take while the sub-operations wait (one per instance measured ~2% of a
/// 100-instance C-MOVE to DCMTK). A quarter of a second still moves a
/// viewer's progress bar smoothly.
const PENDING_EVERY: Duration = Duration::from_millis(250);

/// How long a C-MOVE's destination may take to accept the association before
/// the requester is sent a Pending response (see `Association::announced`;
/// 1-2 ms in effect, tokio's timers tick in milliseconds): a destination that
/// answers at once costs no extra message.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(1);

/// How long connecting to a C-MOVE's destination (TCP, TLS, the association
/// request) may take, at most: the ACSE timeout DCMTK and pynetdicom use by
/// default, or the idle timeout if shorter. The requester hears a Pending
/// response every [`PENDING_EVERY`] meanwhile.
const ASSOCIATE_MAX: Duration = Duration::from_secs(30);

/// What became of the association to a C-MOVE's destination.
enum Destination<A> {
    Made(A),
    /// Why none was made.
    Failed(String),
    /// The requester sent C-CANCEL meanwhile.
    Cancelled,
}

/// Sub-operation tallies (PS3.4 C.4.2.1.5).
#[derive(Debug, Default, Clone)]
struct Tally {
    remaining: usize,
    completed: u16,
    failed: u16,
    warning: u16,
    failed_uids: Vec<String>,
    /// When the last Pending response was sent.
    pending_sent: Option<Instant>,
    /// How the retrieve ended is recorded (see `finish_retrieve`).
    ended: bool,
}

impl Tally {
    /// Whether a Pending response is due now: after the first sub-operation,
    /// then once per [`PENDING_EVERY`] since the last one while some remain.
    fn pending_due(&mut self) -> bool {
        let now = Instant::now();
        if self.remaining == 0
            || self
                .pending_sent
                .is_some_and(|at| now.duration_since(at) < PENDING_EVERY)
        {
            return false;
        }
        self.pending_sent = Some(now);
        true
    }

    fn counts(&self) -> [u16; 4] {
        [
            self.remaining.min(u16::MAX as usize) as u16,
            self.completed,
            self.failed,
            self.warning,
        ]
    }

    fn record(&mut self, uid: &str, st: Option<u16>) {
        self.remaining = self.remaining.saturating_sub(1);
        match st {
            Some(0x0000) => self.completed = self.completed.saturating_add(1),
            Some(s) if status::is_warning(s) => self.warning = self.warning.saturating_add(1),
            _ => {
                self.failed = self.failed.saturating_add(1);
                if self.failed_uids.len() < MAX_FAILED_UIDS {
                    self.failed_uids.push(uid.to_string());
                }
            }
        }
    }

    /// The next page of `set`; empty at its end, or when it cannot be read
    /// (then everything not yet sent counts as failed).
    async fn next_page(&mut self, set: &mut RetrieveSet) -> Vec<StoredInstance> {
        match set.next_page().await {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "retrieve: the set cannot be read further");
                self.fail_rest(set).await;
                Vec::new()
            }
        }
    }

    /// Counts every instance of `set` not yet sent as failed.
    async fn fail_rest(&mut self, set: &mut RetrieveSet) {
        loop {
            match set.next_page().await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    for inst in &page {
                        self.record(&inst.sop_instance_uid, None);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "retrieve: the rest of the set cannot be read");
                    break;
                }
            }
        }
        // Instances that could not even be listed fail without their UIDs.
        self.failed = self
            .failed
            .saturating_add(self.remaining.min(u16::MAX as usize) as u16);
        self.remaining = 0;
    }

    /// The final response: status, and the Failed SOP Instance UID List when needed.
    fn final_status(&self) -> u16 {
        if self.failed == 0 && self.warning == 0 {
            status::SUCCESS
        } else if self.completed == 0 && self.warning == 0 {
            status::OUT_OF_RESOURCES_SUBOPS
        } else {
            status::SUBOPS_WARNING
        }
    }
}

/// The final response's Failed SOP Instance UID List. Under an explicit VR
/// a UI value's length has 16 bits: the list is cut to what fits (the counts
/// still say how many failed) rather than lost whole.
fn failed_list(uids: &[String], ts: &dicom_encoding::TransferSyntax) -> Option<Vec<u8>> {
    if uids.is_empty() {
        return None;
    }
    let room = if ts.uid().trim_end_matches('\0') == IMPLICIT_VR_LE {
        usize::MAX
    } else {
        0xFFFE
    };
    let mut value = String::new();
    for uid in uids {
        let more = if value.is_empty() { 0 } else { 1 } + uid.len();
        // Padded to an even length when odd.
        if (value.len() + more).div_ceil(2) * 2 > room {
            break;
        }
        if !value.is_empty() {
            value.push('\\');
        }
        value.push_str(uid);
    }
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::FAILED_SOP_INSTANCE_UID_LIST,
        VR::UI,
        PrimitiveValue::from(value),
    ));
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).ok()?;
    Some(out)
}

/// How a stored instance will travel: which context, and whether re-encoded.
enum Route {
    AsStored(u8),
    Transcoded(u8, String),
}

/// Picks an accepted context for `inst`: its own transfer syntax if the peer
/// took it, else an uncompressed one we can re-encode to.
fn route<S: Stream, A: AsyncAssociation<S>>(assoc: &A, inst: &StoredInstance) -> Option<Route> {
    let accepted: Vec<_> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .filter(|pc| pc.abstract_syntax.trim_end_matches('\0') == inst.sop_class_uid)
        .collect();
    let ts_of = |pc: &&dicom_ul::pdu::PresentationContextNegotiated| {
        pc.transfer_syntax.trim_end_matches('\0').to_string()
    };
    if let Some(pc) = accepted
        .iter()
        .find(|pc| ts_of(pc) == inst.transfer_syntax_uid)
    {
        return Some(Route::AsStored(pc.id));
    }
    if custos_archive::can_transcode(&inst.transfer_syntax_uid) {
        for want in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
            if let Some(pc) = accepted.iter().find(|pc| ts_of(pc) == want) {
                return Some(Route::Transcoded(pc.id, want.to_string()));
            }
        }
    }
    None
}

/// The next sub-operation's data set, read from the store while the current
/// one is sent and acknowledged: sub-operations go one at a time, so without
/// this each read waited behind the peer's answer to the one before.
#[derive(Default)]
pub(crate) struct ReadAhead {
    next: Option<(
        String,
        tokio::task::JoinHandle<Result<DatasetStream, RetrieveError>>,
    )>,
}

impl ReadAhead {
    /// Starts reading `next` if it will travel as stored over `assoc`.
    pub(crate) fn start<S: Stream, A: AsyncAssociation<S>>(
        &mut self,
        assoc: &A,
        archive: &Arc<Archive>,
        next: Option<&StoredInstance>,
    ) {
        let Some(next) = next else { return };
        if let Some(Route::AsStored(_)) = route(assoc, next) {
            let (archive, inst) = (archive.clone(), next.clone());
            let read = tokio::spawn(async move { archive.open_dataset(&inst).await });
            self.next = Some((next.sop_instance_uid.clone(), read));
        }
    }

    /// `inst`'s data set: the one read ahead if it is that one, else read now.
    async fn take(
        &mut self,
        archive: &Archive,
        inst: &StoredInstance,
    ) -> Result<DatasetStream, RetrieveError> {
        if let Some((uid, read)) = self.next.take()
            && uid == inst.sop_instance_uid
            && let Ok(result) = read.await
        {
            return result;
        }
        archive.open_dataset(inst).await
    }
}

/// Sends one C-STORE-RQ with its data set. `Ok(false)` means it could not be
/// sent (no usable context, unreadable blob): a failed sub-operation.
pub(crate) async fn send_store<S: Stream, A>(
    assoc: &mut A,
    archive: &Archive,
    inst: &StoredInstance,
    ahead: &mut ReadAhead,
    message_id: u16,
    originator: Option<(&str, u16)>,
    idle: Duration,
) -> Result<bool, LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let Some(route) = route(assoc, inst) else {
        info!(sop_class = %inst.sop_class_uid, ts = %inst.transfer_syntax_uid, "no accepted context for a sub-operation");
        return Ok(false);
    };
    let rq = Command {
        field: field::C_STORE_RQ,
        message_id,
        sop_class_uid: inst.sop_class_uid.clone(),
        sop_instance_uid: inst.sop_instance_uid.clone(),
        has_data_set: true,
        move_originator_ae: originator.map(|(ae, _)| ae.to_string()),
        move_originator_message_id: originator.map(|(_, id)| id),
        ..Default::default()
    };
    match route {
        Route::AsStored(pc) => match ahead.take(archive, inst).await {
            Ok(stream) => send_streamed(assoc, pc, &rq, stream, idle).await?,
            Err(e) => {
                warn!(error = %e, "cannot read a stored instance");
                return Ok(false);
            }
        },
        Route::Transcoded(pc, ts) => match archive.transcoded_dataset(inst, &ts).await {
            Ok(bytes) => send_message(assoc, pc, &rq, Some(&bytes)).await?,
            Err(e) => {
                warn!(error = %e, "cannot convert a stored instance");
                return Ok(false);
            }
        },
    }
    Ok(true)
}

impl Association {
    pub(crate) async fn get(
        &mut self,
        pc: u8,
        cmd: &Command,
        ident: Identifier,
    ) -> Result<(), LinkError> {
        let mut e = self.event(
            custos_core::audit::EventId::InstancesTransferred,
            'R',
            custos_core::audit::Outcome::Success,
        );
        let keys = e.name_query(&ident.query);
        let set = match self.archive.retrieve_set(ident.query.clone()).await {
            Ok(s) => s,
            Err(custos_index::IndexError::BadQuery(why)) => {
                info!(calling = self.peer_ae(), reason = %why, "C-GET refused");
                let mut r = cmd.response(field::C_GET_RSP, status::IDENTIFIER_DOES_NOT_MATCH);
                r.error_comment = Some(why.chars().take(64).collect());
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
            Err(e) => {
                warn!(error = %e, "C-GET lookup failed");
                return self.index_unavailable(pc, cmd, field::C_GET_RSP).await;
            }
        };
        // Named once the request is known to be a valid retrieve.
        self.archive.name_retrieved(&mut e, &ident.query).await;
        let mut set = set;
        info!(calling = self.peer_ae(), instances = set.total, "C-GET");
        e.detail = format!("C-GET {keys}: {} instances", set.total);
        if self.archive.record_access(e).await.is_err() {
            let mut r = cmd.response(field::C_GET_RSP, status::OUT_OF_RESOURCES_SUBOPS);
            r.error_comment = Some(TRAIL_DOWN.into());
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        let mut tally = Tally {
            remaining: set.total as usize,
            ..Default::default()
        };
        let result = match self.get_sub_operations(pc, cmd, &mut set, &mut tally).await {
            Ok(cancelled) => {
                self.finish_retrieve(pc, cmd, field::C_GET_RSP, &mut tally, cancelled)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.record_broken(field::C_GET_RSP, &tally, e).await;
        }
        result
    }

    /// A C-GET's sub-operations on this association; whether it was
    /// cancelled.
    async fn get_sub_operations(
        &mut self,
        pc: u8,
        cmd: &Command,
        set: &mut RetrieveSet,
        tally: &mut Tally,
    ) -> Result<bool, LinkError> {
        let mut cancelled = false;
        let archive = self.archive.clone();
        let mut sub_id: u16 = 0;
        'pages: loop {
            let page = tally.next_page(set).await;
            if page.is_empty() {
                break;
            }
            let mut ahead = ReadAhead::default();
            for (i, inst) in page.iter().enumerate() {
                if cancelled || self.cancel_requested(cmd.message_id).await? {
                    cancelled = true;
                    break 'pages;
                }
                sub_id = sub_id.wrapping_add(1);
                let idle = self.config.idle_timeout;
                let mut this = std::mem::take(&mut ahead);
                ahead.start(&self.assoc, &archive, page.get(i + 1));
                let outcome = async {
                    if !send_store(
                        &mut self.assoc,
                        &archive,
                        inst,
                        &mut this,
                        sub_id,
                        None,
                        idle,
                    )
                    .await?
                    {
                        return Ok(None);
                    }
                    // Wait for the C-STORE-RSP; a C-CANCEL may arrive first.
                    loop {
                        let (_, rsp) =
                            receive_command(&mut self.assoc, self.config.idle_timeout).await?;
                        if rsp.field == field::C_CANCEL_RQ {
                            cancelled = true;
                            continue;
                        }
                        if rsp.field == field::N_EVENT_REPORT_RSP {
                            // The answer to a commitment report sent on
                            // this association (see `cancel_requested`).
                            self.report_answered(&rsp).await;
                            continue;
                        }
                        if rsp.field == field::C_STORE_RSP && rsp.responding_to == Some(sub_id) {
                            return Ok(rsp.status);
                        }
                        return Err(LinkError::Protocol(
                            "unexpected message during C-GET".into(),
                        ));
                    }
                }
                .await;
                // One in flight when the association broke: failed.
                let st = outcome.inspect_err(|_| tally.record(&inst.sop_instance_uid, None))?;
                tally.record(&inst.sop_instance_uid, st);
                if !cancelled && tally.pending_due() {
                    self.send_pending(pc, cmd, field::C_GET_RSP, tally).await?;
                }
            }
        }
        if !cancelled {
            // Fewer than counted (deleted meanwhile): nothing is left.
            tally.remaining = 0;
        }
        Ok(cancelled)
    }

    /// A retrieve refused because the index could not count its matches
    /// (PS3.4 C.4.2.1.5, C.4.3.1.4): the peer may ask again.
    async fn index_unavailable(
        &mut self,
        pc: u8,
        cmd: &Command,
        rsp_field: u16,
    ) -> Result<(), LinkError> {
        let mut r = cmd.response(rsp_field, status::OUT_OF_RESOURCES_MATCHES);
        r.error_comment = Some("index unavailable".into());
        send_message(&mut self.assoc, pc, &r, None).await
    }

    async fn finish_retrieve(
        &mut self,
        pc: u8,
        cmd: &Command,
        rsp_field: u16,
        tally: &mut Tally,
        cancelled: bool,
    ) -> Result<(), LinkError> {
        let st = if cancelled {
            status::CANCEL
        } else {
            tally.final_status()
        };
        // The retrieve was recorded when it began; one that did not deliver
        // everything is recorded again with how it ended.
        if cancelled || tally.failed > 0 {
            self.record_end(
                rsp_field,
                tally,
                if cancelled { " (cancelled)" } else { "" },
            )
            .await;
        }
        tally.ended = true;
        let mut r = cmd.response(rsp_field, st);
        r.sub_operations = Some(tally.counts());
        let ts = self
            .context(pc)
            .and_then(|(_, ts)| dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&ts));
        let data = ts.and_then(|ts| failed_list(&tally.failed_uids, ts));
        r.has_data_set = data.is_some();
        send_message(&mut self.assoc, pc, &r, data.as_deref()).await
    }

    /// A retrieve whose association broke before its end was recorded (the
    /// record made when it began counts every instance as sent) is recorded
    /// again with how far it got.
    async fn record_broken(&self, rsp_field: u16, tally: &Tally, why: &LinkError) {
        if !tally.ended {
            let why: String = why.to_string().chars().take(200).collect();
            self.record_end(rsp_field, tally, &format!(" (association failed: {why})"))
                .await;
        }
    }

    async fn record_end(&self, rsp_field: u16, tally: &Tally, how: &str) {
        let mut e = self.event(
            custos_core::audit::EventId::InstancesTransferred,
            'R',
            custos_core::audit::Outcome::MinorFailure,
        );
        e.detail = format!(
            "{} ended{how}: {} sent, {} failed, {} with warnings, {} not attempted",
            if rsp_field == field::C_GET_RSP {
                "C-GET"
            } else {
                "C-MOVE"
            },
            tally.completed,
            tally.failed,
            tally.warning,
            tally.remaining
        );
        self.archive.audit(e).await;
    }

    pub(crate) async fn move_to(
        &mut self,
        pc: u8,
        cmd: &Command,
        ident: Identifier,
    ) -> Result<(), LinkError> {
        let dest_ae = cmd.move_destination.trim().to_string();
        let dest = match self.archive.peer_directory().peer(&dest_ae).await {
            Ok(Some(p)) => p.host.connect_host().map(|h| (p, h)),
            Ok(None) => None,
            Err(e) => {
                // Not "destination unknown": the registry could not be read
                // (the peer should try again, not fix its configuration).
                warn!(error = %e, "C-MOVE: cannot look the destination up");
                let mut r = cmd.response(field::C_MOVE_RSP, status::OUT_OF_RESOURCES_SUBOPS);
                r.error_comment = Some("the peer registry cannot be read".into());
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        let Some((dest, host)) = dest else {
            info!(calling = self.peer_ae(), destination = %dest_ae, "C-MOVE refused: destination is not a registered peer with one host");
            let shown: String = dest_ae.chars().take(16).collect();
            self.refused(&format!(
                "C-MOVE to `{shown}`, not a registered peer with one host"
            ))
            .await;
            let mut r = cmd.response(field::C_MOVE_RSP, status::MOVE_DESTINATION_UNKNOWN);
            r.error_comment = Some("move destination unknown".into());
            return send_message(&mut self.assoc, pc, &r, None).await;
        };
        let mut e = self.event(
            custos_core::audit::EventId::InstancesTransferred,
            'R',
            custos_core::audit::Outcome::Success,
        );
        let keys = e.name_query(&ident.query);
        let set = match self.archive.retrieve_set(ident.query.clone()).await {
            Ok(s) => s,
            Err(custos_index::IndexError::BadQuery(why)) => {
                info!(calling = self.peer_ae(), reason = %why, "C-MOVE refused");
                let mut r = cmd.response(field::C_MOVE_RSP, status::IDENTIFIER_DOES_NOT_MATCH);
                r.error_comment = Some(why.chars().take(64).collect());
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
            Err(e) => {
                warn!(error = %e, "C-MOVE lookup failed");
                return self.index_unavailable(pc, cmd, field::C_MOVE_RSP).await;
            }
        };
        self.archive.name_retrieved(&mut e, &ident.query).await;
        let mut set = set;
        info!(calling = self.peer_ae(), destination = %dest.ae_title, instances = set.total, "C-MOVE");
        e.detail = format!(
            "C-MOVE {keys} to {}: {} instances",
            dest.ae_title, set.total
        );
        if self.archive.record_access(e).await.is_err() {
            let mut r = cmd.response(field::C_MOVE_RSP, status::OUT_OF_RESOURCES_SUBOPS);
            r.error_comment = Some(TRAIL_DOWN.into());
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        let mut tally = Tally {
            remaining: set.total as usize,
            ..Default::default()
        };
        if set.total == 0 {
            return self
                .finish_retrieve(pc, cmd, field::C_MOVE_RSP, &mut tally, false)
                .await;
        }
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(self.config.ae_title.clone())
            .called_ae_title(dest.ae_title.clone())
            .max_pdu_length(self.config.max_pdu_length)
            .read_timeout(self.config.idle_timeout)
            .write_timeout(self.config.idle_timeout)
            .connection_timeout(Duration::from_secs(10));
        // One context per (SOP class, stored transfer syntax), so each instance can
        // travel as stored; plus an uncompressed context per class as fallback.
        let pairs: Vec<(String, String)> = set
            .kinds
            .iter()
            .map(|k| (k.sop_class_uid.clone(), k.transfer_syntax_uid.clone()))
            .collect();
        let mut proposed = 0;
        let mut fallback_for: Vec<String> = Vec::new();
        for (class, ts) in &pairs {
            if proposed >= 126 {
                break;
            }
            options = options.with_presentation_context(class.clone(), vec![ts.clone()]);
            proposed += 1;
            if !fallback_for.contains(class) {
                fallback_for.push(class.clone());
                options = options.with_presentation_context(
                    class.clone(),
                    vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()],
                );
                proposed += 1;
            }
        }
        let address = format!("{}:{}", host, dest.port);
        let target = format!("{}@{}", dest.ae_title, address);
        let result = match (dest.tls_required, self.config.tls_client.clone()) {
            (true, None) => {
                info!(destination = %dest.ae_title, "C-MOVE: destination requires TLS and DICOM TLS is not configured");
                self.fail_all_moves(pc, cmd, &mut set, &mut tally).await
            }
            (true, Some(tls)) => {
                let establish = options
                    .tls_config(tls)
                    .server_name(&host)
                    .establish_with_async_tls(&target);
                self.moves_to(pc, cmd, &dest.ae_title, &mut set, &mut tally, establish)
                    .await
            }
            (false, _) => {
                let establish = options.establish_with_async(&target);
                self.moves_to(pc, cmd, &dest.ae_title, &mut set, &mut tally, establish)
                    .await
            }
        };
        if let Err(e) = &result {
            self.record_broken(field::C_MOVE_RSP, &tally, e).await;
        }
        result
    }

    /// The C-MOVE's sub-operations to `dest` once `establish` (plain or TLS)
    /// has made the association, or their failure or cancellation.
    async fn moves_to<S: Stream, E: std::fmt::Display>(
        &mut self,
        pc: u8,
        cmd: &Command,
        dest: &str,
        set: &mut RetrieveSet,
        tally: &mut Tally,
        establish: impl Future<Output = Result<AsyncClientAssociation<S>, E>>,
    ) -> Result<(), LinkError> {
        match self.announced(pc, cmd, tally, establish).await? {
            Destination::Made(mut sub) => {
                crate::outbound::no_delay(&mut sub);
                self.move_sub_operations(pc, cmd, sub, set, tally).await
            }
            Destination::Failed(why) => {
                info!(error = %why, destination = %dest, "C-MOVE: cannot associate with the destination");
                self.fail_all_moves(pc, cmd, set, tally).await
            }
            Destination::Cancelled => {
                self.finish_retrieve(pc, cmd, field::C_MOVE_RSP, tally, true)
                    .await
            }
        }
    }

    /// Waits for the association to the destination (`establish`); if it is
    /// not made within [`ANNOUNCE_AFTER`], sends a Pending response, and again
    /// each [`PENDING_EVERY`] until it is. DCMTK's movescu, when it is the
    /// destination itself, waits for the C-MOVE's responses in one-second
    /// polls and looks for incoming associations only between them: without a
    /// response to wake it, each C-MOVE to itself began up to a second late.
    /// A destination silent for [`ASSOCIATE_MAX`] is given up; a C-CANCEL is
    /// heard between the waits.
    async fn announced<A, E: std::fmt::Display>(
        &mut self,
        pc: u8,
        cmd: &Command,
        tally: &mut Tally,
        establish: impl Future<Output = Result<A, E>>,
    ) -> Result<Destination<A>, LinkError> {
        let mut establish = std::pin::pin!(establish);
        let limit = ASSOCIATE_MAX.min(self.config.idle_timeout);
        let give_up = Instant::now() + limit;
        let mut wait = ANNOUNCE_AFTER;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            if let Ok(made) = tokio::time::timeout(wait.min(left), establish.as_mut()).await {
                return Ok(match made {
                    Ok(a) => Destination::Made(a),
                    Err(e) => Destination::Failed(e.to_string()),
                });
            }
            if self.cancel_requested(cmd.message_id).await? {
                return Ok(Destination::Cancelled);
            }
            if Instant::now() >= give_up {
                return Ok(Destination::Failed(format!(
                    "not connected within {} s",
                    limit.as_secs()
                )));
            }
            tally.pending_sent = Some(Instant::now());
            self.send_pending(pc, cmd, field::C_MOVE_RSP, tally).await?;
            wait = PENDING_EVERY;
        }
    }

    /// A Pending response with the sub-operations' counts so far.
    async fn send_pending(
        &mut self,
        pc: u8,
        cmd: &Command,
        rsp: u16,
        tally: &Tally,
    ) -> Result<(), LinkError> {
        let mut r = cmd.response(rsp, status::PENDING);
        r.sub_operations = Some(tally.counts());
        send_message(&mut self.assoc, pc, &r, None).await
    }

    async fn fail_all_moves(
        &mut self,
        pc: u8,
        cmd: &Command,
        set: &mut RetrieveSet,
        tally: &mut Tally,
    ) -> Result<(), LinkError> {
        tally.fail_rest(set).await;
        self.finish_retrieve(pc, cmd, field::C_MOVE_RSP, tally, false)
            .await
    }

    /// The C-STORE sub-operations of a C-MOVE over `sub` (plain or TLS).
    async fn move_sub_operations<S: Stream>(
        &mut self,
        pc: u8,
        cmd: &Command,
        mut sub: AsyncClientAssociation<S>,
        set: &mut RetrieveSet,
        tally: &mut Tally,
    ) -> Result<(), LinkError> {
        let archive = self.archive.clone();
        let originator = self.peer_ae().to_string();
        let mut cancelled = false;
        let mut sub_id: u16 = 0;
        'pages: loop {
            let page = tally.next_page(set).await;
            if page.is_empty() {
                break;
            }
            let mut ahead = ReadAhead::default();
            for (i, inst) in page.iter().enumerate() {
                if self.cancel_requested(cmd.message_id).await? {
                    cancelled = true;
                    break 'pages;
                }
                sub_id = sub_id.wrapping_add(1);
                let mut this = std::mem::take(&mut ahead);
                ahead.start(&sub, &archive, page.get(i + 1));
                let outcome = async {
                    if !send_store(
                        &mut sub,
                        &archive,
                        inst,
                        &mut this,
                        sub_id,
                        Some((&originator, cmd.message_id)),
                        self.config.idle_timeout,
                    )
                    .await?
                    {
                        return Ok::<_, LinkError>(None);
                    }
                    let (_, rsp) = receive_command(&mut sub, self.config.idle_timeout).await?;
                    Ok(if rsp.field == field::C_STORE_RSP {
                        rsp.status
                    } else {
                        None
                    })
                }
                .await;
                match outcome {
                    Ok(st) => tally.record(&inst.sop_instance_uid, st),
                    Err(e) => {
                        info!(error = %e, "C-MOVE: destination association failed");
                        tally.record(&inst.sop_instance_uid, None);
                        // A C-CANCEL sent while the destination was silent:
                        // the rest is cancelled, not failed (PS3.4 C.4.2.3).
                        if self.cancel_requested(cmd.message_id).await? {
                            cancelled = true;
                            break 'pages;
                        }
                        for rest in &page[i + 1..] {
                            tally.record(&rest.sop_instance_uid, None);
                        }
                        tally.fail_rest(set).await;
                        break 'pages;
                    }
                }
                if tally.pending_due() {
                    self.send_pending(pc, cmd, field::C_MOVE_RSP, tally).await?;
                }
            }
        }
        if !cancelled {
            tally.remaining = 0;
        }
        let _ = sub.release().await;
        self.finish_retrieve(pc, cmd, field::C_MOVE_RSP, tally, cancelled)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    /// A destination's warnings (Bxxx, and 0001, 0107, 0116) mean it took
    /// the instance: counted as warnings, not failed (nor listed as failed).
    #[test]
    fn a_destinations_warnings_are_not_failures() {
        let mut tally = Tally {
            remaining: 7,
            completed: 0,
            failed: 0,
            warning: 0,
            failed_uids: Vec::new(),
            pending_sent: None,
            ended: false,
        };
        for (uid, st) in [
            ("1", Some(0x0000)),
            ("2", Some(0xB000)),
            ("3", Some(0x0001)),
            ("4", Some(0x0107)),
            ("5", Some(0x0116)),
            ("6", Some(0xA700)),
            ("7", None),
        ] {
            tally.record(uid, st);
        }
        assert_eq!(tally.counts(), [0, 1, 2, 4]);
        assert_eq!(tally.failed_uids, ["6", "7"]);
    }

    /// 1,500 failed UIDs (~96 KB) are cut to what a 16-bit length holds under
    /// Explicit VR, and sent whole under Implicit VR.
    #[test]
    fn a_long_failed_list_fits_its_transfer_syntax() {
        let uids: Vec<String> = (0..1500)
            .map(|i| format!("1.2.826.0.1.3680043.8.498.{i:040}"))
            .collect();
        for (ts, whole) in [(EXPLICIT_VR_LE, false), (IMPLICIT_VR_LE, true)] {
            let ts = TransferSyntaxRegistry.get(ts).unwrap();
            let bytes = failed_list(&uids, ts).expect("a list");
            let back = InMemDicomObject::read_dataset_with_ts(&bytes[..], ts).unwrap();
            let value = back
                .element(tags::FAILED_SOP_INSTANCE_UID_LIST)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let listed: Vec<&str> = value.trim_end_matches('\0').split('\\').collect();
            assert_eq!(listed.len() == uids.len(), whole, "{}", listed.len());
            assert!(listed.len() > 900);
            assert_eq!(listed[..], uids[..listed.len()]);
        }
    }
}
