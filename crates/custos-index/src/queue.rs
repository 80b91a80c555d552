//! The forwarding queue on both backends: one `jobs` table, the same SQL
//! but for parameter markers and PostgreSQL's `FOR UPDATE SKIP LOCKED`
//! (several nodes take different jobs).

use async_trait::async_trait;

use custos_core::routing::{Job, JobScope, JobState};

use crate::postgres::{pg, pool_err};
use crate::{IndexError, PgIndex, Queue, SqliteIndex};

// `sop_instance_uid` holds a study's UID in study jobs (the column predates them).
const COLUMNS: &str = "id, sop_instance_uid, destination, reason, state, attempts, next_at, last_error, created, scope, payload";
/// The same without payloads (listings).
const LISTED: &str = "id, sop_instance_uid, destination, reason, state, attempts, next_at, last_error, created, scope, '' AS payload";

/// Placeholders `?n` (SQLite) or `$n` (PostgreSQL).
pub(crate) type Mark = fn(usize) -> String;

pub(crate) fn sqlite_mark(n: usize) -> String {
    format!("?{n}")
}

pub(crate) fn pg_mark(n: usize) -> String {
    format!("${n}")
}

fn enqueue_sql(m: Mark, scope: JobScope, again: bool) -> String {
    let rearm = "DO UPDATE SET state = 'pending', attempts = 0, next_at = excluded.next_at, last_error = '', reason = excluded.reason";
    let conflict = match (scope, again) {
        (JobScope::Instance | JobScope::Commitment | JobScope::Webhook, false) => {
            "DO NOTHING".to_string()
        }
        (JobScope::Instance | JobScope::Commitment | JobScope::Webhook, true) => {
            format!("{rearm} WHERE jobs.state <> 'pending'")
        }
        // A study still arriving: its timer starts again (an attempt under
        // way is superseded: its outcome no longer counts, attempts = 0).
        (JobScope::Study, false) => format!("{rearm} WHERE jobs.state = 'pending'"),
        (JobScope::Study, true) => rearm.to_string(),
    };
    format!(
        "INSERT INTO jobs (sop_instance_uid, destination, reason, state, next_at, created, scope) VALUES ({}, {}, {}, 'pending', {}, {}, '{}') ON CONFLICT (sop_instance_uid, destination) {conflict}",
        m(1),
        m(2),
        m(3),
        m(4),
        m(5),
        scope.name()
    )
}

fn report_sql(m: Mark) -> String {
    payload_job_sql(m, "storage commitment", JobScope::Commitment, true)
}

/// Queues a job that carries its payload: uid ?1, destination ?2, due ?3,
/// now ?4, payload ?5. With `rearm`, an existing one for the same pair is
/// replaced and due again (a newer report, a study arriving still);
/// otherwise it is left alone (one delivery per change).
pub(crate) fn payload_job_sql(m: Mark, reason: &str, scope: JobScope, rearm: bool) -> String {
    let conflict = if rearm {
        "DO UPDATE SET state = 'pending', attempts = 0, next_at = excluded.next_at, last_error = '', payload = excluded.payload"
    } else {
        "DO NOTHING"
    };
    format!(
        "INSERT INTO jobs (sop_instance_uid, destination, reason, state, next_at, created, scope, payload) VALUES ({uid}, {dest}, '{reason}', 'pending', {due}, {now}, '{scope}', {payload}) ON CONFLICT (sop_instance_uid, destination) {conflict}",
        uid = m(1),
        dest = m(2),
        due = m(3),
        now = m(4),
        payload = m(5),
        scope = scope.name()
    )
}

fn settle_sql(m: Mark, delivered: bool) -> String {
    let set = if delivered {
        "state = 'done', last_error = ''".to_string()
    } else {
        format!("next_at = {}", m(3))
    };
    format!(
        "UPDATE jobs SET {set} WHERE sop_instance_uid = {} AND destination = {} AND scope = 'commitment' AND state = 'pending'",
        m(1),
        m(2)
    )
}

