//! Test harness: runs Custos (in-process, or the real binary where a test
//! needs a process) on a temporary data folder and drives it with real peers
//! (DCMTK tools, pynetdicom scripts).
#![allow(dead_code)]

mod server;
pub use server::Server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_custos");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, initialised data folder, removed on drop.
pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    /// Replaces `from` (which must be there) with `to` in `custos.toml`.
    pub fn replace_in_config(&self, from: &str, to: &str) {
        let path = self.path.join("custos.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "custos.toml has no `{from}`");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// The audit trail as `custos audit export --json` prints it, one record per line.
    pub fn audit_export(&self) -> Vec<serde_json::Value> {
        self.cli(&["audit", "export", "--json"])
            .success()
            .stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn new(name: &str) -> DataDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("custos-test-{}-{}-{}", name, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&path);
        let d = DataDir { path };
        d.cli(&["init"]).success();
        d
    }

    /// Runs a `custos` command on this data folder.
    pub fn cli(&self, args: &[&str]) -> Run {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data")
            .arg(&self.path)
            .output()
            .expect("run custos");
        Run(out)
    }

    pub fn add_peer(&self, ae: &str, host: &str, port: u16, allow: &str) {
        self.cli(&[
            "peer",
            "add",
            ae,
            "--host",
            host,
            "--port",
            &port.to_string(),
            "--allow",
            allow,
        ])
        .success();
    }

    /// Stored blobs: files in the fan-out folders plus live records in pack files.
    pub fn blob_count(&self) -> usize {
        blob_count(&self.path.join("blobs"))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Blobs in a filesystem store, read from the on-disk layout (ARCHITECTURE.md,
/// `custos-store`'s `pack`): one per file outside `.staging` and `packs`, and
/// one per live record (32-byte header "CPK1", state `L`, length) of each pack.
pub fn blob_count(root: &Path) -> usize {
    let files = walk_files(root)
        .into_iter()
        .filter(|p| {
            let p = p.to_string_lossy();
            !p.contains(".staging") && !p.contains("/packs/")
        })
        .count();
    files + pack_records(root).into_iter().filter(|r| r.live).count()
}

/// A record of a pack file: where its blob's bytes are and whether it is live.
pub struct PackRecord {
    pub path: PathBuf,
    pub data_at: usize,
    pub len: usize,
    pub live: bool,
}

pub fn pack_records(root: &Path) -> Vec<PackRecord> {
    let mut out = Vec::new();
    for path in walk_files(&root.join("packs")) {
        let raw = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at + 32 <= raw.len() && &raw[at..at + 4] == b"CPK1" {
            let len = u64::from_le_bytes(raw[at + 8..at + 16].try_into().unwrap()) as usize;
            out.push(PackRecord {
                path: path.clone(),
                data_at: at + 32,
                len,
                live: raw[at + 4] == b'L',
            });
            at += 32 + len;
        }
    }
    out
}

pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Blobs in flight in a store's staging folder (each open store's folder
/// holds its lock file too, which is not a blob).
pub fn staged_files(staging: &Path) -> Vec<PathBuf> {
    walk_files(staging)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != ".lock"))
        .collect()
}

/// The data set of a Part 10 file (what must cross the archive unchanged).
pub fn dataset_of(bytes: &[u8]) -> &[u8] {
    &bytes[custos_archive::part10::dataset_offset(bytes).expect("a Part 10 file")..]
}

pub struct Run(pub Output);

impl Run {
    pub fn success(self) -> Self {
        assert!(
            self.0.status.success(),
            "command failed: {}\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn ok(&self) -> bool {
        self.0.status.success()
    }
}

/// Runs a DCMTK tool (from Debian's dcmtk package) as shipped: Nagle's
/// algorithm on, which Custos must not stall on (custos-dimse `quickack`).
/// `custos doctor --json` on `data` with `env`: whether it passed, and its report.
pub fn doctor(data: &DataDir, env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let mut cmd = Command::new(BIN);
    cmd.args(["doctor", "--json", "--data"]).arg(&data.path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let v = serde_json::from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), v)
}

pub fn dcmtk(tool: &str, args: &[&str]) -> Run {
    let path = format!("/usr/bin/{tool}");
    let out = Command::new(&path)
        .args(args)
        .env_remove("TCP_NODELAY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {path} (install Debian's dcmtk): {e}"));
    Run(out)
}

/// DCMTK's echoscu from `aet` to `aec` at `server`.
pub fn echo(server: &Server, aet: &str, aec: &str) -> Run {
    dcmtk(
        "echoscu",
        &["-aet", aet, "-aec", aec, "127.0.0.1", &server.port()],
    )
}

/// The repository's Python peer script (pynetdicom/pydicom).
pub fn python(args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/peer.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    Run(out)
}

/// The repository's DICOMweb client script (dicomweb-client, requests) against
/// `server`'s HTTPS side, as `user` with `password` (empty user: none).
pub fn web(server: &Server, user: &str, password: &str, args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/web.py");
    let url = format!("https://localhost:{}", server.http.port());
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg("--url")
        .arg(&url)
        .arg("--ca")
        .arg(&server.ca);
    if !user.is_empty() {
        cmd.args(["--user", user, "--password", password]);
    }
    Run(cmd.args(args).output().expect("run python3"))
}

/// Sends the HTTPS requests of `spec` (web.py's probe: method, path, auth,
/// headers, body) and returns one result per request (status, body, headers).
pub fn web_requests(server: &Server, spec: serde_json::Value) -> Vec<serde_json::Value> {
    let file = std::env::temp_dir().join(format!(
        "custos-probe-{}-{}.json",
        std::process::id(),
        free_port()
    ));
    std::fs::write(&file, spec.to_string()).unwrap();
    let run = web(server, "", "", &["probe", "--spec", file.to_str().unwrap()]).success();
    let _ = std::fs::remove_file(&file);
    json_of(&run).as_array().unwrap().clone()
}

/// Parses a script's JSON output, failing with its stderr if it has none.
/// A study by WADO-RS through web.py's raw-get (each part written to
/// `out`-N): status, content type and each part's length and SHA-256.
pub fn wado_study_parts(
    server: &Server,
    user: &str,
    password: &str,
    study: &str,
    out: &Path,
) -> serde_json::Value {
    let path = format!("/dicom-web/studies/{study}");
    let args = ["raw-get", "--path", &path, "--out", out.to_str().unwrap()];
    json_of(&web(server, user, password, &args).success())
}

/// Lower-case hex SHA-256, as web.py reports parts.
pub fn sha256_hex(bytes: &[u8]) -> String {
    <sha2::Sha256 as sha2::Digest>::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout())
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}\n{}", run.stdout(), run.stderr()))
}

