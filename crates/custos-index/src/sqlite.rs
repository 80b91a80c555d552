//! SQLite backend: one writer thread that commits concurrent inserts together
//! (group commit: one fsync'd transaction for everything queued), and a small
//! pool of read connections. WAL mode with `synchronous=FULL`, so a returned
//! insert is on stable storage.

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

use custos_core::audit::{AuditKey, AuditRecord, AuditSearch, GENESIS};
use custos_core::query::{Query, Row};
use custos_core::record::{InstanceRecord, StoredInstance};
use custos_core::{ApiToken, HostPattern, Peer, Permissions, User};

use crate::sql_query::{
    Dialect, SqlValue, audit_search_sql, find_sql, instance_kinds_sql, instances_sql,
};
use crate::statements::{self, InsertPlan, TOKEN_COLUMNS, TOKEN_UPSERT, USER_COLUMNS};
use crate::{
    Appended, AuditLog, IndexError, InsertOutcome, InstanceIndex, InstanceKind, PeerDirectory,
    ROWS_AHEAD, Registry, RowStream, STATISTICS_SQL, Statistics,
};

/// Most inserts folded into one transaction.
const MAX_BATCH: usize = 512;
const READERS: usize = 4;

enum WriteOp {
    Insert {
        record: Box<InstanceRecord>,
        replace: bool,
        reply: oneshot::Sender<Result<InsertOutcome, IndexError>>,
    },
    /// Any other write: run in its own savepoint (or not at all, `None`),
    /// returning what to tell the caller once the transaction has ended.
    Apply(Apply),
}

/// A write to run in the writer's transaction (`None`: the transaction could not start).
type Apply = Box<dyn FnOnce(Option<&rusqlite::Transaction<'_>>) -> Settle + Send>;

/// Replies to a caller after COMMIT, with the failure that undid its work if any.
type Settle = Box<dyn FnOnce(Option<&str>) + Send>;

fn reply_after_commit<T: Send + 'static>(
    tx: oneshot::Sender<Result<T, IndexError>>,
    result: Result<T, IndexError>,
) -> Settle {
    Box::new(move |failure| {
        let _ = tx.send(match failure {
            Some(e) => Err(IndexError::Corrupt(format!("transaction failed: {e}"))),
            None => result,
        });
    })
}

pub struct SqliteIndex {
    writer: Mutex<mpsc::Sender<WriteOp>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, IndexError> {
    let err = |source: rusqlite::Error| IndexError::Open {
        path: path.display().to_string(),
        source: Box::new(source),
    };
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA case_sensitive_like=ON;",
    )
    .map_err(err)?;
    // SQLite's own UPPER folds ASCII letters only, PostgreSQL's every
    // letter: descriptions (`Key::any_case`) match alike on both.
    conn.create_scalar_function(
        "upper",
        1,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8
            | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|s| s.to_uppercase())),
    )
    .map_err(err)?;
    // The writer's statements (insert, counters, audit) and the readers'
    // most used ones stay prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates an empty database file readable by its owner only (0600 on Unix)
