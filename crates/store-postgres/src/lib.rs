//! The persistence ports on PostgreSQL, through diesel-async and a pool.
//!
//! Every multi-step change is one transaction; rows that concurrent callers
//! race for (a refresh token, a link token, due mail) are locked with
//! `FOR UPDATE` (`SKIP LOCKED` for the outbox), so exactly one caller wins.
//! A server that cannot be reached is `Unavailable`, and the pool replaces
//! broken connections by itself when the server is back.

mod schema;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel::connection::InstrumentationEvent;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::BigInt;
use diesel_async::pooled_connection::deadpool::{Hook, HookError, Object, Pool, PoolError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use gatehouse_domain::admin::{Grants, Group, Permission, UserOrderField, UserOrdering, UserPage, UserQuery};
use gatehouse_domain::audit::{AuditEvent, AuditPage, AuditQuery, AuditRecord};
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{
    AccountStore, AdminNewUser, AdminStore, AdminUserChanges, AdminWrite, AdminWrites, AuditLog, Backlog,
    CreateAccountError, Credentials, EmailConfirmation, FailureWindow, GroupWrite, LoginAttempts, NewAccount,
    NewOneTimeToken, Outbox, QueuedMail, SessionStore, StoreHealth, ThrottleKey, TokenPurpose,
};
use gatehouse_domain::session::{NewRefreshToken, NewSession, Rotation, SessionInfo, SessionState};
use gatehouse_domain::user::{ProfilePatch, ADMIN_USER_GROUP, REGULAR_USER_GROUP};
use gatehouse_domain::{Email, EmailKey, PasswordHash, PortError, Profile, SessionId, TokenHash, User, UserId};
use time::{Duration as TimeDuration, OffsetDateTime};
use uuid::Uuid;

use schema::{
    audit_events, group_permissions, groups, login_failures, one_time_tokens, outbox, profiles, refresh_tokens,
    sessions, user_groups, users,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Serialises migrations across instances starting at once (an arbitrary, fixed key).
const MIGRATION_LOCK_KEY: i64 = 0x6761_7465_686f_7573;

/// How long a request waits for a pooled connection before the store counts as unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection is pinged at checkout only when there is reason to
/// doubt it: it sat idle this long, or a connection failed lately. A ping
/// on every checkout would double the round trips of the hottest requests.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);
/// After a lost connection (a server restart, say) every checkout pings for
/// this long, so dead pooled connections are replaced instead of reused.
const DOUBT_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// When a connection was last lost, in this process. Process-wide on
/// purpose: a restarted server has dropped the connections of every pool.
static CONNECTION_LOST_AT: Mutex<Option<Instant>> = Mutex::new(None);

fn note_connection_lost() {
    if let Ok(mut lost_at) = CONNECTION_LOST_AT.lock() {
        *lost_at = Some(Instant::now());
    }
}

fn connections_in_doubt() -> bool {
    CONNECTION_LOST_AT.lock().map_or(true, |lost_at| lost_at.is_some_and(|at| at.elapsed() < DOUBT_AFTER_FAILURE))
}

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

/// The PostgreSQL store: every persistence port on one pool, or on one pool
/// per request thread (see [`PostgresStore::connect_per_thread`]).
#[derive(Clone)]
pub struct PostgresStore {
    shared: Pool<AsyncPgConnection>,
    per_thread: Arc<[Pool<AsyncPgConnection>]>,
    next_thread: Arc<AtomicUsize>,
    /// Statements sent on any of the store's connections (BEGIN and COMMIT included).
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("pools", &self.pool_usage()).finish()
    }
}

/// Pool figures for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolUsage {
    pub size: usize,
    pub available: usize,
    pub max_size: usize,
}

impl PostgresStore {
    /// Builds one pool shared by every thread; connections are opened lazily,
    /// so this works while the server is still down.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, PostgresSetupError> {
        let statements = Arc::new(AtomicU64::new(0));
        let shared = pool(url, pool_size, &statements)?;
        Ok(Self { shared, per_thread: Arc::new([]), next_thread: Arc::default(), statements })
    }

    /// Splits `pool_size` connections between `threads` pools, one for each
    /// thread that calls [`Self::bind_current_thread`] (the request workers),
    /// plus a small shared pool for every other thread. A connection's I/O is
    /// driven by the runtime that opened it, so a worker borrowing a connection
    /// opened on another thread pays two thread wake-ups per query; with a
    /// pool of its own it never does.
    pub fn connect_per_thread(url: &str, pool_size: usize, threads: usize) -> Result<Self, PostgresSetupError> {
        let threads = threads.max(1);
        let each = pool_size.div_ceil(threads);
        let statements = Arc::new(AtomicU64::new(0));
        let per_thread = (0..threads).map(|_| pool(url, each, &statements)).collect::<Result<Vec<_>, _>>()?;
        let shared = pool(url, BACKGROUND_CONNECTIONS, &statements)?;
        Ok(Self { shared, per_thread: per_thread.into(), next_thread: Arc::default(), statements })
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

    /// Connections open, idle, and allowed, over all pools.
    pub fn pool_usage(&self) -> PoolUsage {
        std::iter::once(&self.shared).chain(self.per_thread.iter()).map(Pool::status).fold(
            PoolUsage { size: 0, available: 0, max_size: 0 },
            |sum, status| PoolUsage {
                size: sum.size + status.size,
                available: sum.available + status.available,
                max_size: sum.max_size + status.max_size,
            },
        )
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

    async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        match tokio::time::timeout(CHECKOUT_TIMEOUT, self.pool().get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(StoreError::Port(pool_error(error))),
            Err(elapsed) => Err(StoreError::Port(PortError::unavailable(elapsed))),
        }
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
        conn.set_instrumentation(count_into(statements.clone()));
        Ok(())
    });
    Pool::builder(manager)
        .max_size(size.max(1))
        .post_create(count_statements)
        .pre_recycle(ping_when_in_doubt)
        .build()
        .map_err(|e| PostgresSetupError::Pool(e.to_string()))
}

