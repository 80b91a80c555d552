//! `custos`: the command line. Wiring only: configuration, opening the index
//! and store, and starting the servers; the work is in the library crates.
#![forbid(unsafe_code)]

use custos::{
    audit_cmd, backup_cmd, cert_cmd, config, data, doctor, fsck_cmd, import, jobs_cmd, migrate_cmd,
    peer_cmd, probe_cmd, serve, user_cmd, viewer_cmd,
};

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "custos", version, about = "A PACS that is closed by default")]
struct Cli {
    /// Data folder: configuration, index and stored instances.
    #[arg(
        long,
        global = true,
        env = "CUSTOS_DATA",
        default_value = "./custos-data"
    )]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (creates the data folder on first run).
    Serve,
    /// Create the data folder, configuration and index, then exit.
    Init,
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Registered DICOM peers (changes apply to new associations at once).
    Peer {
        #[command(subcommand)]
        command: peer_cmd::PeerCommand,
    },
    /// The forwarding queue: list, retry, cancel, send a study.
    Jobs {
        #[command(subcommand)]
        command: jobs_cmd::JobsCommand,
    },
    /// Webhooks: receivers of change events (stored, deleted, study stable).
    Webhook {
        #[command(subcommand)]
        command: custos::webhook_cmd::WebhookCommand,
    },
    /// Retention: delete (or list) what the [[retention.policy]] rules name.
    Retention {
        #[command(subcommand)]
        command: custos::study_cmd::RetentionCommand,
    },
    /// Studies: protect from retention, correct attributes.
    Study {
        #[command(subcommand)]
        command: custos::study_cmd::StudyCommand,
    },
    /// A de-identified copy of a study kept in the archive (PS3.15 Basic
    /// Profile; UIDs and pseudonyms from the data folder's deid.key).
    Deidentify(custos::study_cmd::DeidentifyArgs),
    /// Patients: merge two.
    Patient {
        #[command(subcommand)]
        command: custos::study_cmd::PatientCommand,
    },
    /// Web users (HTTP Basic) and their roles.
    User {
        #[command(subcommand)]
        command: user_cmd::UserCommand,
    },
    /// API tokens (HTTP `Authorization: Bearer`).
    Token {
        #[command(subcommand)]
        command: user_cmd::TokenCommand,
    },
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// Check a DICOM node (and optionally its web endpoint) for the exposures
    /// of 2019: anonymous association, query, retrieve, store; no TLS.
    Probe {
        /// HOST or HOST:PORT (default port 104).
        target: String,
        /// Called AE titles to try (default: ANY-SCP, ORTHANC, CUSTOS, DCM4CHEE, PACS).
        #[arg(long)]
        aec: Vec<String>,
        /// Also check a web endpoint, e.g. https://host:8443
        #[arg(long)]
        http: Option<String>,
        /// Print only JSON.
        #[arg(long)]
        json: bool,
        /// Show patient values found by an anonymous query (default: only counts).
        #[arg(long)]
        show_phi: bool,
        /// The port speaks DICOM over TLS (e.g. 2762): run the checks over TLS.
        #[arg(long)]
        tls: bool,
        /// When an anonymous query finds a study, pull one instance by C-GET
        /// (counted, then discarded) to prove images leave.
        #[arg(long)]
        confirm_retrieve: bool,
    },
    /// Check this server's configuration and state (listeners, peers, users,
    /// audit trail, certificates, permissions, disk).
    Doctor {
        /// Print only JSON.
        #[arg(long)]
        json: bool,
    },
    /// Certificates from the data folder's CA.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The index database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Check the index against the stored blobs (missing, altered, orphans).
    Fsck {
        /// Remove orphan blobs (older than the grace period).
        #[arg(long)]
        repair: bool,
        /// Unindexed blobs younger than this many hours may be stores in flight.
        #[arg(long, default_value_t = 24)]
        grace_hours: u64,
    },
    /// Copy this archive (SQLite index and blob folder) into the new folder
    /// DEST while it serves; the copy is verified instance by instance and is
    /// itself a data folder.
    Backup { dest: PathBuf },
    /// Copy the backup SRC into the data folder (new or empty) and verify it.
    Restore { src: PathBuf },
    /// Copy this archive to PostgreSQL + S3 (resumable, verified, source keeps serving).
    Migrate {
        /// Target index, postgres://user@host:port/db
        #[arg(long)]
        to_index: String,
        /// Target store, s3://bucket/prefix?endpoint=...
        #[arg(long)]
        to_store: String,
    },
    /// The OHIF viewer served under /viewer/.
    Viewer {
        #[command(subcommand)]
        command: ViewerCommand,
    },
    /// Import DICOM files, folders and DICOMDIRs into the archive.
    Import {
        /// Files or folders (searched recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue NAME.key.pem and NAME.cert.pem (client and server use) and print
    /// the certificate's fingerprint for `peer add --cert-fingerprint`.
    Issue {
        name: String,
        /// Folder to write the files to (default: the current folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Host names or addresses the certificate is also valid for (a
        /// C-MOVE destination's server certificate needs the registered host).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ViewerCommand {
    /// Install OHIF from the tarball `npm pack @ohif/app@3.13.2` makes (its
    /// integrity is checked against the pinned release).
    Install { tarball: PathBuf },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or upgrade the index schema (versioned migrations), then exit.
    Migrate,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (file + environment), secrets redacted.
    Show,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::main(&cli.data).await,
            Command::Init => {
                let created = data::init(&cli.data)?;
                if created {
                    println!("Initialised {}", cli.data.display());
                } else {
                    println!("{} is already initialised", cli.data.display());
                }
                let config = config::Config::load(&cli.data)?;
                let index = data::open_index(&cli.data, &config).await?;
                if let Some(password) =
                    user_cmd::ensure_admin(&cli.data, index.as_ref(), index.as_ref()).await?
                {
                    data::announce_admin(&cli.data, &password)?;
                }
                Ok(())
            }
            Command::Probe {
                target,
                aec,
                http,
                json,
                show_phi,
                tls,
                confirm_retrieve,
            } => {
                let clean = probe_cmd::run(probe_cmd::Args {
                    target,
                    called: aec,
                    http,
                    json,
                    show_phi,
                    tls,
                    confirm_retrieve,
                })
                .await?;
                if !clean {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Doctor { json } => {
                if !doctor::run(&cli.data, json).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Audit { command } => {
                if !audit_cmd::run(&cli.data, command).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Cert {
                command: CertCommand::Issue { name, out, hosts },
            } => cert_cmd::issue(&cli.data, &name, out, &hosts),
            Command::User { command } => user_cmd::run_user(&cli.data, command).await,
            Command::Token { command } => user_cmd::run_token(&cli.data, command).await,
            Command::Config {
                command: ConfigCommand::Show,
            } => {
                let config = config::Config::load(&cli.data)?;
                print!("{}", config.show()?);
                Ok(())
            }
            Command::Peer { command } => peer_cmd::run(&cli.data, command).await,
            Command::Jobs { command } => jobs_cmd::run(&cli.data, command).await,
            Command::Webhook { command } => custos::webhook_cmd::run(&cli.data, command).await,
            Command::Retention { command } => custos::study_cmd::run(&cli.data, command).await,
            Command::Study { command } => custos::study_cmd::study(&cli.data, command).await,
            Command::Deidentify(args) => custos::study_cmd::deidentify(&cli.data, args).await,
            Command::Patient { command } => custos::study_cmd::patient(&cli.data, command).await,
            Command::Db {
                command: DbCommand::Migrate,
            } => {
                let config = config::Config::load(&cli.data)?;
                if config.index.url.is_empty() {
                    data::init(&cli.data)?;
                    println!(
                        "SQLite index at {} is up to date",
                        config.resolve(&cli.data, &config.index.path).display()
                    );
                } else {
                    let index = custos_index::PgIndex::connect(&config.index.url).await?;
                    let applied = index.migrate().await?;
                    println!(
                        "PostgreSQL index at {} is up to date ({applied} migrations applied now)",
                        config::redact_url(&config.index.url)
                    );
                }
                Ok(())
            }
            Command::Import { paths } => import::run(&cli.data, &paths).await,
            Command::Viewer {
                command: ViewerCommand::Install { tarball },
            } => viewer_cmd::install(&cli.data, &tarball),
            Command::Migrate { to_index, to_store } => {
                if !migrate_cmd::run(&cli.data, &to_index, &to_store).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Backup { dest } => backup_cmd::backup(&cli.data, &dest).await,
            Command::Restore { src } => backup_cmd::restore(&src, &cli.data).await,
            Command::Fsck {
                repair,
                grace_hours,
            } => {
                if !fsck_cmd::run(&cli.data, repair, grace_hours).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    })
}
