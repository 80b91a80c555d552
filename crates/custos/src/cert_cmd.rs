//! `custos cert issue NAME`: a key and certificate from the data folder's CA
//! for a modality or workstation that cannot make its own (DICOM TLS client,
//! or server certificate of a C-MOVE destination).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub fn issue(data: &Path, name: &str, out: Option<PathBuf>, hosts: &[String]) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("a certificate name has 1-64 letters, digits, `.`, `_` or `-`");
    }
    crate::data::init(data)?;
    let (cert, key, fingerprint) = custos_tls::issue_peer_cert(data, name, hosts)?;
    let dir = out.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join(format!("{name}.key.pem"));
    let cert_path = dir.join(format!("{name}.cert.pem"));
    for p in [&key_path, &cert_path] {
        if p.exists() {
            bail!("{} exists; remove it or choose another --out", p.display());
        }
    }
    write_new(&key_path, key.as_bytes(), 0o600)?;
    write_new(&cert_path, cert.as_bytes(), 0o644)?;
    println!("key:         {}", key_path.display());
    println!("certificate: {}", cert_path.display());
    println!("fingerprint: SHA256:{fingerprint}");
    println!(
        "register it: custos peer add {name} --host ADDR --port PORT --allow ... --tls required --cert-fingerprint SHA256:{fingerprint}"
    );
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
