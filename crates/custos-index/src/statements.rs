//! What both backends do when an instance is recorded, written once: the
//! duplicate rule (identical, conflict, replace) and the statements with the
//! values they bind, in `?` form (`Dialect::placeholders` makes PostgreSQL's
//! `$n`). Each backend only runs them in its own transaction.

use custos_core::query::fold_name;
use custos_core::record::{InstanceRecord, StoredInstance};

use crate::InsertOutcome;
use crate::sql_query::{Dialect, SqlValue};

/// The columns of a stored instance, in `StoredInstance` order.
pub const STORED_COLUMNS: &str =
    "sop_instance_uid, sop_class_uid, transfer_syntax_uid, blob_key, size, sha256";

pub const SELECT_STORED_BY_UID: &str = "SELECT sop_instance_uid, sop_class_uid, transfer_syntax_uid, blob_key, size, sha256 FROM instances WHERE sop_instance_uid = ?";

pub const DELETE_INSTANCE_BY_UID: &str = "DELETE FROM instances WHERE sop_instance_uid = ?";

/// The first instance of a study or series defines its attributes.
pub const INSERT_STUDY: &str = "INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_fold, patient_birth_date, patient_sex, \
     study_date, study_time, accession_number, study_id, study_description, \
     referring_physician_name, referring_physician_name_fold) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (study_uid) DO NOTHING";

pub const STUDY_PK: &str = "SELECT pk FROM studies WHERE study_uid = ?";

pub const INSERT_SERIES: &str = "INSERT INTO series (study_pk, series_uid, modality, series_number, series_description, body_part_examined, \
     series_date, series_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (series_uid) DO NOTHING";

pub const SERIES_PK: &str = "SELECT pk FROM series WHERE series_uid = ?";

pub const INSERT_INSTANCE: &str = "INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, instance_number, number_of_frames, \
     transfer_syntax_uid, blob_key, size, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Counters kept with the rows (what C-FIND and QIDO-RS return as
/// NumberOf...RelatedInstances/Series and ModalitiesInStudy), updated in the
/// transaction that changes what they count, so no query aggregates.
pub const COUNT_INSTANCE_IN_SERIES: &str =
    "UPDATE series SET num_instances = num_instances + ? WHERE pk = ?";
pub const COUNT_INSTANCE_IN_STUDY: &str = "UPDATE studies SET num_instances = num_instances + ? WHERE pk = (SELECT study_pk FROM series WHERE pk = ?)";
pub const SERIES_OF_INSTANCE: &str = "SELECT series_pk FROM instances WHERE sop_instance_uid = ?";
pub const STUDY_OF_SERIES: &str = "SELECT study_pk FROM series WHERE pk = ?";
/// After a replacing copy moved an instance out: the series and study it
/// left, if nothing is left in them (C-FIND must not list them, nor count
/// them among a patient's).
pub const DROP_SERIES_IF_EMPTY: &str = "DELETE FROM series WHERE pk = ? AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.series_pk = series.pk)";
pub const DROP_STUDY_IF_EMPTY: &str = "DELETE FROM studies WHERE pk = ? AND NOT EXISTS (SELECT 1 FROM series x WHERE x.study_pk = studies.pk)";

/// The study's distinct modalities, sorted, backslash-separated, for
/// `studies st`.
pub fn modalities_of_study(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "COALESCE((SELECT GROUP_CONCAT(m, '\\') FROM (SELECT DISTINCT x.modality AS m FROM series x WHERE x.study_pk = st.pk AND x.modality <> '' ORDER BY m)), '')"
        }
        Dialect::Postgres => {
            "COALESCE((SELECT string_agg(DISTINCT x.modality, '\\' ORDER BY x.modality) FROM series x WHERE x.study_pk = st.pk AND x.modality <> ''), '')"
        }
    }
}

/// Recounts a study's series and instances and its modalities (after a
/// series is added or removed); binds the study's pk.
pub fn recount_study(dialect: Dialect) -> String {
    format!(
        "UPDATE studies AS st SET num_series = (SELECT COUNT(*) FROM series x WHERE x.study_pk = st.pk), \
         num_instances = (SELECT COALESCE(SUM(x.num_instances), 0) FROM series x WHERE x.study_pk = st.pk), \
         modalities = {} WHERE st.pk = ?",
        modalities_of_study(dialect)
    )
}

