//! `custos serve`: set up on first run, start the DICOM listener, stop cleanly.

use std::path::Path;
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
        .init();

    let archive = data::open_archive(data_dir, &config).await?;
    let listener = tokio::net::TcpListener::bind(&config.dicom.listen)
        .await
        .with_context(|| format!("binding DICOM listener on {}", config.dicom.listen))?;
    let local = listener.local_addr()?;
    if created {
        println!(
            "Created {} (configuration in custos.toml)",
            data_dir.display()
        );
    }
    println!(
        "Custos listening for DICOM on {local} as AE title {}",
        config.dicom.ae_title
    );
    let peers = archive.index().peers().await?;
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
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "DICOM listener is reachable beyond loopback without TLS");
    }

    let dimse = DimseConfig {
        ae_title: config.dicom.ae_title.clone(),
        max_pdu_length: config.dicom.max_pdu_length,
        max_associations: config.dicom.max_associations,
        artim_timeout: Duration::from_secs(config.dicom.artim_timeout_secs),
        idle_timeout: Duration::from_secs(config.dicom.idle_timeout_secs),
        max_find_results: config.dicom.max_find_results,
        shutdown_grace: Duration::from_secs(config.dicom.shutdown_grace_secs),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(custos_dimse::serve(listener, archive, dimse, stop_rx));
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    server.await.context("DICOM server task")?;
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
