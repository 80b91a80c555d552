//! OHIF v3 as the diagnostic viewer: the pinned `@ohif/app` tarball (fetched
//! once with `npm pack`, kept in target/tmp) is installed with `custos viewer
//! install`, served under /viewer/ and driven in Debian's chromium
//! (`tests/py/ohif.py`): study list, then a JPEG 2000 CT, a multi-frame and an
//! RGB instance shown in the viewport, with no failed DICOMweb request and no
//! decode or CSP error. A tarball that is not the pinned release is refused.

use crate::common::*;

const OHIF: &str = "3.13.2";

/// The pinned OHIF tarball, fetched from the npm registry on first use.
fn tarball() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ohif");
    let file = dir.join(format!("ohif-app-{OHIF}.tgz"));
    if !file.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("npm")
            .args(["pack", &format!("@ohif/app@{OHIF}"), "--pack-destination"])
            .arg(&dir)
            .output()
            .expect("npm (Debian's npm package)");
        assert!(
            out.status.success(),
            "npm pack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    file
}

#[test]
fn ohif_installed_from_the_pinned_tarball_shows_ct_multiframe_and_rgb() {
    let data = DataDir::new("ohif");
    add_user(&data, "reader", "admin", "viewer test 42 passphrase");
    // Anything but the pinned release is refused, and nothing is installed.
    let fake = data.path.with_extension("fake.tgz");
    std::fs::write(&fake, b"not a tarball").unwrap();
    let refused = data.cli(&["viewer", "install", fake.to_str().unwrap()]);
    assert!(!refused.ok());
    assert!(
        refused.stderr().contains("npm pack @ohif/app@3.13.2"),
        "{}",
        refused.stderr()
    );
    assert!(!data.path.join("viewer").exists());

    data.cli(&["viewer", "install", tarball().to_str().unwrap()])
        .success();
    let server = Server::start(&data);
    scripts_go_gzipped_to_who_takes_gzip(&server, &data.path.join("viewer"));
    let figures = browser_script(
        &server,
        "ohif.py",
        &["--user", "reader:viewer test 42 passphrase"],
    );
    for kind in ["ct-jpeg2000", "multiframe-ybr", "rgb"] {
        let spread = figures[format!("{kind}_pixel_spread")]
            .as_f64()
            .unwrap_or(0.0);
        assert!(spread > 5.0, "{kind}: {figures}");
    }
}

/// OHIF's main script, kept gzipped since the install: sent so (with
/// `Content-Encoding: gzip`) to a client that takes gzip, and as installed to
/// one that does not; both decode to the same bytes; asked again with its
/// entity tag, 304. (The browser run after this loads every script the
/// gzipped way.)
fn scripts_go_gzipped_to_who_takes_gzip(server: &Server, viewer: &std::path::Path) {
    let bundle = std::fs::read_dir(viewer)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("app.bundle.") && n.ends_with(".js"))
        .expect("OHIF's app bundle");
    let installed = std::fs::read(viewer.join(&bundle)).unwrap();
    let url = format!("https://localhost:{}/viewer/{bundle}", server.http.port());
    // Headers (lower case) and body of a GET with `extra` headers.
    let fetch = |extra: &[&str], decode: bool| {
        let out = viewer.with_extension("fetched");
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["-sS", "--cacert", server.ca.to_str().unwrap()];
        for h in extra {
            args.extend(["-H", h]);
        }
        args.extend(["-D", "-", "-o", out.to_str().unwrap()]);
        if decode {
            args.push("--compressed");
        }
        args.push(&url);
        let run = Run(std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap())
        .success();
        let body = std::fs::read(&out).unwrap_or_default();
        (run.stdout().to_ascii_lowercase(), body)
    };
    let tag_of = |headers: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|| panic!("no ETag: {headers}"))
    };
    let status_of = |headers: &str| headers.split_whitespace().nth(1).unwrap_or("").to_string();

    let (headers, body) = fetch(&["Accept-Encoding: gzip, deflate, br"], true);
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    assert!(headers.contains("vary: accept-encoding"), "{headers}");
    assert!(body == installed, "gzipped bundle decodes to another file");
    let (headers, raw) = fetch(&["Accept-Encoding: gzip"], false);
    assert!(
        raw.len() * 2 < installed.len(),
        "{} of {} bytes sent",
        raw.len(),
        installed.len()
    );
    let gz_tag = tag_of(&headers);
    let (headers, body) = fetch(&["Accept-Encoding: identity"], false);
    assert!(!headers.contains("content-encoding"), "{headers}");
    assert!(headers.contains("vary: accept-encoding"), "{headers}");
    assert!(body == installed, "bundle sent plain differs from the file");
    let plain_tag = tag_of(&headers);
    assert_ne!(plain_tag, gz_tag);

    // Asked again with its tag: 304 and no body; the gzipped copy's tag does
    // not stand for the plain copy.
    let if_gz = format!("If-None-Match: {gz_tag}");
    let (headers, body) = fetch(&["Accept-Encoding: gzip", &if_gz], false);
    assert_eq!(status_of(&headers), "304", "{headers}");
    assert!(body.is_empty(), "{} bytes with a 304", body.len());
    for kept in ["vary: accept-encoding", "cache-control: private", "etag: "] {
        assert!(
            headers.contains(kept),
            "{kept} missing from the 304: {headers}"
        );
    }
    let (headers, body) = fetch(&["Accept-Encoding: identity", &if_gz], false);
    assert_eq!(status_of(&headers), "200", "{headers}");
    assert!(body == installed);
}
