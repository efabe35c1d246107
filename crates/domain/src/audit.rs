//! The audit trail: security events with who, whom, when and from where.
//! Never a password, hash or token.

use serde_json::Value;
use time::OffsetDateTime;

use crate::admin::{parse_positive, DEFAULT_PAGE_SIZE};
use crate::error::FieldErrors;
use crate::ports::AuditLog;
use crate::session::ClientInfo;
use crate::user::UserId;

/// The events the trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Signup,
    EmailVerified,
    LoginSucceeded,
    LoginFailed,
    Logout,
    RefreshReused,
    PasswordChanged,
    PasswordReset,
    EmailChanged,
    AccountDeleted,
    AdminAction,
    MfaEnabled,
    MfaDisabled,
    MfaFailed,
    RecoveryCodeUsed,
}

impl AuditKind {
    pub const ALL: [AuditKind; 15] = [
        Self::Signup,
        Self::EmailVerified,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::Logout,
        Self::RefreshReused,
        Self::PasswordChanged,
        Self::PasswordReset,
        Self::EmailChanged,
        Self::AccountDeleted,
        Self::AdminAction,
        Self::MfaEnabled,
        Self::MfaDisabled,
        Self::MfaFailed,
        Self::RecoveryCodeUsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::EmailVerified => "email_verified",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::Logout => "logout",
            Self::RefreshReused => "refresh_reused",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::EmailChanged => "email_changed",
            Self::AccountDeleted => "account_deleted",
            Self::AdminAction => "admin_action",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaDisabled => "mfa_disabled",
            Self::MfaFailed => "mfa_failed",
            Self::RecoveryCodeUsed => "recovery_code_used",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub kind: AuditKind,
    /// Whom the event is about.
    pub user_id: Option<UserId>,
    /// Who did it, when not the user themselves (an administrator).
    pub actor_id: Option<UserId>,
    pub client: ClientInfo,
    /// A JSON object of facts; never a secret.
    pub detail: Value,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, user_id: Option<UserId>, client: &ClientInfo) -> Self {
        Self { kind, user_id, actor_id: None, client: client.clone(), detail: Value::Object(Default::default()) }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn by(mut self, actor: UserId) -> Self {
        self.actor_id = Some(actor);
        self
    }
}

/// A recorded event, as the audit API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: OffsetDateTime,
    pub event: String,
    pub user_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Value,
}

/// One page of the trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub user: Option<UserId>,
    pub event: Option<AuditKind>,
    pub page: u32,
    pub page_size: u32,
}

impl AuditQuery {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }

    /// `user` is a user id; `event` one of the event names; sizes as for the user list.
    pub fn parse(
        user: Option<&str>,
        event: Option<&str>,
        page: Option<&str>,
        page_size: Option<&str>,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let user = user.filter(|u| !u.is_empty()).and_then(|raw| match raw.parse::<i64>() {
            Ok(id) => Some(UserId::new(id)),
            Err(_) => {
                errors.add("user", "Must be a user id.");
                None
            }
        });
        let event = event.filter(|e| !e.is_empty()).and_then(|raw| {
            let kind = AuditKind::parse(raw);
            if kind.is_none() {
                errors.add("event", "Unknown event name.");
            }
            kind
        });
        let page = parse_positive(&mut errors, "page", page, 1);
        let page_size =
            parse_positive(&mut errors, "page_size", page_size, DEFAULT_PAGE_SIZE).min(crate::admin::MAX_PAGE_SIZE);
        errors.finish(Self { user, event, page, page_size })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub count: i64,
    pub results: Vec<AuditRecord>,
}

/// Records an event; a trail that cannot be written is logged, not fatal.
pub async fn record_or_warn(log: &dyn AuditLog, event: AuditEvent, at: OffsetDateTime) {
    if let Err(error) = log.record(event, at).await {
        tracing::warn!(error = &error as &dyn std::error::Error, "an audit event could not be recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AuditKind::parse("coffee_made"), None);
    }

    #[test]
    fn the_query_checks_its_fields() {
        let query = AuditQuery::parse(Some("42"), Some("login_failed"), Some("2"), None).unwrap();
        assert_eq!(
            (query.user, query.event, query.page, query.offset()),
            (Some(UserId::new(42)), Some(AuditKind::LoginFailed), 2, 20)
        );
        let errors = AuditQuery::parse(Some("ada"), Some("nope"), Some("0"), Some("x")).unwrap_err();
        for field in ["user", "event", "page", "page_size"] {
            assert!(errors.contains(field), "{field}");
        }
    }
}