/// Instrumentation that counts the statements a connection starts.
fn count_into(statements: Arc<AtomicU64>) -> impl FnMut(InstrumentationEvent<'_>) + Send + 'static {
    move |event| {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            statements.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn pool_error(error: PoolError) -> PortError {
    match error {
        PoolError::Backend(_) | PoolError::Timeout(_) | PoolError::Closed => {
            note_connection_lost();
            PortError::unavailable(error)
        }
        _ => PortError::unexpected(error),
    }
}

/// Errors inside the adapter, before translation at the port.
#[derive(Debug)]
enum StoreError {
    EmailTaken,
    Port(PortError),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some("users_email_key_key") =>
            {
                StoreError::EmailTaken
            }
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | DieselError::BrokenTransactionManager => {
                note_connection_lost();
                StoreError::Port(PortError::unavailable(error))
            }
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) if lost_connection(info.message()) => {
                note_connection_lost();
                StoreError::Port(PortError::unavailable(error))
            }
            _ => StoreError::Port(PortError::unexpected(error)),
        }
    }
}

/// Messages of a server going away mid-query (restart, shutdown, network).
fn lost_connection(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["connection", "terminating", "shutting down", "broken pipe", "timed out"].iter().any(|m| message.contains(m))
}

impl From<StoreError> for PortError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Port(port) => port,
            StoreError::EmailTaken => PortError::unexpected("unexpected unique violation on the email"),
        }
    }
}

impl From<StoreError> for CreateAccountError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => CreateAccountError::EmailTaken,
            StoreError::Port(port) => CreateAccountError::Port(port),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
struct UserRow {
    id: i64,
    email: String,
    first_name: String,
    last_name: String,
    is_active: bool,
    is_staff: bool,
    is_superuser: bool,
    is_verified: bool,
    date_joined: OffsetDateTime,
    last_login: Option<OffsetDateTime>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = profiles, check_for_backend(diesel::pg::Pg))]
struct ProfileRow {
    phone: Option<String>,
    gender: Option<String>,
    bio: String,
}

/// Users with their profiles and group names, in the order given: two reads whatever the count.
async fn assemble(
    conn: &mut AsyncPgConnection,
    rows: Vec<(UserRow, Option<ProfileRow>)>,
) -> Result<Vec<User>, StoreError> {
    let ids: Vec<i64> = rows.iter().map(|(user, _)| user.id).collect();
    let memberships = user_groups::table
        .inner_join(groups::table)
        .filter(user_groups::user_id.eq_any(&ids))
        .select((user_groups::user_id, groups::name))
        .order(groups::name)
        .load::<(i64, String)>(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(user, profile)| {
            let groups = memberships.iter().filter(|(id, _)| *id == user.id).map(|(_, name)| name.clone()).collect();
            to_user(user, profile, groups)
        })
        .collect())
}

fn to_user(user: UserRow, profile: Option<ProfileRow>, groups: Vec<String>) -> User {
    let profile = profile.map_or_else(Profile::default, |p| Profile { phone: p.phone, gender: p.gender, bio: p.bio });
    User {
        id: UserId(user.id),
        email: Email::from_trusted(user.email),
        first_name: user.first_name,
        last_name: user.last_name,
        is_active: user.is_active,
        is_staff: user.is_staff,
        is_superuser: user.is_superuser,
        is_verified: user.is_verified,
        date_joined: user.date_joined,
        last_login: user.last_login,
        groups,
        profile,
    }
}

/// One user from a single read of user, profile and groups: a row per
/// group membership (at least one row). The names are sorted here rather
/// than by the query, which is cheaper for the server on the hottest read.
fn user_from_rows(rows: Vec<(UserRow, Option<ProfileRow>, Option<String>)>) -> Option<User> {
    let mut rows = rows.into_iter();
    let (user, profile, first_group) = rows.next()?;
    let mut groups: Vec<String> = first_group.into_iter().chain(rows.filter_map(|(_, _, group)| group)).collect();
    groups.sort();
    Some(to_user(user, profile, groups))
}

