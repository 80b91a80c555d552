//! De-identification (issue 16): a study made of pydicom's test corpus (CT,
//! MR, US, SC, RT, SEG, SR, ECG; JPEG, JPEG 2000, deflate, implicit VR) is
//! downloaded de-identified and checked attribute by attribute against
//! PS3.15 Table E.1-1 by `tests/py/deid_check.py` (its own reading of the
//! table; pydicom reads every output file whole), without and with the three
//! options; a copy is kept in the archive from the CLI and the API with the
//! same UIDs for the same project and other UIDs for another; burned-in
//! annotation is refused unless forced; a radiologist may not; every export
//! is audited as 110106 with both identities.

use std::path::Path;

use crate::common::*;

const CURATOR: (&str, &str) = ("curator", "shares 42 research data");
const READER: (&str, &str) = ("reader", "reads 42 only images");
const ALL: &str = "retain-dates,retain-patient-characteristics,clean-descriptors";

#[test]
fn a_study_is_deidentified_by_table_e1_1() {
    deidentification(&DataDir::new("deid"));
}

#[test]
fn deidentification_on_postgres_and_s3() {
    let blobs = std::env::temp_dir().join(format!("custos-deid-blobs-{}", std::process::id()));
    let data = node(
        "deid-pg",
        &fresh_database(),
        &blobs,
        Some(&s3_url("deid-pg")),
    );
    deidentification(&data);
    let _ = std::fs::remove_dir_all(&blobs);
}

fn deid_py(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/deid_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    json_of(&Run(out))
}

/// Downloads the de-identified ZIP of `study` as `user` with `params`.
fn download(
    server: &Server,
    user: (&str, &str),
    study: &str,
    params: serde_json::Value,
    out: &Path,
) -> serde_json::Value {
    let url = format!("https://localhost:{}", server.http.port());
    deid_py(&[
        "zip",
        "--url",
        &url,
        "--ca",
        server.ca.to_str().unwrap(),
        "--user",
        user.0,
        "--password",
        user.1,
        "--study",
        study,
        "--out",
        out.to_str().unwrap(),
        "--params",
        &params.to_string(),
    ])
}

