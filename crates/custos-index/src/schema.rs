//! The index schema, versioned and written once for SQLite and PostgreSQL.
//! Each step runs once, in order, inside a transaction; SQLite's
//! `PRAGMA user_version` and PostgreSQL's `custos_schema_version` record how
//! far a database has come.

use crate::sql_query::Dialect;

/// Users and API tokens: the same DDL on SQLite and PostgreSQL (times are
/// Unix seconds).
pub const USERS_AND_TOKENS: &str = r#"
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        password_changed BIGINT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        secret_sha256 TEXT NOT NULL,
        read_only BOOLEAN NOT NULL,
        created BIGINT NOT NULL,
        expires BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX tokens_user ON tokens(user_name);
"#;

/// Peers' TLS requirements (same DDL on both backends).
pub const PEER_TLS: &str = r#"
    ALTER TABLE peers ADD COLUMN tls_required BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE peers ADD COLUMN cert_sha256 TEXT NOT NULL DEFAULT '';
"#;

/// Peers identified by their certificate's subject or issuing CA bundle (same
/// DDL on both backends).
/// 6: series date and time (QIDO-RS series level; OHIF's series list asks
/// for them). Series stored before have them empty.
pub const SERIES_DATES: &str = r#"
    ALTER TABLE series ADD COLUMN series_date TEXT NOT NULL DEFAULT '';
    ALTER TABLE series ADD COLUMN series_time TEXT NOT NULL DEFAULT '';
"#;

/// 7: ingest over time (the status page's last hour) reads instances by
/// the time they arrived.
pub const RECEIVED_AT_INDEX: &str = r#"
    CREATE INDEX instances_received ON instances(received_at);
"#;

/// 8: the counters C-FIND and QIDO-RS return, kept with the rows
/// (`statements::COUNT_*`, `recount_study`) instead of aggregated per query;
/// filled here from what is stored. Studies are listed newest first by
/// (date, time), or by name.
fn counters(dialect: Dialect) -> String {
    format!(
        r#"
    ALTER TABLE series ADD COLUMN num_instances {int} NOT NULL DEFAULT 0;
    ALTER TABLE studies ADD COLUMN num_series {int} NOT NULL DEFAULT 0;
    ALTER TABLE studies ADD COLUMN num_instances {int} NOT NULL DEFAULT 0;
    ALTER TABLE studies ADD COLUMN modalities TEXT NOT NULL DEFAULT '';
    UPDATE series SET num_instances = (SELECT COUNT(*) FROM instances i WHERE i.series_pk = series.pk);
    UPDATE studies AS st SET num_series = (SELECT COUNT(*) FROM series x WHERE x.study_pk = st.pk),
        num_instances = (SELECT COALESCE(SUM(x.num_instances), 0) FROM series x WHERE x.study_pk = st.pk),
        modalities = {modalities};
    DROP INDEX studies_date;
    CREATE INDEX studies_date_time ON studies(study_date, study_time);
    {name_order}
"#,
        int = match dialect {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
        },
        modalities = crate::statements::modalities_of_study(dialect),
        // PostgreSQL's prefix index (text_pattern_ops) cannot give the
        // list's sort by name; SQLite's one index does both.
        name_order = match dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => {
                r#"CREATE INDEX studies_patient_name_sort ON studies (patient_name_fold COLLATE "C");"#
            }
        }
    )
}

pub const PEER_PINS: &str = r#"
    ALTER TABLE peers ADD COLUMN cert_subject TEXT NOT NULL DEFAULT '';
    ALTER TABLE peers ADD COLUMN ca_pem TEXT NOT NULL DEFAULT '';
"#;

/// The audit trail: one row per record, `seq` without gaps, each row's hash
/// chained over the previous one (same DDL on both backends).
pub const AUDIT: &str = r#"
    CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        at TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit(at);
"#;

/// 9: the modality worklist (`Worklist`): each item whole as DICOM JSON,
/// and the keys modalities match on.
fn worklist(pk: &str) -> String {
    format!(
        r#"
    CREATE TABLE worklist (
        id {pk},
        patient_id TEXT NOT NULL,
        patient_name TEXT NOT NULL,
        accession_number TEXT NOT NULL,
        modality TEXT NOT NULL,
        station_ae TEXT NOT NULL,
        start_date TEXT NOT NULL,
        start_time TEXT NOT NULL,
        item_json TEXT NOT NULL
    );
    CREATE INDEX worklist_start ON worklist(start_date, start_time);
"#
    )
}

/// 10: performed procedure steps (MPPS), with the study and worklist item
/// they belong to (same DDL on both backends).
pub const MPPS: &str = r#"
    CREATE TABLE mpps (
        sop_instance_uid TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        accession_number TEXT NOT NULL,
        worklist_id BIGINT,
        attributes_json TEXT NOT NULL
    );
    CREATE INDEX mpps_study ON mpps(study_uid);
