//! `custos viewer install FILE.tgz`: puts the OHIF viewer (the `@ohif/app`
//! package from npm, made with `npm pack @ohif/app@VERSION`) into the data
//! folder, where the server serves it same-origin under `/viewer/`.
//!
//! Only the pinned release is accepted: the tarball's SHA-512 must be the
//! integrity the npm registry publishes for it. Its `dist/` is unpacked
//! (nothing else, no path outside the folder), its `index.html` is rewritten
//! for the `/viewer/` base, and the hashes of its inline scripts are kept so
//! that the viewer's Content-Security-Policy needs no `'unsafe-inline'`.
//! The server writes `app-config.js` itself (pointing at `/dicom-web`).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use sha2::{Digest, Sha512};

/// The OHIF release Custos is tested with.
pub const OHIF_VERSION: &str = "3.13.2";
/// `npm view @ohif/app@3.13.2 dist.integrity`.
pub const OHIF_INTEGRITY: &str = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==";

/// Largest tarball and largest unpacked file accepted.
const MAX_TARBALL: u64 = 256 << 20;
const MAX_FILE: u64 = 128 << 20;

pub fn install(data: &Path, tarball: &Path) -> Result<()> {
    let size = std::fs::metadata(tarball)
        .with_context(|| format!("reading {}", tarball.display()))?
        .len();
    if size > MAX_TARBALL {
        bail!("{} is larger than any OHIF release", tarball.display());
    }
    let bytes = std::fs::read(tarball).with_context(|| format!("reading {}", tarball.display()))?;
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&bytes))
    );
    if integrity != OHIF_INTEGRITY {
        bail!(
            "{} is not @ohif/app@{OHIF_VERSION} (its integrity is {integrity}); make it with `npm pack @ohif/app@{OHIF_VERSION}`",
            tarball.display()
        );
    }
    let target = data.join(custos_web::viewer::FOLDER);
    let staging = data.join(format!("{}.new", custos_web::viewer::FOLDER));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let files = unpack(&bytes, &staging)?;
    custos_web::viewer::prepare(&staging)
        .map_err(anyhow::Error::msg)
        .context("preparing OHIF's index.html")?;
    let gzipped = precompress(&staging).context("compressing OHIF's files")?;
    let old = data.join(format!("{}.old", custos_web::viewer::FOLDER));
    let _ = std::fs::remove_dir_all(&old);
    if target.exists() {
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(&staging, &target)?;
    let _ = std::fs::remove_dir_all(&old);
    println!(
        "OHIF {OHIF_VERSION} installed in {} ({files} files, {gzipped} also gzipped); it is served at /viewer/ (restart not needed)",
        target.display()
    );
    Ok(())
}

/// Writes `NAME.gz` beside each file of `dir` (recursively) that the server
/// may send gzipped (`custos_web::viewer::gzipped`): OHIF's first load is
/// ~30 MB of scripts and WebAssembly, which a hospital link or a VPN carries
/// in a quarter of the time compressed, and compressing once here costs the
/// server nothing per request. Source maps are left alone (only a
/// developer's tools fetch them). Returns how many were written.
fn precompress(dir: &Path) -> Result<usize> {
    let mut count = 0;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                folders.push(path);
                continue;
            }
            // OHIF's own app-config.js is never served (the server writes
            // its own): no copy of it.
            if !custos_web::viewer::gzipped(&path)
                || path.file_name().is_some_and(|n| n == "app-config.js")
                || std::fs::metadata(&path)?.len() < 1024
            {
                continue;
            }
            let plain = std::fs::read(&path)?;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &plain)?;
            let packed = gz.finish()?;
            if packed.len() < plain.len() {
                std::fs::write(custos_web::viewer::gzipped_copy(&path), packed)?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Unpacks `package/dist/**` of the tarball into `dir`; returns the file count.
fn unpack(tgz: &[u8], dir: &Path) -> Result<usize> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut count = 0;
    for entry in archive.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let Ok(inside) = path.strip_prefix("package/dist") else {
            continue;
        };
        if inside
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            bail!("refusing the path {} in the tarball", path.display());
        }
        if entry.header().size()? > MAX_FILE {
            bail!("{} is too large", path.display());
        }
        let out: PathBuf = dir.join(inside);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut content = Vec::new();
        entry.by_ref().take(MAX_FILE).read_to_end(&mut content)?;
        std::fs::write(&out, content).with_context(|| format!("writing {}", out.display()))?;
        count += 1;
    }
    if count == 0 {
        bail!("the tarball holds no package/dist: not an @ohif/app package");
    }
    Ok(count)
}
