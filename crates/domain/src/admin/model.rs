//! Permissions, grants and groups: what administrators may do, and who holds it.

use std::collections::BTreeSet;

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

    /// Whether the user may do anything at all as an administrator.
    pub fn any(&self) -> bool {
        Permission::ALL.into_iter().any(|permission| self.allows(permission))
    }
}

/// A group and its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub permissions: Vec<Permission>,
}
