//! `custos serve`: set up on first run, bind the listeners, serve until told
//! to stop. [`run`] takes bound listeners and a shutdown future, so tests run
//! servers in-process on port 0.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use custos_dimse::DimseConfig;

use crate::config::Config;
use crate::data;

/// The sockets a server answers on, bound before it starts.
pub struct Listeners {
    /// Plain DICOM (`[dicom] listen`, unless `plaintext = false`).
    pub dicom: Option<TcpListener>,
    /// DICOM over TLS (`[dicom] tls_listen`, when set).
    pub dicom_tls: Option<TcpListener>,
    /// HTTPS, or plain HTTP with `[http] plaintext`.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds what `config` names.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let bind = |what: &'static str, at: String| async move {
            TcpListener::bind(&at)
                .await
                .with_context(|| format!("binding the {what} listener on {at}"))
        };
        let d = &config.dicom;
        Ok(Listeners {
            dicom: match d.plaintext {
                true => Some(bind("DICOM", d.listen.clone()).await?),
                false => None,
            },
            dicom_tls: match d.tls_listen.is_empty() {
                true => None,
                false => Some(bind("DICOM TLS", d.tls_listen.clone()).await?),
            },
            http: bind("HTTP", config.http.listen.clone()).await?,
        })
    }
}

/// `custos serve`: first-run set-up, logging, the configured listeners, and
/// SIGTERM or Ctrl-C to stop.
pub async fn main(data_dir: &Path) -> Result<()> {
    let created = data::init(data_dir)?;
    let config = Config::load(data_dir)?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs captured by systemd or a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if created {
        println!(
            "Created {} (configuration in custos.toml)",
            data_dir.display()
        );
    }
    let listeners = Listeners::bind(&config).await?;
    run(data_dir, config, listeners, wait_for_signal()).await
}

/// Serves the initialised data folder `data_dir` with `config` on
/// `listeners` until `shutdown` completes, then stops cleanly (see
/// [`Running::stop`]).
pub async fn run(
    data_dir: &Path,
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let running = start(data_dir, config, listeners).await?;
    shutdown.await;
    running.stop().await
}

/// A started server: its DIMSE and HTTP tasks.
pub struct Running {
    stop: watch::Sender<bool>,
    dimse: tokio::task::JoinHandle<()>,
    web: tokio::task::JoinHandle<()>,
    /// The periodic retention pass, whose deletions are recorded before
    /// the trail's last flush.
    retention: tokio::task::JoinHandle<()>,
    archive: Arc<custos_archive::Archive>,
}

impl Running {
    /// Stops accepting, gives open associations and requests their grace
    /// period, and records the stop in the audit trail.
    pub async fn stop(self) -> Result<()> {
        tracing::info!("shutting down");
        let _ = self.stop.send(true);
        self.dimse.await.context("DICOM server task")?;
        self.web.await.context("HTTP server task")?;
        self.retention.await.context("retention task")?;
        // Counts of coalesced failures first, so that "stop" is the last record.
        self.archive.flush_audit().await;
        self.archive.audit(lifecycle("stop")).await;
        self.archive.flush_audit().await;
        println!("Custos stopped");
        Ok(())
    }
}

