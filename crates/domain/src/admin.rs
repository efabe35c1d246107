//! Administration: permissions checked on every request from current data,
//! and the user and group queries of the admin API.

mod model;
mod query;
#[cfg(test)]
mod tests;

pub use model::{Grants, Group, Permission};
pub(crate) use query::parse_positive;
pub use query::{RawUserQuery, UserOrderField, UserOrdering, UserPage, UserQuery, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

use std::sync::Arc;

use serde_json::{json, Value};
use time::Duration;

use crate::audit::{record_or_warn, AuditEvent, AuditKind, AuditPage, AuditQuery};
use crate::auth::Principal;
use crate::email::Email;
use crate::error::{FieldErrors, PortError, NON_FIELD_ERRORS};
use crate::mail::{self, Links};
use crate::mfa::{MfaChange, MfaStore};
use crate::password::Password;
use crate::ports::{
    AccountStore, AdminNewUser, AdminStore, AdminUserChanges, AdminWrite, AdminWrites, AuditLog, Clock, GroupWrite,
    NewOneTimeToken, PasswordHasher, Random, SessionStore, TokenPurpose,
};
use crate::session::ClientInfo;
use crate::user::{single_line, ProfileRule, User, UserId, ADMIN_USER_GROUP, REGULAR_USER_GROUP};

/// The longest group name, as Django's `auth_group.name`.
pub const MAX_GROUP_NAME_CHARS: usize = 150;

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
    mfa: Arc<dyn MfaStore>,
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
    pub mfa: Arc<dyn MfaStore>,
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
            mfa: ports.mfa,
            links,
            invitation_ttl,
        }
    }

    /// Records what an administrator did; a trail that cannot be written is logged, not fatal.
    async fn audit(&self, caller: Principal, target: Option<UserId>, client: &ClientInfo, detail: Value) {
        let event = AuditEvent::new(AuditKind::AdminAction, target, client).by(caller.user_id).with_detail(detail);
        record_or_warn(self.audit.as_ref(), event, self.clock.now()).await;
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
        // No group can be named with a control character: those are not looked up.
        let storable: Vec<String> =
            added.iter().filter(|name| single_line(name, usize::MAX).is_ok()).cloned().collect();
        let found = if storable.is_empty() { Vec::new() } else { self.writes.groups_named(&storable).await? };
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
                let password = Password::parse(raw, &personal)
                    .map_err(|rules| AdminError::Invalid(FieldErrors::broken("password", &rules)))?;
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
        let id = raw_id.parse().map(UserId::new).map_err(|_| AdminError::NotFound)?;
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
        let id = raw_id.parse().map(UserId::new).map_err(|_| AdminError::NotFound)?;
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
        let id = raw_id.parse().map(UserId::new).map_err(|_| AdminError::NotFound)?;
        self.accounts.get_user(id).await?.ok_or(AdminError::NotFound)?;
        self.sessions.revoke_all_sessions(id, self.clock.now()).await?;
        self.audit(caller, Some(id), client, json!({ "action": "user.sessions_revoke" })).await;
        Ok(())
    }

    /// Turns a user's two-factor authentication off (a lost phone) and
    /// mails them a notice; a user without it is left as they are.
    pub async fn reset_mfa(&self, caller: Principal, raw_id: &str, client: &ClientInfo) -> Result<(), AdminError> {
        self.require(caller, Permission::UsersChange).await?;
        let id = raw_id.parse().map(UserId::new).map_err(|_| AdminError::NotFound)?;
        let user = self.accounts.get_user(id).await?.ok_or(AdminError::NotFound)?;
        let change = MfaChange {
            mail: mail::mfa_disabled(&user.email, &self.links),
            event: AuditEvent::new(AuditKind::MfaDisabled, Some(id), client)
                .by(caller.user_id)
                .with_detail(json!({ "action": "user.mfa_reset" })),
        };
        self.mfa.remove_totp(id, change, self.clock.now()).await?;
        Ok(())
    }

    /// What the caller may do now: the console shows only what they may use.
    pub async fn grants(&self, caller: Principal) -> Result<Grants, AdminError> {
        Ok(self.store.grants_of(caller.user_id).await?.unwrap_or_default())
    }

    /// Fails unless the caller holds the permission now.
    pub async fn require(&self, caller: Principal, permission: Permission) -> Result<Grants, AdminError> {
        let grants = self.grants(caller).await?;
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
        let id = raw_id.parse().map(UserId::new).map_err(|_| AdminError::NotFound)?;
        self.accounts.get_user(id).await?.ok_or(AdminError::NotFound)
    }

    /// Group names are 1 to 150 characters; permissions must be known code names.
    fn parse_group(
        name: Option<&str>,
        permissions: Option<&[String]>,
    ) -> Result<(Option<String>, Option<Vec<Permission>>), AdminError> {
        let mut errors = FieldErrors::new();
        let name = name.map(str::trim).and_then(|raw| match single_line(raw, MAX_GROUP_NAME_CHARS) {
            Ok(name) if !name.is_empty() => Some(name),
            Err(ProfileRule::ControlCharacter) => {
                errors.add("name", ProfileRule::ControlCharacter.to_string());
                None
            }
            _ => {
                errors.add("name", "A group name has 1 to 150 characters.");
                None
            }
        });
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
    if let Some(name) = &changes.profile.first_name {
        described.insert("first_name".into(), json!(name));
    }
    if let Some(name) = &changes.profile.last_name {
        described.insert("last_name".into(), json!(name));
    }
    // Profile fields are personal: the trail names them, not their values.
    let profile = &changes.profile;
    let touched =
        [("phone", profile.phone.is_some()), ("gender", profile.gender.is_some()), ("bio", profile.bio.is_some())];
    let touched: Vec<&str> = touched.into_iter().filter(|(_, changed)| *changed).map(|(field, _)| field).collect();
    if !touched.is_empty() {
        described.insert("profile".into(), json!(touched));
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
