//! The persistence ports on embedded SQLite: the zero-setup default.
//!
//! SQLite is bundled (no system library). Each port call runs on the blocking
//! pool with a pooled connection; calls that write take the write lock up
//! front (`BEGIN IMMEDIATE`), so concurrent writers queue on `busy_timeout`
//! instead of failing, and every multi-step change is one transaction.

mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::connection::InstrumentationEvent;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::SqliteConnection;
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

use schema::{
    audit_events, group_permissions, groups, login_failures, one_time_tokens, outbox, profiles, refresh_tokens,
    sessions, user_groups, users,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How long a statement waits for another writer before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum SqliteSetupError {
    #[error("expected sqlite://PATH")]
    NotSqliteUrl,
    #[error("cannot create the database directory: {0}")]
    Directory(#[from] std::io::Error),
    #[error("cannot open the database: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("migrations failed: {0}")]
    Migrations(String),
}

/// Per connection: wait for the writer instead of failing; foreign keys are
/// off by default in SQLite. Each connection counts its statements too.
#[derive(Debug)]
struct Pragmas {
    statements: Arc<AtomicU64>,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        let statements = self.statements.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                statements.fetch_add(1, Ordering::Relaxed);
            }
        });
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The SQLite store: every persistence port on one database file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<ConnectionManager<SqliteConnection>>,
    /// Statements run on any of the store's connections (BEGIN and COMMIT included).
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("pool", &self.pool.state()).finish()
    }
}

type Conn = PooledConnection<ConnectionManager<SqliteConnection>>;

impl SqliteStore {
    /// Opens (creating if needed) the database named by `sqlite://PATH`.
    pub fn open(url: &str, pool_size: u32) -> Result<Self, SqliteSetupError> {
        let path = url.strip_prefix("sqlite://").ok_or(SqliteSetupError::NotSqliteUrl)?;
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        // WAL is a property of the file: set it once, before connections race for the lock.
        let mut first = SqliteConnection::establish(path).map_err(|e| SqliteSetupError::Open(e.to_string()))?;
        first
            .batch_execute(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL;"))
            .map_err(|e| SqliteSetupError::Open(e.to_string()))?;
        let statements = Arc::new(AtomicU64::new(0));
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(Duration::from_secs(5))
            .connection_customizer(Box::new(Pragmas { statements: statements.clone() }))
            .build(ConnectionManager::<SqliteConnection>::new(path))?;
        Ok(Self { pool, statements })
    }

    /// Statements run so far, BEGIN and COMMIT included (for metrics).
    pub fn statements_sent(&self) -> u64 {
        AtomicU64::load(&self.statements, Ordering::Relaxed)
    }

    /// Applies pending migrations. SQLite's own file lock keeps two processes
    /// from applying them at once.
    pub async fn migrate(&self) -> Result<(), SqliteSetupError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            conn.run_pending_migrations(MIGRATIONS).map(|_| ()).map_err(|e| SqliteSetupError::Migrations(e.to_string()))
        })
        .await
        .map_err(|e| SqliteSetupError::Migrations(e.to_string()))?
    }

    /// Pool figures for metrics: open connections, idle ones, and the maximum.
    pub fn pool_usage(&self) -> (u32, u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections, self.pool.max_size())
    }

    /// Runs `work` on a pooled connection on the blocking pool.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| StoreError::Port(PortError::unavailable(e)))?;
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Port(PortError::unexpected(e)))?
    }

    /// Runs `work` in one write transaction.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| conn.immediate_transaction(work)).await
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
                if info.message().contains("users.email_key") =>
            {
                StoreError::EmailTaken
            }
            // Another writer held the lock past busy_timeout: a load problem, not a bug.
            DieselError::DatabaseError(_, info) if info.message().contains("database is locked") => {
                StoreError::Port(PortError::unavailable(error))
            }
            _ => StoreError::Port(PortError::unexpected(error)),
        }
    }
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
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
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
#[diesel(table_name = profiles, check_for_backend(diesel::sqlite::Sqlite))]
struct ProfileRow {
    phone: Option<String>,
    gender: Option<String>,
    bio: String,
}

