//! Versioned SQLite schema. Each entry runs once, in order, inside a transaction;
//! `PRAGMA user_version` records how far a database has come.

pub const MIGRATIONS: &[&str] = &[
    // 1: the four levels, and peers.
    r#"
    CREATE TABLE studies (
        pk INTEGER PRIMARY KEY,
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
    CREATE INDEX studies_patient_name ON studies(patient_name_fold);
    CREATE INDEX studies_date ON studies(study_date);
    CREATE INDEX studies_accession ON studies(accession_number);
    CREATE TABLE series (
        pk INTEGER PRIMARY KEY,
        study_pk INTEGER NOT NULL REFERENCES studies(pk),
        series_uid TEXT NOT NULL UNIQUE,
        modality TEXT NOT NULL,
        series_number INTEGER,
        series_description TEXT NOT NULL,
        body_part_examined TEXT NOT NULL
    );
    CREATE INDEX series_study ON series(study_pk);
    CREATE TABLE instances (
        pk INTEGER PRIMARY KEY,
        series_pk INTEGER NOT NULL REFERENCES series(pk),
        sop_instance_uid TEXT NOT NULL UNIQUE,
        sop_class_uid TEXT NOT NULL,
        instance_number INTEGER,
        number_of_frames INTEGER,
        transfer_syntax_uid TEXT NOT NULL,
        blob_key TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE INDEX instances_series ON instances(series_pk);
    CREATE TABLE peers (
        ae_title TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        permissions TEXT NOT NULL
    );
    "#,
];