/// Adds a web user with a password from stdin.
pub fn add_user(data: &DataDir, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args([
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data",
        ])
        .arg(&data.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run custos user add");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pydicom's bundled test files: real instances in many transfer syntaxes.
pub fn pydicom_test_files() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import pydicom,os;print(os.path.join(os.path.dirname(pydicom.__file__),'data','test_files'))"])
        .output()
        .expect("python3 with pydicom");
    assert!(out.status.success(), "pydicom is not installed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A free loopback TCP port (for peers' own listeners).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts pynetdicom storing synthetic instances (patient DURABLE^TEST) over 4
/// associations into `server`, and returns once `min_acks` were acknowledged.
/// Acknowledged SOP Instance UIDs are appended to `acked`, fsynced, as they come.
pub fn start_ingest(server: &Server, acked: &Path, work: &Path, min_acks: usize) -> Child {
    start_ingest_with(server, acked, work, min_acks, &["--seconds", "20"])
}

/// [`start_ingest`] with more of peer.py's `ingest` options (`--seconds`,
/// `--reconnect`); its summary (statuses seen, slowest store) is on stdout.
pub fn start_ingest_with(
    server: &Server,
    acked: &Path,
    work: &Path,
    min_acks: usize,
    options: &[&str],
) -> Child {
    let _ = std::fs::remove_file(acked);
    let child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/py/peer.py"
        ))
        .args([
            "ingest",
            "--port",
            &server.port(),
            "--aet",
            "PYSCU",
            "--threads",
            "4",
        ])
        .args(options)
        .arg("--acked")
        .arg(acked)
        .arg("--workdir")
        .arg(work)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the ingest peer");
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count(acked) < min_acks {
        assert!(Instant::now() < deadline, "ingest made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// How many stores the ingest peer has seen acknowledged so far.
pub fn acked_count(acked: &Path) -> usize {
    std::fs::read_to_string(acked)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// DCMTK's findscu (verbose) from `aet` for every study's UID: one
/// "Find Response: N (Pending)" line per match in its stderr.
/// Makes instances with peer.py's `make` (each spec a JSON object of
/// attributes) and stores each as `aet` (pynetdicom): their files and SOP
/// Instance UIDs, after checking every status is success.
pub fn make_and_store(
    server: &Server,
    dir: &Path,
    aet: &str,
    specs: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut args = vec!["make".to_string(), dir.to_string_lossy().into_owned()];
    args.extend(specs.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let files: Vec<String> = json_of(&python(&args).success())
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let port = server.port();
    let mut store = vec!["store", "--port", &port, "--aet", aet];
    store.extend(files.iter().map(String::as_str));
    let stored = json_of(&python(&store).success());
    let uids = files
        .iter()
        .map(|f| {
            assert_eq!(stored[f]["status"], 0, "{stored}");
            stored[f]["uid"].as_str().unwrap().to_string()
        })
        .collect();
    (files, uids)
}

pub fn findscu_studies(server: &Server, aet: &str) -> Run {
    dcmtk(
        "findscu",
        &[
            "-v",
            "-S",
            "-aet",
            aet,
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &server.port(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
        ],
    )
}

/// One C-STORE of `file` by DCMTK's storescu (as shipped) from `aet`: whether
/// it succeeded, and what storescu said.
pub fn storescu_one(server: &Server, aet: &str, file: &Path) -> (bool, String) {
    let run = dcmtk(
        "storescu",
        &[
            "-v",
            "-aet",
            aet,
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &server.port(),
            file.to_str().unwrap(),
        ],
    );
    let text = run.stderr() + &run.stdout();
    (text.contains("Received Store Response (Success)"), text)
}

/// The acknowledged UIDs that `server` cannot return (C-GET of DURABLE^TEST),
/// and how many returned data sets did not parse.
pub fn lost_after_restart(server: &Server, acked: &Path) -> (Vec<String>, u64) {
    let acked: Vec<String> = std::fs::read_to_string(acked)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!acked.is_empty());
    let out = python(&[
        "get",
        "--port",
        &server.port(),
        "--aet",
        "PYSCU",
        "--each-study",
        "-k",
        "PatientName=DURABLE^TEST",
    ])
    .success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    if v["retries"].as_u64().unwrap_or(0) > 0 {
        eprintln!("C-GET asked again: {}", out.stderr());
    }
    let received: std::collections::HashSet<&str> = v["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    let lost = acked
        .iter()
        .filter(|u| !received.contains(u.as_str()))
        .cloned()
        .collect();
    (lost, v["unreadable"].as_u64().unwrap_or(u64::MAX))
}

/// CT_small.dcm (pydicom's test set): its study and instance UIDs.
pub const CT_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
pub const CT_SOP: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

/// dcmdump of a file's attributes and pixel data, for comparing what was
/// sent with what came back (file meta aside).
pub fn dcm_dump(path: &Path) -> String {
    dcmtk(
        "dcmdump",
        &[
            "-q",
            "+P",
            "0008,0018",
            "+P",
            "0010,0010",
            "+P",
            "7fe0,0010",
            "--print-all",
            path.to_str().unwrap(),
        ],
    )
    .stdout()
}

/// DCMTK getscu of one study into a fresh folder `out`; the files received.
/// A new API token for `user` (`custos token create`), as printed.
pub fn create_token(data: &DataDir, user: &str, expires: &str, read_only: bool) -> String {
    let mut args = vec!["token", "create", "--user", user, "--expires", expires];
    if read_only {
        args.push("--read-only");
    }
    data.cli(&args).success().stdout().trim().to_string()
}

pub fn getscu_study(server: &Server, aet: &str, study_uid: &str, out: &Path) -> Vec<PathBuf> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let study = format!("StudyInstanceUID={study_uid}");
    let args = [
        "-aet",
        aet,
        "-aec",
        "CUSTOS",
        "127.0.0.1",
        &server.port(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &study,
        "-od",
        out.to_str().unwrap(),
        "-v",
    ];
    let get = dcmtk("getscu", &args);
    assert!(get.ok(), "{}", get.stderr());
    let files = walk_files(out);
    if files.is_empty() {
        // Shown with the failing test's output.
        eprintln!(
            "getscu received nothing:\n{}\n{}",
            get.stdout(),
            get.stderr()
        );
    }
    files
}

// ---- scale-out backends (PostgreSQL + S3 started by scripts/test) ----

pub fn fresh_database() -> String {
    let url = std::env::var("CUSTOS_TEST_POSTGRES_URL")
        .expect("CUSTOS_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL");
    let db = format!(
        "custos_e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let out = std::process::Command::new("psql")
        .arg(&url)
        .args(["-q", "-c", &format!("CREATE DATABASE {db}")])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}/{db}", url.rsplit_once('/').unwrap().0)
}

/// The test S3 URL with a prefix of its own.
pub fn s3_url(tag: &str) -> String {
    let s3 = std::env::var("CUSTOS_TEST_S3_URL")
        .expect("CUSTOS_TEST_S3_URL is not set: run scripts/test, which starts SeaweedFS");
    let (base, query) = s3.split_once('?').unwrap();
    format!("{base}/{tag}-{}?{query}", std::process::id())
}

/// A data folder whose index is `url` and whose blobs live in the folder
/// `store`, or on S3 when `s3` is given (credentials from the environment).
pub fn node(name: &str, url: &str, store: &std::path::Path, s3: Option<&str>) -> DataDir {
    let data = DataDir::new(name);
    let config = std::fs::read_to_string(data.path.join("custos.toml")).unwrap();
    // The first `url` key is [index]'s, the second [store]'s.
    let mut config = config
        .replacen("\nurl = \"\"", &format!("\nurl = \"{url}\""), 1)
        .replace(
            "path = \"blobs\"",
            &format!("path = \"{}\"", store.display()),
        );
    if let Some(s3) = s3 {
        config = config.replacen("\nurl = \"\"", &format!("\nurl = \"{s3}\""), 1);
    }
    std::fs::write(data.path.join("custos.toml"), config).unwrap();
    // Nodes that share an index share the audit chain's key (the README:
    // copy audit.key to every node).
    std::fs::write(data.path.join("audit.key"), "5a".repeat(32)).unwrap();
    assert!(
        data.cli(&["db", "migrate"])
            .success()
            .stdout()
            .contains("PostgreSQL index")
    );
    data
}

/// Polls `ready` every 50 ms until it holds; panics with `what` after `limit`.
/// Tests wait for a condition, never for a fixed time.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    wait_until(
        &format!("a listener on port {port}"),
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// Runs a browser script of `tests/py/` (Playwright in Debian's chromium)
/// against `server` with `args`, screenshots into target/tmp/ui-screenshots;
/// returns the JSON figures it printed. Fails the test with its output.
pub fn browser_script(server: &Server, script: &str, args: &[&str]) -> serde_json::Value {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/py")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .arg("--url")
        .arg(format!("https://localhost:{}", server.http.port()))
        .args(args)
        .arg("--shots")
        .arg(&shots)
        .output()
        .expect("python3 with playwright (pip install -r tests/py/requirements.txt)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{script} figures: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null)
}

/// A raw TLS connection to `port` on loopback (any server certificate), for
/// tests that speak the bytes themselves: half-sent requests, silent peers.
pub async fn tls_connect(port: u16) -> custos_tls::client::TlsStream<tokio::net::TcpStream> {
    let connector = custos_tls::TlsConnector::from(custos_tls::any_certificate_client().unwrap());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = custos_tls::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// The value of an `Authorization: Basic` header.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// Waits for a helper process to print `ready` (its first line of output)
/// as its sign that it is listening or holding what it was started for.
pub fn first_line_is(child: &mut Child, ready: &str) {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), ready);
}

/// DCMTK's `findscu -W` from `aet` with `keys`: the responses, each as
/// dcmdump prints it; `None` if findscu failed.
pub fn worklist_query(
    server: &Server,
    aet: &str,
    out: &std::path::Path,
    keys: &[&str],
) -> Option<Vec<String>> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let port = server.port();
    let mut args = vec![
        "-W",
        "-X",
        "-od",
        out.to_str().unwrap(),
        "-aet",
        aet,
        "-aec",
        "CUSTOS",
        "127.0.0.1",
        &port,
        "-k",
        "PatientName",
        "-k",
        "PatientID",
        "-k",
        "AccessionNumber",
        "-k",
        "(0040,0100)[0].ScheduledProcedureStepID",
    ];
    for k in keys {
        args.extend(["-k", k]);
    }
    let run = dcmtk("findscu", &args);
    if !run.ok() {
        return None;
    }
    let mut files: Vec<_> = walk_files(out);
    files.sort();
    Some(
        files
            .iter()
            .map(|f| dcmtk("dcmdump", &["-q", f.to_str().unwrap()]).stdout())
            .collect(),
    )
}

/// The patient IDs in worklist responses, sorted.
pub fn patient_ids(responses: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = responses
        .iter()
        .filter_map(|d| {
            d.lines()
                .find(|l| l.starts_with("(0010,0020)"))
                .and_then(|l| l.split('[').nth(1))
                .map(|v| v.split(']').next().unwrap().to_string())
        })
        .collect();
    ids.sort();
    ids
}

/// Sends one DIMSE message (command, then data set if any) on `pc`.
pub fn send_message(
    assoc: &mut dicom_ul::ClientAssociation<std::net::TcpStream>,
    pc: u8,
    command: Vec<u8>,
    data: Option<Vec<u8>>,
) {
    use dicom_ul::Pdu;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    let mut values = vec![PDataValue {
        presentation_context_id: pc,
        value_type: PDataValueType::Command,
        is_last: true,
        data: command,
    }];
    if let Some(data) = data {
        values.push(PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Data,
            is_last: true,
            data,
        });
    }
    assoc.send(&Pdu::PData { data: values }).unwrap();
}