/// Opens the archive and the audit trail, then serves on `listeners`; returns
/// once every listener is being served. Prints one "Custos listening for ..."
/// line per listener.
pub async fn start(data_dir: &Path, config: Config, listeners: Listeners) -> Result<Running> {
    let archive = data::open_archive(data_dir, &config).await?;
    let trail = custos_archive::audit::AuditTrail::open(data_dir, archive.audit_log().as_ref())
        .await
        .context("opening the audit trail")?;
    archive.start_audit(trail);
    archive.audit(lifecycle("start")).await;
    if !config.audit.syslog_url.is_empty() {
        let (host, port) = crate::syslog::parse_url(&config.audit.syslog_url)?;
        let files = custos_tls::TlsFiles::in_data(data_dir);
        let ca = if config.audit.syslog_ca.is_empty() {
            files.ca_cert.clone()
        } else {
            config.resolve(data_dir, &config.audit.syslog_ca)
        };
        let tls = custos_tls::dicom_client_config(&files.server_cert, &files.server_key, &ca)
            .context("TLS for the syslog collector")?;
        tokio::spawn(
            crate::syslog::Forwarder {
                log: archive.audit_log(),
                offset_file: data_dir.join("syslog.offset"),
                host,
                port,
                tls,
            }
            .run(),
        );
    }
    if let Some(password) = crate::user_cmd::ensure_admin(
        data_dir,
        archive.registry().as_ref(),
        archive.audit_log().as_ref(),
    )
    .await?
    {
        data::announce_admin(data_dir, &password)?;
    }
    let listener = if let Some(l) = listeners.dicom {
        let local = l.local_addr()?;
        println!(
            "Custos listening for DICOM on {local} as AE title {}",
            config.dicom.ae_title
        );
        if !local.ip().is_loopback() {
            tracing::warn!(%local, "DICOM listener is reachable beyond loopback without TLS");
        }
        Some(l)
    } else {
        None
    };
    let tls = match listeners.dicom_tls {
        Some(l) => Some(dicom_tls(l, data_dir, &config, archive.peer_directory()).await?),
        None => None,
    };
    let peers = archive.peer_directory().peers().await?;
    if peers.is_empty() {
        println!(
            "No peers are registered, so every association will be rejected. Register one with:\n  custos peer add CT01 --host 127.0.0.1 --port 11113 --allow echo,store --data {}",
            data_dir.display()
        );
    } else {
        println!(
            "{} registered peer(s); `custos peer list` shows them",
            peers.len()
        );
    }
    check_routes(&config, &archive).await?;
    archive.set_routes(config.routes.clone());
    let auth = std::sync::Arc::new(custos_auth::Authenticator::new(
        archive.registry(),
        load_oidc(data_dir, &config).await?,
        custos_auth::LockoutPolicy {
            after: config.http.lockout_after,
            duration: Duration::from_secs(config.http.lockout_secs),
        },
    ));
    let dimse = DimseConfig {
        ae_title: config.dicom.ae_title.clone(),
        max_pdu_length: config.dicom.max_pdu_length,
        max_associations: config.dicom.max_associations,
        max_associations_per_address: config.dicom.max_associations_per_address,
        artim_timeout: Duration::from_secs(config.dicom.artim_timeout_secs),
        idle_timeout: Duration::from_secs(config.dicom.idle_timeout_secs),
        max_find_results: config.dicom.max_find_results,
        shutdown_grace: Duration::from_secs(config.dicom.shutdown_grace_secs),
        identity: Some(auth.clone()),
        tls_client: dicom_tls_client(data_dir, &config)?,
        require_identity: config
            .dicom
            .require_user_identity
            .join(",")
            .parse()
            .map_err(anyhow::Error::msg)?,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let web = start_web(
        listeners.http,
        data_dir,
        &config,
        archive.clone(),
        auth,
        stop_rx.clone(),
    )?;
    let retention = tokio::spawn(archive.clone().run_retention(
        Duration::from_secs(config.retention.interval_minutes.max(1) * 60),
        stop_rx.clone(),
    ));
    tokio::spawn(archive.clone().run_housekeeping(
        config.retention.keep_jobs_days,
        config.retention.keep_changes_days,
        stop_rx.clone(),
    ));
    tokio::spawn(archive.clone().run_sequencer(
        config.webhooks.stable_seconds.min(i64::MAX as u64) as i64,
        stop_rx.clone(),
    ));
    tokio::spawn(crate::forward::run(
        archive.clone(),
        crate::forward::Senders::new(dimse.clone(), &config.dicomweb_destinations)?,
        custos_archive::routing::RetryPolicy {
            base: Duration::from_secs(config.routing.retry_seconds.max(1)),
            max_attempts: i64::from(config.routing.max_attempts.max(1)),
        },
        stop_rx.clone(),
    ));
    let dimse = tokio::spawn(custos_dimse::serve(
        listener,
        tls,
        archive.clone(),
        dimse,
        stop_rx,
    ));
    Ok(Running {
        stop: stop_tx,
        dimse,
        web,
        retention,
        archive,
    })
}

/// Every `[[dicomweb_destination]]` must be usable and named apart from the
/// registered peers, and every `[[route]]` must name one of them or a
/// registered peer Custos can call (one address and a port): a rule to
/// anyone else is refused at start.
async fn check_routes(config: &Config, archive: &custos_archive::Archive) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for w in &config.dicomweb_destinations {
        w.check().map_err(anyhow::Error::msg)?;
        if !names.insert(w.name.as_str()) {
            bail!("two [[dicomweb_destination]] are named `{}`", w.name);
        }
        if archive.peer_directory().peer(&w.name).await?.is_some() {
            bail!(
                "[[dicomweb_destination]] `{}` has the AE title of a registered peer; name it apart",
                w.name
            );
        }
    }
    for r in &config.routes {
        r.attribute_keys().map_err(anyhow::Error::msg)?;
        if let Err(e) = archive.destination(&r.destination).await {
            bail!("[[route]] `{}`: {e}", r.name);
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves the web side on the HTTPS (or, when configured, plain HTTP) listener.
fn start_web(
    listener: TcpListener,
    data_dir: &Path,
    config: &Config,
    archive: std::sync::Arc<custos_archive::Archive>,
    auth: std::sync::Arc<custos_auth::Authenticator>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let http = &config.http;
    let local = listener.local_addr()?;
    let tls = if http.plaintext {
        println!("Custos listening for HTTP on {local} (plain: [http] plaintext = true)");
        if !local.ip().is_loopback() {
            tracing::warn!(%local, "HTTP listener is reachable beyond loopback without TLS");
        }
        None
    } else {
        let files = custos_tls::TlsFiles::in_data(data_dir);
        let (cert, key) = if http.cert.is_empty() {
            custos_tls::ensure_local_ca(data_dir)?;
            (files.server_cert, files.server_key)
        } else {
            (
                config.resolve(data_dir, &http.cert),
                config.resolve(data_dir, &http.key),
            )
        };
        let server_config = custos_tls::server_config(&cert, &key)?;
        println!(
            "Custos listening for HTTPS on {local} (certificate {}; local CA {})",
            cert.display(),
            files.ca_cert.display()
        );
        Some(custos_tls::TlsAcceptor::from(server_config))
    };
    let state = std::sync::Arc::new(custos_web::AppState {
        archive,
        config: custos_web::WebConfig {
            https: tls.is_some(),
            max_body_bytes: http.max_body_mb.saturating_mul(1 << 20),
            max_header_bytes: http.max_header_kb.saturating_mul(1024),
            max_find_results: http.max_query_results,
            max_stow_parts: http.max_stow_parts,
            max_connections: http.max_connections,
            max_connections_per_address: http.max_connections_per_address,
            idle_timeout: Duration::from_secs(http.idle_timeout_secs.max(1)),
            cors_origins: http.cors_origins.clone(),
            viewer_dir: Some(data_dir.join(custos_web::viewer::FOLDER)),
        },
        auth,
        peer_echo: Some(Arc::new(DimseEcho {
            ae_title: config.dicom.ae_title.clone(),
            tls: dicom_tls_client(data_dir, config)?,
        })),
        checkup: Some(Arc::new(crate::doctor::Checkup {
            data: data_dir.to_path_buf(),
            config: config.clone(),
        })),
    });
    Ok(tokio::spawn(custos_web::serve(listener, tls, state, stop)))
}

/// The admin page's peer test: a C-ECHO as C-MOVE would associate.
struct DimseEcho {
    ae_title: String,
    tls: Option<Arc<custos_tls::ClientConfig>>,
}

impl custos_web::PeerEcho for DimseEcho {
    fn echo<'a>(
        &'a self,
        peer: &'a custos_core::peer::Peer,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<custos_web::EchoAnswer, String>> + Send + 'a>,
    > {
        Box::pin(async move {
            let r = custos_dimse::echo_peer(
                &self.ae_title,
                peer,
                self.tls.clone(),
                Duration::from_secs(10),
            )
            .await?;
            Ok(custos_web::EchoAnswer {
                status: r.status,
                tls: r.tls,
                elapsed: r.elapsed,
            })
        })
    }
}

/// How often the DICOM TLS handshake picks up peers' CA bundles.
const PEER_CA_REFRESH: Duration = Duration::from_secs(5);

async fn peer_bundles(index: &dyn custos_index::PeerDirectory) -> Result<Vec<String>> {
    Ok(index
        .peers()
        .await?
        .into_iter()
        .filter(|p| !p.ca_pem.is_empty())
        .map(|p| p.ca_pem)
        .collect())
}

/// DICOM over TLS on `listener`: the server certificate, and the client CAs
/// (configured plus peers' bundles, refreshed).
async fn dicom_tls(
    listener: TcpListener,
    data_dir: &Path,
    config: &Config,
    index: Arc<dyn custos_index::PeerDirectory>,
) -> Result<custos_dimse::TlsListener> {
    let d = &config.dicom;
    if d.tls_cert.is_empty() || d.tls_client_ca.is_empty() {
        custos_tls::ensure_local_ca(data_dir)?;
    }
    let (cert, key, ca) = dicom_tls_files(data_dir, config);
    let trust = custos_tls::client_trust::ClientTrust::new(&ca)?;
    trust.update(peer_bundles(index.as_ref()).await?);
    // Peers registered later (by the CLI, another node, the API) bring their
    // CA bundles into the handshake within this interval.
    let refresh = trust.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PEER_CA_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match peer_bundles(index.as_ref()).await {
                Ok(b) => refresh.update(b),
                Err(e) => tracing::warn!(error = %e, "cannot reload peers' CA bundles"),
            }
        }
    });
    let server_config = custos_tls::dicom_server_config(&cert, &key, trust.clone())?;
    println!(
        "Custos listening for DICOM TLS on {} as AE title {}",
        listener.local_addr()?,
        d.ae_title
    );
    Ok(custos_dimse::TlsListener {
        listener,
        acceptor: custos_tls::TlsAcceptor::from(server_config),
        trust,
    })
}