/// when there is none: the index holds patient names, password hashes and the
/// peer registry. SQLite gives its WAL and shared-memory files the database
/// file's permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, step) in crate::schema::migrations(Dialect::Sqlite)
        .iter()
        .enumerate()
        .skip(version)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteIndex {
    /// Opens (creating and migrating if needed) the index database at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<SqliteIndex, IndexError> {
        let path = path.into();
        create_private_file(&path).map_err(|source| IndexError::Create {
            path: path.display().to_string(),
            source,
        })?;
        let mut conn = open_conn(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        migrate(&mut conn).map_err(|source| IndexError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        let mut readers = Vec::new();
        for _ in 0..READERS {
            readers.push(open_conn(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?);
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("custos-index-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| IndexError::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteIndex {
            writer: Mutex::new(tx),
            readers: Arc::new(Mutex::new(readers)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a consistent copy of the whole index to `dest` (a new file,
    /// owner-only) while writers go on: `VACUUM INTO` reads one snapshot.
    pub async fn snapshot_into(&self, dest: &Path) -> Result<(), IndexError> {
        let create = |source| IndexError::Create {
            path: dest.display().to_string(),
            source,
        };
        if dest.exists() {
            return Err(create(std::io::Error::from(
                std::io::ErrorKind::AlreadyExists,
            )));
        }
        create_private_file(dest).map_err(create)?;
        let target = dest.to_string_lossy().into_owned();
        self.read(move |conn| {
            conn.execute("VACUUM INTO ?1", [target])?;
            Ok(())
        })
        .await
    }

    fn send(&self, op: WriteOp) -> Result<(), IndexError> {
        self.writer
            .lock()
            .map_err(|_| IndexError::WriterGone)?
            .send(op)
            .map_err(|_| IndexError::WriterGone)
    }

    /// Runs `f` in the writer's next transaction; returns after COMMIT.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteOp::Apply(Box::new(move |tx| {
            let result = match tx {
                Some(tx) => in_savepoint(tx, f),
                None => Err(IndexError::WriterGone),
            };
            reply_after_commit(reply, result)
        })))?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    /// Runs `f` on a pooled read connection in the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        self.spawn_read(f)
            .await
            .map_err(|e| IndexError::Corrupt(format!("reader task failed: {e}")))?
    }

    /// `f` with a pooled read-only connection on a blocking thread.
    fn spawn_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<T, IndexError>> {
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().ok().and_then(|mut p| p.pop());
            let conn = match conn {
                Some(c) => c,
                None => open_conn(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
            };
            let result = f(&conn);
            if let Ok(mut p) = pool.lock()
                && p.len() < READERS
            {
                p.push(conn);
            }
            result
        })
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        apply_batch(&mut conn, batch);
    }
}

/// An applied operation waiting for COMMIT before its caller hears the result.
enum Done {
    Insert(
        oneshot::Sender<Result<InsertOutcome, IndexError>>,
        Result<InsertOutcome, IndexError>,
    ),
    Apply(Settle),
}

impl Done {
    /// Replies to the caller: its own result, or the failure that undid it.
    fn settle(self, failure: Option<&str>) {
        match self {
            Done::Insert(tx, r) => reply_after_commit(tx, r)(failure),
            Done::Apply(settle) => settle(failure),
        }
    }
}

/// Applies a batch in one transaction; each op in its own savepoint so one
/// failure does not undo the others. Replies are sent only after COMMIT.
fn apply_batch(conn: &mut Connection, batch: Vec<WriteOp>) {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for op in batch {
                not_applied(op).settle(Some(&msg));
            }
            return;
        }
    };
    let done: Vec<Done> = batch
        .into_iter()
        .map(|op| match op {
            WriteOp::Insert {
                record,
                replace,
                reply,
            } => Done::Insert(reply, in_savepoint(&tx, |t| insert(t, &record, replace))),
            WriteOp::Apply(run) => Done::Apply(run(Some(&tx))),
        })
        .collect();
    let commit = tx.commit().err().map(|e| e.to_string());
    for d in done {
        d.settle(commit.as_deref());
    }
}

/// An operation that could not start; `settle` replaces its result with the failure.
fn not_applied(op: WriteOp) -> Done {
    match op {
        WriteOp::Insert { reply, .. } => Done::Insert(reply, Err(IndexError::WriterGone)),
        WriteOp::Apply(run) => Done::Apply(run(None)),
    }
}

fn in_savepoint<T>(
    tx: &rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, IndexError>,
) -> Result<T, IndexError> {
    tx.execute_batch("SAVEPOINT op")?;
    match f(tx) {
        Ok(v) => {
            tx.execute_batch("RELEASE op")?;
            Ok(v)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
            Err(e)
        }
    }
}

