//! The persistence ports on embedded SQLite, the zero-setup default: a pool
//! of connections to one database file and the migrations. The ports
//! themselves are written once, for both stores, in the shared SQL layer
//! ([`SqlStore`]).
//!
//! SQLite is bundled (no system library). Each statement runs on tokio's
//! blocking pool; writes take the write lock up front (`BEGIN IMMEDIATE`), so
//! concurrent writers queue on `busy_timeout` instead of failing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool::{Hook, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::AsyncConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use gatehouse_domain::PortError;
use gatehouse_store_sql::{checkout, count_statements, Connections, Pooled, SqlStore, SqliteThreads, WriterTurn};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How long a statement waits for another writer before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// Every persistence port on SQLite.
pub type SqliteStore = SqlStore<SqlitePool>;

#[derive(Debug, thiserror::Error)]
pub enum SqliteSetupError {
    #[error("expected sqlite://PATH")]
    NotSqliteUrl,
    #[error("cannot create the database directory: {0}")]
    Directory(#[from] std::io::Error),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("migrations failed: {0}")]
    Migrations(String),
}

/// Connections to one SQLite database file.
#[derive(Clone)]
pub struct SqlitePool {
    pool: Pool<gatehouse_store_sql::SqliteConnection>,
    writer: WriterTurn,
    path: String,
    /// Statements run on any of the pool's connections (BEGIN and COMMIT included).
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqlitePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePool").field("path", &self.path).field("pool", &self.pool.status()).finish()
    }
}

/// Per connection: wait for the writer instead of failing; foreign keys are off by default in SQLite.
fn open_connection(path: &str) -> diesel::ConnectionResult<SqliteConnection> {
    let mut conn = SqliteConnection::establish(path)?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
    ))
    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    Ok(conn)
}

impl SqlitePool {
    /// Opens (creating if needed) the database named by `sqlite://PATH`.
    pub fn open(url: &str, pool_size: u32) -> Result<SqliteStore, SqliteSetupError> {
        let path = url.strip_prefix("sqlite://").ok_or(SqliteSetupError::NotSqliteUrl)?;
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        // WAL is a property of the file: set it once, before connections race for the lock.
        let mut first = SqliteConnection::establish(path).map_err(|e| SqliteSetupError::Open(e.to_string()))?;
        first
            .batch_execute(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL;"))
            .map_err(|e| SqliteSetupError::Open(e.to_string()))?;
        let threads = SqliteThreads::start().map_err(|e| SqliteSetupError::Open(format!("cannot start: {e}")))?;
        let mut config = ManagerConfig::default();
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |path| {
            let path = path.to_owned();
            let threads = threads.clone();
            Box::pin(async move {
                let conn = tokio::task::spawn_blocking(move || open_connection(&path))
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))??;
                Ok(gatehouse_store_sql::SqliteConnection::with_runtime(conn, threads))
            })
        });
        let manager = AsyncDieselConnectionManager::new_with_config(path, config);
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        let counting = Hook::sync_fn(move |conn: &mut gatehouse_store_sql::SqliteConnection, _| {
            conn.set_instrumentation(count_statements(counter.clone()));
            Ok(())
        });
        let pool = Pool::builder(manager)
            .max_size(usize::try_from(pool_size.max(1)).unwrap_or(1))
            .post_create(counting)
            .build()
            .map_err(|e| SqliteSetupError::Open(e.to_string()))?;
        Ok(SqlStore::new(Self { pool, writer: WriterTurn::default(), path: path.to_owned(), statements }))
    }

    /// Statements run so far, BEGIN and COMMIT included (for metrics).
    pub fn statements_sent(&self) -> u64 {
        AtomicU64::load(&self.statements, Ordering::Relaxed)
    }

    /// Applies pending migrations. SQLite's own file lock keeps two processes
    /// from applying them at once.
    pub async fn migrate(&self) -> Result<(), SqliteSetupError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = open_connection(&path).map_err(|e| SqliteSetupError::Open(e.to_string()))?;
            conn.run_pending_migrations(MIGRATIONS).map(|_| ()).map_err(|e| SqliteSetupError::Migrations(e.to_string()))
        })
        .await
        .map_err(|e| SqliteSetupError::Migrations(e.to_string()))?
    }

    /// Pool figures for metrics: open connections, idle ones, and the maximum.
    pub fn pool_usage(&self) -> (usize, usize, usize) {
        let status = self.pool.status();
        (status.size, status.available, status.max_size)
    }
}

impl Connections for SqlitePool {
    async fn connection(&self) -> Result<Pooled, PortError> {
        Ok(Pooled::Sqlite(checkout(self.pool.get()).await?, self.writer.clone()))
    }
}

#[cfg(test)]
mod store_contract {
    use super::{SqlitePool, SqliteStore};

    /// A fresh database file per test, migrated.
    async fn fresh() -> SqliteStore {
        let dir = std::env::temp_dir().join("gatehouse-sqlite-tests");
        let path = dir.join(format!("{}.db", uuid::Uuid::new_v4()));
        let store = SqlitePool::open(&format!("sqlite://{}", path.display()), 4).expect("opens");
        store.connections().migrate().await.expect("migrates");
        store
    }

    gatehouse_domain::store_contract_tests!(fresh());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_are_counted() {
        use gatehouse_domain::ports::StoreHealth;
        let store = fresh().await;
        let before = store.connections().statements_sent();
        store.ping().await.expect("answers");
        assert!(store.connections().statements_sent() > before);
    }
}
