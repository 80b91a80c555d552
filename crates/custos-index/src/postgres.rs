//! PostgreSQL backend for scale-out: many Custos nodes share one database.
//! Same schema shape and the same query builder as SQLite (PostgreSQL
//! dialect); concurrency between nodes rests on unique constraints with
//! `ON CONFLICT`, so two nodes storing one instance at once end with one row.

use async_trait::async_trait;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row as PgRow};

use custos_core::audit::{AuditKey, AuditRecord, AuditSearch, GENESIS};
use custos_core::query::Query;
use custos_core::record::{InstanceRecord, StoredInstance};
use custos_core::{ApiToken, HostPattern, Peer, Permissions, User};

use crate::sql_query::{
    Dialect, SqlValue, audit_search_sql, find_sql, instance_kinds_sql, instances_sql,
};
use crate::statements::{
    self, InsertPlan, STORED_COLUMNS, TOKEN_COLUMNS, TOKEN_UPSERT, USER_COLUMNS,
};
use crate::{
    Appended, AuditLog, IndexError, InsertOutcome, InstanceIndex, InstanceKind, PeerDirectory,
    ROWS_AHEAD, Registry, RowStream, STATISTICS_SQL, Statistics,
};

pub struct PgIndex {
    pub(crate) pool: Pool,
    /// Which database this is (hosts, ports, name; no credentials).
    identity: String,
}

pub(crate) fn pg(e: tokio_postgres::Error) -> IndexError {
    // "db error" alone says nothing: add the server's message.
    match e.as_db_error() {
        Some(db) => IndexError::Postgres(format!("{}: {}", db.code().code(), db.message())),
        None => IndexError::Postgres(with_causes(&e)),
    }
}

pub(crate) fn pool_err(e: impl std::error::Error) -> IndexError {
    IndexError::Postgres(format!("connection pool: {}", with_causes(&e)))
}

/// An error and its causes (a TLS handshake's certificate error, say).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

impl PgIndex {
    /// Connects to `url` (`postgres://user@host:port/db`) and runs pending migrations.
    pub async fn connect(url: &str) -> Result<PgIndex, IndexError> {
        let target = crate::pg_connect::parse(url)?;
        let hosts: Vec<String> = target
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = target
            .config
            .get_ports()
            .iter()
            .map(u16::to_string)
            .collect();
        let identity = format!(
            "postgres://{}:{}/{}",
            hosts.join(","),
            ports.join(","),
            target.config.get_dbname().unwrap_or("")
        );
        let settings = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match target.tls {
            Some(tls) => Manager::from_config(
                target.config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                settings,
            ),
            None => Manager::from_config(target.config, NoTls, settings),
        };
        // Bounded waits: with the server gone, a request fails within seconds
        // (A700/503) instead of hanging; connections are made again when it returns.
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(pool_err)?;
        let index = PgIndex { pool, identity };
        index.migrate().await?;
        Ok(index)
    }

    /// Applies pending migrations under an advisory lock, so nodes starting
    /// together do not race.
    pub async fn migrate(&self) -> Result<usize, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(7305726)", &[])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS custos_schema_version (version INTEGER NOT NULL)",
        )
        .await
        .map_err(pg)?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM custos_schema_version",
                &[],
            )
            .await
            .map_err(pg)?
            .col(0)?;
        let mut applied = 0;
        for (i, step) in crate::schema::migrations(Dialect::Postgres)
            .iter()
            .enumerate()
            .skip(current as usize)
        {
            tx.batch_execute(step).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO custos_schema_version (version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )
            .await
            .map_err(pg)?;
            applied += 1;
        }
        tx.commit().await.map_err(pg)?;
        Ok(applied)
    }
}

