//! Sending and receiving DIMSE messages as P-DATA fragments over any dicom-ul
//! async association (ours as acceptor for C-GET, ours as requestor for C-MOVE).

use std::io::IoSlice;
use std::time::Duration;

use dicom_ul::Pdu;
use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use custos_archive::DatasetStream;

use crate::command::Command;
use crate::quickack::{Tcp, ack_now};

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

/// The byte stream under an association: plain TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Tcp {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Tcp> Stream for T {}

/// The next PDU, read into the association's buffer by us so that every read
/// is acknowledged at once ([`crate::quickack`]), and decoded by dicom-ul's
/// `read_pdu` from the PDU's bytes split off that buffer: dicom-ul's own
/// `receive` would first copy the whole PDU out of it (a P-DATA value is then
/// copied once, into its `Vec`, instead of twice). `idle` bounds each read,
/// as dicom-ul's read timeout does. A PDU declaring more than we accept, or a
/// closed connection, is left to dicom-ul's `receive` to report.
pub async fn receive_pdu<S: Stream, A>(assoc: &mut A, idle: Duration) -> Result<Pdu, LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let limit = assoc.local_max_pdu_length() as usize;
    loop {
        let (stream, buf) = assoc.get_mut();
        let missing = match buf.get(..6) {
            Some(h) => {
                let len = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
                if len > limit {
                    break;
                }
                if buf.len() >= 6 + len {
                    let frame = buf.split_to(6 + len).freeze();
                    // Same checks as dicom-ul's `receive` (strict, as the gate
                    // configures associations); the frame is whole, so `None`
                    // (incomplete) cannot come back.
                    return match dicom_ul::read_pdu(frame, limit as u32, true) {
                        Ok(Some(pdu)) => Ok(pdu),
                        Ok(None) => Err(LinkError::Protocol("incomplete PDU".into())),
                        Err(e) => Err(LinkError::Protocol(format!("invalid PDU: {e}"))),
                    };
                }
                6 + len - buf.len()
            }
            None => 6 - buf.len(),
        };
        buf.reserve(missing.max(16 * 1024));
        let read = within(idle, "the peer sent nothing in time", stream.read_buf(buf)).await?;
        if read == 0 {
            break; // closed: dicom-ul says so
        }
        ack_now(stream.tcp());
    }
    Ok(AsyncAssociation::receive(assoc).await?)
}

/// `io`, bounded by `idle` as dicom-ul bounds each of its reads and writes.
async fn within<T>(
    idle: Duration,
    what: &'static str,
    io: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(idle, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, what))?
}

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

/// Data set bytes written per system call when sending a stored instance: a
/// peer's maximum PDU is often 16 KiB (DCMTK's default), and one write per
/// PDU woke the receiver once per 16 KiB.
const WRITE_BATCH: usize = 256 << 10;

/// Sends a command followed by a stored data set, streamed from the store.
pub async fn send_streamed<S: Stream, A>(
    assoc: &mut A,
    pc: u8,
    cmd: &Command,
    mut data: DatasetStream,
    idle: Duration,
) -> Result<(), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    send_fragments(assoc, pc, PDataValueType::Command, &cmd.encode(), true).await?;
    let max = max_fragment(assoc);
    let batch = (WRITE_BATCH / max).max(1) * max;
    loop {
        let (chunk, last) = data.next_chunk(batch).await?;
        // The PDUs are written here rather than by dicom-ul's `send` (which
        // wants an owned copy and copies it again to encode): each a P-DATA-TF
        // header and one PDV item header, then the stored bytes (PS3.8 9.3.5).
        let pieces: Vec<&[u8]> = if chunk.is_empty() {
            vec![chunk]
        } else {
            chunk.chunks(max).collect()
        };
        let heads: Vec<[u8; 12]> = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let end = last && i + 1 == pieces.len();
                pdu_head(pc, piece.len(), if end { LAST_DATA } else { DATA })
            })
            .collect();
        let mut slices: Vec<IoSlice<'_>> = heads
            .iter()
            .zip(&pieces)
            .flat_map(|(head, piece)| [IoSlice::new(head), IoSlice::new(piece)])
            .collect();
        let stream = assoc.inner_stream();
        within(
            idle,
            "the peer took nothing in time",
            write_all_vectored(stream, &mut slices),
        )
        .await?;
        if last {
            // A TLS stream may still hold the last records: the peer must
            // take them in time too (a destination that stops reading would
            // otherwise hold a C-MOVE, or the forwarding worker, for ever).
            within(idle, "the peer took nothing in time", stream.flush()).await?;
            return Ok(());
        }
    }
}

/// Message control headers of a data PDV (PS3.8 E.2): more follow, last.
const DATA: u8 = 0x00;
const LAST_DATA: u8 = 0x02;

/// The header of a P-DATA-TF PDU holding one PDV of `len` bytes.
fn pdu_head(pc: u8, len: usize, control: u8) -> [u8; 12] {
    let item_len = len as u32 + 2;
    let mut head = [0u8; 12];
    head[0] = 0x04;
    head[2..6].copy_from_slice(&(item_len + 4).to_be_bytes());
    head[6..10].copy_from_slice(&item_len.to_be_bytes());
    head[10] = pc;
    head[11] = control;
    head
}

/// All of `slices`, in as few system calls as the stream allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        match w.write_vectored(slices).await? {
            0 if slices.iter().any(|s| !s.is_empty()) => {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            n => IoSlice::advance_slices(&mut slices, n),
        }
    }
    Ok(())
}

/// Reads the next complete command (data fragments, which responses we expect
/// never carry, are skipped). Returns the presentation context id too.
pub async fn receive_command<S: Stream, A>(
    assoc: &mut A,
    idle: Duration,
) -> Result<(u8, Command), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let mut buf = Vec::new();
    loop {
        match receive_pdu(assoc, idle).await? {
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
    idle: Duration,
) -> Result<(Command, Vec<u8>), LinkError>
where
    A: AsyncAssociation<S> + Send,
{
    let (mut cmd_bytes, mut data, mut cmd) = (Vec::new(), Vec::new(), None::<Command>);
    loop {
        let pdvs = match receive_pdu(assoc, idle).await? {
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
