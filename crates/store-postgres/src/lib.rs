//! The persistence ports on PostgreSQL: pools of diesel-async connections
//! and the migrations. The ports themselves are written once, for both
//! stores, in the shared SQL layer ([`SqlStore`]).
//!
//! A server that cannot be reached is `Unavailable`, and the pools replace
//! broken connections by themselves when the server is back.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::{Hook, HookError, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use gatehouse_domain::PortError;
use gatehouse_store_sql::{checkout, connections_in_doubt, count_statements, Connections, Pooled, SqlStore};

/// Every persistence port on PostgreSQL.
pub type PostgresStore = SqlStore<PostgresPools>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Serialises migrations across instances starting at once (an arbitrary, fixed key).
const MIGRATION_LOCK_KEY: i64 = 0x6761_7465_686f_7573;

/// A pooled connection is pinged at checkout only when there is reason to
/// doubt it: it sat idle this long, or a connection was lost lately. A ping
/// on every checkout would double the round trips of the hottest requests.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PostgresSetupError {
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migrations failed: {0}")]
    Migrations(String),
}

/// Connections of the shared pool beside per-thread pools: the outbox
/// worker and other background work.
const BACKGROUND_CONNECTIONS: usize = 2;

thread_local! {
    /// 1 + the index of this thread's own pool; 0 for threads that have none.
    static THREAD_POOL: Cell<usize> = const { Cell::new(0) };
}

/// PostgreSQL connections: one pool, or one pool per request thread (see
/// [`PostgresPools::connect_per_thread`]).
#[derive(Clone)]
pub struct PostgresPools {
    shared: Pool<AsyncPgConnection>,
    per_thread: Arc<[Pool<AsyncPgConnection>]>,
    next_thread: Arc<AtomicUsize>,
    /// Statements sent on any of the store's connections (BEGIN and COMMIT included).
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for PostgresPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPools").field("pools", &self.pool_usage()).finish()
    }
}

impl PostgresPools {
    /// Splits `pool_size` connections between `threads` pools, one for each
    /// thread that calls [`Self::bind_current_thread`] (the request workers),
    /// plus a small shared pool for every other thread; with no threads, one
    /// shared pool of `pool_size`. Connections are opened lazily, so this
    /// works while the server is still down. A connection's I/O is
    /// driven by the runtime that opened it, so a worker borrowing a connection
    /// opened on another thread pays two thread wake-ups per query; with a
    /// pool of its own it never does.
    pub fn connect_per_thread(
        url: &str,
        pool_size: usize,
        threads: usize,
    ) -> Result<PostgresStore, PostgresSetupError> {
        let each = pool_size.div_ceil(threads.max(1));
        let statements = Arc::new(AtomicU64::new(0));
        let per_thread = (0..threads).map(|_| pool(url, each, &statements)).collect::<Result<Vec<_>, _>>()?;
        let shared = pool(url, if threads == 0 { pool_size } else { BACKGROUND_CONNECTIONS }, &statements)?;
        Ok(SqlStore::new(Self { shared, per_thread: per_thread.into(), next_thread: Arc::default(), statements }))
    }

    /// Statements sent to the server so far, BEGIN and COMMIT included: the
    /// round trips behind the requests (for metrics).
    pub fn statements_sent(&self) -> u64 {
        AtomicU64::load(&self.statements, Ordering::Relaxed)
    }

    /// Gives the calling thread a pool of its own (round robin over the
    /// per-thread pools); a no-op on a store with one shared pool.
    pub fn bind_current_thread(&self) {
        if !self.per_thread.is_empty() {
            let index = self.next_thread.fetch_add(1, Ordering::Relaxed) % self.per_thread.len();
            THREAD_POOL.set(index + 1);
        }
    }

    /// The calling thread's pool.
    fn pool(&self) -> &Pool<AsyncPgConnection> {
        self.per_thread.get(THREAD_POOL.get().wrapping_sub(1)).unwrap_or(&self.shared)
    }

    /// Connections open, idle, and allowed, over all pools (for metrics).
    pub fn pool_usage(&self) -> (usize, usize, usize) {
        let statuses = std::iter::once(&self.shared).chain(self.per_thread.iter()).map(Pool::status);
        statuses.fold((0, 0, 0), |(size, idle, max), s| (size + s.size, idle + s.available, max + s.max_size))
    }

    /// Applies pending migrations under an advisory lock, so two instances
    /// starting at once do not race. Needs a multi-thread tokio runtime.
    pub async fn migrate(url: &str) -> Result<(), PostgresSetupError> {
        let mut conn = AsyncPgConnection::establish(url).await?;
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})");
        diesel::sql_query(lock).execute(&mut conn).await.map_err(|e| PostgresSetupError::Migrations(e.to_string()))?;
        let mut harness = AsyncMigrationHarness::new(conn);
        let applied = harness
            .run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| PostgresSetupError::Migrations(e.to_string()));
        let mut conn = harness.into_inner();
        let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
        // Closing the connection releases the lock too; a failed unlock is harmless.
        let _ = diesel::sql_query(unlock).execute(&mut conn).await;
        applied
    }
}

