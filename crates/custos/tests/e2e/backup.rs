//! `custos backup` while the server ingests, `custos restore` into a new data
//! folder: everything acknowledged before the backup began comes back
//! readable, the audit trail verifies, and the backup and restore are in it.

use crate::common::*;

#[test]
fn a_backup_taken_during_ingest_restores_every_instance_it_holds() {
    let data = DataDir::new("backup");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    data.add_peer("DCMTK", "127.0.0.1", 104, "get");
    // Instances above 16 KiB get a file each: the CT (39 kB) is one, the
    // ingest peer's small ones are packed.
    data.replace_in_config("pack_limit_kib = 1024", "pack_limit_kib = 16");
    let src = data.path.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    let ct = pydicom_test_files().join("CT_small.dcm");
    std::fs::copy(&ct, src.join("ct.dcm")).unwrap();
    data.cli(&["import", src.to_str().unwrap()]).success();
    assert_eq!(
        walk_files(&data.path.join("blobs"))
            .iter()
            .filter(|p| !p.to_string_lossy().contains("packs"))
            .count(),
        1
    );

    // custos.toml kept elsewhere and linked (as from /etc): the backup
    // carries the file it names.
    let toml = data.path.join("custos.toml");
    let kept = data.path.with_extension("etc.toml");
    std::fs::rename(&toml, &kept).unwrap();
    std::os::unix::fs::symlink(&kept, &toml).unwrap();
    let server = Server::process(&data);
    let acked = data.path.with_extension("acked");
    let work = data.path.with_extension("work");
    let mut ingest = start_ingest(&server, &acked, &work, 20);
    let before = std::fs::read_to_string(&acked).unwrap();
    let dest = data.path.with_extension("backup");
    let _ = std::fs::remove_dir_all(&dest);
    let backup = data.cli(&["backup", dest.to_str().unwrap()]);
    assert!(backup.ok(), "{}{}", backup.stdout(), backup.stderr());
    assert!(
        backup.stdout().contains("every instance verified"),
        "{}",
        backup.stdout()
    );
    // A backup goes only into a new or empty folder.
    let again = data.cli(&["backup", dest.to_str().unwrap()]);
    assert!(!again.ok());
    assert!(
        again.stderr().contains("is not empty"),
        "{}",
        again.stderr()
    );
    ingest.wait().unwrap();
    drop(server);

    let restored = DataDir {
        path: data.path.with_extension("restored"),
    };
    let _ = std::fs::remove_dir_all(&restored.path);
    let run = restored.cli(&["restore", dest.to_str().unwrap()]);
    assert!(run.ok(), "{}{}", run.stdout(), run.stderr());
    let refused = restored.cli(&["restore", dest.to_str().unwrap()]);
    assert!(!refused.ok(), "a restore never overwrites a data folder");

    // Everything acknowledged before the backup began, and the imported CT.
    let before_file = data.path.with_extension("before");
    std::fs::write(&before_file, &before).unwrap();
    let server = Server::process(&restored);
    let (lost, unreadable) = lost_after_restart(&server, &before_file);
    assert!(lost.is_empty(), "{} instances lost: {lost:?}", lost.len());
    assert_eq!(unreadable, 0);
    let out = data.path.with_extension("get");
    let got = getscu_study(&server, "DCMTK", CT_STUDY, &out);
    assert_eq!(got.len(), 1);
    assert_eq!(dcm_dump(&got[0]), dcm_dump(&ct));
    drop(server);

    restored.cli(&["fsck"]).success();
    restored.cli(&["audit", "verify"]).success();
    let trail = restored.audit_export();
    let details: Vec<String> = trail.iter().map(|r| r.to_string()).collect();
    assert!(
        details.iter().any(|d| d.contains("restored ")),
        "the restore is in the restored trail"
    );
    assert!(
        data.audit_export()
            .iter()
            .any(|r| r.to_string().contains("backup of ")),
        "the backup is in the source's trail"
    );
    for dir in [&src, &work, &dest, &out] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The index kept in a subfolder of the data folder (`db/index.sqlite`): the
/// backup copies its snapshot, not the live file beside it, and restores;
/// a folder an interrupted backup or restore left is refused.
#[test]
fn an_index_in_a_subfolder_is_backed_up_and_restored() {
    let data = DataDir::new("backup-sub");
    data.replace_in_config("path = \"index.sqlite\"", "path = \"./db/index.sqlite\"");
    std::fs::create_dir(data.path.join("db")).unwrap();
    std::fs::rename(
        data.path.join("index.sqlite"),
        data.path.join("db/index.sqlite"),
    )
    .unwrap();
    let src = data.path.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    let ct = pydicom_test_files().join("CT_small.dcm");
    std::fs::copy(&ct, src.join("ct.dcm")).unwrap();
    data.cli(&["import", src.to_str().unwrap()]).success();

    let dest = data.path.with_extension("backup");
    let _ = std::fs::remove_dir_all(&dest);
    let backup = data.cli(&["backup", dest.to_str().unwrap()]);
    assert!(backup.ok(), "{}{}", backup.stdout(), backup.stderr());
    assert!(dest.join("db/index.sqlite").is_file());
    let restored = DataDir {
        path: data.path.with_extension("restored"),
    };
    let _ = std::fs::remove_dir_all(&restored.path);
    let run = restored.cli(&["restore", dest.to_str().unwrap()]);
    assert!(run.ok(), "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("restored 1 instances"),
        "{}",
        run.stdout()
    );
    for whole in [&dest, &restored.path] {
        assert!(
            !whole.join(".custos-incomplete").exists(),
            "{}",
            whole.display()
        );
    }
    restored.cli(&["fsck"]).success();

    // What an interrupted run leaves (its mark still in it) is refused: as
    // a backup to restore, and as a data folder to open.
    std::fs::write(dest.join(".custos-incomplete"), "").unwrap();
    let again = DataDir {
        path: data.path.with_extension("again"),
    };
    let _ = std::fs::remove_dir_all(&again.path);
    let refused = again.cli(&["restore", dest.to_str().unwrap()]);
    assert!(!refused.ok());
    assert!(
        refused.stderr().contains("interrupted backup or restore"),
        "{}",
        refused.stderr()
    );
    assert!(!again.path.exists(), "nothing made");
    std::fs::write(restored.path.join(".custos-incomplete"), "").unwrap();
    let refused = restored.cli(&["fsck"]);
    assert!(!refused.ok());
    assert!(
        refused.stderr().contains("interrupted backup or restore"),
        "{}",
        refused.stderr()
    );
    for dir in [&src, &dest, &restored.path] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
