//! Queries more than one port uses.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use gatehouse_domain::admin::{Group, Permission};
use gatehouse_domain::audit::AuditEvent;
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{Credentials, NewOneTimeToken, ThrottleKey, TokenPurpose};
use gatehouse_domain::session::NewRefreshToken;
use gatehouse_domain::user::ProfilePatch;
use gatehouse_domain::{PasswordHash, PortError, SessionId, User};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::dialect::{insert_rows, run, run_locked, Db, KeepPreparedDsl, StoreError};
use crate::rows::{user_from_rows, NewUserRow, ProfileRow, UserRow};
use crate::schema::{
    audit_events, group_permissions, groups, one_time_tokens, outbox, profiles, refresh_tokens, sessions,
    throttle_windows, user_groups, users,
};
use crate::sql_types::{Id, Utc};

pub async fn load_user(db: &mut Db<'_>, id: i64) -> Result<Option<User>, StoreError> {
    Ok(load_credentials(db, id).await?.map(|found| found.user))
}

/// A user with profile, groups and password hash, in one read.
pub async fn load_credentials(db: &mut Db<'_>, id: i64) -> Result<Option<Credentials>, StoreError> {
    let rows = run!(db, |c| credentials_of!().filter(users::id.eq(id)).load::<CredentialsRow>(c))?;
    Ok(credentials(rows))
}

/// Sets the profile fields a patch names; no statement when it names none.
pub async fn patch_profile(db: &mut Db<'_>, id: i64, patch: &ProfilePatch) -> Result<(), StoreError> {
    let (phone, gender, bio) = (profiles::phone, profiles::gender, profiles::bio);
    let fields = (patch.phone.as_ref().map(|p| phone.eq(p)), patch.gender.as_ref().map(|g| gender.eq(g)));
    let fields = (fields, patch.bio.as_ref().map(|b| bio.eq(b)));
    if patch.touches_profile() {
        run!(db, |c| diesel::update(profiles::table.find(id)).set(fields).keep_prepared().execute(c))?;
    }
    Ok(())
}

pub async fn require_user(db: &mut Db<'_>, id: i64) -> Result<User, StoreError> {
    let vanished = || StoreError::Port(PortError::unexpected("a user vanished inside its transaction"));
    load_user(db, id).await?.ok_or_else(vanished)
}

pub async fn insert_event(db: &mut Db<'_>, event: &AuditEvent, at: OffsetDateTime) -> Result<(), StoreError> {
    run!(db, |c| diesel::insert_into(audit_events::table)
        .values((
            audit_events::at.eq(Utc(at)),
            audit_events::event.eq(event.kind.as_str()),
            audit_events::user_id.eq(event.user_id.map(|u| u.get())),
            audit_events::actor_id.eq(event.actor_id.map(|u| u.get())),
            audit_events::ip.eq(&event.client.ip),
            audit_events::user_agent.eq(&event.client.user_agent),
            audit_events::detail.eq(event.detail.to_string()),
        ))
        .execute(c))?;
    Ok(())
}