/// The OpenID Connect verifier, when `[oidc] issuer` is set; shared by HTTPS
/// bearer tokens and DICOM user identities.
async fn load_oidc(data_dir: &Path, config: &Config) -> Result<Option<custos_auth::Oidc>> {
    let oidc = custos_auth::Oidc::load(custos_auth::OidcConfig {
        issuer: config.oidc.issuer.clone(),
        audience: config.oidc.audience.clone(),
        jwks_file: if config.oidc.jwks_file.is_empty() {
            String::new()
        } else {
            config
                .resolve(data_dir, &config.oidc.jwks_file)
                .display()
                .to_string()
        },
        jwks_url: config.oidc.jwks_url.clone(),
        role_claim: config.oidc.role_claim.clone(),
        username_claim: config.oidc.username_claim.clone(),
        refresh: Duration::from_secs(config.oidc.jwks_refresh_secs.max(1)),
    })
    .await
    .context("loading the OpenID Connect key set")?;
    Ok(oidc)
}

fn lifecycle(what: &str) -> custos_core::audit::AuditEvent {
    use custos_core::audit::{AuditEvent, EventId, Outcome};
    let mut e = AuditEvent::new(EventId::ApplicationActivity, 'E', Outcome::Success);
    e.detail = format!("application {what} ({})", env!("CARGO_PKG_VERSION"));
    e
}

