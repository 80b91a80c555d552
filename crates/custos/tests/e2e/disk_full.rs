//! Issue 14, trial 2: the disk fills up. On a small filesystem made for the
//! test (tmpfs with a size; the suite runs as root), C-STORE gets 0xA700 and
//! STOW-RS 503 with failure reason 0xA700, what was stored stays findable and
//! byte-identical, nothing half-written becomes visible, the audit trail keeps
//! the failures, and ingest resumes by itself once space returns. Twice: with
//! the whole data folder on the full disk, and with only the index there
//! (blobs elsewhere), where SQLite is the one that cannot grow.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const PW: &str = "disk-full-pw-7Qx";

/// A tmpfs of `mib` MiB mounted at `path`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this trial mounts a small tmpfs and needs root (the README's test command runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_path_buf())
    }

    /// Writes a filler file until the filesystem refuses more.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A data folder initialised on `root` (a mount point).
fn data_on(root: &Path) -> DataDir {
    let data = DataDir {
        path: root.join("data"),
    };
    data.cli(&["init"]).success();
    data.add_peer("MODALITY", "127.0.0.1", 104, "echo,store,find,get");
    add_user(&data, "tech", "admin", PW);
    data
}

/// storescu (as shipped) of one file: Ok on success, else DCMTK's status text.
fn store(server: &Server, file: &Path) -> Result<(), String> {
    match storescu_one(server, "MODALITY", file) {
        (true, _) => Ok(()),
        (false, text) => Err(text),
    }
}

fn study_count(server: &Server) -> usize {
    let run = findscu_studies(server, "MODALITY");
    assert!(run.ok(), "{}", run.stderr());
    run.stderr().matches("Find Response: ").count()
}

/// Synthetic instances (peer.py's `make`), each its own study (so each
/// C-STORE adds index rows), with their study UIDs.
fn instances(dir: &Path, n: usize) -> Vec<(PathBuf, String)> {
    let studies: Vec<String> = (0..n)
        .map(|i| format!("2.25.{}{i:03}", std::process::id()))
        .collect();
    let specs: Vec<String> = studies
        .iter()
        .enumerate()
        .map(|(i, uid)| {
            serde_json::json!({"PatientID": format!("FULL{i}"), "StudyInstanceUID": uid})
                .to_string()
        })
        .collect();
    let mut args = vec!["make", dir.to_str().unwrap()];
    args.extend(specs.iter().map(String::as_str));
    let made = python(&args).success();
    let files: Vec<PathBuf> = serde_json::from_str(&made.stdout()).unwrap();
    files.into_iter().zip(studies).collect()
}

/// Audit records of failed stores (outcome 4, C-STORE or STOW-RS status
/// A700), and the latest time among them.
fn refused_in_trail(data: &DataDir) -> (usize, usize, Option<time::OffsetDateTime>) {
    let records = data.audit_export();
    let refused: Vec<&serde_json::Value> = records
        .iter()
        .map(|r| &r["record"])
        .filter(|r| {
            r["outcome"] == 4
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("status A700"))
        })
        .collect();
    let count = |what: &str| {
        refused
            .iter()
            .filter(|r| r["detail"].as_str().unwrap().starts_with(what))
            .count()
    };
    let latest = refused
        .iter()
        .map(|r| {
            let t = r["time"].as_str().unwrap();
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        })
        .max();
    (count("C-STORE"), count("STOW-RS"), latest)
}

