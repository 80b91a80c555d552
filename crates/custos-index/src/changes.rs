//! The change feed's sequencer, the feed itself and webhooks, on both
//! backends (see the `Changes` trait for the design).

use async_trait::async_trait;
use custos_core::changes::{Change, ChangeEvent, STUDY_STABLE, StableEvent, Webhook};

use custos_core::routing::JobScope;

use crate::postgres::{pg, pool_err};
use crate::queue::{Mark, payload_job_sql, pg_mark, sqlite_mark};
use crate::{Changes, IndexError, PgIndex, SqliteIndex};

const OUTBOX_TAKE: &str = "SELECT id, kind, level, study_uid, series_uid, sop_instance_uid, at FROM change_outbox ORDER BY id LIMIT ";
const LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM changes";
const FEED: &str = "SELECT seq, kind, level, study_uid, series_uid, sop_instance_uid, at FROM changes WHERE seq > {a} ORDER BY seq LIMIT {b}";
const HOOKS: &str = "SELECT id, url, events, secret, created FROM webhooks ORDER BY id";

fn feed_sql(m: Mark) -> String {
    FEED.replace("{a}", &m(1)).replace("{b}", &m(2))
}

fn insert_change_sql(m: Mark) -> String {
    format!(
        "INSERT INTO changes (seq, kind, level, study_uid, series_uid, sop_instance_uid, at) VALUES ({}, {}, {}, {}, {}, {}, {})",
        m(1),
        m(2),
        m(3),
        m(4),
        m(5),
        m(6),
        m(7)
    )
}

fn delete_outbox_sql(m: Mark) -> String {
    format!("DELETE FROM change_outbox WHERE id = {}", m(1))
}

/// A delivery: once per change and webhook; a study's "stable" delivery is
/// pushed back by each new instance (and due again if it was delivered).
fn delivery_sql(m: Mark, stable: bool) -> String {
    payload_job_sql(m, "webhook", JobScope::Webhook, stable)
}

/// The deliveries a change causes: (job uid, destination, due, payload).
fn deliveries(
    change: &Change,
    hooks: &[Webhook],
    now: i64,
    stable_secs: i64,
) -> Vec<(String, String, i64, String, bool)> {
    let mut out = Vec::new();
    let event = change.event();
    for hook in hooks {
        let dest = format!("webhook:{}", hook.id);
        if hook.wants(&event) {
            let body = ChangeEvent {
                event: event.clone(),
                change,
            };
            let payload = serde_json::to_string(&body).unwrap_or_default();
            out.push((change.seq.to_string(), dest.clone(), now, payload, false));
        }
        if hook.wants(STUDY_STABLE) && change.touches_study() {
            let body = StableEvent {
                event: STUDY_STABLE,
                study: &change.study,
                seq: change.seq,
            };
            let payload = serde_json::to_string(&body).unwrap_or_default();
            let uid = format!("stable:{}", change.study);
            out.push((uid, dest, now + stable_secs, payload, true));
        }
    }
    out
}

fn webhook_of(id: i64, url: String, events: String, secret: String, created: i64) -> Webhook {
    Webhook {
        id,
        url,
        events: events.split(',').map(str::to_string).collect(),
        secret,
        created,
    }
}