async fn insert_event(conn: &mut AsyncPgConnection, event: &AuditEvent, at: OffsetDateTime) -> Result<(), StoreError> {
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::at.eq(at),
            audit_events::event.eq(event.kind.as_str()),
            audit_events::user_id.eq(event.user_id.map(|u| u.0)),
            audit_events::actor_id.eq(event.actor_id.map(|u| u.0)),
            audit_events::ip.eq(&event.client.ip),
            audit_events::user_agent.eq(&event.client.user_agent),
            audit_events::detail.eq(event.detail.to_string()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn load_user(conn: &mut AsyncPgConnection, id: i64) -> Result<Option<User>, StoreError> {
    let rows = users::table
        .left_join(profiles::table)
        .left_join(user_groups::table.inner_join(groups::table))
        .filter(users::id.eq(id))
        .select((UserRow::as_select(), Option::<ProfileRow>::as_select(), groups::name.nullable()))
        .load::<(UserRow, Option<ProfileRow>, Option<String>)>(conn)
        .await?;
    Ok(user_from_rows(rows))
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// `%` and `_` in a search are literal.
fn like_pattern(search: &str) -> String {
    let escaped = search.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// A list query's order, with the id as tie-breaker so pages are stable;
/// users who never logged in come last either way.
fn ordered(
    selected: users::BoxedQuery<'static, diesel::pg::Pg>,
    ordering: UserOrdering,
) -> users::BoxedQuery<'static, diesel::pg::Pg> {
    match (ordering.field, ordering.descending) {
        (UserOrderField::Email, false) => selected.order((users::email_key.asc(), users::id.asc())),
        (UserOrderField::Email, true) => selected.order((users::email_key.desc(), users::id.desc())),
        (UserOrderField::DateJoined, false) => selected.order((users::date_joined.asc(), users::id.asc())),
        (UserOrderField::DateJoined, true) => selected.order((users::date_joined.desc(), users::id.desc())),
        (UserOrderField::LastLogin, false) => {
            selected.order((users::last_login.is_null(), users::last_login.asc(), users::id.asc()))
        }
        (UserOrderField::LastLogin, true) => {
            selected.order((users::last_login.is_null(), users::last_login.desc(), users::id.desc()))
        }
    }
}

/// The users a list query selects, before ordering and paging.
fn filtered_users(query: &UserQuery) -> users::BoxedQuery<'static, diesel::pg::Pg> {
    let mut selected = users::table.into_boxed();
    if let Some(search) = &query.search {
        let pattern = like_pattern(search);
        selected = selected.filter(
            users::email_key
                .like(pattern.clone())
                .escape('\\')
                .or(lower(users::first_name).like(pattern.clone()).escape('\\'))
                .or(lower(users::last_name).like(pattern).escape('\\')),
        );
    }
    if let Some(is_active) = query.is_active {
        selected = selected.filter(users::is_active.eq(is_active));
    }
    if let Some(is_verified) = query.is_verified {
        selected = selected.filter(users::is_verified.eq(is_verified));
    }
    if let Some(is_staff) = query.is_staff {
        selected = selected.filter(users::is_staff.eq(is_staff));
    }
    selected
}

async fn require_user(conn: &mut AsyncPgConnection, id: i64) -> Result<User, StoreError> {
    load_user(conn, id)
        .await?
        .ok_or_else(|| StoreError::Port(PortError::unexpected("a user vanished inside its transaction")))
}

/// Adds the user to the named group; a membership already held is kept.
async fn join_group(conn: &mut AsyncPgConnection, user_id: i64, group: &str) -> Result<(), StoreError> {
    // INSERT … SELECT: a group that no longer exists adds no row.
    let group = groups::table.filter(groups::name.eq(group)).select((user_id.into_sql::<BigInt>(), groups::id));
    diesel::insert_into(user_groups::table)
        .values(group)
        .into_columns((user_groups::user_id, user_groups::group_id))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// An unused, unexpired token of the purpose.
fn live_token(
    hash: &str,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> one_time_tokens::BoxedQuery<'static, diesel::pg::Pg> {
    one_time_tokens::table
        .filter(one_time_tokens::token_hash.eq(hash.to_owned()))
        .filter(one_time_tokens::purpose.eq(purpose.as_str()))
        .filter(one_time_tokens::used_at.is_null())
        .filter(one_time_tokens::expires_at.gt(now))
        .into_boxed()
}

/// Revokes the user's live sessions, all or all but `keep`.
async fn revoke_user_sessions(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    keep: Option<SessionId>,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    Ok(diesel::update(sessions::table)
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::id.ne(keep.map_or(Uuid::nil(), |k| k.0)))
        .filter(sessions::revoked_at.is_null())
        .set(sessions::revoked_at.eq(now))
        .execute(conn)
        .await?)
}

/// Spends every unused token of the purpose that the user holds.
async fn kill_tokens(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::update(one_time_tokens::table)
        .filter(one_time_tokens::user_id.eq(user_id))
        .filter(one_time_tokens::purpose.eq(purpose.as_str()))
        .filter(one_time_tokens::used_at.is_null())
        .set(one_time_tokens::used_at.eq(now))
        .execute(conn)
        .await?;
    Ok(())
}

async fn credentials(
    conn: &mut AsyncPgConnection,
    query: users::BoxedQuery<'static, diesel::pg::Pg>,
) -> Result<Option<Credentials>, StoreError> {
    let row = query
        .select((users::id, users::password_hash, users::is_active, users::is_verified))
        .first::<(i64, Option<String>, bool, bool)>(conn)
        .await
        .optional()?;
    Ok(row.map(|(id, hash, is_active, is_verified)| Credentials {
        user_id: UserId(id),
        password_hash: hash.map(PasswordHash::new),
        is_active,
        is_verified,
    }))
}

/// Stores a link token; a newer reset or email-change link kills the older ones.
async fn insert_token(conn: &mut AsyncPgConnection, user_id: i64, token: &NewOneTimeToken) -> Result<(), StoreError> {
    if token.purpose.supersedes() {
        kill_tokens(conn, user_id, token.purpose, token.created_at).await?;
    }
    diesel::insert_into(one_time_tokens::table)
        .values((
            one_time_tokens::token_hash.eq(token.hash.as_str()),
            one_time_tokens::user_id.eq(user_id),
            one_time_tokens::purpose.eq(token.purpose.as_str()),
            one_time_tokens::new_email.eq(token.new_email.as_ref().map(AsRef::<str>::as_ref)),
            one_time_tokens::created_at.eq(token.created_at),
            one_time_tokens::expires_at.eq(token.expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_mail(conn: &mut AsyncPgConnection, mail: &OutgoingMail, now: OffsetDateTime) -> Result<(), StoreError> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::recipient.eq(mail.to.as_ref()),
            outbox::subject.eq(&mail.subject),
            outbox::text_body.eq(&mail.text),
            outbox::html_body.eq(&mail.html),
            outbox::created_at.eq(now),
            outbox::next_attempt_at.eq(Some(now)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_refresh(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
    token: &NewRefreshToken,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(token.hash.as_str()),
            refresh_tokens::session_id.eq(session_id),
            refresh_tokens::issued_at.eq(now),
            refresh_tokens::expires_at.eq(token.expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_account(
        &self,
        account: NewAccount,
        token: NewOneTimeToken,
        mail: OutgoingMail,
    ) -> Result<User, CreateAccountError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let id = diesel::insert_into(users::table)
                .values((
                    users::email.eq(account.email.as_ref()),
                    users::email_key.eq(account.email.key().as_str()),
                    users::password_hash.eq(account.password_hash.expose()),
                    users::first_name.eq(&account.first_name),
                    users::last_name.eq(&account.last_name),
                    users::is_verified.eq(account.is_verified),
                    users::date_joined.eq(account.date_joined),
                ))
                .returning(users::id)
                .get_result::<i64>(conn)
                .await?;
            diesel::insert_into(profiles::table).values(profiles::user_id.eq(id)).execute(conn).await?;
            join_group(conn, id, REGULAR_USER_GROUP).await?;
            insert_token(conn, id, &token).await?;
            insert_mail(conn, &mail, account.date_joined).await?;
            require_user(conn, id).await
        })
        .await
        .map_err(Into::into)
    }

    async fn issue_token(
        &self,
        user_id: UserId,
        token: NewOneTimeToken,
        mails: Vec<OutgoingMail>,
    ) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            insert_token(conn, user_id.0, &token).await?;
            for mail in &mails {
                insert_mail(conn, mail, token.created_at).await?;
            }
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn enqueue_mails(&self, mails: Vec<OutgoingMail>) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let now = OffsetDateTime::now_utc();
            for mail in &mails {
                insert_mail(conn, mail, now).await?;
            }
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn find_credentials(&self, email: &EmailKey) -> Result<Option<Credentials>, PortError> {
        let mut conn = self.conn().await?;
        Ok(credentials(&mut conn, users::table.filter(users::email_key.eq(email.as_str().to_owned())).into_boxed())
            .await?)
    }

    async fn find_user_by_email(&self, email: &EmailKey) -> Result<Option<User>, PortError> {
        let mut conn = self.conn().await?;
        let id = users::table
            .filter(users::email_key.eq(email.as_str()))
            .select(users::id)
            .first::<i64>(&mut conn)
            .await
            .optional()
            .map_err(StoreError::from)?;
        match id {
            Some(id) => Ok(load_user(&mut conn, id).await?),
            None => Ok(None),
        }
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, PortError> {
        let mut conn = self.conn().await?;
        Ok(load_user(&mut conn, id.0).await?)
    }

    async fn confirm_email(&self, token: &TokenHash, now: OffsetDateTime) -> Result<EmailConfirmation, PortError> {
        let hash = token.as_str().to_owned();
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let purposes = [TokenPurpose::VerifyEmail.as_str(), TokenPurpose::ChangeEmail.as_str()];
                let found = one_time_tokens::table
                    .filter(one_time_tokens::token_hash.eq(&hash))
                    .filter(one_time_tokens::purpose.eq_any(purposes))
                    .filter(one_time_tokens::used_at.is_null())
                    .filter(one_time_tokens::expires_at.gt(now))
                    .select((one_time_tokens::user_id, one_time_tokens::purpose, one_time_tokens::new_email))
                    .for_update()
                    .first::<(i64, String, Option<String>)>(conn)
                    .await
                    .optional()?;
                let Some((user_id, purpose, new_email)) = found else { return Ok(EmailConfirmation::NotLive) };
                // Every verification link of the user is spent either way: a mailbox is proven.
                kill_tokens(conn, user_id, TokenPurpose::VerifyEmail, now).await?;
                match (TokenPurpose::parse(&purpose), new_email) {
                    (Some(TokenPurpose::ChangeEmail), Some(new_email)) => {
                        let new_email = Email::from_trusted(new_email);
                        let key = new_email.key();
                        let taken = users::table
                            .filter(users::email_key.eq(key.as_str()))
                            .filter(users::id.ne(user_id))
                            .select(users::id)
                            .first::<i64>(conn)
                            .await
                            .optional()?;
                        if taken.is_some() {
                            return Ok(EmailConfirmation::AddressTaken);
                        }
                        diesel::update(users::table.find(user_id))
                            .set((
                                users::email.eq(new_email.as_ref()),
                                users::email_key.eq(key.as_str()),
                                users::is_verified.eq(true),
                            ))
                            .execute(conn)
                            .await?;
                        kill_tokens(conn, user_id, TokenPurpose::ChangeEmail, now).await?;
                        kill_tokens(conn, user_id, TokenPurpose::ResetPassword, now).await?;
                        Ok(EmailConfirmation::Changed(require_user(conn, user_id).await?))
                    }
                    _ => {
                        diesel::update(users::table.find(user_id))
                            .set(users::is_verified.eq(true))
                            .execute(conn)
                            .await?;
                        Ok(EmailConfirmation::Verified(require_user(conn, user_id).await?))
                    }
                }
            })
            .await;
        match outcome {
            // Another account took the address between the check and the update.
            Err(StoreError::EmailTaken) => Ok(EmailConfirmation::AddressTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn update_profile(&self, id: UserId, patch: ProfilePatch) -> Result<Option<User>, PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let names = (
                patch.first_name.as_ref().map(|n| users::first_name.eq(n)),
                patch.last_name.as_ref().map(|n| users::last_name.eq(n)),
            );
            let found =
                diesel::update(users::table.find(id.0)).set((users::id.eq(users::id), names)).execute(conn).await?;
            if found == 0 {
                return Ok(None);
            }
            let profile = (
                patch.phone.as_ref().map(|p| profiles::phone.eq(p)),
                patch.gender.as_ref().map(|g| profiles::gender.eq(g)),
                patch.bio.as_ref().map(|b| profiles::bio.eq(b)),
            );
            if patch.phone.is_some() || patch.gender.is_some() || patch.bio.is_some() {
                diesel::update(profiles::table.find(id.0)).set(profile).execute(conn).await?;
            }
            load_user(conn, id.0).await
        })
        .await
        .map_err(Into::into)
    }

    async fn set_password_hash(&self, id: UserId, hash: PasswordHash) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        diesel::update(users::table.find(id.0))
            .set(users::password_hash.eq(hash.expose()))
            .execute(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn find_credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>, PortError> {
        let mut conn = self.conn().await?;
        Ok(credentials(&mut conn, users::table.find(id.0).into_boxed()).await?)
    }

    async fn peek_token(
        &self,
        token: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<User>, PortError> {
        let mut conn = self.conn().await?;
        let user_id = live_token(token.as_str(), purpose, now)
            .select(one_time_tokens::user_id)
            .first::<i64>(&mut conn)
            .await
            .optional()
            .map_err(StoreError::from)?;
        match user_id {
            Some(id) => Ok(load_user(&mut conn, id).await?),
            None => Ok(None),
        }
    }

    async fn change_password(
        &self,
        id: UserId,
        hash: PasswordHash,
        keep: Option<SessionId>,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            diesel::update(users::table.find(id.0)).set(users::password_hash.eq(hash.expose())).execute(conn).await?;
            revoke_user_sessions(conn, id.0, keep, now).await?;
            kill_tokens(conn, id.0, TokenPurpose::ResetPassword, now).await?;
            insert_mail(conn, &notice, now).await
        })
        .await
        .map_err(Into::into)
    }

    async fn reset_password(
        &self,
        token: &TokenHash,
        hash: PasswordHash,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<Option<User>, PortError> {
        let token = token.as_str().to_owned();
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let purpose = TokenPurpose::ResetPassword;
            // The row lock makes concurrent confirms queue; the first spends the token.
            let user_id = one_time_tokens::table
                .filter(one_time_tokens::token_hash.eq(&token))
                .filter(one_time_tokens::purpose.eq(purpose.as_str()))
                .filter(one_time_tokens::used_at.is_null())
                .filter(one_time_tokens::expires_at.gt(now))
                .select(one_time_tokens::user_id)
                .for_update()
                .first::<i64>(conn)
                .await
                .optional()?;
            let Some(user_id) = user_id else { return Ok(None) };
            kill_tokens(conn, user_id, purpose, now).await?;
            diesel::update(users::table.find(user_id))
                .set((users::password_hash.eq(hash.expose()), users::is_verified.eq(true)))
                .execute(conn)
                .await?;
            revoke_user_sessions(conn, user_id, None, now).await?;
            insert_mail(conn, &notice, now).await?;
            load_user(conn, user_id).await
        })
        .await
        .map_err(Into::into)
    }

    async fn delete_account(&self, id: UserId, goodbye: OutgoingMail) -> Result<bool, PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let deleted = diesel::delete(users::table.find(id.0)).execute(conn).await?;
            if deleted > 0 {
                insert_mail(conn, &goodbye, OffsetDateTime::now_utc()).await?;
            }
            Ok(deleted > 0)
        })
        .await
        .map_err(Into::into)
    }

    async fn upsert_superuser(&self, email: Email, hash: PasswordHash, now: OffsetDateTime) -> Result<User, PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let key = email.key();
            // Creating first and updating after makes the upsert safe against a concurrent signup.
            diesel::insert_into(users::table)
                .values((
                    users::email.eq(email.as_ref()),
                    users::email_key.eq(key.as_str()),
                    users::date_joined.eq(now),
                ))
                .on_conflict(users::email_key)
                .do_nothing()
                .execute(conn)
                .await?;
            let id =
                users::table.filter(users::email_key.eq(key.as_str())).select(users::id).first::<i64>(conn).await?;
            diesel::insert_into(profiles::table)
                .values(profiles::user_id.eq(id))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            diesel::update(users::table.find(id))
                .set((
                    users::password_hash.eq(hash.expose()),
                    users::is_superuser.eq(true),
                    users::is_staff.eq(true),
                    users::is_verified.eq(true),
                    users::is_active.eq(true),
                ))
                .execute(conn)
                .await?;
            join_group(conn, id, REGULAR_USER_GROUP).await?;
            join_group(conn, id, ADMIN_USER_GROUP).await?;
            require_user(conn, id).await
        })
        .await
        .map_err(Into::into)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn start_session(&self, session: NewSession) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let id = session.id.0;
            diesel::insert_into(sessions::table)
                .values((
                    sessions::id.eq(id),
                    sessions::user_id.eq(session.user_id.0),
                    sessions::created_at.eq(session.created_at),
                    sessions::last_used_at.eq(session.created_at),
                    sessions::expires_at.eq(session.refresh.expires_at),
                    sessions::user_agent.eq(&session.client.user_agent),
                    sessions::ip.eq(&session.client.ip),
                ))
                .execute(conn)
                .await?;
            insert_refresh(conn, id, &session.refresh, session.created_at).await?;
            diesel::update(users::table.find(session.user_id.0))
                .set(users::last_login.eq(session.created_at))
                .execute(conn)
                .await?;
            if let Some(event) = &session.event {
                insert_event(conn, event, session.created_at).await?;
            }
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
        grace: TimeDuration,
    ) -> Result<Rotation, PortError> {
        let presented = presented.as_str().to_owned();
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            // The row lock makes concurrent presenters of one token queue here.
            let token = refresh_tokens::table
                .find(&presented)
                .select((refresh_tokens::session_id, refresh_tokens::expires_at, refresh_tokens::used_at))
                .for_update()
                .first::<(Uuid, OffsetDateTime, Option<OffsetDateTime>)>(conn)
                .await
                .optional()?;
            let Some((session_id, expires_at, used_at)) = token else { return Ok(Rotation::Unknown) };
            let (user_id, revoked_at, is_active) = sessions::table
                .inner_join(users::table)
                .filter(sessions::id.eq(session_id))
                .select((sessions::user_id, sessions::revoked_at, users::is_active))
                .first::<(i64, Option<OffsetDateTime>, bool)>(conn)
                .await?;
            if revoked_at.is_some() || !is_active {
                return Ok(Rotation::SessionDead);
            }
            match used_at {
                Some(spent) if now - spent >= grace => {
                    diesel::update(sessions::table.find(session_id))
                        .filter(sessions::revoked_at.is_null())
                        .set(sessions::revoked_at.eq(now))
                        .execute(conn)
                        .await?;
                    return Ok(Rotation::Reused { user_id: UserId(user_id), session_id: SessionId(session_id) });
                }
                // A retry within the grace window rotates again and keeps the first successor.
                Some(_) => {}
                None if expires_at <= now => return Ok(Rotation::Expired),
                None => {
                    diesel::update(refresh_tokens::table.find(&presented))
                        .set(refresh_tokens::used_at.eq(now))
                        .execute(conn)
                        .await?;
                }
            }
            insert_refresh(conn, session_id, &next, now).await?;
            diesel::update(sessions::table.find(session_id))
                .set((sessions::last_used_at.eq(now), sessions::expires_at.eq(next.expires_at)))
                .execute(conn)
                .await?;
            Ok(Rotation::Rotated { user_id: UserId(user_id), session_id: SessionId(session_id) })
        })
        .await
        .map_err(Into::into)
    }

    async fn list_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<Vec<SessionInfo>, PortError> {
        let mut conn = self.conn().await?;
        let rows = sessions::table
            .filter(sessions::user_id.eq(user_id.0))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now))
            .order((sessions::last_used_at.desc(), sessions::created_at.desc()))
            .select((sessions::id, sessions::created_at, sessions::last_used_at, sessions::user_agent, sessions::ip))
            .load::<(Uuid, OffsetDateTime, OffsetDateTime, Option<String>, Option<String>)>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(rows
            .into_iter()
            .map(|(id, created_at, last_used_at, user_agent, ip)| SessionInfo {
                id: SessionId(id),
                created_at,
                last_used_at,
                user_agent,
                ip,
            })
            .collect())
    }

    async fn session_state(&self, id: SessionId, now: OffsetDateTime) -> Result<SessionState, PortError> {
        let mut conn = self.conn().await?;
        let found = sessions::table
            .inner_join(users::table)
            .filter(sessions::id.eq(id.0))
            .select((sessions::user_id, sessions::expires_at, sessions::revoked_at, users::is_active))
            .first::<(i64, OffsetDateTime, Option<OffsetDateTime>, bool)>(&mut conn)
            .await
            .optional()
            .map_err(StoreError::from)?;
        Ok(match found {
            Some((user_id, expires_at, None, true)) if expires_at > now => {
                SessionState::Live { user_id: UserId(user_id) }
            }
            _ => SessionState::Dead,
        })
    }

    async fn session_user(&self, id: SessionId, now: OffsetDateTime) -> Result<Option<User>, PortError> {
        let mut conn = self.conn().await?;
        let rows = users::table
            .inner_join(sessions::table)
            .left_join(profiles::table)
            .left_join(user_groups::table.inner_join(groups::table))
            .filter(sessions::id.eq(id.0))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now))
            .filter(users::is_active.eq(true))
            .select((UserRow::as_select(), Option::<ProfileRow>::as_select(), groups::name.nullable()))
            .load::<(UserRow, Option<ProfileRow>, Option<String>)>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(user_from_rows(rows))
    }

    async fn revoke_session(&self, user_id: UserId, id: SessionId, now: OffsetDateTime) -> Result<bool, PortError> {
        let mut conn = self.conn().await?;
        let revoked = diesel::update(sessions::table)
            .filter(sessions::id.eq(id.0))
            .filter(sessions::user_id.eq(user_id.0))
            .filter(sessions::revoked_at.is_null())
            .set(sessions::revoked_at.eq(now))
            .execute(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(revoked > 0)
    }

    async fn revoke_all_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        revoke_user_sessions(&mut conn, user_id.0, None, now).await?;
        Ok(())
    }
}