pub fn study_values(rec: &InstanceRecord) -> Vec<SqlValue> {
    use SqlValue::Text;
    vec![
        Text(rec.study_uid.clone()),
        Text(rec.patient_id.clone()),
        Text(rec.patient_name.clone()),
        Text(fold_name(&rec.patient_name)),
        Text(rec.patient_birth_date.clone()),
        Text(rec.patient_sex.clone()),
        Text(rec.study_date.clone()),
        Text(rec.study_time.clone()),
        Text(rec.accession_number.clone()),
        Text(rec.study_id.clone()),
        Text(rec.study_description.clone()),
        Text(rec.referring_physician_name.clone()),
        Text(fold_name(&rec.referring_physician_name)),
    ]
}

/// A replaced instance's study and series take its attributes (a corrected
/// patient or study, or the newer copy under the "replace" duplicate rule).
pub const UPDATE_STUDY: &str = "UPDATE studies SET patient_id = ?, patient_name = ?, patient_name_fold = ?, \
     patient_birth_date = ?, patient_sex = ?, study_date = ?, study_time = ?, accession_number = ?, study_id = ?, \
     study_description = ?, referring_physician_name = ?, referring_physician_name_fold = ? WHERE study_uid = ?";
pub const UPDATE_SERIES: &str = "UPDATE series SET modality = ?, series_number = ?, series_description = ?, \
     body_part_examined = ?, series_date = ?, series_time = ? WHERE series_uid = ?";

/// `study_values` in `UPDATE_STUDY`'s order (the UID last).
pub fn study_update_values(rec: &InstanceRecord) -> Vec<SqlValue> {
    let mut v = study_values(rec);
    v.rotate_left(1);
    v
}

/// `series_values` in `UPDATE_SERIES`'s order.
pub fn series_update_values(rec: &InstanceRecord) -> Vec<SqlValue> {
    let mut v = series_values(0, rec);
    v.remove(0);
    v.rotate_left(1);
    v
}

pub fn series_values(study_pk: i64, rec: &InstanceRecord) -> Vec<SqlValue> {
    use SqlValue::{Int, MaybeInt, Text};
    vec![
        Int(study_pk),
        Text(rec.series_uid.clone()),
        Text(rec.modality.clone()),
        MaybeInt(rec.series_number),
        Text(rec.series_description.clone()),
        Text(rec.body_part_examined.clone()),
        Text(rec.series_date.clone()),
        Text(rec.series_time.clone()),
    ]
}

pub fn instance_values(series_pk: i64, rec: &InstanceRecord) -> Vec<SqlValue> {
    use SqlValue::{Int, MaybeInt, Text};
    vec![
        Int(series_pk),
        Text(rec.sop_instance_uid.clone()),
        Text(rec.sop_class_uid.clone()),
        MaybeInt(rec.instance_number),
        MaybeInt(rec.number_of_frames),
        Text(rec.transfer_syntax_uid.clone()),
        Text(rec.blob_key.clone()),
        Int(rec.size as i64),
        Text(rec.sha256.clone()),
    ]
}

pub const USER_COLUMNS: &str = "name, role, password_hash, disabled, password_changed";
pub const TOKEN_COLUMNS: &str =
    "id, user_name, secret_sha256, read_only, created, expires, revoked";

/// The audit chain's newest link, the records around it, and appending one.
pub const AUDIT_LAST_LINK: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";
pub const AUDIT_HEAD: &str =
    "SELECT seq, at, body, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1";
pub const AUDIT_AFTER: &str =
    "SELECT seq, at, body, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?";
pub const AUDIT_LINK_AT: &str = "SELECT hash FROM audit WHERE seq = ?";
pub const INSERT_AUDIT: &str =
    "INSERT INTO audit (seq, at, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?)";

/// A change waiting for its sequence number (the feed's outbox), written in
/// the transaction that makes the change.
pub const OUTBOX_INSERT: &str = "INSERT INTO change_outbox (kind, level, study_uid, series_uid, sop_instance_uid, at) VALUES (?, ?, ?, ?, ?, ?)";

/// A conflicting duplicate noted (see `conflicts` in the schema), and
/// forgotten once a copy replaces the stored one.
pub const NOTE_CONFLICT: &str = "INSERT INTO conflicts (sop_instance_uid, sha256, at) VALUES (?, ?, ?) \
     ON CONFLICT (sop_instance_uid) DO UPDATE SET sha256 = excluded.sha256, at = excluded.at";
