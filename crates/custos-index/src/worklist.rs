//! The modality worklist and performed procedure steps on both backends: one table, the same columns, the
//! SQL differing only in parameter markers. Matching beyond the start-date
//! range (names, modality, station) is the archive's, on the rows read here.

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use custos_core::record::{MppsRow, WorklistRow};

use crate::postgres::{pg, pool_err};
use crate::{IndexError, PgIndex, SqliteIndex, Worklist};

const COLUMNS: &str = "id, patient_id, patient_name, accession_number, modality, station_ae, start_date, start_time, item_json";

/// `SELECT` of items between two optional start dates; `$n`/`?n` markers
/// from `mark`.
fn range_sql(mark: fn(usize) -> String) -> String {
    format!(
        "SELECT {COLUMNS} FROM worklist WHERE ({a} = '' OR start_date >= {a}) AND ({b} = '' OR start_date <= {b}) ORDER BY start_date, start_time, id LIMIT {c} OFFSET {d}",
        a = mark(1),
        b = mark(2),
        c = mark(3),
        d = mark(4)
    )
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorklistRow> {
    Ok(WorklistRow {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        patient_name: r.get(2)?,
        accession_number: r.get(3)?,
        modality: r.get(4)?,
        station_ae: r.get(5)?,
        start_date: r.get(6)?,
        start_time: r.get(7)?,
        item_json: r.get(8)?,
    })
}

fn pg_row(r: &tokio_postgres::Row) -> WorklistRow {
    WorklistRow {
        id: r.get(0),
        patient_id: r.get(1),
        patient_name: r.get(2),
        accession_number: r.get(3),
        modality: r.get(4),
        station_ae: r.get(5),
        start_date: r.get(6),
        start_time: r.get(7),
        item_json: r.get(8),
    }
}

const MPPS_COLUMNS: &str =
    "sop_instance_uid, status, study_uid, accession_number, worklist_id, attributes_json";

fn sqlite_mpps(r: &rusqlite::Row<'_>) -> rusqlite::Result<MppsRow> {
    Ok(MppsRow {
        sop_instance_uid: r.get(0)?,
        status: r.get(1)?,
        study_uid: r.get(2)?,
        accession_number: r.get(3)?,
        worklist_id: r.get(4)?,
        attributes_json: r.get(5)?,
    })
}

fn pg_mpps(r: &tokio_postgres::Row) -> MppsRow {
    MppsRow {
        sop_instance_uid: r.get(0),
        status: r.get(1),
        study_uid: r.get(2),
        accession_number: r.get(3),
        worklist_id: r.get(4),
        attributes_json: r.get(5),
    }
}

const BY_ACCESSION: &str = "SELECT id FROM worklist WHERE accession_number = {a} ORDER BY start_date, start_time, id LIMIT 1";

#[async_trait]
impl Worklist for SqliteIndex {
    async fn add_worklist_item(&self, row: WorklistRow) -> Result<i64, IndexError> {
        self.write(move |t| {
            t.execute(
                "INSERT INTO worklist (patient_id, patient_name, accession_number, modality, station_ae, start_date, start_time, item_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![row.patient_id, row.patient_name, row.accession_number, row.modality, row.station_ae, row.start_date, row.start_time, row.item_json],
            )?;
            Ok(t.last_insert_rowid())
        })
        .await
    }

    async fn replace_worklist_item(&self, row: WorklistRow) -> Result<bool, IndexError> {
        self.write(move |t| {
            Ok(t.execute(
                "UPDATE worklist SET patient_id = ?2, patient_name = ?3, accession_number = ?4, modality = ?5, station_ae = ?6, start_date = ?7, start_time = ?8, item_json = ?9 WHERE id = ?1",
                rusqlite::params![row.id, row.patient_id, row.patient_name, row.accession_number, row.modality, row.station_ae, row.start_date, row.start_time, row.item_json],
            )? > 0)
        })
        .await
    }

    async fn worklist_item(&self, id: i64) -> Result<Option<WorklistRow>, IndexError> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {COLUMNS} FROM worklist WHERE id = ?1"),
                [id],
                sqlite_row,
            )
            .optional()?)
        })
        .await
    }

    async fn remove_worklist_item(&self, id: i64) -> Result<bool, IndexError> {
        self.write(move |t| Ok(t.execute("DELETE FROM worklist WHERE id = ?1", [id])? > 0))
            .await
    }

    async fn worklist_items(
        &self,
        from: Option<String>,
        to: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorklistRow>, IndexError> {
        self.read(move |c| {
            let mut stmt = c.prepare(&range_sql(|n| format!("?{n}")))?;
            let rows = stmt.query_map(
                rusqlite::params![
                    from.unwrap_or_default(),
                    to.unwrap_or_default(),
                    limit as i64,
                    offset as i64
                ],
                sqlite_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn worklist_id_by_accession(&self, accession: &str) -> Result<Option<i64>, IndexError> {
        let accession = accession.to_string();
        self.read(move |c| {
            Ok(
                c.query_row(&BY_ACCESSION.replace("{a}", "?1"), [accession], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    async fn create_mpps(&self, row: MppsRow) -> Result<bool, IndexError> {
        self.write(move |t| {
            Ok(t.execute(
                &format!("INSERT INTO mpps ({MPPS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (sop_instance_uid) DO NOTHING"),
                rusqlite::params![row.sop_instance_uid, row.status, row.study_uid, row.accession_number, row.worklist_id, row.attributes_json],
            )? > 0)
        })
        .await
    }

    async fn mpps(&self, sop_instance_uid: &str) -> Result<Option<MppsRow>, IndexError> {
        let uid = sop_instance_uid.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {MPPS_COLUMNS} FROM mpps WHERE sop_instance_uid = ?1"),
                [uid],
                sqlite_mpps,
            )
            .optional()?)
        })
        .await
    }

    async fn update_mpps_in_progress(&self, row: MppsRow) -> Result<bool, IndexError> {
        self.write(move |t| {
            Ok(t.execute(
                "UPDATE mpps SET status = ?2, study_uid = ?3, accession_number = ?4, worklist_id = ?5, attributes_json = ?6 WHERE sop_instance_uid = ?1 AND status = 'IN PROGRESS'",
                rusqlite::params![row.sop_instance_uid, row.status, row.study_uid, row.accession_number, row.worklist_id, row.attributes_json],
            )? > 0)
        })
        .await
    }
}

#[async_trait]
impl Worklist for PgIndex {
    async fn add_worklist_item(&self, row: WorklistRow) -> Result<i64, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let r = client
            .query_one(
                "INSERT INTO worklist (patient_id, patient_name, accession_number, modality, station_ae, start_date, start_time, item_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[&row.patient_id, &row.patient_name, &row.accession_number, &row.modality, &row.station_ae, &row.start_date, &row.start_time, &row.item_json],
            )
            .await
            .map_err(pg)?;
        Ok(r.get(0))
    }

    async fn replace_worklist_item(&self, row: WorklistRow) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                "UPDATE worklist SET patient_id = $2, patient_name = $3, accession_number = $4, modality = $5, station_ae = $6, start_date = $7, start_time = $8, item_json = $9 WHERE id = $1",
                &[&row.id, &row.patient_id, &row.patient_name, &row.accession_number, &row.modality, &row.station_ae, &row.start_date, &row.start_time, &row.item_json],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn worklist_item(&self, id: i64) -> Result<Option<WorklistRow>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM worklist WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(pg_row))
    }

    async fn remove_worklist_item(&self, id: i64) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute("DELETE FROM worklist WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn worklist_items(
        &self,
        from: Option<String>,
        to: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorklistRow>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &range_sql(|n| format!("${n}")),
                &[
                    &from.unwrap_or_default(),
                    &to.unwrap_or_default(),
                    &(limit as i64),
                    &(offset as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(pg_row).collect())
    }

    async fn worklist_id_by_accession(&self, accession: &str) -> Result<Option<i64>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(&BY_ACCESSION.replace("{a}", "$1"), &[&accession])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn create_mpps(&self, row: MppsRow) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                &format!("INSERT INTO mpps ({MPPS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sop_instance_uid) DO NOTHING"),
                &[&row.sop_instance_uid, &row.status, &row.study_uid, &row.accession_number, &row.worklist_id, &row.attributes_json],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn mpps(&self, sop_instance_uid: &str) -> Result<Option<MppsRow>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                &format!("SELECT {MPPS_COLUMNS} FROM mpps WHERE sop_instance_uid = $1"),
                &[&sop_instance_uid],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(pg_mpps))
    }

    async fn update_mpps_in_progress(&self, row: MppsRow) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                "UPDATE mpps SET status = $2, study_uid = $3, accession_number = $4, worklist_id = $5, attributes_json = $6 WHERE sop_instance_uid = $1 AND status = 'IN PROGRESS'",
                &[&row.sop_instance_uid, &row.status, &row.study_uid, &row.accession_number, &row.worklist_id, &row.attributes_json],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }
}
