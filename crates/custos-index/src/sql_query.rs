//! Translates a [`Query`] into SQL over the schema's four-level tables.
//!
//! Aliases: `st` studies, `se` series, `i` instances. Patient-level queries
//! group studies by patient ID. Every value travels as a bound parameter.

use custos_core::query::{Key, KeyKind, Level, Matcher, Query, fold_case, fold_name};

/// The SQL flavours the index speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Rewrites `?` placeholders as `$1, $2, ...` for PostgreSQL. The generated
    /// SQL never has `?` inside a literal.
    pub(crate) fn placeholders(self, sql: String) -> String {
        match self {
            Dialect::Sqlite => sql,
            Dialect::Postgres => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    /// An integer column that may be NULL.
    MaybeInt(Option<i64>),
}

/// Column expression for a key, or None for keys computed by sub-queries.
pub fn column(key: Key) -> Option<&'static str> {
    Some(match key {
        Key::PatientName => "st.patient_name",
        Key::PatientID => "st.patient_id",
        Key::PatientBirthDate => "st.patient_birth_date",
        Key::PatientSex => "st.patient_sex",
        Key::StudyInstanceUID => "st.study_uid",
        Key::StudyDate => "st.study_date",
        Key::StudyTime => "st.study_time",
        Key::AccessionNumber => "st.accession_number",
        Key::StudyID => "st.study_id",
        Key::StudyDescription => "st.study_description",
        Key::ReferringPhysicianName => "st.referring_physician_name",
        Key::SeriesInstanceUID => "se.series_uid",
        Key::Modality => "se.modality",
        Key::SeriesNumber => "se.series_number",
        Key::SeriesDescription => "se.series_description",
        Key::BodyPartExamined => "se.body_part_examined",
        Key::SeriesDate => "se.series_date",
        Key::SeriesTime => "se.series_time",
        Key::SOPInstanceUID => "i.sop_instance_uid",
        Key::SOPClassUID => "i.sop_class_uid",
        Key::InstanceNumber => "i.instance_number",
        Key::NumberOfFrames => "i.number_of_frames",
        _ => return None,
    })
}

/// The column used for matching (case-folded for person names).
fn match_column(key: Key) -> Option<&'static str> {
    Some(match key {
        Key::PatientName => "st.patient_name_fold",
        Key::ReferringPhysicianName => "st.referring_physician_name_fold",
        other => return column(other),
    })
}