pub const FORGET_CONFLICT: &str = "DELETE FROM conflicts WHERE sop_instance_uid = ?";

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The outbox rows of an instance written: the instance stored or updated
/// (replaced), and its series and study when they are new.
pub fn stored_changes(
    rec: &InstanceRecord,
    replaced: bool,
    new_study: bool,
    new_series: bool,
) -> Vec<Vec<SqlValue>> {
    let now = unix_now();
    let row = |kind: &str, level: &str, series: &str, sop: &str| {
        vec![
            SqlValue::Text(kind.into()),
            SqlValue::Text(level.into()),
            SqlValue::Text(rec.study_uid.clone()),
            SqlValue::Text(series.into()),
            SqlValue::Text(sop.into()),
            SqlValue::Int(now),
        ]
    };
    let mut rows = Vec::with_capacity(3);
    if new_study {
        rows.push(row("stored", "study", "", ""));
    }
    if new_series {
        rows.push(row("stored", "series", &rec.series_uid, ""));
    }
    let kind = if replaced { "updated" } else { "stored" };
    rows.push(row(
        kind,
        "instance",
        &rec.series_uid,
        &rec.sop_instance_uid,
    ));
    rows
}

/// The outbox rows of a removal: the study or series, then each instance.
pub fn deleted_changes(
    study_uid: &str,
    series_uid: Option<&str>,
    removed: &[StoredInstance],
) -> Vec<Vec<SqlValue>> {
    let now = unix_now();
    let row = |level: &str, series: &str, sop: &str| {
        vec![
            SqlValue::Text("deleted".into()),
            SqlValue::Text(level.into()),
            SqlValue::Text(study_uid.into()),
            SqlValue::Text(series.into()),
            SqlValue::Text(sop.into()),
            SqlValue::Int(now),
        ]
    };
    if removed.is_empty() {
        return Vec::new();
    }
    let mut rows = vec![match series_uid {
        Some(se) => row("series", se, ""),
        None => row("study", "", ""),
    }];
    for inst in removed {
        rows.push(row(
            "instance",
            series_uid.unwrap_or(""),
            &inst.sop_instance_uid,
        ));
    }
    rows
}

/// What to do with an instance whose SOP Instance UID may already be stored.
#[derive(Debug)]
pub enum InsertPlan {
    /// Nothing to write; this is the outcome.
    Done(InsertOutcome),
    /// Write the new rows, after deleting the stored instance's row if there is one.
    Write { replacing: Option<StoredInstance> },
}

/// The duplicate rule: the same bytes (SHA-256) are identical; other bytes
/// conflict unless the caller replaces.
pub fn decide_insert(existing: Option<StoredInstance>, sha256: &str, replace: bool) -> InsertPlan {
    match existing {
        None => InsertPlan::Write { replacing: None },
        Some(existing) if existing.sha256 == sha256 => {
            InsertPlan::Done(InsertOutcome::Identical { existing })
        }
        Some(existing) if !replace => InsertPlan::Done(InsertOutcome::Conflict { existing }),
        Some(previous) => InsertPlan::Write {
            replacing: Some(previous),
        },
    }
}

impl InsertPlan {
    /// The outcome once the rows are written.
    pub fn written(replacing: Option<StoredInstance>) -> InsertOutcome {
        match replacing {
            Some(previous) => InsertOutcome::Replaced { previous },
            None => InsertOutcome::Inserted,
        }
    }
}

/// Enabled administrators, counted before and after a user's change (see
/// `Registry::put_user`); `{lock}` locks them on PostgreSQL.
pub const ENABLED_ADMINS: &str =
    "SELECT name FROM users WHERE role = 'admin' AND NOT disabled ORDER BY name{lock}";

/// A token written again (`custos migrate` run twice) keeps its identity
/// and takes the source's state.
pub const TOKEN_UPSERT: &str =
    "ON CONFLICT (id) DO UPDATE SET expires = excluded.expires, revoked = excluded.revoked";

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sha: &str) -> StoredInstance {
        StoredInstance {
            sop_instance_uid: "1.2".into(),
            sop_class_uid: "c".into(),
            transfer_syntax_uid: "t".into(),
            blob_key: "k".into(),
            size: 1,
            sha256: sha.into(),
        }
    }

    #[test]
    fn the_duplicate_rule() {
        assert!(matches!(
            decide_insert(None, "a", false),
            InsertPlan::Write { replacing: None }
        ));
        assert!(matches!(
            decide_insert(Some(stored("a")), "a", true),
            InsertPlan::Done(InsertOutcome::Identical { .. })
        ));
        assert!(matches!(
            decide_insert(Some(stored("a")), "b", false),
            InsertPlan::Done(InsertOutcome::Conflict { .. })
        ));
        assert!(matches!(
            decide_insert(Some(stored("a")), "b", true),
            InsertPlan::Write { replacing: Some(_) }
        ));
    }
}