fn bind(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Text(s) => s as &(dyn ToSql + Sync),
            SqlValue::Int(i) => i as &(dyn ToSql + Sync),
            SqlValue::MaybeInt(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

/// Columns read without panicking: a type that does not match, or a NULL
/// where none is expected, is a corrupt row.
trait Col {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T, IndexError>;
}

impl Col for PgRow {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T, IndexError> {
        self.try_get(i)
            .map_err(|e| IndexError::Corrupt(format!("column {i}: {e}")))
    }
}

/// A column as text whatever its SQL type (text, bigint, count).
fn text_at(row: &PgRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<_, Option<String>>(i) {
        return v.unwrap_or_default();
    }
    if let Ok(v) = row.try_get::<_, Option<i64>>(i) {
        return v.map(|n| n.to_string()).unwrap_or_default();
    }
    if let Ok(v) = row.try_get::<_, Option<i32>>(i) {
        return v.map(|n| n.to_string()).unwrap_or_default();
    }
    String::new()
}

/// A stored instance from the columns starting at `at`.
fn stored(row: &PgRow, at: usize) -> Result<StoredInstance, IndexError> {
    Ok(StoredInstance {
        sop_instance_uid: row.col(at)?,
        sop_class_uid: row.col(at + 1)?,
        transfer_syntax_uid: row.col(at + 2)?,
        blob_key: row.col(at + 3)?,
        size: row.col::<i64>(at + 4)? as u64,
        sha256: row.col(at + 5)?,
    })
}

fn peer_of(row: &PgRow) -> Result<Peer, IndexError> {
    Ok(Peer {
        ae_title: row.col(0)?,
        host: row
            .col::<String>(1)?
            .parse::<HostPattern>()
            .map_err(|e| IndexError::Corrupt(e.to_string()))?,
        port: row.col::<i32>(2)? as u16,
        permissions: row
            .col::<String>(3)?
            .parse::<Permissions>()
            .map_err(|e| IndexError::Corrupt(e.to_string()))?,
        tls_required: row.col(4)?,
        cert_sha256: row.col(5)?,
        cert_subject: row.col(6)?,
        ca_pem: row.col(7)?,
    })
}

fn user_of(row: &PgRow) -> Result<User, IndexError> {
    Ok(User {
        name: row.col(0)?,
        role: row
            .col::<String>(1)?
            .parse()
            .map_err(|e: custos_core::Invalid| IndexError::Corrupt(e.to_string()))?,
        password_hash: row.col(2)?,
        disabled: row.col(3)?,
        password_changed: row.col(4)?,
    })
}

fn token_of(row: &PgRow) -> Result<ApiToken, IndexError> {
    Ok(ApiToken {
        id: row.col(0)?,
        user: row.col(1)?,
        secret_sha256: row.col(2)?,
        read_only: row.col(3)?,
        created: row.col(4)?,
        expires: row.col(5)?,
        revoked: row.col(6)?,
    })
}

/// One of `statements` with PostgreSQL's `$n` placeholders.
fn pg_sql(sql: &str) -> String {
    Dialect::Postgres.placeholders(sql.to_string())
}

/// Runs one of `statements` (written with `?`) with its values.
async fn run(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    values: &[SqlValue],
) -> Result<u64, IndexError> {
    let sql = pg_sql(sql);
    tx.execute(&sql, &bind(values)).await.map_err(pg)
}

async fn pk_of(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    uid: &str,
) -> Result<i64, IndexError> {
    let sql = pg_sql(sql);
    let row = tx.query_one(&sql, &[&uid]).await.map_err(pg)?;
    row.try_get(0).map_err(pg)
}

/// `left`: for a replacing copy, the series and study the old one was in.
async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    rec: &InstanceRecord,
    left: Option<(i64, i64)>,
) -> Result<(), IndexError> {
    let replaced = left.is_some();
    let new_study = run(tx, statements::INSERT_STUDY, &statements::study_values(rec)).await? > 0;
    let study_pk = pk_of(tx, statements::STUDY_PK, &rec.study_uid).await?;
    let new_series = run(
        tx,
        statements::INSERT_SERIES,
        &statements::series_values(study_pk, rec),
    )
    .await?
        > 0;
    let series_pk = pk_of(tx, statements::SERIES_PK, &rec.series_uid).await?;
    run(
        tx,
        statements::INSERT_INSTANCE,
        &statements::instance_values(series_pk, rec),
    )
    .await?;
    count_instance(tx, series_pk, 1).await?;
    if new_series {
        run(
            tx,
            &statements::recount_study(Dialect::Postgres),
            &[SqlValue::Int(study_pk)],
        )
        .await?;
    }
    if replaced {
        run(
            tx,
            statements::FORGET_CONFLICT,
            &[SqlValue::Text(rec.sop_instance_uid.clone())],
        )
        .await?;
        run(
            tx,
            statements::UPDATE_STUDY,
            &statements::study_update_values(rec),
        )
        .await?;
        run(
            tx,
            statements::UPDATE_SERIES,
            &statements::series_update_values(rec),
        )
        .await?;
    }
    if let Some((old_series, old_study)) = left {
        // As on SQLite: what the copy left is dropped if empty, both
        // studies counted again (another series, study or modality).
        run(
            tx,
            statements::DROP_SERIES_IF_EMPTY,
            &[SqlValue::Int(old_series)],
        )
        .await?;
        run(
            tx,
            statements::DROP_STUDY_IF_EMPTY,
            &[SqlValue::Int(old_study)],
        )
        .await?;
        let recount = statements::recount_study(Dialect::Postgres);
        for pk in [old_study, study_pk] {
            run(tx, &recount, &[SqlValue::Int(pk)]).await?;
        }
    }
    for change in statements::stored_changes(rec, replaced, new_study, new_series) {
        run(tx, statements::OUTBOX_INSERT, &change).await?;
    }
    Ok(())
}

/// Moves the instance counters of a series and its study by `by`.
async fn count_instance(
    tx: &deadpool_postgres::Transaction<'_>,
    series_pk: i64,
    by: i64,
) -> Result<(), IndexError> {
    let values = [SqlValue::Int(by), SqlValue::Int(series_pk)];
    run(tx, statements::COUNT_INSTANCE_IN_SERIES, &values).await?;
    run(tx, statements::COUNT_INSTANCE_IN_STUDY, &values).await?;
    Ok(())
}

#[async_trait]
impl InstanceIndex for PgIndex {
    async fn insert(
        &self,
        record: InstanceRecord,
        replace: bool,
    ) -> Result<InsertOutcome, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        // Serialise writers of one SOP Instance UID across nodes for the
        // length of this transaction (the unique constraint alone would make
        // the loser fail rather than see the winner's row).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&record.sop_instance_uid],
        )
        .await
        .map_err(pg)?;
        let existing = tx
            .query_opt(
                &pg_sql(statements::SELECT_STORED_BY_UID),
                &[&record.sop_instance_uid],
            )
            .await
            .map_err(pg)?
            .map(|r| stored(&r, 0))
            .transpose()?;
        let outcome = match statements::decide_insert(existing, &record.sha256, replace) {
            InsertPlan::Done(outcome) => {
                if matches!(outcome, InsertOutcome::Conflict { .. }) {
                    run(
                        &tx,
                        statements::NOTE_CONFLICT,
                        &[
                            SqlValue::Text(record.sop_instance_uid.clone()),
                            SqlValue::Text(record.sha256.clone()),
                            SqlValue::Int(statements::unix_now()),
                        ],
                    )
                    .await?;
                }
                outcome
            }
            InsertPlan::Write { replacing } => {
                let mut left = None;
                if replacing.is_some() {
                    let old_series = pk_of(
                        &tx,
                        statements::SERIES_OF_INSTANCE,
                        &record.sop_instance_uid,
                    )
                    .await?;
                    let old_study = tx
                        .query_one(&pg_sql(statements::STUDY_OF_SERIES), &[&old_series])
                        .await
                        .map_err(pg)?
                        .try_get(0)
                        .map_err(pg)?;
                    run(
                        &tx,
                        statements::DELETE_INSTANCE_BY_UID,
                        &[SqlValue::Text(record.sop_instance_uid.clone())],
                    )
                    .await?;
                    count_instance(&tx, old_series, -1).await?;
                    left = Some((old_series, old_study));
                }
                insert_rows(&tx, &record, left).await?;
                InsertPlan::written(replacing)
            }
        };
        // The server's refusal of the commit is a rollback; a connection lost
        // on the way is not known to be one.
        tx.commit().await.map_err(|e| match e.as_db_error() {
            Some(_) => pg(e),
            None => IndexError::Uncertain(with_causes(&e)),
        })?;
        Ok(outcome)
    }

    async fn find_stream(&self, query: Query) -> Result<RowStream, IndexError> {
        let (sql, params, keys) =
            find_sql(&query, Dialect::Postgres).map_err(IndexError::BadQuery)?;
        let client = self.pool.get().await.map_err(pool_err)?;
        let (tx, rx) = tokio::sync::mpsc::channel(ROWS_AHEAD);
        // The connection stays with the read until the last row is handed
        // over or the consumer goes away (tokio-postgres then discards the
        // rest before the pool lends the connection again).
        let failed = tx.clone();
        let reading = tokio::spawn(async move {
            use futures_util::StreamExt;
            let rows = match client.query_raw(&sql, bind(&params)).await {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = tx.send(Err(pg(e))).await;
                    return;
                }
            };
            let mut rows = std::pin::pin!(rows);
            while let Some(r) = rows.next().await {
                let row = r.map(|r| {
                    keys.iter()
                        .enumerate()
                        .map(|(i, k)| (*k, text_at(&r, i)))
                        .collect()
                });
                let failed = row.is_err();
                if tx.send(row.map_err(pg)).await.is_err() || failed {
                    return;
                }
            }
        });
        // A read that panics ends with an error, not as if the rows had run
        // out (as the SQLite reader does).
        tokio::spawn(async move {
            if let Err(e) = reading.await {
                let _ = failed
                    .send(Err(IndexError::Corrupt(format!("reader task failed: {e}"))))
                    .await;
            }
        });
        Ok(rx)
    }

    async fn instance_page(
        &self,
        query: &Query,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError> {
        let (sql, params) =
            instances_sql(query, after, limit, Dialect::Postgres).map_err(IndexError::BadQuery)?;
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(&sql, &bind(&params)).await.map_err(pg)?;
        rows.iter()
            .map(|r| Ok((r.col(0)?, stored(r, 1)?)))
            .collect()
    }

    async fn conflicted(&self, uids: Vec<String>) -> Result<Vec<String>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT sop_instance_uid FROM conflicts WHERE sop_instance_uid = ANY($1)",
                &[&uids],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn instance_kinds(&self, query: &Query) -> Result<Vec<InstanceKind>, IndexError> {
        let (sql, params) =
            instance_kinds_sql(query, Dialect::Postgres).map_err(IndexError::BadQuery)?;
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(&sql, &bind(&params)).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(InstanceKind {
                    sop_class_uid: r.col(0)?,
                    transfer_syntax_uid: r.col(1)?,
                    count: r.col::<i64>(2)? as u64,
                })
            })
            .collect()
    }

    async fn instance_count(&self) -> Result<u64, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM instances", &[])
            .await
            .map_err(pg)?
            .col(0)?;
        Ok(n as u64)
    }

    async fn stored_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = client
            .query(
                &format!(
                    "SELECT {STORED_COLUMNS}, pk FROM instances WHERE pk > $1 ORDER BY pk LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.col::<i64>(6)?, stored(r, 0)?)))
            .collect::<Result<_, IndexError>>()?)
    }

    async fn statistics(&self) -> Result<Statistics, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let r = client.query_one(STATISTICS_SQL, &[]).await.map_err(pg)?;
        Ok(Statistics {
            patients: r.col::<i64>(0)? as u64,
            studies: r.col::<i64>(1)? as u64,
            series: r.col::<i64>(2)? as u64,
            instances: r.col::<i64>(3)? as u64,
            bytes: r.col::<i64>(4)? as u64,
        })
    }

    async fn instances_by_modality(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(crate::BY_MODALITY_SQL, &[])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((r.col(0)?, r.col::<i64>(1)? as u64)))
            .collect()
    }

    async fn received_per_minute(&self, since: &str) -> Result<Vec<(String, u64)>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT to_char(date_trunc('minute', received_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI'), COUNT(*)
                 FROM instances WHERE received_at >= CAST($1 AS TEXT)::timestamptz GROUP BY 1 ORDER BY 1",
                &[&since],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((r.col(0)?, r.col::<i64>(1)? as u64)))
            .collect()
    }

    async fn remove(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
    ) -> Result<Vec<StoredInstance>, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let removed = remove_in(&tx, study_uid, series_uid).await?;
        tx.commit().await.map_err(pg)?;
        Ok(removed)
    }
}