/// DICOM wildcard to SQL LIKE pattern with `\` as escape.
fn like_pattern(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Upper bound of a time range made inclusive of everything it prefixes
/// ("-1030" includes 10:30:59.999999).
fn time_upper(t: &str) -> String {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut hms = hms.to_string();
    while hms.len() < 6 {
        hms.push('9');
    }
    let mut frac = frac.to_string();
    while frac.len() < 6 {
        frac.push('9');
    }
    format!("{hms}.{frac}")
}

/// WHERE clauses (ANDed) and their parameters for the conditions that apply at `level`.
pub fn conditions(query: &Query) -> Result<(Vec<String>, Vec<SqlValue>), String> {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    for (key, matcher) in &query.conditions {
        if key.level() > query.level && *key != Key::ModalitiesInStudy {
            // Keys below the query level are not matched (PS3.4 C.4.1.2.1).
            continue;
        }
        if *matcher == Matcher::Universal {
            continue;
        }
        if *key == Key::ModalitiesInStudy {
            // Any of the values (empty ones, as a trailing `\\` leaves, are
            // not values); a wildcard matches as on Modality (C.2.2.2.4).
            let (test, values): (String, Vec<String>) = match matcher {
                Matcher::Single(v) => {
                    let mods: Vec<String> = v
                        .split('\\')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect();
                    (format!("IN ({})", vec!["?"; mods.len()].join(",")), mods)
                }
                Matcher::List(l) => {
                    let mods: Vec<String> = l.iter().filter(|m| !m.is_empty()).cloned().collect();
                    (format!("IN ({})", vec!["?"; mods.len()].join(",")), mods)
                }
                Matcher::Wildcard(w) => ("LIKE ? ESCAPE '\\'".to_string(), vec![like_pattern(w)]),
                _ => return Err("ModalitiesInStudy takes a value, a list or a wildcard".into()),
            };
            if values.is_empty() {
                continue;
            }
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM series ms WHERE ms.study_pk = st.pk AND ms.modality {test})"
            ));
            params.extend(values.into_iter().map(SqlValue::Text));
            continue;
        }
        let Some(col) = match_column(*key) else {
            // Counts are return keys only.
            continue;
        };
        // Names are compared in their normal form; a wildcard pattern only
        // case-folded (its trailing `^` before a `*` means something).
        let is_name = key.kind() == KeyKind::PersonName;
        let fold = |v: &str| if is_name { fold_name(v) } else { v.to_string() };
        let fold_pattern = |v: &str| if is_name { fold_case(v) } else { v.to_string() };
        match matcher {
            Matcher::Universal => {}
            Matcher::Single(v) if key.kind() == KeyKind::Integer => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("{} needs an integer", key.name()))?;
                clauses.push(format!("{col} = ?"));
                params.push(SqlValue::Int(n));
            }
            Matcher::Single(v) if key.any_case() => {
                clauses.push(format!("UPPER({col}) = UPPER(?)"));
                params.push(SqlValue::Text(v.clone()));
            }
            Matcher::Single(v) => {
                clauses.push(format!("{col} = ?"));
                params.push(SqlValue::Text(fold(v)));
            }
            Matcher::Wildcard(v) if key.any_case() => {
                clauses.push(format!("UPPER({col}) LIKE UPPER(?) ESCAPE '\\'"));
                params.push(SqlValue::Text(like_pattern(v)));
            }
            Matcher::Wildcard(v) => {
                clauses.push(format!("{col} LIKE ? ESCAPE '\\'"));
                params.push(SqlValue::Text(like_pattern(&fold_pattern(v))));
            }
            Matcher::List(values) => {
                let marks = vec!["?"; values.len()].join(",");
                clauses.push(format!("{col} IN ({marks})"));
                params.extend(values.iter().map(|v| SqlValue::Text(fold(v))));
            }
            Matcher::Range { from, to } => {
                clauses.push(format!("{col} <> ''"));
                if let Some(f) = from {
                    clauses.push(format!("{col} >= ?"));
                    params.push(SqlValue::Text(f.clone()));
                }
                if let Some(t) = to {
                    clauses.push(format!("{col} <= ?"));
                    let upper = if key.kind() == KeyKind::Time {
                        time_upper(t)
                    } else {
                        t.clone()
                    };
                    params.push(SqlValue::Text(upper));
                }
            }
        }
    }
    Ok((clauses, params))
}

fn where_sql(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    }
}

/// The keys a find at `level` returns, in SELECT order.
pub fn returned_keys(level: Level) -> Vec<Key> {
    Key::ALL
        .iter()
        .copied()
        .filter(|k| k.level() <= level)
        .filter(|k| match level {
            Level::Patient => k.level() == Level::Patient,
            _ => {
                !matches!(
                    k,
                    Key::NumberOfPatientRelatedStudies
                        | Key::NumberOfPatientRelatedSeries
                        | Key::NumberOfPatientRelatedInstances
                ) && (level == Level::Study
                    || !matches!(
                        k,
                        Key::ModalitiesInStudy
                            | Key::NumberOfStudyRelatedSeries
                            | Key::NumberOfStudyRelatedInstances
                    ))
            }
        })
        .collect()
}

