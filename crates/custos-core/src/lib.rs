//! Custos domain model: who may do what, what a query means, what the index records.
//!
//! This crate does no I/O and knows nothing of sockets, SQL, files or PDUs, so that
//! the DIMSE server, the (future) web server and the command line all share one
//! vocabulary and one policy decision.
#![forbid(unsafe_code)]

pub mod action;
pub mod audit;
pub mod auth;
pub mod calendar;
pub mod changes;
pub mod credentials;
pub mod deid;
pub mod derived;
pub mod invalid;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod policy;
pub mod query;
pub mod record;
pub mod retention;
pub mod routing;

pub use action::{Action, Permissions};
pub use auth::{ApiToken, Role, User};
pub use invalid::Invalid;
pub use peer::{HostPattern, Peer};
pub use policy::{AssociationDecision, Principal, RejectReason};