/// Takes due jobs: now ?1, lease until ?2, limit ?3, and `skip`
/// destinations ?4.. left out (those this node is still sending to).
fn take_sql(m: Mark, lock: &str, skip: usize) -> String {
    let skip = if skip == 0 {
        String::new()
    } else {
        let marks: Vec<String> = (4..4 + skip).map(m).collect();
        format!(" AND destination NOT IN ({})", marks.join(", "))
    };
    format!(
        "UPDATE jobs SET attempts = attempts + 1, next_at = {lease} WHERE id IN (SELECT id FROM jobs WHERE state = 'pending' AND next_at <= {now}{skip} ORDER BY id LIMIT {limit}{lock}) RETURNING {COLUMNS}",
        now = m(1),
        lease = m(2),
        limit = m(3)
    )
}

fn failed_sql(m: Mark) -> String {
    // retry_at NULL: failed for good (dead letter). The cast tells
    // PostgreSQL the parameter's type where it is first seen.
    format!(
        "UPDATE jobs SET last_error = {e}, state = CASE WHEN CAST({at} AS BIGINT) IS NULL THEN 'failed' ELSE 'pending' END, next_at = COALESCE(CAST({at} AS BIGINT), next_at) WHERE id = {id} AND attempts = {n} AND state = 'pending'",
        id = m(1),
        e = m(2),
        at = m(3),
        n = m(4)
    )
}

fn lease_sql(m: Mark) -> String {
    format!(
        "UPDATE jobs SET next_at = {until} WHERE id = {id} AND attempts = {n} AND state = 'pending'",
        until = m(1),
        id = m(2),
        n = m(3)
    )
}

const DONE_SQLITE: &str = "UPDATE jobs SET state = 'done', last_error = '' WHERE id = ?1 AND attempts = ?2 AND state = 'pending'";
const DONE_PG: &str = "UPDATE jobs SET state = 'done', last_error = '' WHERE id = $1 AND attempts = $2 AND state = 'pending'";

fn list_sql(m: Mark) -> String {
    format!(
        "SELECT {LISTED} FROM jobs WHERE ({s} = '' OR state = {s}) AND id < {b} ORDER BY id DESC LIMIT {l}",
        s = m(1),
        l = m(2),
        b = m(3)
    )
}

/// Pending and failed only: the (state, next_at) index answers it; done jobs
/// are many and not counted.
const COUNTS: &str = "SELECT state, COUNT(*) FROM jobs WHERE state IN ('pending', 'failed') GROUP BY state ORDER BY state";

fn counted(rows: Vec<(String, i64)>) -> Vec<(JobState, i64)> {
    rows.into_iter()
        .filter_map(|(s, n)| JobState::parse(&s).map(|s| (s, n)))
        .collect()
}

fn retry_sql(m: Mark) -> String {
    format!(
        "UPDATE jobs SET state = 'pending', attempts = 0, next_at = {now}, last_error = '' WHERE id = {id} AND state IN ('failed', 'cancelled')",
        id = m(1),
        now = m(2)
    )
}

fn cancel_sql(m: Mark) -> String {
    format!(
        "UPDATE jobs SET state = 'cancelled' WHERE id = {} AND state IN ('pending', 'failed')",
        m(1)
    )
}

/// Finished jobs last touched before ?1 (`next_at` is the last attempt's
/// time for them); the (state, next_at) index finds them.
fn prune_sql(m: Mark) -> String {
    format!(
        "DELETE FROM jobs WHERE state IN ('done', 'cancelled') AND next_at < {}",
        m(1)
    )
}

fn state_of(id: i64, state: &str) -> Result<JobState, IndexError> {
    JobState::parse(state).ok_or_else(|| IndexError::Corrupt(format!("job {id}: state `{state}`")))
}

fn scope_of(id: i64, scope: &str) -> Result<JobScope, IndexError> {
    JobScope::parse(scope).ok_or_else(|| IndexError::Corrupt(format!("job {id}: scope `{scope}`")))
}