/// Users with their profiles and group names, in the order given: two reads whatever the count.
fn assemble(conn: &mut SqliteConnection, rows: Vec<(UserRow, Option<ProfileRow>)>) -> Result<Vec<User>, StoreError> {
    let ids: Vec<i64> = rows.iter().map(|(user, _)| user.id).collect();
    let memberships = user_groups::table
        .inner_join(groups::table)
        .filter(user_groups::user_id.eq_any(&ids))
        .select((user_groups::user_id, groups::name))
        .order(groups::name)
        .load::<(i64, String)>(conn)?;
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

fn insert_event(conn: &mut SqliteConnection, event: &AuditEvent, at: OffsetDateTime) -> Result<(), StoreError> {
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
        .execute(conn)?;
    Ok(())
}

fn load_user(conn: &mut SqliteConnection, id: i64) -> Result<Option<User>, StoreError> {
    let rows = users::table
        .left_join(profiles::table)
        .left_join(user_groups::table.inner_join(groups::table))
        .filter(users::id.eq(id))
        .select((UserRow::as_select(), Option::<ProfileRow>::as_select(), groups::name.nullable()))
        .load::<(UserRow, Option<ProfileRow>, Option<String>)>(conn)?;
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
    selected: users::BoxedQuery<'static, diesel::sqlite::Sqlite>,
    ordering: UserOrdering,
) -> users::BoxedQuery<'static, diesel::sqlite::Sqlite> {
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
fn filtered_users(query: &UserQuery) -> users::BoxedQuery<'static, diesel::sqlite::Sqlite> {
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

fn require_user(conn: &mut SqliteConnection, id: i64) -> Result<User, StoreError> {
    load_user(conn, id)?
        .ok_or_else(|| StoreError::Port(PortError::unexpected("a user vanished inside its transaction")))
}

/// Adds the user to the named group; a membership already held is kept.
fn join_group(conn: &mut SqliteConnection, user_id: i64, group: &str) -> Result<(), StoreError> {
    let group_id = groups::table.filter(groups::name.eq(group)).select(groups::id);
    diesel::insert_or_ignore_into(user_groups::table)
        .values((user_groups::user_id.eq(user_id), user_groups::group_id.eq(group_id.single_value().assume_not_null())))
        .execute(conn)?;
    Ok(())
}

/// An unused, unexpired token of the purpose.
fn live_token(
    hash: &str,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> one_time_tokens::BoxedQuery<'static, diesel::sqlite::Sqlite> {
    one_time_tokens::table
        .filter(one_time_tokens::token_hash.eq(hash.to_owned()))
        .filter(one_time_tokens::purpose.eq(purpose.as_str()))
        .filter(one_time_tokens::used_at.is_null())
        .filter(one_time_tokens::expires_at.gt(now))
        .into_boxed()
}

/// Spends every unused token of the purpose that the user holds.
fn kill_tokens(
    conn: &mut SqliteConnection,
    user_id: i64,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::update(one_time_tokens::table)
        .filter(one_time_tokens::user_id.eq(user_id))
        .filter(one_time_tokens::purpose.eq(purpose.as_str()))
        .filter(one_time_tokens::used_at.is_null())
        .set(one_time_tokens::used_at.eq(now))
        .execute(conn)?;
    Ok(())
}

fn credentials(
    conn: &mut SqliteConnection,
    query: users::BoxedQuery<'static, diesel::sqlite::Sqlite>,
) -> Result<Option<Credentials>, StoreError> {
    let row = query
        .select((users::id, users::password_hash, users::is_active, users::is_verified))
        .first::<(i64, Option<String>, bool, bool)>(conn)
        .optional()?;
    Ok(row.map(|(id, hash, is_active, is_verified)| Credentials {
        user_id: UserId(id),
        password_hash: hash.map(PasswordHash::new),
        is_active,
        is_verified,
    }))
}

/// Stores a link token; a newer reset or email-change link kills the older ones.
fn insert_token(conn: &mut SqliteConnection, user_id: i64, token: &NewOneTimeToken) -> Result<(), StoreError> {
    if token.purpose.supersedes() {
        kill_tokens(conn, user_id, token.purpose, token.created_at)?;
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
        .execute(conn)?;
    Ok(())
}

fn insert_mail(conn: &mut SqliteConnection, mail: &OutgoingMail, now: OffsetDateTime) -> Result<(), StoreError> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::recipient.eq(mail.to.as_ref()),
            outbox::subject.eq(&mail.subject),
            outbox::text_body.eq(&mail.text),
            outbox::html_body.eq(&mail.html),
            outbox::created_at.eq(now),
            outbox::next_attempt_at.eq(Some(now)),
        ))
        .execute(conn)?;
    Ok(())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(
        &self,
        account: NewAccount,
        token: NewOneTimeToken,
        mail: OutgoingMail,
    ) -> Result<User, CreateAccountError> {
        self.write(move |conn| {
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
                .get_result::<i64>(conn)?;
            diesel::insert_into(profiles::table).values(profiles::user_id.eq(id)).execute(conn)?;
            join_group(conn, id, REGULAR_USER_GROUP)?;
            insert_token(conn, id, &token)?;
            insert_mail(conn, &mail, account.date_joined)?;
            require_user(conn, id)
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
        self.write(move |conn| {
            insert_token(conn, user_id.0, &token)?;
            mails.iter().try_for_each(|mail| insert_mail(conn, mail, token.created_at))
        })
        .await
        .map_err(Into::into)
    }

    async fn enqueue_mails(&self, mails: Vec<OutgoingMail>) -> Result<(), PortError> {
        self.write(move |conn| {
            let now = now();
            mails.iter().try_for_each(|mail| insert_mail(conn, mail, now))
        })
        .await
        .map_err(Into::into)
    }

    async fn find_credentials(&self, email: &EmailKey) -> Result<Option<Credentials>, PortError> {
        let key = email.as_str().to_owned();
        self.run(move |conn| credentials(conn, users::table.filter(users::email_key.eq(key)).into_boxed()))
            .await
            .map_err(Into::into)
    }

    async fn find_user_by_email(&self, email: &EmailKey) -> Result<Option<User>, PortError> {
        let key = email.as_str().to_owned();
        self.run(move |conn| {
            let id = users::table.filter(users::email_key.eq(key)).select(users::id).first::<i64>(conn).optional()?;
            match id {
                Some(id) => load_user(conn, id),
                None => Ok(None),
            }
        })
        .await
        .map_err(Into::into)
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, PortError> {
        self.run(move |conn| load_user(conn, id.0)).await.map_err(Into::into)
    }

    async fn confirm_email(&self, token: &TokenHash, now: OffsetDateTime) -> Result<EmailConfirmation, PortError> {
        let hash = token.as_str().to_owned();
        let outcome = self
            .write(move |conn| {
                let purposes = [TokenPurpose::VerifyEmail.as_str(), TokenPurpose::ChangeEmail.as_str()];
                let found = one_time_tokens::table
                    .filter(one_time_tokens::token_hash.eq(&hash))
                    .filter(one_time_tokens::purpose.eq_any(purposes))
                    .filter(one_time_tokens::used_at.is_null())
                    .filter(one_time_tokens::expires_at.gt(now))
                    .select((one_time_tokens::user_id, one_time_tokens::purpose, one_time_tokens::new_email))
                    .first::<(i64, String, Option<String>)>(conn)
                    .optional()?;
                let Some((user_id, purpose, new_email)) = found else { return Ok(EmailConfirmation::NotLive) };
                // Every verification link of the user is spent either way: a mailbox is proven.
                kill_tokens(conn, user_id, TokenPurpose::VerifyEmail, now)?;
                match (TokenPurpose::parse(&purpose), new_email) {
                    (Some(TokenPurpose::ChangeEmail), Some(new_email)) => {
                        let new_email = Email::from_trusted(new_email);
                        let key = new_email.key();
                        let taken = users::table
                            .filter(users::email_key.eq(key.as_str()))
                            .filter(users::id.ne(user_id))
                            .select(users::id)
                            .first::<i64>(conn)
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
                            .execute(conn)?;
                        kill_tokens(conn, user_id, TokenPurpose::ChangeEmail, now)?;
                        kill_tokens(conn, user_id, TokenPurpose::ResetPassword, now)?;
                        Ok(EmailConfirmation::Changed(require_user(conn, user_id)?))
                    }
                    _ => {
                        diesel::update(users::table.find(user_id)).set(users::is_verified.eq(true)).execute(conn)?;
                        Ok(EmailConfirmation::Verified(require_user(conn, user_id)?))
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
        self.write(move |conn| {
            if users::table.find(id.0).select(users::id).first::<i64>(conn).optional()?.is_none() {
                return Ok(None);
            }
            if let Some(first_name) = &patch.first_name {
                diesel::update(users::table.find(id.0)).set(users::first_name.eq(first_name)).execute(conn)?;
            }
            if let Some(last_name) = &patch.last_name {
                diesel::update(users::table.find(id.0)).set(users::last_name.eq(last_name)).execute(conn)?;
            }
            if let Some(phone) = &patch.phone {
                diesel::update(profiles::table.find(id.0)).set(profiles::phone.eq(phone)).execute(conn)?;
            }
            if let Some(gender) = &patch.gender {
                diesel::update(profiles::table.find(id.0)).set(profiles::gender.eq(gender)).execute(conn)?;
            }
            if let Some(bio) = &patch.bio {
                diesel::update(profiles::table.find(id.0)).set(profiles::bio.eq(bio)).execute(conn)?;
            }
            load_user(conn, id.0)
        })
        .await
        .map_err(Into::into)
    }

    async fn set_password_hash(&self, id: UserId, hash: PasswordHash) -> Result<(), PortError> {
        self.write(move |conn| {
            diesel::update(users::table.find(id.0)).set(users::password_hash.eq(hash.expose())).execute(conn)?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn find_credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>, PortError> {
        self.run(move |conn| credentials(conn, users::table.find(id.0).into_boxed())).await.map_err(Into::into)
    }

    async fn peek_token(
        &self,
        token: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<User>, PortError> {
        let hash = token.as_str().to_owned();
        self.run(move |conn| {
            let user_id =
                live_token(&hash, purpose, now).select(one_time_tokens::user_id).first::<i64>(conn).optional()?;
            user_id.map_or(Ok(None), |id| load_user(conn, id))
        })
        .await
        .map_err(Into::into)
    }

    async fn change_password(
        &self,
        id: UserId,
        hash: PasswordHash,
        keep: Option<SessionId>,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<(), PortError> {
        self.write(move |conn| {
            diesel::update(users::table.find(id.0)).set(users::password_hash.eq(hash.expose())).execute(conn)?;
            let others = sessions::table
                .filter(sessions::user_id.eq(id.0))
                .filter(sessions::id.ne(keep.map(|k| k.to_string()).unwrap_or_default()));
            revoke_sessions(conn, others, now)?;
            kill_tokens(conn, id.0, TokenPurpose::ResetPassword, now)?;
            insert_mail(conn, &notice, now)
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
        self.write(move |conn| {
            let purpose = TokenPurpose::ResetPassword;
            let Some(user_id) =
                live_token(&token, purpose, now).select(one_time_tokens::user_id).first::<i64>(conn).optional()?
            else {
                return Ok(None);
            };
            kill_tokens(conn, user_id, purpose, now)?;
            diesel::update(users::table.find(user_id))
                .set((users::password_hash.eq(hash.expose()), users::is_verified.eq(true)))
                .execute(conn)?;
            revoke_sessions(conn, sessions::table.filter(sessions::user_id.eq(user_id)), now)?;
            insert_mail(conn, &notice, now)?;
            load_user(conn, user_id)
        })
        .await
        .map_err(Into::into)
    }

    async fn delete_account(&self, id: UserId, goodbye: OutgoingMail) -> Result<bool, PortError> {
        self.write(move |conn| {
            let deleted = diesel::delete(users::table.find(id.0)).execute(conn)?;
            if deleted > 0 {
                insert_mail(conn, &goodbye, now())?;
            }
            Ok(deleted > 0)
        })
        .await
        .map_err(Into::into)
    }

    async fn upsert_superuser(&self, email: Email, hash: PasswordHash, now: OffsetDateTime) -> Result<User, PortError> {
        self.write(move |conn| {
            let key = email.key();
            let existing = users::table
                .filter(users::email_key.eq(key.as_str()))
                .select(users::id)
                .first::<i64>(conn)
                .optional()?;
            let id = match existing {
                Some(id) => id,
                None => {
                    let id = diesel::insert_into(users::table)
                        .values((
                            users::email.eq(email.as_ref()),
                            users::email_key.eq(key.as_str()),
                            users::date_joined.eq(now),
                        ))
                        .returning(users::id)
                        .get_result::<i64>(conn)?;
                    diesel::insert_into(profiles::table).values(profiles::user_id.eq(id)).execute(conn)?;
                    id
                }
            };
            diesel::update(users::table.find(id))
                .set((
                    users::password_hash.eq(hash.expose()),
                    users::is_superuser.eq(true),
                    users::is_staff.eq(true),
                    users::is_verified.eq(true),
                    users::is_active.eq(true),
                ))
                .execute(conn)?;
            join_group(conn, id, REGULAR_USER_GROUP)?;
            join_group(conn, id, ADMIN_USER_GROUP)?;
            require_user(conn, id)
        })
        .await
        .map_err(Into::into)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn start_session(&self, session: NewSession) -> Result<(), PortError> {
        self.write(move |conn| {
            let id = session.id.to_string();
            diesel::insert_into(sessions::table)
                .values((
                    sessions::id.eq(&id),
                    sessions::user_id.eq(session.user_id.0),
                    sessions::created_at.eq(session.created_at),
                    sessions::last_used_at.eq(session.created_at),
                    sessions::expires_at.eq(session.refresh.expires_at),
                    sessions::user_agent.eq(&session.client.user_agent),
                    sessions::ip.eq(&session.client.ip),
                ))
                .execute(conn)?;
            insert_refresh(conn, &id, &session.refresh, session.created_at)?;
            diesel::update(users::table.find(session.user_id.0))
                .set(users::last_login.eq(session.created_at))
                .execute(conn)?;
            if let Some(event) = &session.event {
                insert_event(conn, event, session.created_at)?;
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
        self.write(move |conn| {
            let found = refresh_tokens::table
                .inner_join(sessions::table.inner_join(users::table))
                .filter(refresh_tokens::token_hash.eq(&presented))
                .select((
                    sessions::id,
                    sessions::user_id,
                    refresh_tokens::expires_at,
                    refresh_tokens::used_at,
                    sessions::revoked_at,
                    users::is_active,
                ))
                .first::<(String, i64, OffsetDateTime, Option<OffsetDateTime>, Option<OffsetDateTime>, bool)>(conn)
                .optional()?;
            let Some((session_id, user_id, expires_at, used_at, revoked_at, is_active)) = found else {
                return Ok(Rotation::Unknown);
            };
            let parsed_session = SessionId::parse(&session_id)
                .ok_or_else(|| StoreError::Port(PortError::unexpected("a stored session id is not a UUID")))?;
            if revoked_at.is_some() || !is_active {
                return Ok(Rotation::SessionDead);
            }
            match used_at {
                Some(spent) if now - spent >= grace => {
                    revoke_sessions(conn, sessions::table.filter(sessions::id.eq(&session_id)), now)?;
                    return Ok(Rotation::Reused { user_id: UserId(user_id), session_id: parsed_session });
                }
                // A retry within the grace window rotates again and keeps the first successor.
                Some(_) => {}
                None if expires_at <= now => return Ok(Rotation::Expired),
                None => {
                    diesel::update(refresh_tokens::table.find(&presented))
                        .set(refresh_tokens::used_at.eq(now))
                        .execute(conn)?;
                }
            }
            insert_refresh(conn, &session_id, &next, now)?;
            diesel::update(sessions::table.find(&session_id))
                .set((sessions::last_used_at.eq(now), sessions::expires_at.eq(next.expires_at)))
                .execute(conn)?;
            Ok(Rotation::Rotated { user_id: UserId(user_id), session_id: parsed_session })
        })
        .await
        .map_err(Into::into)
    }

    async fn list_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<Vec<SessionInfo>, PortError> {
        self.run(move |conn| {
            let rows = sessions::table
                .filter(sessions::user_id.eq(user_id.0))
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::expires_at.gt(now))
                .order((sessions::last_used_at.desc(), sessions::created_at.desc()))
                .select((
                    sessions::id,
                    sessions::created_at,
                    sessions::last_used_at,
                    sessions::user_agent,
                    sessions::ip,
                ))
                .load::<(String, OffsetDateTime, OffsetDateTime, Option<String>, Option<String>)>(conn)?;
            rows.into_iter()
                .map(|(id, created_at, last_used_at, user_agent, ip)| {
                    let id = SessionId::parse(&id)
                        .ok_or_else(|| StoreError::Port(PortError::unexpected("a stored session id is not a UUID")))?;
                    Ok(SessionInfo { id, created_at, last_used_at, user_agent, ip })
                })
                .collect()
        })
        .await
        .map_err(Into::into)
    }

    async fn session_state(&self, id: SessionId, now: OffsetDateTime) -> Result<SessionState, PortError> {
        self.run(move |conn| {
            let found = sessions::table
                .inner_join(users::table)
                .filter(sessions::id.eq(id.to_string()))
                .select((sessions::user_id, sessions::expires_at, sessions::revoked_at, users::is_active))
                .first::<(i64, OffsetDateTime, Option<OffsetDateTime>, bool)>(conn)
                .optional()?;
            Ok(match found {
                Some((user_id, expires_at, None, true)) if expires_at > now => {
                    SessionState::Live { user_id: UserId(user_id) }
                }
                _ => SessionState::Dead,
            })
        })
        .await
        .map_err(Into::into)
    }

    async fn session_user(&self, id: SessionId, now: OffsetDateTime) -> Result<Option<User>, PortError> {
        self.run(move |conn| {
            let rows = users::table
                .inner_join(sessions::table)
                .left_join(profiles::table)
                .left_join(user_groups::table.inner_join(groups::table))
                .filter(sessions::id.eq(id.to_string()))
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::expires_at.gt(now))
                .filter(users::is_active.eq(true))
                .select((UserRow::as_select(), Option::<ProfileRow>::as_select(), groups::name.nullable()))
                .load::<(UserRow, Option<ProfileRow>, Option<String>)>(conn)?;
            Ok(user_from_rows(rows))
        })
        .await
        .map_err(Into::into)
    }

    async fn revoke_session(&self, user_id: UserId, id: SessionId, now: OffsetDateTime) -> Result<bool, PortError> {
        self.write(move |conn| {
            let target =
                sessions::table.filter(sessions::id.eq(id.to_string())).filter(sessions::user_id.eq(user_id.0));
            Ok(revoke_sessions(conn, target, now)? > 0)
        })
        .await
        .map_err(Into::into)
    }

    async fn revoke_all_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<(), PortError> {
        self.write(move |conn| {
            revoke_sessions(conn, sessions::table.filter(sessions::user_id.eq(user_id.0)), now)?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }
}

fn insert_refresh(
    conn: &mut SqliteConnection,
    session_id: &str,
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
        .execute(conn)?;
    Ok(())
}

/// Marks the selected, still-live sessions revoked; returns how many.
fn revoke_sessions<F>(conn: &mut SqliteConnection, target: F, now: OffsetDateTime) -> Result<usize, StoreError>
where
    F: diesel::query_dsl::methods::FilterDsl<diesel::dsl::IsNull<sessions::revoked_at>>,
    diesel::dsl::Filter<F, diesel::dsl::IsNull<sessions::revoked_at>>: diesel::query_builder::IntoUpdateTarget<Table = sessions::table>,
    <diesel::dsl::Filter<F, diesel::dsl::IsNull<sessions::revoked_at>> as diesel::query_builder::IntoUpdateTarget>::WhereClause:
        diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> + diesel::query_builder::QueryId,
{
    Ok(diesel::update(target.filter(sessions::revoked_at.is_null())).set(sessions::revoked_at.eq(now)).execute(conn)?)
}

#[async_trait]
impl LoginAttempts for SqliteStore {
    async fn failures_since(
        &self,
        keys: &[ThrottleKey],
        since: OffsetDateTime,
    ) -> Result<Vec<FailureWindow>, PortError> {
        let keys = keys.to_vec();
        self.run(move |conn| {
            keys.iter()
                .map(|key| {
                    // SQLite cannot take the minimum of a timestamp; the rows are few
                    // (attempts over a limit are refused before they are recorded).
                    let times = login_failures::table
                        .filter(login_failures::scope.eq(key.scope()))
                        .filter(login_failures::subject.eq(key.subject()))
                        .filter(login_failures::failed_at.ge(since))
                        .select(login_failures::failed_at)
                        .order(login_failures::failed_at)
                        .load::<OffsetDateTime>(conn)?;
                    let count = i64::try_from(times.len()).unwrap_or(i64::MAX);
                    Ok(FailureWindow { count, oldest: times.first().copied() })
                })
                .collect()
        })
        .await
        .map_err(Into::into)
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        at: OffsetDateTime,
        forget_before: OffsetDateTime,
    ) -> Result<(), PortError> {
        let keys = keys.to_vec();
        self.write(move |conn| {
            for key in &keys {
                diesel::delete(login_failures::table)
                    .filter(login_failures::scope.eq(key.scope()))
                    .filter(login_failures::subject.eq(key.subject()))
                    .filter(login_failures::failed_at.lt(forget_before))
                    .execute(conn)?;
                diesel::insert_into(login_failures::table)
                    .values((
                        login_failures::scope.eq(key.scope()),
                        login_failures::subject.eq(key.subject()),
                        login_failures::failed_at.eq(at),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn clear_failures(&self, key: &ThrottleKey) -> Result<(), PortError> {
        let key = key.clone();
        self.write(move |conn| {
            diesel::delete(login_failures::table)
                .filter(login_failures::scope.eq(key.scope()))
                .filter(login_failures::subject.eq(key.subject()))
                .execute(conn)?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<QueuedMail>, PortError> {
        self.write(move |conn| {
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
                .load::<(i64, String, String, String, String, i32)>(conn)?;
            let ids: Vec<i64> = due.iter().map(|row| row.0).collect();
            diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                .set(outbox::next_attempt_at.eq(lease_until))
                .execute(conn)?;
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
        self.write(move |conn| {
            diesel::delete(outbox::table.find(id)).execute(conn)?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn mark_failed(&self, id: i64, retry_at: Option<OffsetDateTime>, error: &str) -> Result<(), PortError> {
        let error = error.chars().take(1000).collect::<String>();
        self.write(move |conn| {
            diesel::update(outbox::table.find(id))
                .set((
                    outbox::attempts.eq(outbox::attempts + 1),
                    outbox::next_attempt_at.eq(retry_at),
                    outbox::last_error.eq(error),
                ))
                .execute(conn)?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }

    async fn backlog(&self, now: OffsetDateTime) -> Result<Backlog, PortError> {
        self.run(move |conn| {
            let pending = outbox::table.filter(outbox::next_attempt_at.is_not_null()).count().get_result(conn)?;
            let oldest = outbox::table
                .filter(outbox::next_attempt_at.is_not_null())
                .select(outbox::created_at)
                .order(outbox::id)
                .first::<OffsetDateTime>(conn)
                .optional()?;
            Ok(Backlog { pending, oldest_age_seconds: oldest.map_or(0, |at| (now - at).whole_seconds().max(0)) })
        })
        .await
        .map_err(Into::into)
    }

    async fn pending_count(&self) -> Result<i64, PortError> {
        self.run(|conn| Ok(outbox::table.filter(outbox::next_attempt_at.is_not_null()).count().get_result(conn)?))
            .await
            .map_err(Into::into)
    }
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn grants_of(&self, id: UserId) -> Result<Option<Grants>, PortError> {
        self.run(move |conn| {
            let flags = users::table
                .find(id.0)
                .select((users::is_active, users::is_superuser))
                .first::<(bool, bool)>(conn)
                .optional()?;
            let Some((is_active, is_superuser)) = flags else { return Ok(None) };
            let names = user_groups::table
                .inner_join(group_permissions::table.on(group_permissions::group_id.eq(user_groups::group_id)))
                .filter(user_groups::user_id.eq(id.0))
                .select(group_permissions::permission)
                .load::<String>(conn)?;
            let permissions = names.iter().filter_map(|n| Permission::parse(n)).collect();
            Ok(Some(Grants { is_active, is_superuser, permissions }))
        })
        .await
        .map_err(Into::into)
    }

    async fn list_users(&self, query: &UserQuery) -> Result<UserPage, PortError> {
        let query = query.clone();
        self.run(move |conn| {
            let count = filtered_users(&query).count().get_result::<i64>(conn)?;
            let ids = ordered(filtered_users(&query), query.ordering)
                .select(users::id)
                .limit(i64::from(query.page_size))
                .offset(query.offset())
                .load::<i64>(conn)?;
            let rows = users::table
                .left_join(profiles::table)
                .filter(users::id.eq_any(&ids))
                .select((UserRow::as_select(), Option::<ProfileRow>::as_select()))
                .load::<(UserRow, Option<ProfileRow>)>(conn)?;
            let mut users = assemble(conn, rows)?;
            users.sort_by_key(|user| ids.iter().position(|id| *id == user.id.0));
            Ok(UserPage { count, results: users })
        })
        .await
        .map_err(Into::into)
    }

    async fn list_groups(&self) -> Result<Vec<Group>, PortError> {
        self.run(|conn| {
            let found = groups::table.order(groups::name).load::<(i64, String)>(conn)?;
            with_permissions(conn, found)
        })
        .await
        .map_err(Into::into)
    }

    async fn get_group(&self, id: i64) -> Result<Option<Group>, PortError> {
        self.run(move |conn| {
            let found = groups::table.find(id).load::<(i64, String)>(conn)?;
            Ok(with_permissions(conn, found)?.pop())
        })
        .await
        .map_err(Into::into)
    }
}

/// Groups with their permissions, in the order given.
fn with_permissions(conn: &mut SqliteConnection, found: Vec<(i64, String)>) -> Result<Vec<Group>, StoreError> {
    let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
    let granted = group_permissions::table
        .filter(group_permissions::group_id.eq_any(&ids))
        .select((group_permissions::group_id, group_permissions::permission))
        .load::<(i64, String)>(conn)?;
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
impl AdminWrites for SqliteStore {
    async fn groups_named(&self, names: &[String]) -> Result<Vec<Group>, PortError> {
        let names = names.to_vec();
        self.run(move |conn| {
            let found =
                groups::table.filter(groups::name.eq_any(&names)).order(groups::name).load::<(i64, String)>(conn)?;
            with_permissions(conn, found)
        })
        .await
        .map_err(Into::into)
    }

    async fn admin_create_user(
        &self,
        user: AdminNewUser,
        invitation: Option<(NewOneTimeToken, OutgoingMail)>,
    ) -> Result<AdminWrite, PortError> {
        let outcome = self
            .write(move |conn| {
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
                    .get_result::<i64>(conn)?;
                diesel::insert_into(profiles::table).values(profiles::user_id.eq(id)).execute(conn)?;
                for group in &user.groups {
                    join_group(conn, id, group)?;
                }
                if let Some((token, mail)) = &invitation {
                    insert_token(conn, id, token)?;
                    insert_mail(conn, mail, user.date_joined)?;
                }
                Ok(AdminWrite::Done(Some(Box::new(require_user(conn, id)?))))
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
        let outcome = self
            .write(move |conn| {
                let demotes = changes.is_superuser == Some(false) || changes.is_active == Some(false);
                if demotes && is_last_superuser(conn, id.0)? {
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
                    .execute(conn)?;
                if found == 0 {
                    return Ok(AdminWrite::NotFound);
                }
                if let Some(groups) = &changes.groups {
                    diesel::delete(user_groups::table.filter(user_groups::user_id.eq(id.0))).execute(conn)?;
                    for group in groups {
                        join_group(conn, id.0, group)?;
                    }
                }
                if changes.is_active == Some(false) {
                    revoke_sessions(conn, sessions::table.filter(sessions::user_id.eq(id.0)), now)?;
                }
                Ok(AdminWrite::Done(load_user(conn, id.0)?.map(Box::new)))
            })
            .await;
        match outcome {
            Err(StoreError::EmailTaken) => Ok(AdminWrite::EmailTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn admin_delete_user(&self, id: UserId) -> Result<AdminWrite, PortError> {
        self.write(move |conn| {
            if is_last_superuser(conn, id.0)? {
                return Ok(AdminWrite::LastSuperuser);
            }
            let deleted = diesel::delete(users::table.find(id.0)).execute(conn)?;
            Ok(if deleted == 0 { AdminWrite::NotFound } else { AdminWrite::Done(None) })
        })
        .await
        .map_err(Into::into)
    }
    async fn create_group(&self, name: &str, permissions: &[Permission]) -> Result<Option<Group>, PortError> {
        let (name, permissions) = (name.to_owned(), permissions.to_vec());
        self.write(move |conn| {
            let id = diesel::insert_or_ignore_into(groups::table)
                .values(groups::name.eq(&name))
                .returning(groups::id)
                .get_result::<i64>(conn)
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            set_permissions(conn, id, &permissions)?;
            Ok(with_permissions(conn, vec![(id, name)])?.pop())
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
        self.write(move |conn| {
            if let Some(name) = &name {
                let taken = groups::table
                    .filter(groups::name.eq(name))
                    .filter(groups::id.ne(id))
                    .select(groups::id)
                    .first::<i64>(conn)
                    .optional()?;
                if taken.is_some() {
                    return Ok(GroupWrite::NameTaken);
                }
                diesel::update(groups::table.find(id)).set(groups::name.eq(name)).execute(conn)?;
            }
            if let Some(permissions) = &permissions {
                set_permissions(conn, id, permissions)?;
            }
            let found = groups::table.find(id).load::<(i64, String)>(conn)?;
            Ok(with_permissions(conn, found)?.pop().map_or(GroupWrite::NotFound, GroupWrite::Done))
        })
        .await
        .map_err(Into::into)
    }

    async fn delete_group(&self, id: i64) -> Result<bool, PortError> {
        self.write(move |conn| Ok(diesel::delete(groups::table.find(id)).execute(conn)? > 0)).await.map_err(Into::into)
    }
}

/// Replaces a group's permissions.
fn set_permissions(conn: &mut SqliteConnection, id: i64, permissions: &[Permission]) -> Result<(), StoreError> {
    diesel::delete(group_permissions::table.filter(group_permissions::group_id.eq(id))).execute(conn)?;
    for permission in permissions {
        diesel::insert_into(group_permissions::table)
            .values((group_permissions::group_id.eq(id), group_permissions::permission.eq(permission.as_str())))
            .execute(conn)?;
    }
    Ok(())
}

/// Whether the user is the only active superuser (the write lock is already held).
fn is_last_superuser(conn: &mut SqliteConnection, id: i64) -> Result<bool, StoreError> {
    let superusers = users::table
        .filter(users::is_superuser.eq(true))
        .filter(users::is_active.eq(true))
        .select(users::id)
        .load::<i64>(conn)?;
    Ok(superusers == [id])
}

type AuditRow = (i64, OffsetDateTime, String, Option<i64>, Option<i64>, Option<String>, Option<String>, String);

/// The events a trail query selects, before ordering and paging.
fn filtered_events(query: &AuditQuery) -> audit_events::BoxedQuery<'static, diesel::sqlite::Sqlite> {
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
impl AuditLog for SqliteStore {
    async fn record(&self, event: AuditEvent, at: OffsetDateTime) -> Result<(), PortError> {
        self.write(move |conn| insert_event(conn, &event, at)).await.map_err(Into::into)
    }

    async fn list_events(&self, query: &AuditQuery) -> Result<AuditPage, PortError> {
        let query = query.clone();
        self.run(move |conn| {
            let count = filtered_events(&query).count().get_result::<i64>(conn)?;
            let rows = filtered_events(&query)
                .order(audit_events::id.desc())
                .limit(i64::from(query.page_size))
                .offset(query.offset())
                .load::<AuditRow>(conn)?;
            Ok(AuditPage { count, results: rows.into_iter().map(audit_record).collect() })
        })
        .await
        .map_err(Into::into)
    }
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn ping(&self) -> Result<(), PortError> {
        self.run(|conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod store_contract {
    use super::SqliteStore;

    /// A fresh database file per test, migrated.
    async fn fresh() -> SqliteStore {
        let dir = std::env::temp_dir().join("gatehouse-sqlite-tests");
        let path = dir.join(format!("{}.db", uuid::Uuid::new_v4()));
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), 4).expect("opens");
        store.migrate().await.expect("migrates");
        store
    }

    gatehouse_domain::store_contract_tests!(fresh());

    #[tokio::test]
    async fn statements_are_counted() {
        use gatehouse_domain::ports::StoreHealth;
        let store = fresh().await;
        let before = store.statements_sent();
        store.ping().await.expect("answers");
        assert!(store.statements_sent() > before);
    }
}
