//! Sending and receiving DIMSE messages as P-DATA fragments over any dicom-ul
//! async association (ours as acceptor for C-GET, ours as requestor for C-MOVE).

use dicom_ul::Pdu;
use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};

use custos_archive::DatasetStream;

use crate::command::Command;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("association failed: {0}")]
    Ul(#[from] dicom_ul::association::Error),
    #[error("reading stored data failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer aborted the association")]
    Aborted,
    #[error("peer released the association mid-operation")]
    Released,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// The byte stream under an association: plain TCP, or TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Largest P-DATA value we put in one PDU for this peer.
/// Data fragments are kept even-length (DCMTK refuses odd ones: data set
/// values are even, and so must the pieces be).
pub fn max_fragment<S: Stream, A: AsyncAssociation<S>>(assoc: &A) -> usize {
    ((assoc.peer_max_pdu_length() as usize).clamp(1024, 1 << 20) - 6) & !1
}

async fn send_fragments<S: Stream, A>(
    assoc: &mut A,
    pc: u8,
    ty: PDataValueType,
    bytes: &[u8],
    last_overall: bool,
) -> Result<(), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let max = max_fragment(assoc);
    let mut chunks = bytes.chunks(max).peekable();
    if bytes.is_empty() {
        // An empty data set is still one (empty, last) fragment.
        let pdv = PDataValue {
            presentation_context_id: pc,
            value_type: ty,
            is_last: true,
            data: Vec::new(),
        };
        AsyncAssociation::send(assoc, &Pdu::PData { data: vec![pdv] }).await?;
        return Ok(());
    }
    while let Some(chunk) = chunks.next() {
        let is_last = chunks.peek().is_none() && last_overall;
        let pdv = PDataValue {
            presentation_context_id: pc,
            value_type: ty.clone(),
            is_last,
            data: chunk.to_vec(),
        };
        AsyncAssociation::send(assoc, &Pdu::PData { data: vec![pdv] }).await?;
    }
    Ok(())
}

/// Sends a command and, if given, an in-memory data set. When both fit, they
/// travel in one PDU (one write instead of two: C-FIND answers are many and small).
pub async fn send_message<S: Stream, A>(
    assoc: &mut A,
    pc: u8,
    cmd: &Command,
    data: Option<&[u8]>,
) -> Result<(), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let command = cmd.encode();
    if let Some(d) = data
        && command.len() + d.len() + 12 <= max_fragment(assoc)
    {
        let pdvs = vec![
            PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            },
            PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Data,
                is_last: true,
                data: d.to_vec(),
            },
        ];
        AsyncAssociation::send(assoc, &Pdu::PData { data: pdvs }).await?;
        return Ok(());
    }
    send_fragments(assoc, pc, PDataValueType::Command, &command, true).await?;
    if let Some(d) = data {
        send_fragments(assoc, pc, PDataValueType::Data, d, true).await?;
    }
    Ok(())
}

/// Sends a command followed by a stored data set, streamed from the store.
pub async fn send_streamed<S: Stream, A>(
    assoc: &mut A,
    pc: u8,
    cmd: &Command,
    mut data: DatasetStream,
) -> Result<(), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    send_fragments(assoc, pc, PDataValueType::Command, &cmd.encode(), true).await?;
    let max = max_fragment(assoc);
    let mut current = data.next_chunk(max).await?;
    loop {
        let next = data.next_chunk(max).await?;
        let is_last = next.is_empty();
        let pdv = PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Data,
            is_last,
            data: current,
        };
        AsyncAssociation::send(assoc, &Pdu::PData { data: vec![pdv] }).await?;
        if is_last {
            return Ok(());
        }
        current = next;
    }
}

/// Reads the next complete command (data fragments, which responses we expect
/// never carry, are skipped). Returns the presentation context id too.
pub async fn receive_command<S: Stream, A>(assoc: &mut A) -> Result<(u8, Command), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let mut buf = Vec::new();
    loop {
        match AsyncAssociation::receive(assoc).await? {
            Pdu::PData { data } => {
                for pdv in data {
                    if pdv.value_type == PDataValueType::Command {
                        buf.extend_from_slice(&pdv.data);
                        if buf.len() > 64 * 1024 {
                            return Err(LinkError::Protocol("command set too large".into()));
                        }
                        if pdv.is_last {
                            let cmd = Command::decode(&buf).map_err(LinkError::Protocol)?;
                            return Ok((pdv.presentation_context_id, cmd));
                        }
                    }
                }
            }
            Pdu::AbortRQ { .. } => return Err(LinkError::Aborted),
            Pdu::ReleaseRQ => return Err(LinkError::Released),
            other => return Err(LinkError::Protocol(format!("unexpected PDU {other:?}"))),
        }
    }
}

/// Reads one whole DIMSE message: its command and, when it has one, its data
/// set (at most `max_data` bytes). For SCU sides reading responses.
pub async fn receive_message<S: Stream, A>(
    assoc: &mut A,
    max_data: usize,
) -> Result<(Command, Vec<u8>), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let (mut cmd_bytes, mut data, mut cmd) = (Vec::new(), Vec::new(), None::<Command>);
    loop {
        let pdvs = match AsyncAssociation::receive(assoc).await? {
            Pdu::PData { data } => data,
            Pdu::AbortRQ { .. } => return Err(LinkError::Aborted),
            Pdu::ReleaseRQ => return Err(LinkError::Released),
            other => return Err(LinkError::Protocol(format!("unexpected PDU {other:?}"))),
        };
        for pdv in pdvs {
            match pdv.value_type {
                PDataValueType::Command => {
                    cmd_bytes.extend_from_slice(&pdv.data);
                    if cmd_bytes.len() > 64 * 1024 {
                        return Err(LinkError::Protocol("command set too large".into()));
                    }
                    if pdv.is_last {
                        let c = Command::decode(&cmd_bytes).map_err(LinkError::Protocol)?;
                        if !c.has_data_set {
                            return Ok((c, data));
                        }
                        cmd = Some(c);
                    }
                }
                PDataValueType::Data => {
                    data.extend_from_slice(&pdv.data);
                    if data.len() > max_data {
                        return Err(LinkError::Protocol("data set too large".into()));
                    }
                    if pdv.is_last {
                        return match cmd.take() {
                            Some(c) => Ok((c, data)),
                            None => Err(LinkError::Protocol("data set before its command".into())),
                        };
                    }
                }
            }
        }
    }
}
