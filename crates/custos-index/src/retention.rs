//! Retention's reads (each study's dates, modalities, last arrival and
//! protection, a page at a time) and the protection flag, on both backends.

use async_trait::async_trait;

use custos_core::retention::StudyActivity;

use crate::postgres::{pg, pool_err};
use crate::{IndexError, PgIndex, Retention, SqliteIndex};

/// `{last}`: the dialect's unix seconds of the newest `received_at`.
const ACTIVITY: &str =
    "SELECT st.pk, st.study_uid, st.patient_id, st.study_date, st.modalities, {last},
       EXISTS (SELECT 1 FROM protected_studies p WHERE p.study_uid = st.study_uid)
  FROM studies st JOIN series se ON se.study_pk = st.pk JOIN instances i ON i.series_pk = se.pk
 WHERE st.pk > {a} GROUP BY st.pk ORDER BY st.pk LIMIT {b}";

const IS_PROTECTED: &str = "SELECT EXISTS (SELECT 1 FROM protected_studies WHERE study_uid = {a})";

#[async_trait]
impl Retention for SqliteIndex {
    async fn is_protected(&self, study_uid: &str) -> Result<bool, IndexError> {
        let uid = study_uid.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(&IS_PROTECTED.replace("{a}", "?1"))?
                .query_row([uid], |r| r.get(0))?)
        })
        .await
    }

    async fn study_activity(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StudyActivity)>, IndexError> {
        let sql = ACTIVITY
            .replace(
                "{last}",
                "CAST(strftime('%s', MAX(i.received_at)) AS INTEGER)",
            )
            .replace("{a}", "?1")
            .replace("{b}", "?2");
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    StudyActivity {
                        study_uid: r.get(1)?,
                        patient_id: r.get(2)?,
                        study_date: r.get(3)?,
                        modalities: r.get(4)?,
                        last_received: r.get(5)?,
                        protected: r.get(6)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_protected(
        &self,
        study_uid: &str,
        on: bool,
        reason: &str,
        now: i64,
    ) -> Result<bool, IndexError> {
        let (uid, reason) = (study_uid.to_string(), reason.to_string());
        self.write(move |t| {
            let n = if on {
                t.execute(
                    "INSERT INTO protected_studies (study_uid, reason, at) VALUES (?1, ?2, ?3) ON CONFLICT (study_uid) DO NOTHING",
                    rusqlite::params![uid, reason, now],
                )?
            } else {
                t.execute("DELETE FROM protected_studies WHERE study_uid = ?1", [uid])?
            };
            Ok(n > 0)
        })
        .await
    }
}

#[async_trait]
impl Retention for PgIndex {
    async fn is_protected(&self, study_uid: &str) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one(&IS_PROTECTED.replace("{a}", "$1"), &[&study_uid])
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn study_activity(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StudyActivity)>, IndexError> {
        let sql = ACTIVITY
            .replace(
                "{last}",
                "CAST(EXTRACT(EPOCH FROM MAX(i.received_at)) AS BIGINT)",
            )
            .replace("{a}", "$1")
            .replace("{b}", "$2");
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(&sql, &[&after, &(limit as i64)])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    StudyActivity {
                        study_uid: r.get(1),
                        patient_id: r.get(2),
                        study_date: r.get(3),
                        modalities: r.get(4),
                        last_received: r.get(5),
                        protected: r.get(6),
                    },
                )
            })
            .collect())
    }

    async fn set_protected(
        &self,
        study_uid: &str,
        on: bool,
        reason: &str,
        now: i64,
    ) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = if on {
            client
                .execute(
                    "INSERT INTO protected_studies (study_uid, reason, at) VALUES ($1, $2, $3) ON CONFLICT (study_uid) DO NOTHING",
                    &[&study_uid, &reason, &now],
                )
                .await
        } else {
            client
                .execute(
                    "DELETE FROM protected_studies WHERE study_uid = $1",
                    &[&study_uid],
                )
                .await
        }
        .map_err(pg)?;
        Ok(n > 0)
    }
}
