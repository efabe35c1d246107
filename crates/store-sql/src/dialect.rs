//! The seam between the backends. Every query is written once and run
//! through [`run!`], which compiles it for each backend's connection; what
//! really differs lives here: how a write transaction starts, which rows are
//! locked, and which errors mean the database is out of reach.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use diesel::backend::Backend;
use diesel::connection::AnsiTransactionManager;
use diesel::connection::InstrumentationEvent;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Object, PoolError};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper, SyncTransactionManagerWrapper};
use diesel_async::{AsyncConnection, AsyncPgConnection, TransactionManager};
use futures_util::future::BoxFuture;
use gatehouse_domain::ports::CreateAccountError;
use gatehouse_domain::PortError;

/// SQLite made async: each statement runs on the blocking pool of [`SqliteThreads`].
pub type SqliteConnection = SyncConnectionWrapper<diesel::SqliteConnection, SqliteThreads>;

/// Where SQLite statements run: the blocking pool of one runtime kept for
/// them as long as the process lives. A request worker's runtime would stop
/// at shutdown while another worker still finishes a request on the same
/// connection. And a statement whose request is given up (a client gone, an
/// extractor failing beside another) is left to finish there: diesel-async's
/// own tokio spawner blocks the dropping thread until it does, which panics
/// on a request worker's single-threaded runtime.
#[derive(Debug, Clone)]
pub struct SqliteThreads(tokio::runtime::Handle);

static SQLITE_RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();

impl SqliteThreads {
    /// The process's SQLite runtime, started on first use.
    pub fn start() -> Result<Self, String> {
        let runtime = SQLITE_RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("sqlite").enable_all().build()
        });
        runtime.as_ref().map(|runtime| Self(runtime.handle().clone())).map_err(|e| e.to_string())
    }
}

impl SpawnBlocking for SqliteThreads {
    fn spawn_blocking<'a, R: Send + 'static>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>> {
        let running = self.0.spawn_blocking(task);
        Box::pin(async move { running.await.map_err(Into::into) })
    }

    /// Only for a connection made without [`SqliteThreads::start`] having succeeded first.
    fn get_runtime() -> Self {
        Self::start().unwrap_or_else(|_| Self(tokio::runtime::Handle::current()))
    }
}

/// A connection checked out of a pool, of either backend.
// It lives on the stack for one port call; boxing it would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
pub enum Pooled {
    Postgres(Object<AsyncPgConnection>),
    /// With the database's writer turn: see [`Db::transaction`].
    Sqlite(Object<SqliteConnection>, WriterTurn),
}

/// One write transaction at a time per SQLite database in this process.
/// SQLite has a single writer; letting every connection poll for the lock
/// (`busy_timeout`) starves some under load, since a transaction holds the
/// lock across several statements. Waiting here is fair (first come, first
/// served) and costs no polling; other processes still wait on `busy_timeout`.
pub type WriterTurn = Arc<tokio::sync::Mutex<()>>;

/// A borrowed connection of either backend: what queries run on.
pub enum Db<'c> {
    Postgres(&'c mut AsyncPgConnection),
    Sqlite(&'c mut SqliteConnection, &'c WriterTurn),
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooled::Postgres(_) => "Pooled::Postgres",
            Pooled::Sqlite(..) => "Pooled::Sqlite",
        })
    }
}

/// Anything a query can run on: a pooled connection, or one inside a transaction.
pub trait AsDb: Send {
    fn as_db(&mut self) -> Db<'_>;
}

impl AsDb for Pooled {
    fn as_db(&mut self) -> Db<'_> {
        match self {
            Pooled::Postgres(conn) => Db::Postgres(conn),
            Pooled::Sqlite(conn, writer) => Db::Sqlite(conn, writer),
        }
    }
}

impl AsDb for Db<'_> {
    fn as_db(&mut self) -> Db<'_> {
        match self {
            Db::Postgres(conn) => Db::Postgres(conn),
            Db::Sqlite(conn, writer) => Db::Sqlite(conn, writer),
        }
    }
}