fn sqlite_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Job, IndexError>> {
    let id: i64 = r.get(0)?;
    let state: String = r.get(4)?;
    let scope: String = r.get(9)?;
    let job = Job {
        id,
        scope: JobScope::Instance,
        uid: r.get(1)?,
        destination: r.get(2)?,
        reason: r.get(3)?,
        state: JobState::Pending,
        attempts: r.get(5)?,
        next_at: r.get(6)?,
        last_error: r.get(7)?,
        created: r.get(8)?,
        payload: r.get(10)?,
    };
    Ok(state_of(id, &state).and_then(|state| {
        Ok(Job {
            state,
            scope: scope_of(id, &scope)?,
            ..job
        })
    }))
}

fn pg_job(r: &tokio_postgres::Row) -> Result<Job, IndexError> {
    let id: i64 = r.get(0);
    Ok(Job {
        id,
        scope: scope_of(id, r.get(9))?,
        uid: r.get(1),
        destination: r.get(2),
        reason: r.get(3),
        state: state_of(id, r.get(4))?,
        attempts: r.get(5),
        next_at: r.get(6),
        last_error: r.get(7),
        created: r.get(8),
        payload: r.get(10),
    })
}

#[async_trait]
impl Queue for SqliteIndex {
    async fn enqueue(
        &self,
        scope: JobScope,
        jobs: Vec<(String, String)>,
        reason: &str,
        now: i64,
        due: i64,
        again: bool,
    ) -> Result<(), IndexError> {
        let reason = reason.to_string();
        self.write(move |t| {
            let mut stmt = t.prepare_cached(&enqueue_sql(sqlite_mark, scope, again))?;
            for (uid, dest) in &jobs {
                stmt.execute(rusqlite::params![uid, dest, reason, due, now])?;
            }
            Ok(())
        })
        .await
    }

    async fn enqueue_report(
        &self,
        uid: &str,
        destination: &str,
        payload: &str,
        now: i64,
        due: i64,
    ) -> Result<(), IndexError> {
        let (uid, destination, payload) = (
            uid.to_string(),
            destination.to_string(),
            payload.to_string(),
        );
        self.write(move |t| {
            t.execute(
                &report_sql(sqlite_mark),
                rusqlite::params![uid, destination, due, now, payload],
            )?;
            Ok(())
        })
        .await
    }

    async fn settle_report(
        &self,
        uid: &str,
        destination: &str,
        delivered: bool,
        now: i64,
    ) -> Result<(), IndexError> {
        let (uid, destination) = (uid.to_string(), destination.to_string());
        self.write(move |t| {
            let sql = settle_sql(sqlite_mark, delivered);
            if delivered {
                t.execute(&sql, rusqlite::params![uid, destination])?;
            } else {
                t.execute(&sql, rusqlite::params![uid, destination, now])?;
            }
            Ok(())
        })
        .await
    }

