//! Rows as the queries read them, and the domain values they become.

use diesel::prelude::*;
use gatehouse_domain::audit::AuditRecord;
use gatehouse_domain::{Email, Profile, User, UserId};
use time::OffsetDateTime;

use crate::schema::{profiles, users};
use crate::sql_types::Utc;

#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct UserRow {
    pub id: i64,
    email: String,
    first_name: String,
    last_name: String,
    is_active: bool,
    is_staff: bool,
    is_superuser: bool,
    is_verified: bool,
    mfa_enabled: bool,
    date_joined: OffsetDateTime,
    last_login: Option<OffsetDateTime>,
}

/// A new account's row. A missing password is bound as NULL rather than
/// left to the column default, so the statement's SQL is always the same and
/// stays in the prepared-statement cache.
#[derive(Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
pub(crate) struct NewUserRow<'a> {
    pub email: &'a str,
    pub email_key: &'a str,
    pub password_hash: Option<&'a str>,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_verified: bool,
    pub date_joined: Utc,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = profiles, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ProfileRow {
    phone: Option<String>,
    gender: Option<String>,
    bio: String,
}

pub fn to_user(user: UserRow, profile: Option<ProfileRow>, groups: Vec<String>) -> User {
    let profile = profile.map_or_else(Profile::default, |p| Profile { phone: p.phone, gender: p.gender, bio: p.bio });
    User {
        id: UserId::new(user.id),
        email: Email::from_trusted(user.email),
        first_name: user.first_name,
        last_name: user.last_name,
        is_active: user.is_active,
        is_staff: user.is_staff,
        is_superuser: user.is_superuser,
        is_verified: user.is_verified,
        mfa_enabled: user.mfa_enabled,
        date_joined: user.date_joined,
        last_login: user.last_login,
        groups,
        profile,
    }
}

/// A user read with profile and groups in one query: a row per group
/// membership (at least one row). The names are sorted here rather than by
/// the query, which is cheaper for the server on the hottest read.
pub type UserWithGroupRow = (UserRow, Option<ProfileRow>, Option<String>);

pub fn user_from_rows(rows: Vec<UserWithGroupRow>) -> Option<User> {
    let mut rows = rows.into_iter();
    let (user, profile, first_group) = rows.next()?;
    let mut groups: Vec<String> = first_group.into_iter().chain(rows.filter_map(|(_, _, group)| group)).collect();
    groups.sort();
    Some(to_user(user, profile, groups))
}

pub type AuditRow = (i64, OffsetDateTime, String, Option<i64>, Option<i64>, Option<String>, Option<String>, String);

pub fn audit_record((id, at, event, user_id, actor_id, ip, user_agent, detail): AuditRow) -> AuditRecord {
    let detail = serde_json::from_str(&detail).unwrap_or_default();
    AuditRecord { id, at, event, user_id, actor_id, ip, user_agent, detail }
}
