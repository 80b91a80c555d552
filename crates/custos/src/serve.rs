//! `custos serve`: set up on first run, start the DICOM listener, stop cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use custos_dimse::DimseConfig;

use crate::config::Config;
use crate::data;

pub async fn run(data_dir: &Path) -> Result<()> {
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
    if created {
        println!(
            "Created {} (configuration in custos.toml)",
            data_dir.display()
        );
    }
    let listener = if config.dicom.plaintext {
        let l = tokio::net::TcpListener::bind(&config.dicom.listen)
            .await
            .with_context(|| format!("binding DICOM listener on {}", config.dicom.listen))?;
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
    let tls = dicom_tls(data_dir, &config, archive.peer_directory()).await?;
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
    let web = start_web(data_dir, &config, archive.clone(), auth, stop_rx.clone()).await?;
    let archive_for_stop = archive.clone();
    let server = tokio::spawn(custos_dimse::serve(listener, tls, archive, dimse, stop_rx));
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    server.await.context("DICOM server task")?;
    web.await.context("HTTP server task")?;
    // Counts of coalesced failures first, so that "stop" is the last record.
    archive_for_stop.flush_audit().await;
    archive_for_stop.audit(lifecycle("stop")).await;
    archive_for_stop.flush_audit().await;
    println!("Custos stopped");
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

/// Binds the HTTPS (or, when configured, plain HTTP) listener and serves the
/// web side on it.
async fn start_web(
    data_dir: &Path,
    config: &Config,
    archive: std::sync::Arc<custos_archive::Archive>,
    auth: std::sync::Arc<custos_auth::Authenticator>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let http = &config.http;
    let listener = tokio::net::TcpListener::bind(&http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", http.listen))?;
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
        Some(tokio_rustls::TlsAcceptor::from(server_config))
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
        },
        auth,
    });
    Ok(tokio::spawn(custos_web::serve(listener, tls, state, stop)))
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

/// Binds the DICOM TLS listener when `[dicom] tls_listen` is set.
async fn dicom_tls(
    data_dir: &Path,
    config: &Config,
    index: Arc<dyn custos_index::PeerDirectory>,
) -> Result<Option<custos_dimse::TlsListener>> {
    let d = &config.dicom;
    if d.tls_listen.is_empty() {
        return Ok(None);
    }
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
    let listener = tokio::net::TcpListener::bind(&d.tls_listen)
        .await
        .with_context(|| format!("binding the DICOM TLS listener on {}", d.tls_listen))?;
    println!(
        "Custos listening for DICOM TLS on {} as AE title {}",
        listener.local_addr()?,
        d.ae_title
    );
    Ok(Some(custos_dimse::TlsListener {
        listener,
        acceptor: tokio_rustls::TlsAcceptor::from(server_config),
        trust,
    }))
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
fn dicom_tls_client(
    data_dir: &Path,
    config: &Config,
) -> Result<Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>> {
    let (cert, key, ca) = dicom_tls_files(data_dir, config);
    if !cert.exists() || !ca.exists() {
        return Ok(None);
    }
    Ok(Some(custos_tls::dicom_client_config(&cert, &key, &ca)?))
}
