//! Retention's reads (each study's dates, modalities, last arrival and
//! protection, a page at a time) and the protection flag, on both backends.

use async_trait::async_trait;

use custos_core::retention::StudyActivity;

use custos_core::record::StoredInstance;

use crate::postgres::{pg, pool_err};
use crate::{IndexError, PgIndex, Retention, SqliteIndex};
use rusqlite::OptionalExtension;

/// `{last}`: the dialect's unix seconds of the newest `received_at`.
const ACTIVITY: &str =
    "SELECT st.pk, st.study_uid, st.patient_id, st.study_date, st.modalities, {last},
       EXISTS (SELECT 1 FROM protected_studies p WHERE p.study_uid = st.study_uid)
  FROM studies st JOIN series se ON se.study_pk = st.pk JOIN instances i ON i.series_pk = se.pk
 WHERE st.pk > {a} GROUP BY st.pk ORDER BY st.pk LIMIT {b}";

/// Whether a study may still go: unprotected, and nothing received after
/// `{b}` (`{last}` as in `ACTIVITY`); no row when the study is gone.
const STILL_EXPIRED: &str = "SELECT NOT EXISTS (SELECT 1 FROM protected_studies p WHERE p.study_uid = st.study_uid)
       AND COALESCE((SELECT {last} FROM series se JOIN instances i ON i.series_pk = se.pk WHERE se.study_pk = st.pk), 0) <= {b}
  FROM studies st WHERE st.study_uid = {a}";

const IS_PROTECTED: &str = "SELECT EXISTS (SELECT 1 FROM protected_studies WHERE study_uid = {a})";

const PROTECTED: &str = "SELECT study_uid, reason, at FROM protected_studies ORDER BY study_uid";

const SQLITE_LAST: &str = "CAST(strftime('%s', MAX(i.received_at)) AS INTEGER)";
const PG_LAST: &str = "CAST(EXTRACT(EPOCH FROM MAX(i.received_at)) AS BIGINT)";

#[async_trait]
impl Retention for SqliteIndex {
    async fn protected_studies(&self) -> Result<Vec<(String, String, i64)>, IndexError> {
        self.read(|c| {
            let mut stmt = c.prepare(PROTECTED)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn is_protected(&self, study_uid: &str) -> Result<bool, IndexError> {
        let uid = study_uid.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(&IS_PROTECTED.replace("{a}", "?1"))?
                .query_row([uid], |r| r.get(0))?)
        })
        .await
    }

    async fn remove_expired(
        &self,
        study_uid: &str,
        seen_last_received: i64,
    ) -> Result<Option<Vec<StoredInstance>>, IndexError> {
        let sql = STILL_EXPIRED
            .replace("{last}", SQLITE_LAST)
            .replace("{a}", "?1")
            .replace("{b}", "?2");
        let uid = study_uid.to_string();
        // The one writer's transaction: nothing commits in between.
        self.write(move |t| {
            let still: Option<bool> = t
                .prepare_cached(&sql)?
                .query_row(rusqlite::params![uid, seen_last_received], |r| r.get(0))
                .optional()?;
            if still != Some(true) {
                return Ok(None);
            }
            crate::sqlite::remove_in(t, &uid, None).map(Some)
        })
        .await
    }

    async fn study_activity(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StudyActivity)>, IndexError> {
        let sql = ACTIVITY
            .replace("{last}", SQLITE_LAST)
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
    async fn protected_studies(&self) -> Result<Vec<(String, String, i64)>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(PROTECTED, &[]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn is_protected(&self, study_uid: &str) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one(&IS_PROTECTED.replace("{a}", "$1"), &[&study_uid])
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn remove_expired(
        &self,
        study_uid: &str,
        seen_last_received: i64,
    ) -> Result<Option<Vec<StoredInstance>>, IndexError> {
        match self
            .remove_expired_locked(study_uid, seen_last_received)
            .await
        {
            // Ingest and a protection lock these rows in another order at
            // times; the database breaks the tie: spared this pass.
            Err(IndexError::Postgres(m)) if m.starts_with("40P01") || m.starts_with("40001") => {
                Ok(None)
            }
            other => other,
        }
    }

    async fn study_activity(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StudyActivity)>, IndexError> {
        let sql = ACTIVITY
            .replace("{last}", PG_LAST)
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
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = if on {
            // After a retention deletion deciding on this study, or before
            // it (which then sees the protection): never in between.
            tx.execute(
                "SELECT 1 FROM studies WHERE study_uid = $1 FOR SHARE",
                &[&study_uid],
            )
            .await
            .map_err(pg)?;
            tx.execute(
                "INSERT INTO protected_studies (study_uid, reason, at) VALUES ($1, $2, $3) ON CONFLICT (study_uid) DO NOTHING",
                &[&study_uid, &reason, &now],
            )
            .await
        } else {
            tx.execute(
                "DELETE FROM protected_studies WHERE study_uid = $1",
                &[&study_uid],
            )
            .await
        }
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }
}

impl PgIndex {
    /// `remove_expired` with the rows locked the way ingest takes them: the
    /// study's series first (an instance's insert holds its series), then
    /// the study (a new series, a counter and a protection hold it). The
    /// check is its own statement after the locks, so it sees whatever
    /// committed while they were awaited.
    async fn remove_expired_locked(
        &self,
        study_uid: &str,
        seen_last_received: i64,
    ) -> Result<Option<Vec<StoredInstance>>, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "SELECT se.pk FROM series se JOIN studies st ON se.study_pk = st.pk
              WHERE st.study_uid = $1 ORDER BY se.pk FOR UPDATE OF se",
            &[&study_uid],
        )
        .await
        .map_err(pg)?;
        let locked = tx
            .query_opt(
                "SELECT pk FROM studies WHERE study_uid = $1 FOR UPDATE",
                &[&study_uid],
            )
            .await
            .map_err(pg)?;
        if locked.is_none() {
            return Ok(None);
        }
        let sql = STILL_EXPIRED
            .replace("{last}", PG_LAST)
            .replace("{a}", "$1")
            .replace("{b}", "$2");
        let still: Option<bool> = tx
            .query_opt(&sql, &[&study_uid, &seen_last_received])
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        if still != Some(true) {
            return Ok(None);
        }
        let removed = crate::postgres::remove_in(&tx, study_uid, None).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(removed))
    }
}