fn sqlite_hooks(c: &rusqlite::Connection) -> rusqlite::Result<Vec<Webhook>> {
    let mut stmt = c.prepare_cached(HOOKS)?;
    let rows = stmt.query_map([], |r| {
        Ok(webhook_of(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })?;
    rows.collect()
}

fn sqlite_change(r: &rusqlite::Row<'_>, seq: i64) -> rusqlite::Result<Change> {
    Ok(Change {
        seq,
        kind: r.get(1)?,
        level: r.get(2)?,
        study: r.get(3)?,
        series: r.get(4)?,
        instance: r.get(5)?,
        at: r.get(6)?,
    })
}

fn pg_change(r: &tokio_postgres::Row, seq: i64) -> Change {
    Change {
        seq,
        kind: r.get(1),
        level: r.get(2),
        study: r.get(3),
        series: r.get(4),
        instance: r.get(5),
        at: r.get(6),
    }
}

#[async_trait]
impl Changes for SqliteIndex {
    async fn prune_changes(&self, before: i64) -> Result<u64, IndexError> {
        self.write(move |t| Ok(t.execute(&PRUNE.replace("{a}", "?1"), [before])? as u64))
            .await
    }

    async fn sequence_changes(
        &self,
        limit: usize,
        now: i64,
        stable_secs: i64,
    ) -> Result<usize, IndexError> {
        // Nothing waiting (most of the time): no write for the writer thread.
        let waiting: bool = self
            .read(|c| {
                Ok(
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM change_outbox)")?
                        .query_row([], |r| r.get(0))?,
                )
            })
            .await?;
        if !waiting {
            return Ok(0);
        }
        self.write(move |t| {
            let waiting: Vec<(i64, Change)> = {
                let mut stmt = t.prepare_cached(&format!("{OUTBOX_TAKE}{limit}"))?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, sqlite_change(r, 0)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            if waiting.is_empty() {
                return Ok(0);
            }
            let mut seq: i64 = t.prepare_cached(LAST_SEQ)?.query_row([], |r| r.get(0))?;
            let hooks = sqlite_hooks(t)?;
            for (_, mut change) in waiting.iter().cloned() {
                seq += 1;
                change.seq = seq;
                t.prepare_cached(&insert_change_sql(sqlite_mark))?
                    .execute(rusqlite::params![
                        seq,
                        change.kind,
                        change.level,
                        change.study,
                        change.series,
                        change.instance,
                        change.at
                    ])?;
                for (uid, dest, due, payload, stable) in
                    deliveries(&change, &hooks, now, stable_secs)
                {
                    t.prepare_cached(&delivery_sql(sqlite_mark, stable))?
                        .execute(rusqlite::params![uid, dest, due, now, payload])?;
                }
            }
            // One writer at a time in SQLite: every row up to the last taken
            // was taken (none can commit later with a lower id).
            if let Some((last, _)) = waiting.last() {
                t.prepare_cached("DELETE FROM change_outbox WHERE id <= ?1")?
                    .execute([last])?;
            }
            Ok(waiting.len())
        })
        .await
    }

    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<Change>, IndexError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&feed_sql(sqlite_mark))?;
            let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
                sqlite_change(r, r.get(0)?)
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn add_webhook(
        &self,
        url: &str,
        events: &[String],
        secret: &str,
        now: i64,
    ) -> Result<i64, IndexError> {
        let (url, events, secret) = (url.to_string(), events.join(","), secret.to_string());
        self.write(move |t| {
            t.execute(
                "INSERT INTO webhooks (url, events, secret, created) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![url, events, secret, now],
            )?;
            Ok(t.last_insert_rowid())
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, IndexError> {
        self.read(|c| Ok(sqlite_hooks(c)?)).await
    }

    async fn remove_webhook(&self, id: i64) -> Result<bool, IndexError> {
        self.write(move |t| {
            let gone = t.execute("DELETE FROM webhooks WHERE id = ?1", [id])? > 0;
            // Its waiting deliveries go with it.
            t.execute(
                "UPDATE jobs SET state = 'cancelled' WHERE destination = ?1 AND state IN ('pending', 'failed')",
                [format!("webhook:{id}")],
            )?;
            Ok(gone)
        })
        .await
    }
}

const PRUNE: &str = "DELETE FROM changes WHERE at < {a}";

#[async_trait]
impl Changes for PgIndex {
    async fn prune_changes(&self, before: i64) -> Result<u64, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(&PRUNE.replace("{a}", "$1"), &[&before])
            .await
            .map_err(pg)
    }

    async fn sequence_changes(
        &self,
        limit: usize,
        now: i64,
        stable_secs: i64,
    ) -> Result<usize, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        // One sequencer at a time across nodes: the numbers stay consecutive.
        tx.execute("SELECT pg_advisory_xact_lock(7305728)", &[])
            .await
            .map_err(pg)?;
        let waiting = tx
            .query(&format!("{OUTBOX_TAKE}{limit}"), &[])
            .await
            .map_err(pg)?;
        if waiting.is_empty() {
            tx.commit().await.map_err(pg)?;
            return Ok(0);
        }
        let mut seq: i64 = tx.query_one(LAST_SEQ, &[]).await.map_err(pg)?.get(0);
        let hooks: Vec<Webhook> = tx
            .query(HOOKS, &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| webhook_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        let insert = tx.prepare(&insert_change_sql(pg_mark)).await.map_err(pg)?;
        let delete = tx.prepare(&delete_outbox_sql(pg_mark)).await.map_err(pg)?;
        for row in &waiting {
            let id: i64 = row.get(0);
            seq += 1;
            let change = pg_change(row, seq);
            tx.execute(
                &insert,
                &[
                    &seq,
                    &change.kind,
                    &change.level,
                    &change.study,
                    &change.series,
                    &change.instance,
                    &change.at,
                ],
            )
            .await
            .map_err(pg)?;
            tx.execute(&delete, &[&id]).await.map_err(pg)?;
            for (uid, dest, due, payload, stable) in deliveries(&change, &hooks, now, stable_secs) {
                tx.execute(
                    &delivery_sql(pg_mark, stable),
                    &[&uid, &dest, &due, &now, &payload],
                )
                .await
                .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(waiting.len())
    }

    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<Change>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(&feed_sql(pg_mark), &[&after, &(limit as i64)])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| pg_change(r, r.get(0))).collect())
    }

    async fn add_webhook(
        &self,
        url: &str,
        events: &[String],
        secret: &str,
        now: i64,
    ) -> Result<i64, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one(
                "INSERT INTO webhooks (url, events, secret, created) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&url, &events.join(","), &secret, &now],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(HOOKS, &[]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| webhook_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect())
    }

    async fn remove_webhook(&self, id: i64) -> Result<bool, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let gone = tx
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
            > 0;
        tx.execute(
            "UPDATE jobs SET state = 'cancelled' WHERE destination = $1 AND state IN ('pending', 'failed')",
            &[&format!("webhook:{id}")],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(gone)
    }
}