#[test]
fn a_full_disk_refuses_stores_keeps_serving_and_recovers_by_itself() {
    let root = std::env::temp_dir().join(format!("custos-test-diskfull-{}", std::process::id()));
    let fs = Tmpfs::mount(&root, 48);
    let data = data_on(&root);
    let server = Server::start(&data);
    // Test inputs and outputs live off the small filesystem.
    let work = root.with_extension("work");
    let made = instances(&work.join("src"), 6);
    let files: Vec<&Path> = made.iter().map(|(f, _)| f.as_path()).collect();

    store(&server, files[0]).expect("stored while there is space");
    store(&server, files[1]).expect("stored while there is space");

    // What C-GET returns now (DCMTK's storescu re-encodes, so not the file).
    let get_dir = work.join("get");
    let baseline =
        std::fs::read(&getscu_study(&server, "MODALITY", &made[0].1, &get_dir)[0]).unwrap();

    let filler = fs.fill();
    // C-STORE: refused for lack of resources, nothing stored.
    let refused = store(&server, files[2]).expect_err("a store on a full disk must not succeed");
    assert!(refused.contains("Refused: OutOfResources"), "{refused}");
    // STOW-RS: 503 (nothing stored for want of resources: send again
    // later), failure reason A700 for the instance.
    let stow = json_of(&web(
        &server,
        "tech",
        PW,
        &["raw-stow", files[3].to_str().unwrap()],
    ));
    assert_eq!(stow["status"], 503, "{stow}");
    assert_eq!(
        stow["body"]["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA700,
        "{stow}"
    );
    // Reading goes on: both stored studies are found and come back whole.
    assert_eq!(study_count(&server), 2, "C-FIND while the disk is full");
    let got = getscu_study(&server, "MODALITY", &made[0].1, &get_dir);
    assert_eq!(got.len(), 1, "C-GET while the disk is full");
    assert!(
        dataset_of(&std::fs::read(&got[0]).unwrap()) == dataset_of(&baseline),
        "retrieved bytes differ from before the disk filled"
    );

    // Space returns: ingest resumes without a restart.
    let freed_at = time::OffsetDateTime::now_utc();
    std::fs::remove_file(filler).unwrap();
    store(&server, files[4]).expect("stores resume once space returns");
    let stow = json_of(&web(
        &server,
        "tech",
        PW,
        &["raw-stow", files[5].to_str().unwrap()],
    ));
    assert_eq!(stow["status"], 200, "{stow}");
    assert_eq!(
        study_count(&server),
        4,
        "the two refused instances stay absent"
    );
    // The failures are in the audit trail (written once the disk had room).
    wait_until(
        "the refused stores in the audit trail",
        Duration::from_secs(30),
        || refused_in_trail(&data).0 == 1 && refused_in_trail(&data).1 == 1,
    );
    // Recorded late, but with the time they happened.
    let latest = refused_in_trail(&data).2.unwrap();
    assert!(
        latest < freed_at,
        "refusals dated {latest}, after the disk had room again ({freed_at})"
    );
    // The reads served while the disk was full were recorded before they
    // were served (in the audit reserve, allocated at start) and are in the
    // trail now, with the time they happened.
    let read_while_full = data.audit_export().iter().any(|r| {
        let r = &r["record"];
        let t = r["time"].as_str().unwrap_or_default();
        let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339);
        r["event"]["code"] == 110104
            && r["action"] == "R"
            && r["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("C-GET")
            && t.is_ok_and(|t| t > latest - time::Duration::seconds(30) && t < freed_at)
    });
    assert!(
        read_while_full,
        "the C-GET made while the disk was full is not in the trail"
    );
    assert!(server.stop(), "clean shutdown");
    // Nothing half-written: every indexed blob verifies, no orphans beyond what
    // a refused store may leave (fsck --repair removes those).
    let fsck = data.cli(&["fsck", "--grace-hours", "0", "--repair"]);
    let summary = fsck.stdout();
    assert!(
        summary.contains("4 instances checked: 0 missing, 0 altered"),
        "{summary}"
    );
    data.cli(&["fsck", "--grace-hours", "0"]).success();
    data.cli(&["audit", "verify"]).success();
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_full_index_disk_refuses_stores_and_recovers_by_itself() {
    // Only the index (SQLite file and WAL) is on the small filesystem.
    let root = std::env::temp_dir().join(format!("custos-test-indexfull-{}", std::process::id()));
    let fs = Tmpfs::mount(&root, 16);
    let data = data_on(&root);
    let work = root.with_extension("work");
    let blobs = work.join("blobs");
    let env = [("CUSTOS_STORE_PATH", blobs.to_str().unwrap())];
    let server = Server::start_with(&data, &env);
    let made = instances(&work.join("src"), 21);
    store(&server, &made[0].0).expect("stored while there is space");

    let filler = fs.fill();
    // Each store adds index rows (its own study); the index cannot grow, so
    // some are refused. Whatever was acknowledged is findable; nothing else is.
    let (mut acked, mut refused) = (1, 0);
    for (file, _) in &made[1..20] {
        match store(&server, file) {
            Ok(()) => acked += 1,
            Err(text) => {
                assert!(text.contains("Refused: OutOfResources"), "{text}");
                refused += 1;
            }
        }
    }
    eprintln!("index full: {acked} stores acknowledged, {refused} refused");
    assert!(refused > 0, "the index grew on a full disk?");
    assert_eq!(
        study_count(&server),
        acked,
        "C-FIND shows exactly the acknowledged stores"
    );

    let freed_at = time::OffsetDateTime::now_utc();
    std::fs::remove_file(filler).unwrap();
    store(&server, &made[20].0).expect("stores resume once space returns");
    assert_eq!(study_count(&server), acked + 1);
    wait_until(
        "the refused stores in the audit trail",
        Duration::from_secs(30),
        || refused_in_trail(&data).0 == refused,
    );
    // The trail could not be written while the index's disk was full: the
    // records wait, and carry the time of the refusal, not of the writing.
    let latest = refused_in_trail(&data).2.unwrap();
    assert!(
        latest < freed_at,
        "refusals dated {latest}, after the disk had room again ({freed_at})"
    );
    assert!(server.stop(), "clean shutdown");
    // A refused instance's blob may be left unindexed (its bytes were durable
    // before the index refused the row): an orphan, which --repair removes.
    let fsck = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("fsck")
            .args(args)
            .arg("--data")
            .arg(&data.path)
            .env("CUSTOS_STORE_PATH", &blobs)
            .output()
            .unwrap();
        Run(out)
    };
    let repaired = fsck(&["--grace-hours", "0", "--repair"]).stdout();
    assert!(
        repaired.contains(&format!(
            "{} instances checked: 0 missing, 0 altered",
            acked + 1
        )),
        "{repaired}"
    );
    let again = fsck(&["--grace-hours", "0"]);
    assert!(again.ok(), "{}", again.stdout());
    data.cli(&["audit", "verify"]).success();
    let _ = std::fs::remove_dir_all(&work);
}