fn deidentification(data: &DataDir) {
    add_user(data, CURATOR.0, "admin", CURATOR.1);
    add_user(data, READER.0, "radiologist", READER.1);
    let server = Server::start(data);
    let work = data.path.with_extension("deid");
    let _ = std::fs::remove_dir_all(&work);
    let corpus = deid_py(&["corpus", work.join("src").to_str().unwrap()]);
    let study = corpus["study"].as_str().unwrap().to_string();
    let burned_study = corpus["burned_study"].as_str().unwrap().to_string();
    let files: Vec<String> = corpus["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(
        files.len() >= 20,
        "pydicom's corpus gave {} files",
        files.len()
    );
    let mut stow_args = vec!["stow"];
    stow_args.extend(files.iter().map(String::as_str));
    stow_args.push(corpus["burned"].as_str().unwrap());
    let stored = json_of(&web(&server, CURATOR.0, CURATOR.1, &stow_args).success());
    assert!(
        stored.get("00081198").is_none(),
        "every corpus file is stored: {stored}"
    );

    // Rights: a radiologist may not, nobody anonymous may.
    let reader = serde_json::json!({"basic": [READER.0, READER.1]});
    let curator = serde_json::json!({"basic": [CURATOR.0, CURATOR.1]});
    let json = serde_json::json!({"Content-Type": "application/json"});
    let zip_path = format!("/api/studies/{study}/deidentified.zip");
    let post_path = format!("/api/studies/{study}/deidentify");
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "GET", "path": zip_path, "auth": reader},
            {"method": "GET", "path": zip_path},
            {"method": "POST", "path": post_path, "auth": reader, "headers": json, "body": "{}"},
            {"method": "GET", "path": format!("{zip_path}?options=retain-everything"), "auth": curator},
            {"method": "GET", "path": "/api/studies/1.2.3.999/deidentified.zip", "auth": curator},
        ]),
    );
    assert_eq!(r[0]["status"], 403, "{:?}", r[0]);
    assert_eq!(r[1]["status"], 401);
    assert_eq!(r[2]["status"], 403);
    assert_eq!(r[3]["status"], 422, "{:?}", r[3]);
    assert_eq!(r[4]["status"], 404);

    // The Basic Profile, then with every option, checked by the table.
    let originals: Vec<&str> = files.iter().map(String::as_str).collect();
    let check = |options: &str, description: &str, dir: &str| {
        let out = work.join(dir);
        let mut params = serde_json::json!({"options": options});
        if !description.is_empty() {
            params["study_description"] = description.into();
        }
        let got = download(&server, CURATOR, &study, params, &out);
        assert_eq!(got["status"], 200, "{got}");
        assert!(got["crc_failure"].is_null());
        let mut args = vec![
            "check",
            "--options",
            options,
            "--study-description",
            description,
            "--deidentified",
            out.to_str().unwrap(),
            "--originals",
        ];
        args.extend(originals.iter());
        let report = deid_py(&args);
        assert_eq!(report["errors"], serde_json::json!([]), "{report}");
        assert_eq!(report["matched"], files.len(), "{report}");
        assert_eq!(report["patients"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["studies"].as_array().unwrap().len(), 1, "{report}");
        report
    };
    let basic = check("", "", "basic");
    for code in ["X", "Z", "U", "X/Z/D", "private", "unlisted"] {
        assert!(
            basic["by_code"][code].as_u64().unwrap_or(0) > 0,
            "the corpus exercises {code}: {basic}"
        );
    }
    let full = check(ALL, "Research copy", "full");
    for code in ["K", "C"] {
        assert!(
            full["by_code"][code].as_u64().unwrap_or(0) > 0,
            "the options exercise {code}: {full}"
        );
    }
    assert_eq!(full["shifts"].as_array().unwrap().len(), 1, "{full}");
    // The same project gives the same UIDs and pseudonym, whatever the options.
    assert_eq!(basic["studies"], full["studies"]);
    assert_eq!(basic["patients"], full["patients"]);
    let new_study = basic["studies"][0].as_str().unwrap().to_string();
    let pseudonym = basic["patients"][0].as_str().unwrap().to_string();
    assert_ne!(new_study, study);

    // Burned-in annotation: refused, unless forced.
    let burned = work.join("burned");
    let refused = download(
        &server,
        CURATOR,
        &burned_study,
        serde_json::json!({}),
        &burned,
    );
    assert_eq!(refused["status"], 409, "{refused}");
    assert!(refused["body"].as_str().unwrap().contains("burned-in"));
    let forced = download(
        &server,
        CURATOR,
        &burned_study,
        serde_json::json!({"force": "true"}),
        &burned,
    );
    assert_eq!(forced["status"], 200, "{forced}");

    // A copy in the archive, from the CLI: the download's UIDs.
    let out = data
        .cli(&[
            "deidentify",
            "--study",
            &study,
            "--options",
            "retain-dates",
            "--to-study-description",
            "Research copy",
        ])
        .success()
        .stdout();
    assert!(
        out.contains(&format!(
            "as {new_study} (patient {pseudonym}): {} instances",
            files.len()
        )),
        "{out}"
    );
    let cli_refused = data.cli(&["deidentify", "--study", &burned_study]);
    assert!(!cli_refused.ok() && cli_refused.stderr().contains("burned-in"));
    let found = json_of(
        &web(
            &server,
            READER.0,
            READER.1,
            &[
                "search",
                "--level",
                "studies",
                "-k",
                &format!("PatientID={pseudonym}"),
            ],
        )
        .success(),
    );
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["0020000D"]["Value"][0], new_study.as_str());
    assert_eq!(found[0]["00081030"]["Value"][0], "Research copy");
    assert_eq!(found[0]["00201208"]["Value"][0], files.len());

    // From the API: again the same study; another project, another one.
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "POST", "path": post_path, "auth": curator, "headers": json, "body": "{}"},
            {"method": "POST", "path": post_path, "auth": curator, "headers": json,
             "body": "{\"project\": \"trial-b\"}"},
        ]),
    );
    let copy = |i: usize| -> serde_json::Value {
        assert_eq!(r[i]["status"], 201, "{:?}", r[i]);
        serde_json::from_str(r[i]["body"].as_str().unwrap()).unwrap()
    };
    assert_eq!(copy(0)["study"], new_study.as_str());
    assert_eq!(copy(0)["instances"], files.len());
    assert_ne!(copy(1)["study"], new_study.as_str());
    assert_ne!(copy(1)["patient_id"], pseudonym.as_str());
    let fsck = data.cli(&["fsck"]).success().stdout();
    assert!(fsck.contains("0 missing"), "{fsck}");

    // Audited: three downloads, the CLI copy and two API copies, each with
    // the original patient and the pseudonym.
    let trail: Vec<String> = data
        .audit_export()
        .iter()
        .map(|e| e.to_string())
        .filter(|t| t.contains("110106"))
        .collect();
    assert_eq!(trail.len(), 6, "{trail:#?}");
    assert!(
        trail
            .iter()
            .all(|t| t.contains("DEID-P1") && t.contains("de-identified")),
        "{trail:#?}"
    );
    assert_eq!(
        trail.iter().filter(|t| t.contains(&pseudonym)).count(),
        5,
        "{trail:#?}"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&work);
}