/// A stored instance from the columns starting at `at`.
fn stored_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StoredInstance> {
    Ok(StoredInstance {
        sop_instance_uid: r.get(at)?,
        sop_class_uid: r.get(at + 1)?,
        transfer_syntax_uid: r.get(at + 2)?,
        blob_key: r.get(at + 3)?,
        size: r.get::<_, i64>(at + 4)? as u64,
        sha256: r.get(at + 5)?,
    })
}

fn insert(
    tx: &Connection,
    rec: &InstanceRecord,
    replace: bool,
) -> Result<InsertOutcome, IndexError> {
    // Every statement from the connection's cache: parsing them per
    // instance showed in the ingest profile.
    let existing = tx
        .prepare_cached(statements::SELECT_STORED_BY_UID)?
        .query_row([&rec.sop_instance_uid], |r| stored_from_row(r, 0))
        .optional()?;
    let replacing = match statements::decide_insert(existing, &rec.sha256, replace) {
        InsertPlan::Done(outcome) => {
            if matches!(outcome, InsertOutcome::Conflict { .. }) {
                tx.prepare_cached(statements::NOTE_CONFLICT)?
                    .execute(rusqlite::params![
                        rec.sop_instance_uid,
                        rec.sha256,
                        statements::unix_now()
                    ])?;
            }
            return Ok(outcome);
        }
        InsertPlan::Write { replacing } => replacing,
    };
    // Where the replaced copy was: (series, study).
    let mut left = None;
    if replacing.is_some() {
        let old_series: i64 = tx
            .prepare_cached(statements::SERIES_OF_INSTANCE)?
            .query_row([&rec.sop_instance_uid], |r| r.get(0))?;
        let old_study: i64 = tx
            .prepare_cached(statements::STUDY_OF_SERIES)?
            .query_row([old_series], |r| r.get(0))?;
        tx.prepare_cached(statements::DELETE_INSTANCE_BY_UID)?
            .execute([&rec.sop_instance_uid])?;
        count_instance(tx, old_series, -1)?;
        left = Some((old_series, old_study));
    }
    let new_study = tx
        .prepare_cached(statements::INSERT_STUDY)?
        .execute(bind(&statements::study_values(rec)).as_slice())?
        > 0;
    let study_pk: i64 = tx
        .prepare_cached(statements::STUDY_PK)?
        .query_row([&rec.study_uid], |r| r.get(0))?;
    let new_series = tx
        .prepare_cached(statements::INSERT_SERIES)?
        .execute(bind(&statements::series_values(study_pk, rec)).as_slice())?
        > 0;
    let series_pk: i64 = tx
        .prepare_cached(statements::SERIES_PK)?
        .query_row([&rec.series_uid], |r| r.get(0))?;
    tx.prepare_cached(statements::INSERT_INSTANCE)?
        .execute(bind(&statements::instance_values(series_pk, rec)).as_slice())?;
    count_instance(tx, series_pk, 1)?;
    if new_series {
        tx.prepare_cached(&statements::recount_study(Dialect::Sqlite))?
            .execute([study_pk])?;
    }
    if replacing.is_some() {
        tx.prepare_cached(statements::FORGET_CONFLICT)?
            .execute([&rec.sop_instance_uid])?;
        tx.prepare_cached(statements::UPDATE_STUDY)?
            .execute(bind(&statements::study_update_values(rec)).as_slice())?;
        tx.prepare_cached(statements::UPDATE_SERIES)?
            .execute(bind(&statements::series_update_values(rec)).as_slice())?;
    }
    if let Some((old_series, old_study)) = left {
        // The copy may name another series or study, or another modality:
        // what it left is dropped if empty, both studies counted again.
        tx.prepare_cached(statements::DROP_SERIES_IF_EMPTY)?
            .execute([old_series])?;
        tx.prepare_cached(statements::DROP_STUDY_IF_EMPTY)?
            .execute([old_study])?;
        let recount = statements::recount_study(Dialect::Sqlite);
        for pk in [old_study, study_pk] {
            tx.prepare_cached(&recount)?.execute([pk])?;
        }
    }
    let changes = statements::stored_changes(rec, replacing.is_some(), new_study, new_series);
    for change in changes {
        tx.prepare_cached(statements::OUTBOX_INSERT)?
            .execute(bind(&change).as_slice())?;
    }
    Ok(InsertPlan::written(replacing))
}

