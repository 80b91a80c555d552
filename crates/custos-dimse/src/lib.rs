//! DIMSE server: the only user of dicom-ul in Custos.
//!
//! [`serve`] accepts TCP connections, passes each through the [`gate`]
//! (policy decision before negotiation), then runs one task per association
//! that dispatches C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, storage commitment
//! (N-ACTION, answered by N-EVENT-REPORT), worklist C-FIND and MPPS (N-CREATE,
//! N-SET) to the archive.
#![forbid(unsafe_code)]

mod association;
pub mod command;
pub mod commitment;
mod echo;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod identifier;
pub mod link;
mod mpps;
mod outbound;
pub mod quickack;
mod relay;
mod retrieve;
pub mod router;
mod server;
pub mod syntaxes;
mod tls;
mod worklist;

pub use echo::{EchoResult, echo_peer};
pub use gate::{IdentityClaim, IdentityKind};

/// Text of a DICOM element (for probe evidence).
pub fn command_text(e: &dicom_object::mem::InMemElement) -> String {
    custos_archive::text::element_text(e)
}
pub use server::{DimseConfig, TlsListener, serve};