impl Connections for PostgresPools {
    async fn connection(&self) -> Result<Pooled, PortError> {
        Ok(Pooled::Postgres(checkout(self.pool().get()).await?))
    }
}

/// A pool of up to `size` connections, opened lazily, each counting its
/// statements into `statements`.
fn pool(url: &str, size: usize, statements: &Arc<AtomicU64>) -> Result<Pool<AsyncPgConnection>, PostgresSetupError> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    let ping_when_in_doubt = Hook::async_fn(|conn: &mut AsyncPgConnection, metrics| {
        let doubt = metrics.last_used() > IDLE_BEFORE_PING || connections_in_doubt();
        Box::pin(async move {
            if doubt {
                diesel::sql_query("SELECT 1")
                    .execute(conn)
                    .await
                    .map_err(|e| HookError::Backend(diesel_async::pooled_connection::PoolError::QueryError(e)))?;
            }
            Ok(())
        })
    });
    let statements = statements.clone();
    let count_statements = Hook::sync_fn(move |conn: &mut AsyncPgConnection, _| {
        conn.set_instrumentation(count_statements(statements.clone()));
        Ok(())
    });
    Pool::builder(manager)
        .max_size(size.max(1))
        .post_create(count_statements)
        .pre_recycle(ping_when_in_doubt)
        .build()
        .map_err(|e| PostgresSetupError::Pool(e.to_string()))
}

/// Support for tests that need a database of their own: here so that both
/// this crate's tests and the service's black-box tests use one recipe.
pub mod testing {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    /// The variable `make test` sets to a server the tests may create databases on.
    pub const TEST_URL_VAR: &str = "GATEHOUSE_TEST_POSTGRES_URL";
    /// Databases made for tests carry this prefix, so a run can sweep old ones.
    pub const TEST_DATABASE_PREFIX: &str = "gatehouse_test_";

    /// Creates an empty database named after a fresh UUID and returns its URL.
    /// Panics, naming the variable, when no server is configured: PostgreSQL
    /// tests fail loudly rather than skip.
    pub async fn fresh_database() -> String {
        let admin_url = std::env::var(TEST_URL_VAR).unwrap_or_else(|_| {
            panic!("{TEST_URL_VAR} is not set: run the tests with `make test`, or set it to postgres://…")
        });
        let name = format!("{TEST_DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {TEST_URL_VAR}: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        with_database(&admin_url, &name)
    }

    /// `url` with its database name replaced by `name`.
    pub fn with_database(url: &str, name: &str) -> String {
        let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
        let authority_end = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority_end..].find('/') {
            Some(slash) => &base[..authority_end + slash],
            None => base,
        };
        match query {
            Some(query) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn replaces_the_database_name() {
            assert_eq!(super::with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
            assert_eq!(
                super::with_database("postgres://u@h/db?sslmode=disable", "x"),
                "postgres://u@h/x?sslmode=disable"
            );
            assert_eq!(super::with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
        }
    }
}

#[cfg(test)]
mod store_contract {
    use super::{PostgresPools, PostgresStore};

    async fn fresh() -> PostgresStore {
        let url = super::testing::fresh_database().await;
        PostgresPools::migrate(&url).await.expect("migrates");
        PostgresPools::connect_per_thread(&url, 4, 0).expect("pool")
    }

    gatehouse_domain::store_contract_tests!(fresh());

    /// Two instances starting at once both succeed, and the schema is applied once.
    /// Each runs as a task of its own, as two processes would: the harness
    /// blocks its thread while it applies migrations.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_do_not_race() {
        let url = super::testing::fresh_database().await;
        let instance = |url: String| tokio::spawn(async move { PostgresPools::migrate(&url).await });
        let (a, b) = tokio::join!(instance(url.clone()), instance(url.clone()));
        a.expect("first runs").expect("first migrates");
        b.expect("second runs").expect("second migrates");
        PostgresPools::migrate(&url).await.expect("a third run finds nothing to do");
    }

    /// Per-thread pools split the connections and share one statement count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_thread_pools_split_the_connections_and_count_statements() {
        use gatehouse_domain::ports::StoreHealth;
        let url = super::testing::fresh_database().await;
        let store = PostgresPools::connect_per_thread(&url, 4, 2).expect("pools");
        assert_eq!(store.connections().pool_usage().2, 2 + 2 + super::BACKGROUND_CONNECTIONS);
        let before = store.connections().statements_sent();
        store.ping().await.expect("answers");
        store.ping().await.expect("answers");
        assert_eq!(store.connections().statements_sent() - before, 2, "one statement per ping, no checkout ping");
    }

    /// A server that cannot be reached is unavailable, not an unexpected error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_server_is_unavailable() {
        use gatehouse_domain::ports::StoreHealth;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let store =
            PostgresPools::connect_per_thread(&format!("postgres://nobody@127.0.0.1:{port}/none"), 2, 0).unwrap();
        assert!(matches!(store.ping().await, Err(gatehouse_domain::PortError::Unavailable(_))));
    }
}