#[async_trait]
impl LoginAttempts for PostgresStore {
    async fn failures_since(
        &self,
        keys: &[ThrottleKey],
        since: OffsetDateTime,
    ) -> Result<Vec<FailureWindow>, PortError> {
        let mut conn = self.conn().await?;
        let mut windows = Vec::with_capacity(keys.len());
        for key in keys {
            let (count, oldest) = login_failures::table
                .filter(login_failures::scope.eq(key.scope()))
                .filter(login_failures::subject.eq(key.subject()))
                .filter(login_failures::failed_at.ge(since))
                .select((diesel::dsl::count_star(), diesel::dsl::min(login_failures::failed_at)))
                .first::<(i64, Option<OffsetDateTime>)>(&mut conn)
                .await
                .map_err(StoreError::from)?;
            windows.push(FailureWindow { count, oldest });
        }
        Ok(windows)
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        at: OffsetDateTime,
        forget_before: OffsetDateTime,
    ) -> Result<(), PortError> {
        let keys = keys.to_vec();
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            for key in &keys {
                diesel::delete(login_failures::table)
                    .filter(login_failures::scope.eq(key.scope()))
                    .filter(login_failures::subject.eq(key.subject()))
                    .filter(login_failures::failed_at.lt(forget_before))
                    .execute(conn)
                    .await?;
                diesel::insert_into(login_failures::table)
                    .values((
                        login_failures::scope.eq(key.scope()),
                        login_failures::subject.eq(key.subject()),
                        login_failures::failed_at.eq(at),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn clear_failures(&self, key: &ThrottleKey) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        diesel::delete(login_failures::table)
            .filter(login_failures::scope.eq(key.scope()))
            .filter(login_failures::subject.eq(key.subject()))
            .execute(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<QueuedMail>, PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            // SKIP LOCKED: several workers (or instances) share the queue without waiting on each other.
            let due = outbox::table
                .filter(outbox::next_attempt_at.le(now))
                .order(outbox::id)
                .limit(limit)
                .select((
                    outbox::id,
                    outbox::recipient,
                    outbox::subject,
                    outbox::text_body,
                    outbox::html_body,
                    outbox::attempts,
                ))
                .for_update()
                .skip_locked()
                .load::<(i64, String, String, String, String, i32)>(conn)
                .await?;
            let ids: Vec<i64> = due.iter().map(|row| row.0).collect();
            diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                .set(outbox::next_attempt_at.eq(lease_until))
                .execute(conn)
                .await?;
            Ok(due
                .into_iter()
                .map(|(id, to, subject, text, html, attempts)| QueuedMail {
                    id,
                    attempts,
                    mail: OutgoingMail { to: Email::from_trusted(to), subject, text, html },
                })
                .collect())
        })
        .await
        .map_err(Into::into)
    }

    async fn mark_sent(&self, id: i64) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        diesel::delete(outbox::table.find(id)).execute(&mut conn).await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn mark_failed(&self, id: i64, retry_at: Option<OffsetDateTime>, error: &str) -> Result<(), PortError> {
        let error = error.chars().take(1000).collect::<String>();
        let mut conn = self.conn().await?;
        diesel::update(outbox::table.find(id))
            .set((
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::next_attempt_at.eq(retry_at),
                outbox::last_error.eq(error),
            ))
            .execute(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn backlog(&self, now: OffsetDateTime) -> Result<Backlog, PortError> {
        let pending = self.pending_count().await?;
        let mut conn = self.conn().await?;
        let oldest = outbox::table
            .filter(outbox::next_attempt_at.is_not_null())
            .select(outbox::created_at)
            .order(outbox::id)
            .first::<OffsetDateTime>(&mut conn)
            .await
            .optional()
            .map_err(StoreError::from)?;
        Ok(Backlog { pending, oldest_age_seconds: oldest.map_or(0, |at| (now - at).whole_seconds().max(0)) })
    }

    async fn pending_count(&self) -> Result<i64, PortError> {
        let mut conn = self.conn().await?;
        Ok(outbox::table
            .filter(outbox::next_attempt_at.is_not_null())
            .count()
            .get_result(&mut conn)
            .await
            .map_err(StoreError::from)?)
    }
}

#[async_trait]
impl AdminStore for PostgresStore {
    async fn grants_of(&self, id: UserId) -> Result<Option<Grants>, PortError> {
        let mut conn = self.conn().await?;
        let flags = users::table
            .find(id.0)
            .select((users::is_active, users::is_superuser))
            .first::<(bool, bool)>(&mut conn)
            .await
            .optional()
            .map_err(StoreError::from)?;
        let Some((is_active, is_superuser)) = flags else { return Ok(None) };
        let names = user_groups::table
            .inner_join(group_permissions::table.on(group_permissions::group_id.eq(user_groups::group_id)))
            .filter(user_groups::user_id.eq(id.0))
            .select(group_permissions::permission)
            .load::<String>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(Some(Grants {
            is_active,
            is_superuser,
            permissions: names.iter().filter_map(|n| Permission::parse(n)).collect(),
        }))
    }

    async fn list_users(&self, query: &UserQuery) -> Result<UserPage, PortError> {
        let mut conn = self.conn().await?;
        let count = filtered_users(query).count().get_result::<i64>(&mut conn).await.map_err(StoreError::from)?;
        let ids = ordered(filtered_users(query), query.ordering)
            .select(users::id)
            .limit(i64::from(query.page_size))
            .offset(query.offset())
            .load::<i64>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let rows = users::table
            .left_join(profiles::table)
            .filter(users::id.eq_any(&ids))
            .select((UserRow::as_select(), Option::<ProfileRow>::as_select()))
            .load::<(UserRow, Option<ProfileRow>)>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let mut users = assemble(&mut conn, rows).await?;
        users.sort_by_key(|user| ids.iter().position(|id| *id == user.id.0));
        Ok(UserPage { count, results: users })
    }

    async fn list_groups(&self) -> Result<Vec<Group>, PortError> {
        let mut conn = self.conn().await?;
        let found =
            groups::table.order(groups::name).load::<(i64, String)>(&mut conn).await.map_err(StoreError::from)?;
        Ok(with_permissions(&mut conn, found).await?)
    }

    async fn get_group(&self, id: i64) -> Result<Option<Group>, PortError> {
        let mut conn = self.conn().await?;
        let found = groups::table.find(id).load::<(i64, String)>(&mut conn).await.map_err(StoreError::from)?;
        Ok(with_permissions(&mut conn, found).await?.pop())
    }
}

/// Groups with their permissions, in the order given.
async fn with_permissions(conn: &mut AsyncPgConnection, found: Vec<(i64, String)>) -> Result<Vec<Group>, StoreError> {
    let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
    let granted = group_permissions::table
        .filter(group_permissions::group_id.eq_any(&ids))
        .select((group_permissions::group_id, group_permissions::permission))
        .load::<(i64, String)>(conn)
        .await?;
    Ok(found
        .into_iter()
        .map(|(id, name)| {
            let mut permissions: Vec<Permission> =
                granted.iter().filter(|(g, _)| *g == id).filter_map(|(_, p)| Permission::parse(p)).collect();
            permissions.sort();
            Group { id, name, permissions }
        })
        .collect())
}

#[async_trait]
impl AdminWrites for PostgresStore {
    async fn groups_named(&self, names: &[String]) -> Result<Vec<Group>, PortError> {
        let mut conn = self.conn().await?;
        let found = groups::table
            .filter(groups::name.eq_any(names))
            .order(groups::name)
            .load::<(i64, String)>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(with_permissions(&mut conn, found).await?)
    }

    async fn admin_create_user(
        &self,
        user: AdminNewUser,
        invitation: Option<(NewOneTimeToken, OutgoingMail)>,
    ) -> Result<AdminWrite, PortError> {
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let id = diesel::insert_into(users::table)
                    .values((
                        users::email.eq(user.email.as_ref()),
                        users::email_key.eq(user.email.key().as_str()),
                        users::password_hash.eq(user.password_hash.as_ref().map(PasswordHash::expose)),
                        users::first_name.eq(&user.first_name),
                        users::last_name.eq(&user.last_name),
                        users::is_active.eq(user.is_active),
                        users::is_staff.eq(user.is_staff),
                        users::is_verified.eq(user.is_verified),
                        users::date_joined.eq(user.date_joined),
                    ))
                    .returning(users::id)
                    .get_result::<i64>(conn)
                    .await?;
                diesel::insert_into(profiles::table).values(profiles::user_id.eq(id)).execute(conn).await?;
                for group in &user.groups {
                    join_group(conn, id, group).await?;
                }
                if let Some((token, mail)) = &invitation {
                    insert_token(conn, id, token).await?;
                    insert_mail(conn, mail, user.date_joined).await?;
                }
                Ok(AdminWrite::Done(Some(Box::new(require_user(conn, id).await?))))
            })
            .await;
        match outcome {
            Err(StoreError::EmailTaken) => Ok(AdminWrite::EmailTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn admin_update_user(
        &self,
        id: UserId,
        changes: AdminUserChanges,
        now: OffsetDateTime,
    ) -> Result<AdminWrite, PortError> {
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let demotes = changes.is_superuser == Some(false) || changes.is_active == Some(false);
                if demotes && is_last_superuser(conn, id.0).await? {
                    return Ok(AdminWrite::LastSuperuser);
                }
                let found = diesel::update(users::table.find(id.0))
                    .set((
                        users::id.eq(users::id),
                        changes.email.as_ref().map(|e| users::email.eq(e.as_ref().to_owned())),
                        changes.email.as_ref().map(|e| users::email_key.eq(e.key().as_str().to_owned())),
                        changes.first_name.as_ref().map(|n| users::first_name.eq(n)),
                        changes.last_name.as_ref().map(|n| users::last_name.eq(n)),
                        changes.is_active.map(|v| users::is_active.eq(v)),
                        changes.is_staff.map(|v| users::is_staff.eq(v)),
                        changes.is_superuser.map(|v| users::is_superuser.eq(v)),
                        changes.is_verified.map(|v| users::is_verified.eq(v)),
                    ))
                    .execute(conn)
                    .await?;
                if found == 0 {
                    return Ok(AdminWrite::NotFound);
                }
                if let Some(groups) = &changes.groups {
                    diesel::delete(user_groups::table.filter(user_groups::user_id.eq(id.0))).execute(conn).await?;
                    for group in groups {
                        join_group(conn, id.0, group).await?;
                    }
                }
                if changes.is_active == Some(false) {
                    revoke_user_sessions(conn, id.0, None, now).await?;
                }
                Ok(AdminWrite::Done(load_user(conn, id.0).await?.map(Box::new)))
            })
            .await;
        match outcome {
            Err(StoreError::EmailTaken) => Ok(AdminWrite::EmailTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn admin_delete_user(&self, id: UserId) -> Result<AdminWrite, PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            if is_last_superuser(conn, id.0).await? {
                return Ok(AdminWrite::LastSuperuser);
            }
            let deleted = diesel::delete(users::table.find(id.0)).execute(conn).await?;
            Ok(if deleted == 0 { AdminWrite::NotFound } else { AdminWrite::Done(None) })
        })
        .await
        .map_err(Into::into)
    }
    async fn create_group(&self, name: &str, permissions: &[Permission]) -> Result<Option<Group>, PortError> {
        let (name, permissions) = (name.to_owned(), permissions.to_vec());
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            let id = diesel::insert_into(groups::table)
                .values(groups::name.eq(&name))
                .on_conflict(groups::name)
                .do_nothing()
                .returning(groups::id)
                .get_result::<i64>(conn)
                .await
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            set_permissions(conn, id, &permissions).await?;
            Ok(with_permissions(conn, vec![(id, name)]).await?.pop())
        })
        .await
        .map_err(Into::into)
    }

    async fn update_group(
        &self,
        id: i64,
        name: Option<String>,
        permissions: Option<Vec<Permission>>,
    ) -> Result<GroupWrite, PortError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            if let Some(name) = &name {
                let taken = groups::table
                    .filter(groups::name.eq(name))
                    .filter(groups::id.ne(id))
                    .select(groups::id)
                    .first::<i64>(conn)
                    .await
                    .optional()?;
                if taken.is_some() {
                    return Ok(GroupWrite::NameTaken);
                }
                diesel::update(groups::table.find(id)).set(groups::name.eq(name)).execute(conn).await?;
            }
            if let Some(permissions) = &permissions {
                set_permissions(conn, id, permissions).await?;
            }
            let found = groups::table.find(id).load::<(i64, String)>(conn).await?;
            Ok(with_permissions(conn, found).await?.pop().map_or(GroupWrite::NotFound, GroupWrite::Done))
        })
        .await
        .map_err(Into::into)
    }

    async fn delete_group(&self, id: i64) -> Result<bool, PortError> {
        let mut conn = self.conn().await?;
        let deleted = diesel::delete(groups::table.find(id)).execute(&mut conn).await.map_err(StoreError::from)?;
        Ok(deleted > 0)
    }
}