/// Runs one query on whatever backend `$db` is: `run!(db, |conn| query.load::<T>(conn))`.
/// The query is written once and compiled for each backend. Its error is a
/// [`StoreError`], classified once, in `From<diesel::result::Error>`.
macro_rules! run {
    ($db:expr, |$conn:ident| $query:expr) => {
        $crate::dialect::run!(@raw $db, |$conn| $query).map_err($crate::dialect::StoreError::from)
    };
    (@raw $db:expr, |$conn:ident| $query:expr) => {
        match $crate::dialect::AsDb::as_db($db) {
            $crate::dialect::Db::Postgres($conn) => $query.await,
            $crate::dialect::Db::Sqlite($conn, _) => $query.await,
        }
    };
}

/// [`run!`] for a query that may find no row: `Ok(None)` then.
macro_rules! run_optional {
    ($db:expr, |$conn:ident| $query:expr) => {
        diesel::OptionalExtension::optional($crate::dialect::run!(@raw $db, |$conn| $query))
            .map_err($crate::dialect::StoreError::from)
    };
}

/// Like [`run!`] for a query whose rows concurrent writers race for: on
/// PostgreSQL the rows are locked (`FOR UPDATE`); on SQLite the write
/// transaction already holds the database's one write lock (`BEGIN IMMEDIATE`).
macro_rules! run_locked {
    ($db:expr, $select:expr, |$query:ident, $conn:ident| $run:expr) => {
        match $crate::dialect::AsDb::as_db($db) {
            $crate::dialect::Db::Postgres($conn) => {
                let $query = diesel::QueryDsl::for_update($select);
                $run.await
            }
            $crate::dialect::Db::Sqlite($conn, _) => {
                let $query = $select;
                $run.await
            }
        }
    };
}

/// Inserts `$rows` (a `Vec` of value tuples): one statement on PostgreSQL, where
/// a single row keeps the prepared-statement cache (a batch's SQL is never
/// cached); one a row on SQLite, whose batch insert diesel offers only on its
/// sync connection.
macro_rules! insert_rows {
    ($db:expr, $table:expr, $rows:expr) => {
        match $crate::dialect::AsDb::as_db($db) {
            $crate::dialect::Db::Postgres(conn) => match $rows.as_slice() {
                [row] => diesel::insert_into($table).values(row).execute(conn).await,
                rows => diesel::insert_into($table).values(rows).execute(conn).await,
            },
            $crate::dialect::Db::Sqlite(conn, _) => {
                let mut inserted = 0;
                for row in $rows {
                    inserted += diesel::insert_into($table).values(row).execute(conn).await?;
                }
                Ok(inserted)
            }
        }
    };
}

pub(crate) use {insert_rows, run, run_locked, run_optional};

/// An async closure over a connection in a transaction whose future is `Send`
/// (the shape diesel-async asks of its own transaction callbacks).
pub trait Work<A, R>: AsyncFnOnce(A) -> Result<R, StoreError> + FnOnce(A) -> <Self as Work<A, R>>::Fut {
    type Fut: Future<Output = Result<R, StoreError>> + Send;
}

impl<F, A, Fut, R> Work<A, R> for F
where
    F: AsyncFnOnce(A) -> Result<R, StoreError> + FnOnce(A) -> Fut,
    Fut: Future<Output = Result<R, StoreError>> + Send,
{
    type Fut = Fut;
}

impl Db<'_> {
    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled
    /// back otherwise. On SQLite it waits for the database's [`WriterTurn`],
    /// then takes the write lock up front (`BEGIN IMMEDIATE`) rather than
    /// failing later to upgrade a read lock.
    pub async fn transaction<R, F>(&mut self, work: F) -> Result<R, StoreError>
    where
        F: for<'t, 'c> Work<&'t mut Db<'c>, R> + Send,
        R: Send,
    {
        match self {
            Db::Postgres(conn) => conn.transaction(async move |conn| work(&mut Db::Postgres(conn)).await).await,
            Db::Sqlite(conn, writer) => {
                let _turn = writer.lock().await;
                conn.spawn_blocking(|conn| AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE"))
                    .await?;
                let outcome = work(&mut Db::Sqlite(conn, writer)).await;
                type Manager = SyncTransactionManagerWrapper<AnsiTransactionManager>;
                match outcome {
                    Ok(value) => Manager::commit_transaction(conn).await.map(|()| value).map_err(Into::into),
                    Err(error) => Manager::rollback_transaction(conn).await.map_err(Into::into).and(Err(error)),
                }
            }
        }
    }
}