"#;

/// 11: the forwarding queue (routing rules, manual sends): one row per
/// instance and destination; `next_at` is when it may be tried (again).
fn jobs(pk: &str) -> String {
    format!(
        r#"
    CREATE TABLE jobs (
        id {pk},
        sop_instance_uid TEXT NOT NULL,
        destination TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_at BIGINT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created BIGINT NOT NULL,
        UNIQUE (sop_instance_uid, destination)
    );
    CREATE INDEX jobs_due ON jobs(state, next_at);
"#
    )
}

/// The schema's steps in order, for one dialect; a database records how
/// many it has applied. The first step is written once for both backends.
pub fn migrations(dialect: Dialect) -> Vec<String> {
    let (pk, int, prefix_ops, received_at) = match dialect {
        Dialect::Sqlite => (
            "INTEGER PRIMARY KEY",
            "INTEGER",
            "",
            "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        ),
        // text_pattern_ops: prefix wildcards (LIKE 'A%') use the index.
        Dialect::Postgres => (
            "BIGSERIAL PRIMARY KEY",
            "BIGINT",
            " text_pattern_ops",
            "TIMESTAMPTZ NOT NULL DEFAULT now()",
        ),
    };
    let first = FOUR_LEVELS
        .replace("{PK}", pk)
        .replace("{INT}", int)
        .replace("{PREFIX_OPS}", prefix_ops)
        .replace("{RECEIVED_AT}", received_at);
    // 2: web users and API tokens; 3: peers that must use TLS, optionally
    // with a pinned client certificate; 4: the audit trail; 5: peers pinned
    // by certificate subject or CA bundle; 6: series date and time; 7: an
    // index on arrival time; 8: counters; 9: the worklist; 10: MPPS; 11: jobs;
    // 12: study jobs; 13: job payloads (commitment reports); 14: the change
    // feed and webhooks; 15: studies protected from retention; 16: conflicting duplicates; 17: an index
    // on the feed's times; 18: names without their padding.
    let mut steps = vec![first];
    steps.extend(
        [
            USERS_AND_TOKENS,
            PEER_TLS,
            AUDIT,
            PEER_PINS,
            SERIES_DATES,
            RECEIVED_AT_INDEX,
        ]
        .map(String::from),
    );
    steps.push(counters(dialect));
    // Ids an API hands out are never reused after a delete (SQLite reuses
    // the highest rowid without AUTOINCREMENT; PostgreSQL's sequence never).
    let ids = match dialect {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Postgres => pk,
    };
    steps.push(worklist(ids));
    steps.push(MPPS.to_string());
    steps.push(jobs(ids));
    steps.push(JOB_SCOPE.to_string());
    steps.push(JOB_PAYLOAD.to_string());
    steps.push(changes(ids));
    steps.push(PROTECTED.to_string());
    steps.push(CONFLICTS.to_string());
    steps.push(CHANGES_AT.to_string());
    // 18 also gives PostgreSQL the byte-ordered indexes the study list's
    // sort by ID and accession uses (`orderby` sorts text by bytes on both
    // backends; SQLite's indexes already are).
    let sort_indexes = match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => {
            r#"
    CREATE INDEX studies_patient_id_sort ON studies (patient_id COLLATE "C");
    CREATE INDEX studies_accession_sort ON studies (accession_number COLLATE "C");"#
        }
    };
    steps.push(format!(
        "{}{sort_indexes}",
        NAMES_WITHOUT_PADDING
            .replace("{patient}", &unpadded("patient_name_fold"))
            .replace("{referring}", &unpadded("referring_physician_name_fold"))
    ));
    steps
}

/// 18: names stored before compared without their empty trailing
/// components (`query::fold_name`).
/// Only the rows whose names change are written.
const NAMES_WITHOUT_PADDING: &str = "UPDATE studies SET patient_name_fold = {patient}, referring_physician_name_fold = {referring} \
     WHERE patient_name_fold <> {patient} OR referring_physician_name_fold <> {referring};";

/// SQL giving `query::fold_name` of an already case-folded `column` (the
/// same functions on SQLite and PostgreSQL): up to eight padding characters
/// (`^` or space) dropped before each `=`, then the trailing ones.
fn unpadded(column: &str) -> String {
    let mut e = column.to_string();
    for _ in 0..8 {
        e = format!("REPLACE(REPLACE({e}, ' =', '='), '^=', '=')");
    }
    format!("RTRIM({e}, '^= ')")
}

/// 17: the feed pruned by age.
const CHANGES_AT: &str = "CREATE INDEX changes_at ON changes(at);";

/// 16: SOP Instance UIDs received with other content than the stored copy
/// (kept or refused): storage commitment does not vouch for them.
const CONFLICTS: &str = r#"
    CREATE TABLE conflicts (
        sop_instance_uid TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        at BIGINT NOT NULL
    );
"#;