/// Moves the instance counters of a series and its study by `by`.
fn count_instance(tx: &Connection, series_pk: i64, by: i64) -> Result<(), IndexError> {
    tx.prepare_cached(statements::COUNT_INSTANCE_IN_SERIES)?
        .execute(params![by, series_pk])?;
    tx.prepare_cached(statements::COUNT_INSTANCE_IN_STUDY)?
        .execute(params![by, series_pk])?;
    Ok(())
}

fn put_peer(tx: &Connection, peer: &Peer) -> Result<(), IndexError> {
    tx.execute(
        "INSERT INTO peers (ae_title, host, port, permissions, tls_required, cert_sha256, cert_subject, ca_pem) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(ae_title) DO UPDATE SET host = excluded.host, port = excluded.port, permissions = excluded.permissions,
         tls_required = excluded.tls_required, cert_sha256 = excluded.cert_sha256, cert_subject = excluded.cert_subject, ca_pem = excluded.ca_pem",
        params![peer.ae_title, peer.host.to_string(), peer.port, peer.permissions.to_string(), peer.tls_required, peer.cert_sha256, peer.cert_subject, peer.ca_pem],
    )?;
    Ok(())
}

fn peer_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Peer, IndexError>> {
    let ae_title: String = r.get(0)?;
    let host: String = r.get(1)?;
    let port: u16 = r.get(2)?;
    let perms: String = r.get(3)?;
    let tls_required: bool = r.get(4)?;
    let cert_sha256: String = r.get(5)?;
    let cert_subject: String = r.get(6)?;
    let ca_pem: String = r.get(7)?;
    Ok((|| {
        Ok(Peer {
            host: host
                .parse::<HostPattern>()
                .map_err(|e| IndexError::Corrupt(e.to_string()))?,
            permissions: perms
                .parse::<Permissions>()
                .map_err(|e| IndexError::Corrupt(e.to_string()))?,
            ae_title,
            port,
            tls_required,
            cert_sha256,
            cert_subject,
            ca_pem,
        })
    })())
}

fn bind(params: &[SqlValue]) -> Vec<&dyn ToSql> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Text(s) => s as &dyn ToSql,
            SqlValue::Int(i) => i as &dyn ToSql,
            SqlValue::MaybeInt(i) => i as &dyn ToSql,
        })
        .collect()
}

fn value_text(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    }
}