    async fn take_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<Job>, IndexError> {
        let skip = skip.to_vec();
        self.write(move |t| {
            let mut stmt = t.prepare(&take_sql(sqlite_mark, "", skip.len()))?;
            let mut params: Vec<rusqlite::types::Value> =
                vec![now.into(), lease_until.into(), (limit as i64).into()];
            params.extend(skip.into_iter().map(Into::into));
            let rows = stmt.query_map(rusqlite::params_from_iter(params), sqlite_job)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn job_done(&self, id: i64, attempt: i64) -> Result<(), IndexError> {
        self.write(move |t| {
            t.execute(DONE_SQLITE, [id, attempt])?;
            Ok(())
        })
        .await
    }

    async fn extend_leases(
        &self,
        taken: &[(i64, i64)],
        lease_until: i64,
    ) -> Result<(), IndexError> {
        let taken = taken.to_vec();
        self.write(move |t| {
            let mut stmt = t.prepare_cached(&lease_sql(sqlite_mark))?;
            for (id, attempt) in taken {
                stmt.execute([lease_until, id, attempt])?;
            }
            Ok(())
        })
        .await
    }

    async fn job_failed(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), IndexError> {
        let error = error.to_string();
        self.write(move |t| {
            t.execute(
                &failed_sql(sqlite_mark),
                rusqlite::params![id, error, retry_at, attempt],
            )?;
            Ok(())
        })
        .await
    }

    async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, IndexError> {
        self.read(|c| {
            let mut stmt = c.prepare(COUNTS)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(counted(rows.collect::<Result<Vec<_>, _>>()?))
        })
        .await
    }

    async fn jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Job>, IndexError> {
        let state = state.map(JobState::name).unwrap_or_default();
        let before = before.unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare(&list_sql(sqlite_mark))?;
            let rows =
                stmt.query_map(rusqlite::params![state, limit as i64, before], sqlite_job)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn retry_job(&self, id: i64, now: i64) -> Result<bool, IndexError> {
        self.write(move |t| Ok(t.execute(&retry_sql(sqlite_mark), rusqlite::params![id, now])? > 0))
            .await
    }

    async fn cancel_job(&self, id: i64) -> Result<bool, IndexError> {
        self.write(move |t| Ok(t.execute(&cancel_sql(sqlite_mark), [id])? > 0))
            .await
    }

    async fn prune_jobs(&self, before: i64) -> Result<u64, IndexError> {
        self.write(move |t| Ok(t.execute(&prune_sql(sqlite_mark), [before])? as u64))
            .await
    }
}

#[async_trait]
impl Queue for PgIndex {
    async fn enqueue(
        &self,
        scope: JobScope,
        jobs: Vec<(String, String)>,
        reason: &str,
        now: i64,
        due: i64,
        again: bool,
    ) -> Result<(), IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(&enqueue_sql(pg_mark, scope, again))
            .await
            .map_err(pg)?;
        for (uid, dest) in &jobs {
            tx.execute(&stmt, &[uid, dest, &reason, &due, &now])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn enqueue_report(
        &self,
        uid: &str,
        destination: &str,
        payload: &str,
        now: i64,
        due: i64,
    ) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                &report_sql(pg_mark),
                &[&uid, &destination, &due, &now, &payload],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn settle_report(
        &self,
        uid: &str,
        destination: &str,
        delivered: bool,
        now: i64,
    ) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let sql = settle_sql(pg_mark, delivered);
        if delivered {
            client.execute(&sql, &[&uid, &destination]).await
        } else {
            client.execute(&sql, &[&uid, &destination, &now]).await
        }
        .map_err(pg)?;
        Ok(())
    }

    async fn take_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<Job>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let limit = limit as i64;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&now, &lease_until, &limit];
        params.extend(
            skip.iter()
                .map(|d| d as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        let rows = client
            .query(
                &take_sql(pg_mark, " FOR UPDATE SKIP LOCKED", skip.len()),
                &params,
            )
            .await
            .map_err(pg)?;
        rows.iter().map(pg_job).collect()
    }

    async fn job_done(&self, id: i64, attempt: i64) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(DONE_PG, &[&id, &attempt])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn extend_leases(
        &self,
        taken: &[(i64, i64)],
        lease_until: i64,
    ) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let sql = lease_sql(pg_mark);
        for (id, attempt) in taken {
            client
                .execute(&sql, &[&lease_until, id, attempt])
                .await
                .map_err(pg)?;
        }
        Ok(())
    }

    async fn job_failed(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(&failed_sql(pg_mark), &[&id, &error, &retry_at, &attempt])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(COUNTS, &[]).await.map_err(pg)?;
        Ok(counted(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    async fn jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Job>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let state = state.map(JobState::name).unwrap_or_default();
        let before = before.unwrap_or(i64::MAX);
        let rows = client
            .query(&list_sql(pg_mark), &[&state, &(limit as i64), &before])
            .await
            .map_err(pg)?;
        rows.iter().map(pg_job).collect()
    }

    async fn retry_job(&self, id: i64, now: i64) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(&retry_sql(pg_mark), &[&id, &now])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn prune_jobs(&self, before: i64) -> Result<u64, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(&prune_sql(pg_mark), &[&before])
            .await
            .map_err(pg)
    }

    async fn cancel_job(&self, id: i64) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(&cancel_sql(pg_mark), &[&id])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }
}
