//! Administration: permissions checked on every request from current data,
//! and the user and group queries of the admin API.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};
use time::Duration;

use crate::audit::{AuditEvent, AuditKind, AuditPage, AuditQuery};
use crate::auth::Principal;
use crate::email::Email;
use crate::error::{FieldErrors, PortError, NON_FIELD_ERRORS};
use crate::mail::{self, Links};
use crate::password::Password;
use crate::ports::{
    AccountStore, AdminNewUser, AdminStore, AdminUserChanges, AdminWrite, AdminWrites, AuditLog, Clock, GroupWrite,
    NewOneTimeToken, PasswordHasher, Random, SessionStore, TokenPurpose,
};
use crate::session::ClientInfo;
use crate::user::{User, UserId, ADMIN_USER_GROUP, REGULAR_USER_GROUP};

/// The code names of what administrators may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    UsersView,
    UsersAdd,
    UsersChange,
    UsersDelete,
    GroupsView,
    GroupsChange,
    AuditView,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Self::UsersView,
        Self::UsersAdd,
        Self::UsersChange,
        Self::UsersDelete,
        Self::GroupsView,
        Self::GroupsChange,
        Self::AuditView,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UsersView => "users.view",
            Self::UsersAdd => "users.add",
            Self::UsersChange => "users.change",
            Self::UsersDelete => "users.delete",
            Self::GroupsView => "groups.view",
            Self::GroupsChange => "groups.change",
            Self::AuditView => "audit.view",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }
}

/// What a user may do right now: read fresh on every request, so a revoked
/// right is gone on the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub is_active: bool,
    pub is_superuser: bool,
    /// The union of the user's groups' permissions.
    pub permissions: BTreeSet<Permission>,
}

impl Grants {
    /// A superuser holds every permission; `is_staff` alone grants none.
    pub fn allows(&self, permission: Permission) -> bool {
        self.is_active && (self.is_superuser || self.permissions.contains(&permission))
    }
}

/// A group and its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub permissions: Vec<Permission>,
}

/// Fields the user list may be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOrderField {
    Email,
    DateJoined,
    LastLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserOrdering {
    pub field: UserOrderField,
    pub descending: bool,
}

impl UserOrdering {
    /// `email`, `date_joined` or `last_login`, with `-` for descending.
    pub fn parse(raw: &str) -> Option<Self> {
        let (descending, name) = raw.strip_prefix('-').map_or((false, raw), |rest| (true, rest));
        let field = match name {
            "email" => UserOrderField::Email,
            "date_joined" => UserOrderField::DateJoined,
            "last_login" => UserOrderField::LastLogin,
            _ => return None,
        };
        Some(Self { field, descending })
    }
}

impl Default for UserOrdering {
    fn default() -> Self {
        Self { field: UserOrderField::DateJoined, descending: true }
    }
}

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// One page of the user list, filtered and ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    /// Case-insensitive substring of email, first or last name; `%` and `_` are literal.
    pub search: Option<String>,
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_staff: Option<bool>,
    pub ordering: UserOrdering,
    /// From 1.
    pub page: u32,
    pub page_size: u32,
}

impl Default for UserQuery {
    fn default() -> Self {
        Self {
            search: None,
            is_active: None,
            is_verified: None,
            is_staff: None,
            ordering: UserOrdering::default(),
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl UserQuery {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }
}

/// Raw query-string values, before the list rules are applied.
#[derive(Debug, Clone, Default)]
pub struct RawUserQuery<'a> {
    pub search: Option<&'a str>,
    pub is_active: Option<&'a str>,
    pub is_verified: Option<&'a str>,
    pub is_staff: Option<&'a str>,
    pub ordering: Option<&'a str>,
    pub page: Option<&'a str>,
    pub page_size: Option<&'a str>,
}

fn parse_flag(errors: &mut FieldErrors, field: &str, raw: Option<&str>) -> Option<bool> {
    match raw? {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            errors.add(field, "Must be true or false.");
            None
        }
    }
}