/// How many administrators are enabled, locking them: two transactions
/// disabling one admin each take turns, and the second sees the first's.
async fn enabled_admins(tx: &deadpool_postgres::Transaction<'_>) -> Result<usize, IndexError> {
    let sql = statements::ENABLED_ADMINS.replace("{lock}", " FOR UPDATE");
    Ok(tx.query(&sql, &[]).await.map_err(pg)?.len())
}

/// Removes a study's instances (or one series'), in the caller's
/// transaction; what was removed.
pub(crate) async fn remove_in(
    tx: &deadpool_postgres::Transaction<'_>,
    study_uid: &str,
    series_uid: Option<&str>,
) -> Result<Vec<StoredInstance>, IndexError> {
    let rows = tx
        .query(
            "DELETE FROM instances WHERE series_pk IN (SELECT se.pk FROM series se JOIN studies st ON se.study_pk = st.pk
               WHERE st.study_uid = $1 AND ($2::TEXT IS NULL OR se.series_uid = $2))
             RETURNING sop_instance_uid, sop_class_uid, transfer_syntax_uid, blob_key, size, sha256",
            &[&study_uid, &series_uid],
        )
        .await
        .map_err(pg)?;
    tx.execute(
        "DELETE FROM series WHERE study_pk IN (SELECT pk FROM studies WHERE study_uid = $1)
           AND ($2::TEXT IS NULL OR series_uid = $2)",
        &[&study_uid, &series_uid],
    )
    .await
    .map_err(pg)?;
    tx.execute(
        "DELETE FROM studies WHERE study_uid = $1
           AND NOT EXISTS (SELECT 1 FROM series WHERE study_pk = studies.pk)",
        &[&study_uid],
    )
    .await
    .map_err(pg)?;
    // A study that keeps series counts again.
    if let Some(row) = tx
        .query_opt(&pg_sql(statements::STUDY_PK), &[&study_uid])
        .await
        .map_err(pg)?
    {
        let pk: i64 = row.try_get(0).map_err(pg)?;
        run(
            tx,
            &statements::recount_study(Dialect::Postgres),
            &[SqlValue::Int(pk)],
        )
        .await?;
    }
    let removed: Vec<StoredInstance> = rows
        .iter()
        .map(|r| stored(r, 0))
        .collect::<Result<_, _>>()?;
    for change in statements::deleted_changes(study_uid, series_uid, &removed) {
        run(tx, statements::OUTBOX_INSERT, &change).await?;
    }
    Ok(removed)
}