/// Replaces a group's permissions.
async fn set_permissions(conn: &mut AsyncPgConnection, id: i64, permissions: &[Permission]) -> Result<(), StoreError> {
    diesel::delete(group_permissions::table.filter(group_permissions::group_id.eq(id))).execute(conn).await?;
    let rows: Vec<_> = permissions
        .iter()
        .map(|p| (group_permissions::group_id.eq(id), group_permissions::permission.eq(p.as_str())))
        .collect();
    diesel::insert_into(group_permissions::table).values(rows).execute(conn).await?;
    Ok(())
}

/// Whether the user is the only active superuser. Locks the superusers' rows
/// so two demotions at once cannot both pass.
async fn is_last_superuser(conn: &mut AsyncPgConnection, id: i64) -> Result<bool, StoreError> {
    let superusers = users::table
        .filter(users::is_superuser.eq(true))
        .filter(users::is_active.eq(true))
        .select(users::id)
        .for_update()
        .load::<i64>(conn)
        .await?;
    Ok(superusers == [id])
}

type AuditRow = (i64, OffsetDateTime, String, Option<i64>, Option<i64>, Option<String>, Option<String>, String);

/// The events a trail query selects, before ordering and paging.
fn filtered_events(query: &AuditQuery) -> audit_events::BoxedQuery<'static, diesel::pg::Pg> {
    let mut selected = audit_events::table.into_boxed();
    if let Some(user) = query.user {
        selected = selected.filter(audit_events::user_id.eq(user.0));
    }
    if let Some(kind) = query.event {
        selected = selected.filter(audit_events::event.eq(kind.as_str()));
    }
    selected
}