/// 15: studies retention must not delete.
const PROTECTED: &str = r#"
    CREATE TABLE protected_studies (
        study_uid TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at BIGINT NOT NULL
    );
"#;

/// 14: the change feed (an outbox written with each change, moved into the
/// gap-free `changes` by one sequencer at a time) and webhooks.
fn changes(pk: &str) -> String {
    format!(
        r#"
    CREATE TABLE change_outbox (
        id {pk},
        kind TEXT NOT NULL,
        level TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        at BIGINT NOT NULL
    );
    CREATE TABLE changes (
        seq BIGINT PRIMARY KEY,
        kind TEXT NOT NULL,
        level TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        at BIGINT NOT NULL
    );
    CREATE TABLE webhooks (
        id {pk},
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        created BIGINT NOT NULL
    );
"#
    )
}

/// 13: storage commitment reports waiting for delivery, kept in the queue.
const JOB_PAYLOAD: &str = "ALTER TABLE jobs ADD COLUMN payload TEXT NOT NULL DEFAULT '';";

/// 12: jobs that send a whole study once it is stable.
const JOB_SCOPE: &str = "ALTER TABLE jobs ADD COLUMN scope TEXT NOT NULL DEFAULT 'instance';";

/// 1: the four levels, and peers.
const FOUR_LEVELS: &str = r#"
    CREATE TABLE studies (
        pk {PK},
        study_uid TEXT NOT NULL UNIQUE,
        patient_id TEXT NOT NULL,
        patient_name TEXT NOT NULL,
        patient_name_fold TEXT NOT NULL,
        patient_birth_date TEXT NOT NULL,
        patient_sex TEXT NOT NULL,
        study_date TEXT NOT NULL,
        study_time TEXT NOT NULL,
        accession_number TEXT NOT NULL,
        study_id TEXT NOT NULL,
        study_description TEXT NOT NULL,
        referring_physician_name TEXT NOT NULL,
        referring_physician_name_fold TEXT NOT NULL
    );
    CREATE INDEX studies_patient_id ON studies(patient_id);
    CREATE INDEX studies_patient_name ON studies(patient_name_fold{PREFIX_OPS});
    CREATE INDEX studies_date ON studies(study_date);
    CREATE INDEX studies_accession ON studies(accession_number);
    CREATE TABLE series (
        pk {PK},
        study_pk {INT} NOT NULL REFERENCES studies(pk),
        series_uid TEXT NOT NULL UNIQUE,
        modality TEXT NOT NULL,
        series_number {INT},
        series_description TEXT NOT NULL,
        body_part_examined TEXT NOT NULL
    );
    CREATE INDEX series_study ON series(study_pk);
    CREATE TABLE instances (
        pk {PK},
        series_pk {INT} NOT NULL REFERENCES series(pk),
        sop_instance_uid TEXT NOT NULL UNIQUE,
        sop_class_uid TEXT NOT NULL,
        instance_number {INT},
        number_of_frames {INT},
        transfer_syntax_uid TEXT NOT NULL,
        blob_key TEXT NOT NULL,
        size {INT} NOT NULL,
        sha256 TEXT NOT NULL,
        received_at {RECEIVED_AT}
    );
    CREATE INDEX instances_series ON instances(series_pk);
    CREATE TABLE peers (
        ae_title TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        permissions TEXT NOT NULL
    );
    "#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_schema_two_dialects() {
        let lite = migrations(Dialect::Sqlite);
        let pg = migrations(Dialect::Postgres);
        assert_eq!(lite.len(), pg.len());
        assert!(
            lite[0].contains("pk INTEGER PRIMARY KEY"),
            "rowid alias on SQLite"
        );
        assert!(pg[0].contains("pk BIGSERIAL PRIMARY KEY"));
        assert!(pg[0].contains("patient_name_fold text_pattern_ops"));
        assert!(pg[0].contains("size BIGINT NOT NULL"));
        assert!(
            lite.iter().chain(&pg).all(|s| !s.contains('{')),
            "no placeholder left"
        );
        assert_eq!(lite[1..7], pg[1..7]);
        assert!(lite[7].contains("GROUP_CONCAT") && pg[7].contains("string_agg"));
    }

    /// Migration 18's SQL gives what `fold_name` gives names stored from now.
    #[test]
    fn stored_names_lose_their_padding_as_new_ones_do() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for name in [
            "DOE^JOHN^^",
            "DOE^JOHN^^^^=",
            "YAMADA^TAROU^^=山田^太郎^^",
            "DOE^JOHN =",
            "DOE^JOHN^^^^^=X",
            "DOE  =X^^",
            "DOE ^=X",
            "^JOHN",
            "DOE",
            "",
        ] {
            let sql = format!("SELECT {}", unpadded("?1"));
            let got: String = db.query_row(&sql, [name], |r| r.get(0)).unwrap();
            assert_eq!(got, custos_core::query::fold_name(name), "{name}");
        }
    }
}