/// A statement kept prepared on its connection, found again by its SQL.
/// Diesel prepares every UPDATE and upsert afresh, since a changeset may
/// leave out fields and one type then stands for many statements: a parse,
/// a plan and, on PostgreSQL, a round trip more each time. Those written
/// here have one shape, or a few (an optional field), so keyed by their SQL
/// they stay few; a batch insert or an `IN` list, whose SQL grows with its
/// rows, is not kept.
#[derive(Debug, Clone, Copy)]
pub struct KeepPrepared<Q>(Q);

/// `.keep_prepared()` on a query built with diesel's DSL: see [`KeepPrepared`].
pub trait KeepPreparedDsl: Sized {
    fn keep_prepared(self) -> KeepPrepared<Self> {
        KeepPrepared(self)
    }
}

impl<Q> KeepPreparedDsl for Q {}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for KeepPrepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

/// No id of its type: the statement cache keys it by its SQL and bind types,
/// so that each shape a query takes is a statement of its own.
impl<Q> QueryId for KeepPrepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for KeepPrepared<Q> {
    type SqlType = Q::SqlType;
}

/// Moves the user id sequence past the highest id, after rows were inserted
/// with their own ids. SQLite's AUTOINCREMENT already remembers the highest.
pub async fn advance_user_ids(db: &mut Db<'_>) -> Result<(), StoreError> {
    if let Db::Postgres(conn) = db {
        let query = "SELECT setval(pg_get_serial_sequence('users', 'id'), max(id)) FROM users";
        diesel_async::RunQueryDsl::execute(diesel::sql_query(query), conn).await?;
    }
    Ok(())
}

/// How long a request waits for a pooled connection before the store counts as unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection a pool's `get` lends, or `Unavailable` when none comes in time.
pub async fn checkout<T>(get: impl Future<Output = Result<T, PoolError>>) -> Result<T, PortError> {
    match tokio::time::timeout(CHECKOUT_TIMEOUT, get).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error @ (PoolError::Backend(_) | PoolError::Timeout(_) | PoolError::Closed))) => {
            note_connection_lost();
            Err(PortError::unavailable(error))
        }
        Ok(Err(error)) => Err(PortError::unexpected(error)),
        Err(elapsed) => Err(PortError::unavailable(elapsed)),
    }
}

/// Instrumentation that counts the statements a connection starts, BEGIN and COMMIT included.
pub fn count_statements(counter: Arc<AtomicU64>) -> impl FnMut(InstrumentationEvent<'_>) + Send + 'static {
    move |event| {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// After a lost connection (a server restart, say) pools check each
/// connection before lending it for this long, so dead ones are replaced.
const DOUBT_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// When a connection was last lost, in this process. Process-wide on
/// purpose: a restarted server has dropped the connections of every pool.
static CONNECTION_LOST_AT: Mutex<Option<Instant>> = Mutex::new(None);

fn note_connection_lost() {
    if let Ok(mut lost_at) = CONNECTION_LOST_AT.lock() {
        *lost_at = Some(Instant::now());
    }
}

/// Whether a connection was lost lately, so pooled ones deserve a check.
pub fn connections_in_doubt() -> bool {
    CONNECTION_LOST_AT.lock().map_or(true, |lost_at| lost_at.is_some_and(|at| at.elapsed() < DOUBT_AFTER_FAILURE))
}

/// Errors inside the store, before translation at the port.
#[derive(Debug)]
pub enum StoreError {
    /// A unique constraint refused a write; what it means depends on the statement.
    Conflict(DieselError),
    EmailTaken,
    Port(PortError),
    /// A dry run's outcome, carried out of its transaction to roll it back.
    DryRun(Vec<gatehouse_domain::import::Written>),
}

impl StoreError {
    /// For the one statement that writes an address: a conflict is the address being taken.
    pub fn on_email(self) -> Self {
        match self {
            StoreError::Conflict(_) => StoreError::EmailTaken,
            other => other,
        }
    }
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        if let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) = error {
            StoreError::Conflict(error)
        } else if out_of_reach(&error) {
            note_connection_lost();
            StoreError::Port(PortError::unavailable(error))
        } else {
            StoreError::Port(PortError::unexpected(error))
        }
    }
}

/// A server gone away mid-query (restart, shutdown, network), or SQLite's
/// writer holding the lock past `busy_timeout`: a load or outage problem, not a bug.
fn out_of_reach(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _)
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            // Neither backend's error reaches diesel with its code for these.
            let message = info.message().to_ascii_lowercase();
            ["database is locked", "connection", "terminating", "shutting down", "broken pipe", "timed out"]
                .iter()
                .any(|m| message.contains(m))
        }
        _ => false,
    }
}