/// `%` and `_` in a search are literal.
pub fn like_pattern(search: &str) -> String {
    let escaped = search.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

// The boxed list queries below are macros, not functions: each expands inside
// `run!` for one backend, where diesel knows every type the box needs.

/// The users a list query selects, before ordering and paging.
macro_rules! filtered_users {
    ($query:expr) => {{
        let query: &gatehouse_domain::admin::UserQuery = $query;
        let mut selected = users::table.into_boxed();
        if let Some(search) = &query.search {
            let pattern = $crate::queries::like_pattern(search);
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
    }};
}

/// A list query's order, with the id as tie-breaker so pages are stable;
/// users who never logged in come last either way.
macro_rules! ordered_users {
    ($selected:expr, $ordering:expr) => {{
        use gatehouse_domain::admin::UserOrderField;
        let selected = $selected;
        let ordering: gatehouse_domain::admin::UserOrdering = $ordering;
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
    }};
}

/// The events a trail query selects, before ordering and paging.
macro_rules! filtered_events {
    ($query:expr) => {{
        let query: &gatehouse_domain::audit::AuditQuery = $query;
        let mut selected = audit_events::table.into_boxed();
        if let Some(user) = query.user {
            selected = selected.filter(audit_events::user_id.eq(user.get()));
        }
        if let Some(kind) = query.event {
            selected = selected.filter(audit_events::event.eq(kind.as_str()));
        }
        selected
    }};
}

pub(crate) use {filtered_events, filtered_users, ordered_users};

/// Adds the user to the named groups in one statement; memberships already
/// held are kept, and a group that no longer exists adds no row (INSERT … SELECT).
pub async fn join_groups(db: &mut Db<'_>, user_id: i64, names: &[&str]) -> Result<(), StoreError> {
    run!(db, |c| diesel::insert_into(user_groups::table)
        .values(groups::table.filter(groups::name.eq_any(names)).select((user_id.into_sql::<BigInt>(), groups::id)))
        .into_columns((user_groups::user_id, user_groups::group_id))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// Creates the user with an empty profile and the named groups; a taken address is `EmailTaken`.
pub async fn insert_user(db: &mut Db<'_>, user: &NewUserRow<'_>, groups: &[&str]) -> Result<i64, StoreError> {
    let id = run!(db, |c| diesel::insert_into(users::table).values(user).returning(users::id).get_result::<i64>(c))
        .map_err(StoreError::on_email)?;
    run!(db, |c| diesel::insert_into(profiles::table).values(profiles::user_id.eq(id)).execute(c))?;
    join_groups(db, id, groups).await?;
    Ok(id)
}

/// Revokes the user's live sessions, all or all but `keep`.
pub async fn revoke_user_sessions(
    db: &mut Db<'_>,
    user_id: i64,
    keep: Option<SessionId>,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    Ok(run!(db, |c| diesel::update(sessions::table)
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::id.ne(Id(keep.map_or(Uuid::nil(), |k| k.get()))))
        .filter(sessions::revoked_at.is_null())
        .set(sessions::revoked_at.eq(Utc(now)))
        .keep_prepared()
        .execute(c))?)
}

/// Spends every unused token of the purpose that the user holds.
pub async fn kill_tokens(
    db: &mut Db<'_>,
    user_id: i64,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    run!(db, |c| diesel::update(one_time_tokens::table)
        .filter(one_time_tokens::user_id.eq(user_id))
        .filter(one_time_tokens::purpose.eq(purpose.as_str()))
        .filter(one_time_tokens::used_at.is_null())
        .set(one_time_tokens::used_at.eq(Utc(now)))
        .keep_prepared()
        .execute(c))?;
    Ok(())
}

/// The user and purpose of a live link token, locked until the transaction ends.
pub async fn take_live_token(
    db: &mut Db<'_>,
    hash: &str,
    purposes: &[TokenPurpose],
    now: OffsetDateTime,
) -> Result<Option<(i64, String, Option<String>)>, StoreError> {
    let purposes: Vec<&str> = purposes.iter().map(|p| p.as_str()).collect();
    let found = run_locked!(
        db,
        one_time_tokens::table
            .filter(one_time_tokens::token_hash.eq(hash))
            .filter(one_time_tokens::purpose.eq_any(&purposes))
            .filter(one_time_tokens::used_at.is_null())
            .filter(one_time_tokens::expires_at.gt(Utc(now)))
            .select((one_time_tokens::user_id, one_time_tokens::purpose, one_time_tokens::new_email)),
        |query, c| query.first::<(i64, String, Option<String>)>(c)
    );
    Ok(found.optional()?)
}

/// A user read with their password hash: a row per group membership, as for [`load_user`].
pub type CredentialsRow = (UserRow, Option<String>, Option<ProfileRow>, Option<String>);

/// What [`CredentialsRow`]s select; the users are filtered by the caller.
macro_rules! credentials_of {
    () => {{
        use $crate::rows::{ProfileRow, UserRow};
        use $crate::schema::{groups, profiles, user_groups, users};
        users::table.left_join(profiles::table).left_join(user_groups::table.inner_join(groups::table)).select((
            UserRow::as_select(),
            users::password_hash,
            Option::<ProfileRow>::as_select(),
            groups::name.nullable(),
        ))
    }};
}

pub(crate) use credentials_of;

pub fn credentials(rows: Vec<CredentialsRow>) -> Option<Credentials> {
    let password_hash = <[CredentialsRow]>::first(&rows)?.1.clone().map(PasswordHash::new);
    let user = user_from_rows(rows.into_iter().map(|(user, _, profile, group)| (user, profile, group)).collect())?;
    Some(Credentials { user, password_hash })
}

/// Stores a link token; a newer reset or email-change link kills the older ones.
pub async fn insert_token(db: &mut Db<'_>, user_id: i64, token: &NewOneTimeToken) -> Result<(), StoreError> {
    if token.purpose.supersedes() {
        kill_tokens(db, user_id, token.purpose, token.created_at).await?;
    }
    run!(db, |c| diesel::insert_into(one_time_tokens::table)
        .values((
            one_time_tokens::token_hash.eq(token.hash.as_str()),
            one_time_tokens::user_id.eq(user_id),
            one_time_tokens::purpose.eq(token.purpose.as_str()),
            one_time_tokens::new_email.eq(token.new_email.as_ref().map(AsRef::<str>::as_ref)),
            one_time_tokens::created_at.eq(Utc(token.created_at)),
            one_time_tokens::expires_at.eq(Utc(token.expires_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Queues mails in one statement.
pub async fn insert_mails(db: &mut Db<'_>, mails: &[OutgoingMail], now: OffsetDateTime) -> Result<(), StoreError> {
    let rows: Vec<_> = mails
        .iter()
        .map(|mail| {
            (
                outbox::recipient.eq(mail.to.as_ref()),
                outbox::subject.eq(&mail.subject),
                outbox::text_body.eq(&mail.text),
                outbox::html_body.eq(&mail.html),
                outbox::created_at.eq(Utc(now)),
                outbox::next_attempt_at.eq(Utc(now)),
            )
        })
        .collect();
    if !rows.is_empty() {
        insert_rows!(db, outbox::table, &rows)?;
    }
    Ok(())
}

pub async fn insert_refresh(
    db: &mut Db<'_>,
    session_id: Uuid,
    token: &NewRefreshToken,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    run!(db, |c| diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(token.hash.as_str()),
            refresh_tokens::session_id.eq(Id(session_id)),
            refresh_tokens::issued_at.eq(Utc(now)),
            refresh_tokens::expires_at.eq(Utc(token.expires_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Replaces a group's permissions.
pub async fn set_permissions(db: &mut Db<'_>, id: i64, permissions: &[Permission]) -> Result<(), StoreError> {
    run!(db, |c| diesel::delete(group_permissions::table.filter(group_permissions::group_id.eq(id))).execute(c))?;
    let rows: Vec<_> = permissions
        .iter()
        .map(|p| (group_permissions::group_id.eq(id), group_permissions::permission.eq(p.as_str())))
        .collect();
    if !rows.is_empty() {
        insert_rows!(db, group_permissions::table, &rows)?;
    }
    Ok(())
}

/// Whether the user is the only active superuser. Locks the superusers' rows
/// so two demotions at once cannot both pass.
pub async fn is_last_superuser(db: &mut Db<'_>, id: i64) -> Result<bool, StoreError> {
    let superusers = run_locked!(
        db,
        users::table.filter(users::is_superuser.eq(true)).filter(users::is_active.eq(true)).select(users::id),
        |query, c| query.load::<i64>(c)
    )?;
    Ok(superusers == [id])
}

/// Groups with their permissions, in the order given.
pub async fn with_permissions(db: &mut Db<'_>, found: Vec<(i64, String)>) -> Result<Vec<Group>, StoreError> {
    let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
    let granted = run!(db, |c| group_permissions::table
        .filter(group_permissions::group_id.eq_any(&ids))
        .select((group_permissions::group_id, group_permissions::permission))
        .load::<(i64, String)>(c))?;
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

/// Gives back one attempt under each key (never below nothing).
pub async fn release_throttle(db: &mut Db<'_>, keys: &[ThrottleKey]) -> Result<(), StoreError> {
    for key in keys {
        let row = throttle_windows::table.find((key.scope(), key.subject()));
        let hits = throttle_windows::hits;
        run!(db, |c| diesel::update(row).filter(hits.gt(0_i64)).set(hits.eq(hits - 1_i64)).keep_prepared().execute(c))?;
    }
    Ok(())
}

/// Forgets a key's attempts: the count set to nothing in a window long
/// closed, so the next attempt opens a fresh one, as if there were no row.
/// An update and not a delete: a login that succeeds rewrites the row in
/// place instead of removing it for the next attempt to insert (and index) again.
pub async fn clear_throttle(db: &mut Db<'_>, key: &ThrottleKey) -> Result<(), StoreError> {
    let row = throttle_windows::table.find((key.scope(), key.subject()));
    let closed = (throttle_windows::hits.eq(0_i64), throttle_windows::opened_at.eq(Utc(OffsetDateTime::UNIX_EPOCH)));
    run!(db, |c| diesel::update(row).set(closed).keep_prepared().execute(c))?;
    Ok(())
}
