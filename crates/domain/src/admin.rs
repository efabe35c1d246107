//! Administration: permissions checked on every request from current data,
//! and the user and group queries of the admin API.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::auth::Principal;
use crate::error::{FieldErrors, PortError};
use crate::ports::{AccountStore, AdminStore};
use crate::user::{User, UserId};

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
    accounts: Arc<dyn AccountStore>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl AdminService {
    pub fn new(store: Arc<dyn AdminStore>, accounts: Arc<dyn AccountStore>) -> Self {
        Self { store, accounts }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockAccountStore, MockAdminStore};
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
        let service = AdminService::new(Arc::new(store), Arc::new(MockAccountStore::new()));
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
        let service = AdminService::new(Arc::new(store), Arc::new(accounts));
        assert!(matches!(service.get_user(caller(), "99").await, Err(AdminError::NotFound)));
        assert!(matches!(service.get_user(caller(), "abc").await, Err(AdminError::NotFound)));
        assert!(matches!(service.get_group(caller(), "99").await, Err(AdminError::NotFound)));
    }
}
