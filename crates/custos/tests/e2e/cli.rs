//! First run, configuration and peer registry as an administrator uses them.

use crate::common::*;

#[test]
fn init_writes_a_documented_config_and_private_folder() {
    let data = DataDir::new("cli-init");
    let config = std::fs::read_to_string(data.path.join("custos.toml")).unwrap();
    assert!(
        config.contains("listen = \"127.0.0.1:11112\"") && config.contains("ae_title = \"CUSTOS\"")
    );
    assert!(config.contains("# "), "every default is explained");
    assert!(data.path.join("index.sqlite").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // It may come to hold the S3 secret or the database password.
    let mode = std::fs::metadata(data.path.join("custos.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = data.cli(&["init"]).success();
    assert!(again.stdout().contains("already initialised"));
}

#[test]
fn config_show_applies_environment_overrides() {
    let data = DataDir::new("cli-config");
    let out = std::process::Command::new(BIN)
        .args(["config", "show", "--data"])
        .arg(&data.path)
        .env("CUSTOS_DICOM_LISTEN", "0.0.0.0:104")
        .env("CUSTOS_DICOM_MAX_ASSOCIATIONS", "7")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("listen = \"0.0.0.0:104\"") && text.contains("max_associations = 7"),
        "{text}"
    );
    // A typo in the file is an error, not silently ignored.
    std::fs::write(data.path.join("custos.toml"), "[dicom]\nlisen = \"x\"\n").unwrap();
    let bad = data.cli(&["config", "show"]);
    assert!(!bad.ok());
    assert!(bad.stderr().contains("lisen"), "{}", bad.stderr());
    // A bad value from the environment is an error too.
    let bad_env = std::process::Command::new(BIN)
        .args(["config", "show", "--data"])
        .arg(&data.path)
        .env("CUSTOS_DICOM_MAX_PDU_LENGTH", "huge")
        .output()
        .unwrap();
    assert!(!bad_env.status.success());
}

#[test]
fn serve_says_where_it_listens_and_how_to_register_peers() {
    let data = DataDir::new("cli-serve");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--data"])
        .arg(&data.path)
        .env("CUSTOS_DICOM_LISTEN", "127.0.0.1:0")
        .env("CUSTOS_DICOM_TLS_LISTEN", "127.0.0.1:0")
        .env("CUSTOS_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let last = line.starts_with("Custos listening for HTTPS");
        seen.push(line);
        if last || seen.len() > 10 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(
        seen[0].starts_with("Custos listening for DICOM on 127.0.0.1:"),
        "{text}"
    );
    assert!(
        seen[1].starts_with("Custos listening for DICOM TLS on 127.0.0.1:"),
        "{text}"
    );
    assert!(seen[2].contains("No peers are registered"), "{text}");
    assert!(seen[3].contains("custos peer add"), "{text}");
    assert!(
        seen[4].starts_with("Custos listening for HTTPS on 127.0.0.1:")
            && seen[4].contains("ca.pem"),
        "{text}"
    );
}

#[test]
fn host_names_are_resolved_when_peers_connect() {
    let data = DataDir::new("cli-hostname");
    data.add_peer("NAMED", "localhost", 104, "echo");
    let server = Server::start(&data);
    let run = echo(&server, "NAMED", "CUSTOS");
    assert!(run.ok(), "{}", run.stderr());
}

/// `custos peer echo AET`: a C-ECHO from this archive's AE title to a
/// registered peer (DCMTK's storescp), exit status 0 only when it answers.
#[test]
fn peer_echo_calls_a_registered_peer_and_says_when_it_does_not_answer() {
    let data = DataDir::new("cli-echo");
    let port = free_port();
    let closed = free_port();
    data.add_peer("ECHOSCP", "127.0.0.1", port, "echo");
    data.add_peer("GONE", "127.0.0.1", closed, "echo");
    let mut scp = std::process::Command::new("/usr/bin/storescp")
        .args(["--aetitle", "ECHOSCP", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescp (Debian's dcmtk)");
    wait_for_port(port);
    let answered = data.cli(&["peer", "echo", "ECHOSCP"]);
    let gone = data.cli(&["peer", "echo", "GONE"]);
    let unknown = data.cli(&["peer", "echo", "NOSUCH"]);
    let _ = scp.kill();
    let _ = scp.wait();
    let answered = answered.success();
    assert!(
        answered
            .stdout()
            .contains("ECHOSCP answered C-ECHO (status 0000"),
        "{}",
        answered.stdout()
    );
    assert!(!gone.ok());
    assert!(
        gone.stderr().contains("GONE did not answer"),
        "{}",
        gone.stderr()
    );
    assert!(!unknown.ok());
    assert!(
        unknown.stderr().contains("no peer NOSUCH"),
        "{}",
        unknown.stderr()
    );
}

/// The archive keeps one enabled administrator: the CLI refuses to disable,
/// demote or remove the last one, and allows it once there is another.
#[test]
fn the_last_enabled_administrator_stays() {
    let data = DataDir::new("last-admin");
    for args in [
        &["user", "disable", "admin"][..],
        &["user", "remove", "admin"][..],
    ] {
        let refused = data.cli(args);
        assert!(!refused.ok(), "{args:?}: {}", refused.stdout());
        assert!(
            refused
                .stderr()
                .contains("would leave no enabled administrator"),
            "{args:?}: {}",
            refused.stderr()
        );
    }
    add_user(&data, "second", "admin", "another 42 keeper of keys");
    let done = data.cli(&["user", "disable", "admin"]).success();
    assert!(done.stdout().contains("disabled"), "{}", done.stdout());
    let refused = data.cli(&["user", "disable", "second"]);
    assert!(!refused.ok());
}
