//! `custos fsck` finds what a disk, an operator or a crash did to the archive.

use crate::common::*;

#[test]
fn fsck_reports_missing_altered_and_orphan_blobs() {
    let data = DataDir::new("fsck");
    let files = pydicom_test_files();
    let src = data.path.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    for f in [
        "CT_small.dcm",
        "MR_small.dcm",
        "rtplan_truncated.dcm",
        "examples_overlay.dcm",
    ] {
        std::fs::copy(files.join(f), src.join(f)).unwrap();
    }
    data.cli(&["import", src.to_str().unwrap()]).success();
    let clean = data.cli(&["fsck"]).success().stdout();
    assert!(
        clean.contains("3 instances checked: 0 missing, 0 altered, 0 orphan blobs"),
        "{clean}"
    );

    // The three small instances are packed (one segment file). One blob's
    // record is marked deleted behind the index's back, one is altered by a
    // single byte, and one orphan is left as if by a crash.
    let records = pack_records(&data.path.join("blobs"));
    assert_eq!(records.len(), 3);
    let mut pack = std::fs::read(&records[0].path).unwrap();
    pack[records[0].data_at - 32 + 4] = b'D';
    pack[records[1].data_at + records[1].len - 1] ^= 0xff;
    std::fs::write(&records[0].path, pack).unwrap();
    let orphan = data.path.join("blobs/012/0123456789abcdef0123456789abcdef");
    std::fs::write(&orphan, b"bytes no index row names").unwrap();

    // A young orphan may be a store in flight: left alone.
    let young = data.cli(&["fsck"]);
    assert!(!young.ok());
    assert!(
        young
            .stdout()
            .contains("1 missing, 1 altered, 0 orphan blobs, 1 recent unindexed"),
        "{}",
        young.stdout()
    );
    // With no grace it is an orphan; --repair removes it, not the damaged instances.
    let found = data.cli(&["fsck", "--grace-hours", "0"]);
    assert!(!found.ok());
    assert!(
        found
            .stdout()
            .contains("1 missing, 1 altered, 1 orphan blobs"),
        "{}",
        found.stdout()
    );
    let repaired = data.cli(&["fsck", "--grace-hours", "0", "--repair"]);
    assert!(
        repaired.stdout().contains("(1 removed)"),
        "{}",
        repaired.stdout()
    );
    assert!(!orphan.exists());
    assert!(
        !repaired.ok(),
        "missing and altered instances still need attention"
    );
    // Both are in the audit trail: the damage found, the blob removed.
    let trail: Vec<String> = data.audit_export().iter().map(|e| e.to_string()).collect();
    assert!(
        trail
            .iter()
            .any(|e| e.contains("110113") && e.contains("1 instances missing and 1 altered")),
        "{trail:?}"
    );
    assert!(
        trail
            .iter()
            .any(|e| e.contains("110105") && e.contains("removed 1 orphan blobs")),
        "{trail:?}"
    );
    let _ = std::fs::remove_dir_all(&src);
}