fn parse_positive(errors: &mut FieldErrors, field: &str, raw: Option<&str>, default: u32) -> u32 {
    match raw.map(str::parse::<u32>) {
        None => default,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            errors.add(field, "Must be a whole number of at least 1.");
            default
        }
    }
}

impl UserQuery {
    /// Applies the list rules; a page size over the maximum is capped, not refused.
    pub fn parse(raw: RawUserQuery<'_>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let ordering = match raw.ordering.filter(|o| !o.is_empty()) {
            None => UserOrdering::default(),
            Some(o) => UserOrdering::parse(o).unwrap_or_else(|| {
                errors.add("ordering", "Order by email, date_joined or last_login, with - for descending.");
                UserOrdering::default()
            }),
        };
        let query = Self {
            search: raw.search.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned),
            is_active: parse_flag(&mut errors, "is_active", raw.is_active),
            is_verified: parse_flag(&mut errors, "is_verified", raw.is_verified),
            is_staff: parse_flag(&mut errors, "is_staff", raw.is_staff),
            ordering,
            page: parse_positive(&mut errors, "page", raw.page, 1),
            page_size: parse_positive(&mut errors, "page_size", raw.page_size, DEFAULT_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        errors.finish(query)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// Matches over all pages.
    pub count: i64,
    pub results: Vec<User>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the caller lacks the permission")]
    PermissionDenied,
    #[error("the request breaks a rule")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The admin use cases.
#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn AdminStore>,
    writes: Arc<dyn AdminWrites>,
    accounts: Arc<dyn AccountStore>,
    sessions: Arc<dyn SessionStore>,
    audit: Arc<dyn AuditLog>,
    hasher: Arc<dyn PasswordHasher>,
    random: Arc<dyn Random>,
    clock: Arc<dyn Clock>,
    links: Links,
    /// How long an invitation link lives.
    invitation_ttl: Duration,
}

/// The adapters administration runs on.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct AdminPorts {
    pub store: Arc<dyn AdminStore>,
    pub writes: Arc<dyn AdminWrites>,
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub audit: Arc<dyn AuditLog>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub random: Arc<dyn Random>,
    pub clock: Arc<dyn Clock>,
}