impl From<StoreError> for PortError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Port(port) => port,
            StoreError::Conflict(error) => PortError::unexpected(error),
            StoreError::EmailTaken => PortError::unexpected("unexpected unique violation on the email"),
            StoreError::DryRun(_) => PortError::unexpected("a dry run's outcome escaped its transaction"),
        }
    }
}

impl From<StoreError> for CreateAccountError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => CreateAccountError::EmailTaken,
            other => CreateAccountError::Port(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use diesel::connection::InstrumentationEvent;
    use diesel::prelude::*;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    use super::{KeepPreparedDsl, SqliteConnection};

    diesel::table! {
        kept (id) {
            id -> Integer,
            n -> Integer,
        }
    }

    const TABLE: &str = "CREATE TEMPORARY TABLE kept (id integer PRIMARY KEY, n integer NOT NULL)";

    /// On PostgreSQL an UPDATE kept prepared stays among the session's
    /// prepared statements, run after run; diesel's own is closed after each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_kept_prepared_stays_prepared_on_postgres() {
        let url = std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
            .expect("GATEHOUSE_TEST_POSTGRES_URL is not set: run the tests with `make test`");
        let mut conn = AsyncPgConnection::establish(&url).await.expect("connects");
        diesel::sql_query(TABLE).execute(&mut conn).await.expect("creates");
        diesel::insert_into(kept::table).values((kept::id.eq(1), kept::n.eq(0))).execute(&mut conn).await.unwrap();
        for n in 1..=3 {
            let query = diesel::update(kept::table.find(1)).set(kept::n.eq(n)).keep_prepared();
            assert_eq!(query.execute(&mut conn).await.expect("updates"), 1);
        }
        diesel::update(kept::table.find(1)).filter(kept::n.eq(3)).set(kept::n.eq(4)).execute(&mut conn).await.unwrap();

        #[derive(QueryableByName)]
        struct Prepared {
            #[diesel(sql_type = diesel::sql_types::Text)]
            statement: String,
        }
        let prepared: Vec<Prepared> =
            diesel::sql_query("SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'UPDATE%'")
                .load(&mut conn)
                .await
                .unwrap();
        let prepared: Vec<String> = prepared.into_iter().map(|p| p.statement).collect();
        assert_eq!(prepared, [r#"UPDATE "kept" SET "n" = $1 WHERE ("kept"."id" = $2)"#]);
        assert_eq!(kept::table.select(kept::n).first::<i32>(&mut conn).await.unwrap(), 4);
    }

    /// On SQLite the statement is prepared once, on its first run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_kept_prepared_is_prepared_once_on_sqlite() {
        let mut conn = SqliteConnection::establish(":memory:").await.expect("opens");
        let cached = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = cached.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::CacheQuery { sql, .. } = event {
                seen.lock().unwrap().push(sql.to_owned());
            }
        });
        diesel::sql_query(TABLE).execute(&mut conn).await.expect("creates");
        diesel::insert_into(kept::table).values((kept::id.eq(1), kept::n.eq(0))).execute(&mut conn).await.unwrap();
        cached.lock().unwrap().clear();
        for n in 1..=3 {
            diesel::update(kept::table.find(1)).set(kept::n.eq(n)).keep_prepared().execute(&mut conn).await.unwrap();
            diesel::update(kept::table.find(1))
                .filter(kept::n.eq(n))
                .set(kept::n.eq(n))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        assert_eq!(*cached.lock().unwrap(), [r#"UPDATE `kept` SET `n` = ? WHERE (`kept`.`id` = ?)"#]);
    }
}
