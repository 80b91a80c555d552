//! DIMSE status codes (PS3.7 C), shared by the DIMSE services and STOW-RS
//! (whose failure reasons are the same codes).

use tracing::{info, warn};

use crate::{IngestError, Received, StoreOutcome};

pub const SUCCESS: u16 = 0x0000;
pub const PENDING: u16 = 0xFF00;
pub const CANCEL: u16 = 0xFE00;
pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
pub const NOT_AUTHORIZED: u16 = 0x0124;
pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
pub const OUT_OF_RESOURCES: u16 = 0xA700;
pub const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
pub const OUT_OF_RESOURCES_SUBOPS: u16 = 0xA702;
pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
pub const IDENTIFIER_DOES_NOT_MATCH: u16 = 0xA900;
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
pub const SUBOPS_WARNING: u16 = 0xB000;
/// DIMSE-N failures (PS3.7 C.4): processing failure, no such SOP instance,
/// invalid argument value, missing attribute, no such action type.
pub const PROCESSING_FAILURE: u16 = 0x0110;
pub const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
pub const MISSING_ATTRIBUTE: u16 = 0x0120;
pub const NO_SUCH_ACTION: u16 = 0x0123;
/// C-STORE warning: elements discarded (used when a conflicting duplicate is dropped).
pub const ELEMENTS_DISCARDED: u16 = 0xB006;

/// Whether a response status is a warning (PS3.7 C): Bxxx, and the general
/// 0001 (requested optional attributes not supported), 0107 (attribute list
/// error) and 0116 (attribute value out of range): what was sent was taken.
pub fn is_warning(status: u16) -> bool {
    matches!(status, 0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF)
}

/// The DIMSE status (and comment) for an ingest result: C-STORE's response,
/// and STOW-RS's failure and warning reasons.
pub fn of_store(result: &Result<(Received, StoreOutcome), IngestError>) -> (u16, Option<String>) {
    match result {
        Ok((_, StoreOutcome::Stored | StoreOutcome::AlreadyStored | StoreOutcome::Replaced)) => {
            (SUCCESS, None)
        }
        Ok((_, StoreOutcome::ConflictKept)) => (
            ELEMENTS_DISCARDED,
            Some("SOP Instance UID already stored with other content; kept".into()),
        ),
        Ok((_, StoreOutcome::ConflictRejected)) => (
            DUPLICATE_SOP_INSTANCE,
            Some("SOP Instance UID already stored with other content".into()),
        ),
        Err(IngestError::Unreadable(e)) => {
            info!(error = %e, "C-STORE refused: unreadable data set");
            (CANNOT_UNDERSTAND, Some("data set cannot be parsed".into()))
        }
        Err(IngestError::NotPermitted(e)) => {
            info!(error = %e, "C-STORE refused: not permitted");
            (NOT_AUTHORIZED, Some(e.clone()))
        }
        Err(IngestError::Invalid(e)) => {
            info!(error = %e, "C-STORE refused: invalid instance");
            (IDENTIFIER_DOES_NOT_MATCH, Some(e.clone()))
        }
        Err(e) => {
            warn!(error = %e, "C-STORE failed");
            (
                OUT_OF_RESOURCES,
                Some("archive could not store the instance".into()),
            )
        }
    }
}