fn select_expr(key: Key, level: Level) -> String {
    match key {
        // All the patient's studies, not only those the keys matched (a
        // study under an older spelling of the name is the patient's too),
        // as the series and instances are counted: the counters kept with
        // the rows (migration 8), summed over the patient's studies.
        Key::NumberOfPatientRelatedStudies => {
            "(SELECT CAST(COUNT(*) AS BIGINT) FROM studies y WHERE y.patient_id = st.patient_id)".into()
        }
        Key::NumberOfPatientRelatedSeries => {
            "(SELECT CAST(SUM(y.num_series) AS BIGINT) FROM studies y WHERE y.patient_id = st.patient_id)".into()
        }
        Key::NumberOfPatientRelatedInstances => {
            "(SELECT CAST(SUM(y.num_instances) AS BIGINT) FROM studies y WHERE y.patient_id = st.patient_id)".into()
        }
        Key::ModalitiesInStudy => "st.modalities".into(),
        Key::NumberOfStudyRelatedSeries => "st.num_series".into(),
        Key::NumberOfStudyRelatedInstances => "st.num_instances".into(),
        Key::NumberOfSeriesRelatedInstances => "se.num_instances".into(),
        // The patient as their newest study has them (a name corrected or
        // spelled anew since), as Orthanc keeps a patient's tags from the
        // latest instance; not whichever value sorts last.
        k if level == Level::Patient => {
            let col = column(k).expect("patient keys are columns");
            let col = col.strip_prefix("st.").unwrap_or(col);
            format!(
                "(SELECT y.{col} FROM studies y WHERE y.patient_id = st.patient_id ORDER BY y.pk DESC LIMIT 1)"
            )
        }
        k => column(k).expect("non-computed keys are columns").to_string(),
    }
}

fn from_sql(level: Level) -> &'static str {
    match level {
        Level::Patient | Level::Study => "studies st",
        Level::Series => "series se JOIN studies st ON se.study_pk = st.pk",
        Level::Image => {
            "instances i JOIN series se ON i.series_pk = se.pk JOIN studies st ON se.study_pk = st.pk"
        }
    }
}

/// A complete find statement: (sql, params, keys in column order).
pub fn find_sql(
    query: &Query,
    dialect: Dialect,
) -> Result<(String, Vec<SqlValue>, Vec<Key>), String> {
    let (clauses, mut params) = conditions(query)?;
    let keys = returned_keys(query.level);
    let select: Vec<String> = keys.iter().map(|k| select_expr(*k, query.level)).collect();
    let (group, pk) = match query.level {
        Level::Patient => (" GROUP BY st.patient_id", "MIN(st.pk)"),
        Level::Study => ("", "st.pk"),
        Level::Series => ("", "se.pk"),
        Level::Image => ("", "i.pk"),
    };
    // Requested sort keys first, then the storage order (which also breaks
    // ties, so paging is stable); names sort case-insensitively.
    let mut by = Vec::new();
    for (key, descending) in &query.order {
        if !key.sortable_at(query.level) {
            return Err(format!("cannot sort by {} here", key.name()));
        }
        let col = column(*key).ok_or_else(|| format!("cannot sort by {}", key.name()))?;
        // The same order on both backends: bytes (SQLite's BINARY; on
        // PostgreSQL "C", not the database's locale, with "C" indexes for
        // names, IDs and accession numbers, migrations 8 and 18) for names
        // and text — dates, times and UIDs are digits, ordered alike by any
        // collation — and numbers missing last.
        let col = match (key.kind(), dialect) {
            (KeyKind::PersonName, Dialect::Sqlite) => format!("{col}_fold"),
            // Byte order, as the index on the folded name has it.
            (KeyKind::PersonName, Dialect::Postgres) => format!("{col}_fold COLLATE \"C\""),
            (KeyKind::Text, Dialect::Postgres) => format!("{col} COLLATE \"C\""),
            _ => col.to_string(),
        };
        let nulls = if key.kind() == KeyKind::Integer {
            " NULLS LAST"
        } else {
            ""
        };
        by.push(format!(
            "{col}{}{nulls}",
            if *descending { " DESC" } else { "" }
        ));
    }
    let newest_first = query.order.first().is_some_and(|(_, d)| *d);
    by.push(format!("{pk}{}", if newest_first { " DESC" } else { "" }));
    let order = format!("{group} ORDER BY {}", by.join(", "));
    let sql = format!(
        "SELECT {} FROM {}{}{} LIMIT ? OFFSET ?",
        select.join(", "),
        from_sql(query.level),
        where_sql(&clauses),
        order
    );
    params.push(SqlValue::Int(query.limit.min(i64::MAX as usize) as i64));
    params.push(SqlValue::Int(query.offset.min(i64::MAX as usize) as i64));
    Ok((dialect.placeholders(sql), params, keys))
}