#[async_trait]
impl InstanceIndex for SqliteIndex {
    async fn insert(
        &self,
        record: InstanceRecord,
        replace: bool,
    ) -> Result<InsertOutcome, IndexError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteOp::Insert {
            record: Box::new(record),
            replace,
            reply,
        })?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn find_stream(&self, query: Query) -> Result<RowStream, IndexError> {
        let (sql, params, keys) =
            find_sql(&query, Dialect::Sqlite).map_err(IndexError::BadQuery)?;
        let (tx, rx) = tokio::sync::mpsc::channel(ROWS_AHEAD);
        let failed = tx.clone();
        // The statement steps on a blocking thread, each row handed over as
        // it is read; a consumer that goes away ends the read.
        let reading = self.spawn_read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(bind(&params).as_slice())?;
            while let Some(r) = rows.next()? {
                let mut row = Row::new();
                for (i, key) in keys.iter().enumerate() {
                    row.insert(*key, value_text(r.get_ref(i)?));
                }
                if tx.blocking_send(Ok(row)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        tokio::spawn(async move {
            let error = match reading.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(e) => IndexError::Corrupt(format!("reader task failed: {e}")),
            };
            let _ = failed.send(Err(error)).await;
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
            instances_sql(query, after, limit, Dialect::Sqlite).map_err(IndexError::BadQuery)?;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(bind(&params).as_slice(), |r| {
                Ok((r.get(0)?, stored_from_row(r, 1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn conflicted(&self, uids: Vec<String>) -> Result<Vec<String>, IndexError> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT 1 FROM conflicts WHERE sop_instance_uid = ?1")?;
            let mut out = Vec::new();
            for uid in uids {
                if stmt.exists([&uid])? {
                    out.push(uid);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn instance_kinds(&self, query: &Query) -> Result<Vec<InstanceKind>, IndexError> {
        let (sql, params) =
            instance_kinds_sql(query, Dialect::Sqlite).map_err(IndexError::BadQuery)?;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(bind(&params).as_slice(), |r| {
                Ok(InstanceKind {
                    sop_class_uid: r.get(0)?,
                    transfer_syntax_uid: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn instance_count(&self) -> Result<u64, IndexError> {
        self.read(|conn| {
            Ok(
                conn.query_row("SELECT COUNT(*) FROM instances", [], |r| r.get::<_, i64>(0))?
                    as u64,
            )
        })
        .await
    }

    async fn stored_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sop_instance_uid, sop_class_uid, transfer_syntax_uid, blob_key, size, sha256, pk
                 FROM instances WHERE pk > ?1 ORDER BY pk LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| Ok((r.get::<_, i64>(6)?, stored_from_row(r, 0)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn statistics(&self) -> Result<Statistics, IndexError> {
        self.read(|conn| {
            Ok(conn.query_row(STATISTICS_SQL, [], |r| {
                Ok(Statistics {
                    patients: r.get::<_, i64>(0)? as u64,
                    studies: r.get::<_, i64>(1)? as u64,
                    series: r.get::<_, i64>(2)? as u64,
                    instances: r.get::<_, i64>(3)? as u64,
                    bytes: r.get::<_, i64>(4)? as u64,
                })
            })?)
        })
        .await
    }

    async fn instances_by_modality(&self) -> Result<Vec<(String, u64)>, IndexError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(crate::BY_MODALITY_SQL)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn received_per_minute(&self, since: &str) -> Result<Vec<(String, u64)>, IndexError> {
        let since = since.to_string();
        self.read(move |conn| {
            // received_at is text in RFC 3339 UTC: its first 16 characters are the minute.
            let mut stmt = conn.prepare_cached(
                "SELECT substr(received_at, 1, 16), COUNT(*) FROM instances WHERE received_at >= ? GROUP BY 1 ORDER BY 1",
            )?;
            let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn remove(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
    ) -> Result<Vec<StoredInstance>, IndexError> {
        let study = study_uid.to_string();
        let series = series_uid.map(str::to_string);
        self.write(move |t| remove_in(t, &study, series.as_deref()))
            .await
    }
}

/// `change`, unless it leaves no enabled administrator where there was one
/// (the one writer: nothing commits in between).
fn keeping_an_admin<T>(
    t: &rusqlite::Transaction<'_>,
    change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, IndexError>,
) -> Result<T, IndexError> {
    let admins = |t: &rusqlite::Transaction<'_>| -> Result<usize, IndexError> {
        let sql = statements::ENABLED_ADMINS.replace("{lock}", "");
        Ok(t.prepare_cached(&sql)?.query_map([], |_| Ok(()))?.count())
    };
    let before = admins(t)?;
    let done = change(t)?;
    if before > 0 && admins(t)? == 0 {
        return Err(IndexError::LastAdmin);
    }
    Ok(done)
}

/// Removes a study's instances (or one series'), in the caller's
/// transaction; what was removed.
pub(crate) fn remove_in(
    t: &rusqlite::Transaction<'_>,
    study: &str,
    series: Option<&str>,
) -> Result<Vec<StoredInstance>, IndexError> {
    // The series to remove: one, or all of the study's.
    let series_pks: Vec<i64> = {
        let mut stmt = t.prepare(
            "SELECT se.pk FROM series se JOIN studies st ON se.study_pk = st.pk
             WHERE st.study_uid = ?1 AND (?2 IS NULL OR se.series_uid = ?2)",
        )?;
        stmt.query_map(params![study, series], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut removed = Vec::new();
    for pk in series_pks {
        let mut stmt = t.prepare_cached(
            "SELECT sop_instance_uid, sop_class_uid, transfer_syntax_uid, blob_key, size, sha256
             FROM instances WHERE series_pk = ?1",
        )?;
        removed.extend(
            stmt.query_map([pk], |r| stored_from_row(r, 0))?
                .collect::<Result<Vec<_>, _>>()?,
        );
        t.execute("DELETE FROM instances WHERE series_pk = ?1", [pk])?;
        t.execute("DELETE FROM series WHERE pk = ?1", [pk])?;
    }
    t.execute(
        "DELETE FROM studies WHERE study_uid = ?1
         AND NOT EXISTS (SELECT 1 FROM series WHERE study_pk = studies.pk)",
        [study],
    )?;
    // A study that keeps series counts again.
    let kept = t
        .query_row(statements::STUDY_PK, [study], |r| r.get::<_, i64>(0))
        .optional()?;
    if let Some(pk) = kept {
        t.execute(&statements::recount_study(Dialect::Sqlite), [pk])?;
    }
    for change in statements::deleted_changes(study, series, &removed) {
        t.prepare_cached(statements::OUTBOX_INSERT)?
            .execute(bind(&change).as_slice())?;
    }
    Ok(removed)
}

#[async_trait]
impl PeerDirectory for SqliteIndex {
    async fn peer(&self, ae_title: &str) -> Result<Option<Peer>, IndexError> {
        let ae = ae_title.trim().to_string();
        self.read(move |conn| {
            conn.query_row(
                "SELECT ae_title, host, port, permissions, tls_required, cert_sha256, cert_subject, ca_pem FROM peers WHERE ae_title = ?1",
                [&ae],
                peer_from_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    async fn peers(&self) -> Result<Vec<Peer>, IndexError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT ae_title, host, port, permissions, tls_required, cert_sha256, cert_subject, ca_pem FROM peers ORDER BY ae_title")?;
            let rows = stmt.query_map([], peer_from_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }
}

#[async_trait]
impl Registry for SqliteIndex {
    async fn put_peer(&self, peer: Peer) -> Result<(), IndexError> {
        self.write(move |t| put_peer(t, &peer)).await
    }

    async fn remove_peer(&self, ae_title: &str) -> Result<bool, IndexError> {
        let ae_title = ae_title.trim().to_string();
        self.write(move |t| {
            Ok(t.execute("DELETE FROM peers WHERE ae_title = ?1", [&ae_title])? > 0)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>, IndexError> {
        let name = name.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [&name],
                user_from_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>, IndexError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
            let rows = stmt.query_map([], user_from_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn put_user(&self, user: User) -> Result<(), IndexError> {
        self.write(move |t| {
            keeping_an_admin(t, |t| {
                t.execute(
                    &format!(
                        "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(name) DO UPDATE SET role = excluded.role,
                     password_hash = excluded.password_hash, disabled = excluded.disabled,
                     password_changed = excluded.password_changed"
                    ),
                    params![
                        user.name,
                        user.role.name(),
                        user.password_hash,
                        user.disabled,
                        user.password_changed
                    ],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn insert_user(&self, user: User) -> Result<bool, IndexError> {
        self.write(move |t| {
            Ok(t.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO NOTHING"
                ),
                params![
                    user.name,
                    user.role.name(),
                    user.password_hash,
                    user.disabled,
                    user.password_changed
                ],
            )? > 0)
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, IndexError> {
        let name = name.to_string();
        self.write(move |t| {
            keeping_an_admin(t, |t| {
                Ok(t.execute("DELETE FROM users WHERE name = ?1", [&name])? > 0)
            })
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<ApiToken>, IndexError> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                    [&id],
                    token_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, IndexError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, id"
            ))?;
            let rows = stmt.query_map([], token_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn put_token(&self, t: ApiToken) -> Result<(), IndexError> {
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {TOKEN_UPSERT}"
                ),
                params![
                    t.id,
                    t.user,
                    t.secret_sha256,
                    t.read_only,
                    t.created,
                    t.expires,
                    t.revoked
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, IndexError> {
        let id = id.to_string();
        self.write(move |t| {
            Ok(t.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", [&id])? > 0)
        })
        .await
    }
}

/// The trail's head (sequence number, link), read in the writer's transaction.
fn audit_head(t: &rusqlite::Transaction<'_>) -> Result<Option<(i64, String)>, IndexError> {
    Ok(t.query_row(statements::AUDIT_LAST_LINK, [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()?)
}

#[async_trait]
impl AuditLog for SqliteIndex {
    fn audit_identity(&self) -> String {
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        format!("sqlite:{}", path.display())
    }

    async fn append_audit(
        &self,
        key: &AuditKey,
        entries: Vec<(String, String)>,
        mine: Option<(i64, String)>,
    ) -> Result<Appended, IndexError> {
        let key = key.clone();
        self.write(move |t| {
            let last = audit_head(t)?;
            let mine_intact = match crate::check_mine(last.as_ref(), mine.as_ref()) {
                crate::MineCheck::Known(intact) => intact,
                crate::MineCheck::LinkAt(seq, link) => {
                    let at: Option<String> = t
                        .query_row(statements::AUDIT_LINK_AT, [seq], |r| r.get(0))
                        .optional()?;
                    at.as_deref() == Some(link.as_str())
                }
            };
            let (mut seq, mut prev) = last.unwrap_or((0, GENESIS.to_string()));
            for (at, body) in entries {
                seq += 1;
                let hash = key.link(seq, &at, &prev, &body);
                t.execute(statements::INSERT_AUDIT, params![seq, at, body, prev, hash])?;
                prev = hash;
            }
            Ok(Appended {
                seq,
                link: prev,
                mine_intact,
            })
        })
        .await
    }

    async fn copy_audit(&self, records: &[AuditRecord]) -> Result<(), IndexError> {
        let records = records.to_vec();
        self.write(move |t| {
            let last = audit_head(t)?;
            crate::continues(last, &records)?;
            for r in records {
                t.execute(
                    statements::INSERT_AUDIT,
                    params![r.seq, r.time, r.body, r.prev_hash, r.hash],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<AuditRecord>, IndexError> {
        self.read(move |conn| {
            Ok(conn
                .query_row(statements::AUDIT_HEAD, [], audit_record)
                .optional()?)
        })
        .await
    }

    async fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, IndexError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(statements::AUDIT_AFTER)?;
            let rows = stmt.query_map(params![after, limit], audit_record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn audit_search(&self, search: &AuditSearch) -> Result<Vec<AuditRecord>, IndexError> {
        let (sql, params) = audit_search_sql(search, Dialect::Sqlite);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(bind(&params).as_slice(), audit_record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<User, IndexError>> {
    let role: String = r.get(1)?;
    Ok(Ok(User {
        name: r.get(0)?,
        role: match role.parse() {
            Ok(role) => role,
            Err(e) => return Ok(Err(IndexError::Corrupt(e.to_string()))),
        },
        password_hash: r.get(2)?,
        disabled: r.get(3)?,
        password_changed: r.get(4)?,
    }))
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        user: r.get(1)?,
        secret_sha256: r.get(2)?,
        read_only: r.get(3)?,
        created: r.get(4)?,
        expires: r.get(5)?,
        revoked: r.get(6)?,
    })
}

fn audit_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        time: r.get(1)?,
        body: r.get(2)?,
        prev_hash: r.get(3)?,
        hash: r.get(4)?,
    })
}
