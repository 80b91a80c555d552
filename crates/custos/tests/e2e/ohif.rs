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