/// The DICOM TLS certificate, key and client CA: `[dicom] tls_cert`,
/// `tls_key`, `tls_client_ca`, or the data folder's own where not set.
fn dicom_tls_files(data_dir: &Path, config: &Config) -> (PathBuf, PathBuf, PathBuf) {
    let d = &config.dicom;
    let files = custos_tls::TlsFiles::in_data(data_dir);
    let (cert, key) = if d.tls_cert.is_empty() {
        (files.server_cert, files.server_key)
    } else {
        (
            config.resolve(data_dir, &d.tls_cert),
            config.resolve(data_dir, &d.tls_key),
        )
    };
    let ca = if d.tls_client_ca.is_empty() {
        files.ca_cert
    } else {
        config.resolve(data_dir, &d.tls_client_ca)
    };
    (cert, key, ca)
}

/// The client side of DICOM TLS for C-MOVE to TLS peers: trusts the client CA
/// (the data folder's by default) and presents the DICOM TLS certificate.
pub(crate) fn dicom_tls_client(
    data_dir: &Path,
    config: &Config,
) -> Result<Option<std::sync::Arc<custos_tls::ClientConfig>>> {
    let (cert, key, ca) = dicom_tls_files(data_dir, config);
    if !cert.exists() || !ca.exists() {
        return Ok(None);
    }
    Ok(Some(custos_tls::dicom_client_config(&cert, &key, &ca)?))
}
