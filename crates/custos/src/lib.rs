//! The `custos` binary's commands as a library: `main.rs` parses the command
//! line and calls these; tests call [`serve::run`] to run a server in-process
//! on listeners they bound (port 0) and stop it with a future.
#![forbid(unsafe_code)]

pub mod audit_cmd;
pub mod backup_cmd;
pub mod cert_cmd;
pub mod config;
pub mod data;
pub mod doctor;
pub mod forward;
pub mod fsck_cmd;
pub mod import;
pub mod jobs_cmd;
pub mod migrate_cmd;
pub mod peer_cmd;
pub mod probe_cmd;
pub mod serve;
pub mod stow_out;
pub mod study_cmd;
pub mod syslog;
pub mod user_cmd;
pub mod viewer_cmd;
pub mod webhook_cmd;
pub mod webhooks;
