//! End-to-end tests: each module starts real Custos servers (and the
//! third-party peers it must work with) and checks what a user would see.
//! One test binary, so the suite links once.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

mod audit;
mod backup;
mod browser;
mod changes;
mod cli;
mod corrections;
mod crash;
mod deidentify;
mod dicom_tls;
mod dicomweb;
mod disk_full;
mod download;
mod duplicates;
mod durability;
mod fsck;
mod hardening;
mod interop_dcmtk;
mod interop_roundtrip;
mod metrics;
mod ohif;
mod openapi;
mod outage;
mod policy;
mod postgres_backend;
mod probe;
mod query;
mod retention;
mod robustness;
mod routing;
mod status;
mod sustained;
mod user_identity;
mod web_security;
mod workflow;