/// Statement listing the stored instances under a query (every level joined),
/// in index order after position `after`, with each its position first.
pub fn instances_sql(
    query: &Query,
    after: i64,
    limit: usize,
    dialect: Dialect,
) -> Result<(String, Vec<SqlValue>), String> {
    let mut all_levels = query.clone();
    all_levels.level = Level::Image;
    let (mut clauses, mut params) = conditions(&all_levels)?;
    clauses.push("i.pk > ?".into());
    params.push(SqlValue::Int(after));
    let sql = format!(
        "SELECT i.pk, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.blob_key, i.size, i.sha256 FROM {}{} ORDER BY i.pk LIMIT ?",
        from_sql(Level::Image),
        where_sql(&clauses)
    );
    params.push(SqlValue::Int(limit.min(i64::MAX as usize) as i64));
    Ok((dialect.placeholders(sql), params))
}

/// Statement for an audit search (`AuditSearch`): the record columns of
/// the matches, bodies matched as JSON.
pub fn audit_search_sql(
    search: &custos_core::audit::AuditSearch,
    dialect: Dialect,
) -> (String, Vec<SqlValue>) {
    let mut clauses = vec!["seq > ?".to_string()];
    let mut params = vec![SqlValue::Int(search.after)];
    if let Some(before) = search.before {
        clauses.push("seq < ?".into());
        params.push(SqlValue::Int(before));
    }
    if let Some(from) = &search.from {
        clauses.push("at >= ?".into());
        params.push(SqlValue::Text(from.clone()));
    }
    if let Some(to) = &search.to {
        clauses.push("at < ?".into());
        params.push(SqlValue::Text(to.clone()));
    }
    let (user, peer, code, patient) = match dialect {
        Dialect::Sqlite => (
            "json_extract(body, '$.user') = ?",
            "json_extract(body, '$.peer') <> ''",
            "CAST(json_extract(body, '$.event.code') AS TEXT) = ?",
            "EXISTS (SELECT 1 FROM json_each(body, '$.patients') WHERE value = ?)",
        ),
        Dialect::Postgres => (
            "(body::jsonb ->> 'user') = ?",
            "(body::jsonb ->> 'peer') <> ''",
            "(body::jsonb -> 'event' ->> 'code') = ?",
            "(body::jsonb -> 'patients') @> jsonb_build_array(?::text)",
        ),
    };
    if let Some(u) = &search.user {
        clauses.push(user.into());
        params.push(SqlValue::Text(u.clone()));
    }
    if search.dicom_peers_only {
        clauses.push(peer.into());
    }
    if let Some(c) = search.event_code {
        clauses.push(code.into());
        params.push(SqlValue::Text(c.to_string()));
    }
    if let Some(p) = &search.patient_id {
        clauses.push(patient.into());
        params.push(SqlValue::Text(p.clone()));
    }
    params.push(SqlValue::Int(search.limit.min(i64::MAX as usize) as i64));
    let sql = format!(
        "SELECT seq, at, body, prev_hash, hash FROM audit{} ORDER BY seq{} LIMIT ?",
        where_sql(&clauses),
        if search.newest_first { " DESC" } else { "" }
    );
    (dialect.placeholders(sql), params)
}

/// Statement counting the stored instances under a query by (SOP class,
/// transfer syntax): what a C-MOVE proposes and how many sub-operations follow.
pub fn instance_kinds_sql(
    query: &Query,
    dialect: Dialect,
) -> Result<(String, Vec<SqlValue>), String> {
    let mut all_levels = query.clone();
    all_levels.level = Level::Image;
    let (clauses, params) = conditions(&all_levels)?;
    let sql = format!(
        "SELECT i.sop_class_uid, i.transfer_syntax_uid, COUNT(*) FROM {}{} GROUP BY i.sop_class_uid, i.transfer_syntax_uid ORDER BY 1, 2",
        from_sql(Level::Image),
        where_sql(&clauses)
    );
    Ok((dialect.placeholders(sql), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escapes() {
        assert_eq!(like_pattern("A*B?C%_\\"), "A%B_C\\%\\_\\\\");
        assert_eq!(time_upper("1030"), "103099.999999");
        assert_eq!(time_upper("103015.5"), "103015.599999");
    }
}