#[async_trait]
impl PeerDirectory for PgIndex {
    async fn peer(&self, ae_title: &str) -> Result<Option<Peer>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "SELECT ae_title, host, port, permissions, tls_required, cert_sha256, cert_subject, ca_pem FROM peers WHERE ae_title = $1",
                &[&ae_title.trim()],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(peer_of).transpose()
    }

    async fn peers(&self) -> Result<Vec<Peer>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT ae_title, host, port, permissions, tls_required, cert_sha256, cert_subject, ca_pem FROM peers ORDER BY ae_title",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(peer_of).collect()
    }
}

#[async_trait]
impl Registry for PgIndex {
    async fn put_peer(&self, peer: Peer) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO peers (ae_title, host, port, permissions, tls_required, cert_sha256, cert_subject, ca_pem) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (ae_title) DO UPDATE SET host = excluded.host, port = excluded.port, permissions = excluded.permissions,
                 tls_required = excluded.tls_required, cert_sha256 = excluded.cert_sha256, cert_subject = excluded.cert_subject, ca_pem = excluded.ca_pem",
                &[&peer.ae_title, &peer.host.to_string(), &(peer.port as i32), &peer.permissions.to_string(), &peer.tls_required, &peer.cert_sha256, &peer.cert_subject, &peer.ca_pem],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn remove_peer(&self, ae_title: &str) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute("DELETE FROM peers WHERE ae_title = $1", &[&ae_title.trim()])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn user(&self, name: &str) -> Result<Option<User>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(user_of).transpose()
    }

    async fn users(&self) -> Result<Vec<User>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(user_of).collect()
    }

    async fn put_user(&self, user: User) -> Result<(), IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let before = enabled_admins(&tx).await?;
        tx.execute(
            &format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO UPDATE SET role = excluded.role,
                     password_hash = excluded.password_hash, disabled = excluded.disabled,
                     password_changed = excluded.password_changed"
            ),
            &[
                &user.name,
                &user.role.name(),
                &user.password_hash,
                &user.disabled,
                &user.password_changed,
            ],
        )
        .await
        .map_err(pg)?;
        if before > 0 && enabled_admins(&tx).await? == 0 {
            return Err(IndexError::LastAdmin);
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn insert_user(&self, user: User) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING"
                ),
                &[
                    &user.name,
                    &user.role.name(),
                    &user.password_hash,
                    &user.disabled,
                    &user.password_changed,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn remove_user(&self, name: &str) -> Result<bool, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let before = enabled_admins(&tx).await?;
        let n = tx
            .execute("DELETE FROM users WHERE name = $1", &[&name])
            .await
            .map_err(pg)?;
        if before > 0 && enabled_admins(&tx).await? == 0 {
            return Err(IndexError::LastAdmin);
        }
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn token(&self, id: &str) -> Result<Option<ApiToken>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(token_of).transpose()
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, id"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(token_of).collect()
    }

    async fn put_token(&self, t: ApiToken) -> Result<(), IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) {TOKEN_UPSERT}"
                ),
                &[
                    &t.id,
                    &t.user,
                    &t.secret_sha256,
                    &t.read_only,
                    &t.created,
                    &t.expires,
                    &t.revoked,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute("UPDATE tokens SET revoked = TRUE WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }
}

/// Takes the trail's turn for this transaction (one chain across every
/// node: writers take turns) and reads its head (sequence number, link).
async fn audit_head_locked(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Option<(i64, String)>, IndexError> {
    tx.execute("SELECT pg_advisory_xact_lock(7305727)", &[])
        .await
        .map_err(pg)?;
    match tx
        .query_opt(statements::AUDIT_LAST_LINK, &[])
        .await
        .map_err(pg)?
    {
        Some(r) => Ok(Some((r.col(0)?, r.col(1)?))),
        None => Ok(None),
    }
}

#[async_trait]
impl AuditLog for PgIndex {
    fn audit_identity(&self) -> String {
        self.identity.clone()
    }

    async fn append_audit(
        &self,
        key: &AuditKey,
        entries: Vec<(String, String)>,
        mine: Option<(i64, String)>,
    ) -> Result<Appended, IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let last = audit_head_locked(&tx).await?;
        let mine_intact = match crate::check_mine(last.as_ref(), mine.as_ref()) {
            crate::MineCheck::Known(intact) => intact,
            crate::MineCheck::LinkAt(seq, link) => {
                let at = tx
                    .query_opt(&pg_sql(statements::AUDIT_LINK_AT), &[&seq])
                    .await
                    .map_err(pg)?;
                match at {
                    Some(r) => r.col::<String>(0)? == link,
                    None => false,
                }
            }
        };
        let (mut seq, mut prev) = last.unwrap_or((0, GENESIS.to_string()));
        for (at, body) in entries {
            seq += 1;
            let hash = key.link(seq, &at, &prev, &body);
            tx.execute(
                &pg_sql(statements::INSERT_AUDIT),
                &[&seq, &at, &body, &prev, &hash],
            )
            .await
            .map_err(pg)?;
            prev = hash;
        }
        tx.commit().await.map_err(pg)?;
        Ok(Appended {
            seq,
            link: prev,
            mine_intact,
        })
    }

    async fn copy_audit(&self, records: &[AuditRecord]) -> Result<(), IndexError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        crate::continues(audit_head_locked(&tx).await?, records)?;
        let insert = pg_sql(statements::INSERT_AUDIT);
        for r in records {
            tx.execute(&insert, &[&r.seq, &r.time, &r.body, &r.prev_hash, &r.hash])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<Option<AuditRecord>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(statements::AUDIT_HEAD, &[])
            .await
            .map_err(pg)?;
        row.as_ref().map(audit_record).transpose()
    }

    async fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, IndexError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &pg_sql(statements::AUDIT_AFTER),
                &[&after, &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(audit_record).collect()
    }

    async fn audit_search(&self, search: &AuditSearch) -> Result<Vec<AuditRecord>, IndexError> {
        let (sql, params) = audit_search_sql(search, Dialect::Postgres);
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(&sql, &bind(&params)).await.map_err(pg)?;
        rows.iter().map(audit_record).collect()
    }
}

fn audit_record(r: &tokio_postgres::Row) -> Result<AuditRecord, IndexError> {
    Ok(AuditRecord {
        seq: r.col(0)?,
        time: r.col(1)?,
        body: r.col(2)?,
        prev_hash: r.col(3)?,
        hash: r.col(4)?,
    })
}