fn audit_record((id, at, event, user_id, actor_id, ip, user_agent, detail): AuditRow) -> AuditRecord {
    let detail = serde_json::from_str(&detail).unwrap_or_default();
    AuditRecord { id, at, event, user_id, actor_id, ip, user_agent, detail }
}

#[async_trait]
impl AuditLog for PostgresStore {
    async fn record(&self, event: AuditEvent, at: OffsetDateTime) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        insert_event(&mut conn, &event, at).await?;
        Ok(())
    }

    async fn list_events(&self, query: &AuditQuery) -> Result<AuditPage, PortError> {
        let mut conn = self.conn().await?;
        let count = filtered_events(query).count().get_result::<i64>(&mut conn).await.map_err(StoreError::from)?;
        let rows = filtered_events(query)
            .order(audit_events::id.desc())
            .limit(i64::from(query.page_size))
            .offset(query.offset())
            .load::<AuditRow>(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(AuditPage { count, results: rows.into_iter().map(audit_record).collect() })
    }
}

#[async_trait]
impl StoreHealth for PostgresStore {
    async fn ping(&self) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.map_err(StoreError::from)?;
        Ok(())
    }
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
    use super::PostgresStore;

    async fn fresh() -> PostgresStore {
        let url = super::testing::fresh_database().await;
        PostgresStore::migrate(&url).await.expect("migrates");
        PostgresStore::connect(&url, 4).expect("pool")
    }

    gatehouse_domain::store_contract_tests!(fresh());

    /// Two instances starting at once both succeed, and the schema is applied once.
    /// Each runs as a task of its own, as two processes would: the harness
    /// blocks its thread while it applies migrations.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_do_not_race() {
        let url = super::testing::fresh_database().await;
        let instance = |url: String| tokio::spawn(async move { PostgresStore::migrate(&url).await });
        let (a, b) = tokio::join!(instance(url.clone()), instance(url.clone()));
        a.expect("first runs").expect("first migrates");
        b.expect("second runs").expect("second migrates");
        PostgresStore::migrate(&url).await.expect("a third run finds nothing to do");
    }

    /// Per-thread pools split the connections and share one statement count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_thread_pools_split_the_connections_and_count_statements() {
        use gatehouse_domain::ports::StoreHealth;
        let url = super::testing::fresh_database().await;
        let store = PostgresStore::connect_per_thread(&url, 4, 2).expect("pools");
        assert_eq!(store.pool_usage().max_size, 2 + 2 + super::BACKGROUND_CONNECTIONS);
        let before = store.statements_sent();
        store.ping().await.expect("answers");
        store.ping().await.expect("answers");
        assert_eq!(store.statements_sent() - before, 2, "one statement per ping, no checkout ping");
    }

    /// A server that cannot be reached is unavailable, not an unexpected error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_server_is_unavailable() {
        use gatehouse_domain::ports::StoreHealth;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let store = PostgresStore::connect(&format!("postgres://nobody@127.0.0.1:{port}/none"), 2).unwrap();
        assert!(matches!(store.ping().await, Err(gatehouse_domain::PortError::Unavailable(_))));
    }
}