/// An account as an administrator asks for it, fields parsed.
#[derive(Debug, Clone)]
pub struct AdminCreateRequest {
    pub email: Email,
    /// Checked against the policy by the service, with the names.
    pub password: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_verified: bool,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl AdminService {
    pub fn new(ports: AdminPorts, links: Links, invitation_ttl: Duration) -> Self {
        Self {
            store: ports.store,
            writes: ports.writes,
            accounts: ports.accounts,
            sessions: ports.sessions,
            audit: ports.audit,
            hasher: ports.hasher,
            random: ports.random,
            clock: ports.clock,
            links,
            invitation_ttl,
        }
    }

    /// Records what an administrator did; a trail that cannot be written is logged, not fatal.
    async fn audit(&self, caller: Principal, target: Option<UserId>, client: &ClientInfo, detail: Value) {
        let event = AuditEvent::new(AuditKind::AdminAction, target, client).by(caller.user_id).with_detail(detail);
        if let Err(error) = self.audit.record(event, self.clock.now()).await {
            tracing::warn!(error = &error as &dyn std::error::Error, "an audit event could not be recorded");
        }
    }

    /// The audit trail, newest first.
    pub async fn list_audit(
        &self,
        caller: Principal,
        user: Option<&str>,
        event: Option<&str>,
        page: Option<&str>,
        page_size: Option<&str>,
    ) -> Result<(AuditQuery, AuditPage), AdminError> {
        self.require(caller, Permission::AuditView).await?;
        let query = AuditQuery::parse(user, event, page, page_size).map_err(AdminError::Invalid)?;
        let page = self.audit.list_events(&query).await?;
        Ok((query, page))
    }

    /// Nobody grants what they do not hold: every permission of a group being
    /// added must be the caller's, and unknown group names are refused.
    async fn check_grantable(&self, grants: &Grants, current: &[String], wanted: &[String]) -> Result<(), AdminError> {
        let added: Vec<String> = wanted.iter().filter(|name| !current.contains(name)).cloned().collect();
        if added.is_empty() {
            return Ok(());
        }
        let found = self.writes.groups_named(&added).await?;
        let mut errors = FieldErrors::new();
        for name in &added {
            if !found.iter().any(|group| &group.name == name) {
                errors.add("groups", format!("There is no group named {name:?}."));
            }
        }
        errors.finish(()).map_err(AdminError::Invalid)?;
        let exceeds = found.iter().flat_map(|group| &group.permissions).any(|p| !grants.allows(*p));
        if exceeds {
            return Err(AdminError::PermissionDenied);
        }
        Ok(())
    }

    /// Creates an account; without a password, the user is invited by mail to
    /// choose one through the reset flow.
    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn create_user(
        &self,
        caller: Principal,
        request: AdminCreateRequest,
        client: &ClientInfo,
    ) -> Result<User, AdminError> {
        let grants = self.require(caller, Permission::UsersAdd).await?;
        let mut groups = request.groups.clone();
        if !groups.iter().any(|g| g == REGULAR_USER_GROUP) {
            groups.push(REGULAR_USER_GROUP.to_owned());
        }
        self.check_grantable(&grants, &[REGULAR_USER_GROUP.to_owned()], &groups).await?;
        let password_hash = match &request.password {
            Some(raw) => {
                let personal =
                    [request.email.as_ref(), request.email.local_part(), &request.first_name, &request.last_name];
                let password = Password::parse(raw, &personal).map_err(|rules| {
                    let mut errors = FieldErrors::new();
                    rules.iter().for_each(|rule| errors.add("password", rule.to_string()));
                    AdminError::Invalid(errors)
                })?;
                Some(self.hasher.hash(password.plain()).await?)
            }
            None => None,
        };
        let now = self.clock.now();
        let invited = password_hash.is_none();
        let invitation = invited.then(|| {
            let token = self.random.token();
            let record = NewOneTimeToken {
                hash: token.hash(),
                purpose: TokenPurpose::ResetPassword,
                new_email: None,
                created_at: now,
                expires_at: now + self.invitation_ttl,
            };
            (record, mail::invitation(&request.email, &self.links, &token))
        });
        let user = AdminNewUser {
            email: request.email,
            password_hash,
            first_name: request.first_name,
            last_name: request.last_name,
            is_active: request.is_active,
            is_staff: request.is_staff,
            is_verified: request.is_verified,
            groups,
            date_joined: now,
        };
        match self.writes.admin_create_user(user, invitation).await? {
            AdminWrite::Done(Some(user)) => {
                tracing::info!(user_id = %user.id, "user created by an administrator");
                let detail = json!({
                    "action": "user.create", "email": user.email.as_ref(), "groups": user.groups, "invited": invited
                });
                self.audit(caller, Some(user.id), client, detail).await;
                Ok(*user)
            }
            AdminWrite::EmailTaken => {
                Err(AdminError::Invalid(FieldErrors::single("email", "A user with this email already exists.")))
            }
            other => Err(AdminError::Port(PortError::unexpected(format!("unexpected create outcome {other:?}")))),
        }
    }

    /// Changes a user; making or unmaking a superuser takes a superuser.
    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn update_user(
        &self,
        caller: Principal,
        raw_id: &str,
        changes: AdminUserChanges,
        client: &ClientInfo,
    ) -> Result<User, AdminError> {
        let grants = self.require(caller, Permission::UsersChange).await?;
        let id = raw_id.parse().map(UserId).map_err(|_| AdminError::NotFound)?;
        let current = self.accounts.get_user(id).await?.ok_or(AdminError::NotFound)?;
        if changes.is_superuser.is_some_and(|wanted| wanted != current.is_superuser) && !grants.is_superuser {
            return Err(AdminError::PermissionDenied);
        }
        if let Some(groups) = &changes.groups {
            self.check_grantable(&grants, &current.groups, groups).await?;
        }
        let detail = json!({ "action": "user.update", "changes": describe(&changes) });
        match self.writes.admin_update_user(id, changes, self.clock.now()).await? {
            AdminWrite::Done(Some(user)) => {
                tracing::info!(user_id = %user.id, "user changed by an administrator");
                self.audit(caller, Some(user.id), client, detail).await;
                Ok(*user)
            }
            AdminWrite::Done(None) | AdminWrite::NotFound => Err(AdminError::NotFound),
            AdminWrite::EmailTaken => {
                Err(AdminError::Invalid(FieldErrors::single("email", "A user with this email already exists.")))
            }
            AdminWrite::LastSuperuser => Err(AdminError::Invalid(FieldErrors::single(
                NON_FIELD_ERRORS,
                "This is the last active superuser; make another one first.",
            ))),
        }
    }

    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn delete_user(&self, caller: Principal, raw_id: &str, client: &ClientInfo) -> Result<(), AdminError> {
        self.require(caller, Permission::UsersDelete).await?;
        let id = raw_id.parse().map(UserId).map_err(|_| AdminError::NotFound)?;
        match self.writes.admin_delete_user(id).await? {
            AdminWrite::Done(_) => {
                tracing::info!(user_id = %id, "user deleted by an administrator");
                self.audit(caller, Some(id), client, json!({ "action": "user.delete" })).await;
                Ok(())
            }
            AdminWrite::NotFound | AdminWrite::EmailTaken => Err(AdminError::NotFound),
            AdminWrite::LastSuperuser => Err(AdminError::Invalid(FieldErrors::single(
                NON_FIELD_ERRORS,
                "This is the last active superuser; make another one first.",
            ))),
        }
    }

    /// Ends every session of a user at once.
    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn revoke_sessions(
        &self,
        caller: Principal,
        raw_id: &str,
        client: &ClientInfo,
    ) -> Result<(), AdminError> {
        self.require(caller, Permission::UsersChange).await?;
        let id = raw_id.parse().map(UserId).map_err(|_| AdminError::NotFound)?;
        self.accounts.get_user(id).await?.ok_or(AdminError::NotFound)?;
        self.sessions.revoke_all_sessions(id, self.clock.now()).await?;
        self.audit(caller, Some(id), client, json!({ "action": "user.sessions_revoke" })).await;
        Ok(())
    }

    /// Fails unless the caller holds the permission now.
    pub async fn require(&self, caller: Principal, permission: Permission) -> Result<Grants, AdminError> {
        let grants = self.store.grants_of(caller.user_id).await?.unwrap_or_default();
        if grants.allows(permission) {
            Ok(grants)
        } else {
            Err(AdminError::PermissionDenied)
        }
    }

    /// The permission is checked before the query, so a caller without it
    /// learns nothing from validation errors.
    pub async fn list_users(
        &self,
        caller: Principal,
        raw: RawUserQuery<'_>,
    ) -> Result<(UserQuery, UserPage), AdminError> {
        self.require(caller, Permission::UsersView).await?;
        let query = UserQuery::parse(raw).map_err(AdminError::Invalid)?;
        let page = self.store.list_users(&query).await?;
        Ok((query, page))
    }

    /// `raw_id` comes from the path; one that is not an integer names no user.
    pub async fn get_user(&self, caller: Principal, raw_id: &str) -> Result<User, AdminError> {
        self.require(caller, Permission::UsersView).await?;
        let id = raw_id.parse().map(UserId).map_err(|_| AdminError::NotFound)?;
        self.accounts.get_user(id).await?.ok_or(AdminError::NotFound)
    }

    /// Group names are 1 to 150 characters; permissions must be known code names.
    fn parse_group(
        name: Option<&str>,
        permissions: Option<&[String]>,
    ) -> Result<(Option<String>, Option<Vec<Permission>>), AdminError> {
        let mut errors = FieldErrors::new();
        let name = name.map(str::trim).map(str::to_owned);
        if name.as_ref().is_some_and(|n| n.is_empty() || n.chars().count() > 150) {
            errors.add("name", "A group name has 1 to 150 characters.");
        }
        let permissions = permissions.map(|codes| {
            let mut parsed: Vec<Permission> = codes
                .iter()
                .filter_map(|code| {
                    let permission = Permission::parse(code);
                    if permission.is_none() {
                        errors.add("permissions", format!("There is no permission named {code:?}."));
                    }
                    permission
                })
                .collect();
            parsed.sort();
            parsed.dedup();
            parsed
        });
        errors.finish((name, permissions)).map_err(AdminError::Invalid)
    }

    /// Nobody hands out a permission they do not hold.
    fn check_holds(grants: &Grants, permissions: Option<&[Permission]>) -> Result<(), AdminError> {
        if permissions.unwrap_or_default().iter().all(|p| grants.allows(*p)) {
            Ok(())
        } else {
            Err(AdminError::PermissionDenied)
        }
    }

    fn built_in(group: &Group) -> bool {
        group.name == REGULAR_USER_GROUP || group.name == ADMIN_USER_GROUP
    }

    fn name_taken() -> AdminError {
        AdminError::Invalid(FieldErrors::single("name", "A group with this name already exists."))
    }

    fn built_in_refused() -> AdminError {
        AdminError::Invalid(FieldErrors::single(NON_FIELD_ERRORS, "The built-in groups cannot be changed or deleted."))
    }

    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn create_group(
        &self,
        caller: Principal,
        name: &str,
        permissions: &[String],
        client: &ClientInfo,
    ) -> Result<Group, AdminError> {
        let grants = self.require(caller, Permission::GroupsChange).await?;
        let (name, permissions) = Self::parse_group(Some(name), Some(permissions))?;
        Self::check_holds(&grants, permissions.as_deref())?;
        let (name, permissions) = (name.unwrap_or_default(), permissions.unwrap_or_default());
        let group = self.writes.create_group(&name, &permissions).await?.ok_or_else(Self::name_taken)?;
        self.audit(caller, None, client, group_detail("group.create", &group)).await;
        Ok(group)
    }

    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn update_group(
        &self,
        caller: Principal,
        raw_id: &str,
        name: Option<&str>,
        permissions: Option<&[String]>,
        client: &ClientInfo,
    ) -> Result<Group, AdminError> {
        let grants = self.require(caller, Permission::GroupsChange).await?;
        let id = raw_id.parse().map_err(|_| AdminError::NotFound)?;
        let (name, permissions) = Self::parse_group(name, permissions)?;
        let current = self.store.get_group(id).await?.ok_or(AdminError::NotFound)?;
        if Self::built_in(&current) {
            return Err(Self::built_in_refused());
        }
        Self::check_holds(&grants, permissions.as_deref())?;
        match self.writes.update_group(id, name, permissions).await? {
            GroupWrite::Done(group) => {
                self.audit(caller, None, client, group_detail("group.update", &group)).await;
                Ok(group)
            }
            GroupWrite::NotFound => Err(AdminError::NotFound),
            GroupWrite::NameTaken => Err(Self::name_taken()),
        }
    }

    #[tracing::instrument(skip_all, fields(actor = %caller.user_id))]
    pub async fn delete_group(&self, caller: Principal, raw_id: &str, client: &ClientInfo) -> Result<(), AdminError> {
        self.require(caller, Permission::GroupsChange).await?;
        let id = raw_id.parse().map_err(|_| AdminError::NotFound)?;
        let current = self.store.get_group(id).await?.ok_or(AdminError::NotFound)?;
        if Self::built_in(&current) {
            return Err(Self::built_in_refused());
        }
        if self.writes.delete_group(id).await? {
            self.audit(caller, None, client, group_detail("group.delete", &current)).await;
            Ok(())
        } else {
            Err(AdminError::NotFound)
        }
    }

    pub async fn list_groups(&self, caller: Principal) -> Result<Vec<Group>, AdminError> {
        self.require(caller, Permission::GroupsView).await?;
        Ok(self.store.list_groups().await?)
    }

    pub async fn get_group(&self, caller: Principal, raw_id: &str) -> Result<Group, AdminError> {
        self.require(caller, Permission::GroupsView).await?;
        let id = raw_id.parse().map_err(|_| AdminError::NotFound)?;
        self.store.get_group(id).await?.ok_or(AdminError::NotFound)
    }
}

/// What an administrator changed, for the trail: values, never secrets.
fn describe(changes: &AdminUserChanges) -> Value {
    let mut described = serde_json::Map::new();
    if let Some(email) = &changes.email {
        described.insert("email".into(), json!(email.as_ref()));
    }
    if let Some(name) = &changes.first_name {
        described.insert("first_name".into(), json!(name));
    }
    if let Some(name) = &changes.last_name {
        described.insert("last_name".into(), json!(name));
    }
    for (field, flag) in [
        ("is_active", changes.is_active),
        ("is_staff", changes.is_staff),
        ("is_superuser", changes.is_superuser),
        ("is_verified", changes.is_verified),
    ] {
        if let Some(flag) = flag {
            described.insert(field.into(), json!(flag));
        }
    }
    if let Some(groups) = &changes.groups {
        described.insert("groups".into(), json!(groups));
    }
    Value::Object(described)
}

fn group_detail(action: &str, group: &Group) -> Value {
    let permissions: Vec<&str> = group.permissions.iter().map(|p| p.as_str()).collect();
    json!({ "action": action, "group_id": group.id, "name": group.name, "permissions": permissions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{
        MockAccountStore, MockAdminStore, MockAdminWrites, MockAuditLog, MockClock, MockPasswordHasher, MockRandom,
        MockSessionStore,
    };

    fn service(store: MockAdminStore, accounts: MockAccountStore) -> AdminService {
        service_with(store, accounts, MockAdminWrites::new(), MockSessionStore::new())
    }

    fn service_with(
        store: MockAdminStore,
        accounts: MockAccountStore,
        writes: MockAdminWrites,
        sessions: MockSessionStore,
    ) -> AdminService {
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| time::macros::datetime!(2026-11-21 10:00 UTC));
        let mut random = MockRandom::new();
        random.expect_token().returning(|| crate::OpaqueToken::new("invite-token".into()));
        let mut audit = MockAuditLog::new();
        audit.expect_record().returning(|_, _| Ok(()));
        let ports = AdminPorts {
            store: Arc::new(store),
            writes: Arc::new(writes),
            accounts: Arc::new(accounts),
            sessions: Arc::new(sessions),
            audit: Arc::new(audit),
            hasher: Arc::new(MockPasswordHasher::new()),
            random: Arc::new(random),
            clock: Arc::new(clock),
        };
        AdminService::new(ports, Links::new("https://app.example.com"), Duration::hours(24))
    }
    use crate::session::SessionId;

    fn caller() -> Principal {
        Principal { user_id: UserId(7), session_id: SessionId(uuid::Uuid::from_u128(1)) }
    }

    fn grants(is_superuser: bool, permissions: &[Permission]) -> Grants {
        Grants { is_active: true, is_superuser, permissions: permissions.iter().copied().collect() }
    }

    #[test]
    fn superusers_hold_everything_and_staff_nothing() {
        assert!(grants(true, &[]).allows(Permission::AuditView));
        assert!(!grants(false, &[]).allows(Permission::UsersView));
        assert!(grants(false, &[Permission::UsersView]).allows(Permission::UsersView));
        assert!(!grants(false, &[Permission::UsersView]).allows(Permission::UsersChange));
        let disabled = Grants { is_active: false, ..grants(true, &[]) };
        assert!(!disabled.allows(Permission::UsersView));
    }

    #[test]
    fn permissions_round_trip_their_code_names() {
        for permission in Permission::ALL {
            assert_eq!(Permission::parse(permission.as_str()), Some(permission));
        }
        assert_eq!(Permission::parse("users.fly"), None);
    }

    #[test]
    fn the_query_follows_the_list_rules() {
        let query = UserQuery::parse(RawUserQuery {
            search: Some(" ada "),
            is_active: Some("true"),
            ordering: Some("-last_login"),
            page: Some("3"),
            page_size: Some("500"),
            ..RawUserQuery::default()
        })
        .unwrap();
        assert_eq!(query.search.as_deref(), Some("ada"));
        assert_eq!(query.is_active, Some(true));
        assert_eq!(query.ordering, UserOrdering { field: UserOrderField::LastLogin, descending: true });
        assert_eq!((query.page, query.page_size), (3, 100));
        assert_eq!(query.offset(), 200);
        let errors = UserQuery::parse(RawUserQuery {
            is_staff: Some("yes"),
            ordering: Some("password"),
            page: Some("0"),
            page_size: Some("x"),
            ..RawUserQuery::default()
        })
        .unwrap_err();
        for field in ["is_staff", "ordering", "page", "page_size"] {
            assert!(errors.contains(field), "{field}");
        }
        assert_eq!(UserQuery::parse(RawUserQuery::default()).unwrap(), UserQuery::default());
    }

    #[tokio::test]
    async fn every_call_checks_the_permission_from_current_data() {
        let mut store = MockAdminStore::new();
        let mut calls = 0;
        store.expect_grants_of().times(2).returning(move |_| {
            calls += 1;
            Ok(Some(if calls == 1 { grants(false, &[Permission::UsersView]) } else { grants(false, &[]) }))
        });
        store.expect_list_users().times(1).returning(|_| Ok(UserPage { count: 0, results: vec![] }));
        let service = service(store, MockAccountStore::new());
        assert!(service.list_users(caller(), RawUserQuery::default()).await.is_ok());
        let revoked = service.list_users(caller(), RawUserQuery::default()).await;
        assert!(matches!(revoked, Err(AdminError::PermissionDenied)));
    }

    #[tokio::test]
    async fn a_missing_user_or_group_is_not_found() {
        let mut store = MockAdminStore::new();
        store.expect_grants_of().returning(|_| Ok(Some(grants(true, &[]))));
        store.expect_get_group().returning(|_| Ok(None));
        let mut accounts = MockAccountStore::new();
        accounts.expect_get_user().returning(|_| Ok(None));
        let service = service(store, accounts);
        assert!(matches!(service.get_user(caller(), "99").await, Err(AdminError::NotFound)));
        assert!(matches!(service.get_user(caller(), "abc").await, Err(AdminError::NotFound)));
        assert!(matches!(service.get_group(caller(), "99").await, Err(AdminError::NotFound)));
    }

    fn target() -> User {
        User {
            id: UserId(2),
            email: Email::parse("ada@example.com").unwrap(),
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
            is_staff: false,
            is_superuser: false,
            is_verified: true,
            date_joined: time::macros::datetime!(2026-11-21 10:00 UTC),
            last_login: None,
            groups: vec![REGULAR_USER_GROUP.into()],
            profile: crate::Profile::default(),
        }
    }

    fn admin_service(caller_grants: Grants, writes: MockAdminWrites) -> AdminService {
        let mut store = MockAdminStore::new();
        store.expect_grants_of().returning(move |_| Ok(Some(caller_grants.clone())));
        let mut accounts = MockAccountStore::new();
        accounts.expect_get_user().returning(|_| Ok(Some(target())));
        service_with(store, accounts, writes, MockSessionStore::new())
    }

    fn auditors_group() -> Group {
        Group { id: 3, name: "Auditors".into(), permissions: vec![Permission::UsersView, Permission::AuditView] }
    }

    #[tokio::test]
    async fn nobody_grants_a_permission_they_do_not_hold() {
        let mut writes = MockAdminWrites::new();
        writes.expect_groups_named().returning(|_| Ok(vec![auditors_group()]));
        writes.expect_admin_update_user().never();
        let service = admin_service(grants(false, &[Permission::UsersChange, Permission::UsersView]), writes);
        let changes = AdminUserChanges { groups: Some(vec!["Auditors".into()]), ..AdminUserChanges::default() };
        assert!(matches!(
            service.update_user(caller(), "2", changes, &ClientInfo::default()).await,
            Err(AdminError::PermissionDenied)
        ));
    }

    #[tokio::test]
    async fn a_group_within_the_callers_permissions_may_be_granted() {
        let mut writes = MockAdminWrites::new();
        writes.expect_groups_named().returning(|_| Ok(vec![auditors_group()]));
        writes.expect_admin_update_user().times(1).returning(|_, _, _| Ok(AdminWrite::Done(Some(Box::new(target())))));
        let held = [Permission::UsersChange, Permission::UsersView, Permission::AuditView];
        let service = admin_service(grants(false, &held), writes);
        let changes = AdminUserChanges { groups: Some(vec!["Auditors".into()]), ..AdminUserChanges::default() };
        assert!(service.update_user(caller(), "2", changes, &ClientInfo::default()).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_groups_are_refused_by_name() {
        let mut writes = MockAdminWrites::new();
        writes.expect_groups_named().returning(|_| Ok(vec![]));
        let service = admin_service(grants(true, &[]), writes);
        let changes = AdminUserChanges { groups: Some(vec!["Wizards".into()]), ..AdminUserChanges::default() };
        let Err(AdminError::Invalid(errors)) =
            service.update_user(caller(), "2", changes, &ClientInfo::default()).await
        else {
            panic!("expected a validation error");
        };
        assert!(errors.contains("groups"));
    }

    #[tokio::test]
    async fn only_a_superuser_makes_a_superuser() {
        let mut writes = MockAdminWrites::new();
        writes.expect_admin_update_user().never();
        let service = admin_service(grants(false, &Permission::ALL), writes);
        let changes = AdminUserChanges { is_superuser: Some(true), ..AdminUserChanges::default() };
        assert!(matches!(
            service.update_user(caller(), "2", changes, &ClientInfo::default()).await,
            Err(AdminError::PermissionDenied)
        ));
    }

    #[tokio::test]
    async fn the_last_superuser_is_reported_as_a_validation_error() {
        let mut writes = MockAdminWrites::new();
        writes.expect_admin_delete_user().returning(|_| Ok(AdminWrite::LastSuperuser));
        let service = admin_service(grants(true, &[]), writes);
        assert!(matches!(
            service.delete_user(caller(), "2", &ClientInfo::default()).await,
            Err(AdminError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_user_created_without_a_password_is_invited() {
        let mut writes = MockAdminWrites::new();
        writes.expect_groups_named().never();
        writes
            .expect_admin_create_user()
            .withf(|user, invitation| {
                user.password_hash.is_none()
                    && user.groups == [REGULAR_USER_GROUP]
                    && invitation.as_ref().is_some_and(|(token, mail)| {
                        token.purpose == TokenPurpose::ResetPassword
                            && token.expires_at - token.created_at == Duration::hours(24)
                            && mail.text.contains("reset-password?token=invite-token")
                    })
            })
            .times(1)
            .returning(|_, _| Ok(AdminWrite::Done(Some(Box::new(target())))));
        let service = admin_service(grants(false, &[Permission::UsersAdd]), writes);
        let request = AdminCreateRequest {
            email: Email::parse("ada@example.com").unwrap(),
            password: None,
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
            is_staff: false,
            is_verified: false,
            groups: vec![],
        };
        assert!(service.create_user(caller(), request, &ClientInfo::default()).await.is_ok());
    }
}
