//! The account use cases' errors: one enum each, naming what a caller can act on.

use crate::error::{FieldErrors, PortError};

#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    /// Only when verification is not required; otherwise signup never tells.
    #[error("the email address is taken")]
    EmailTaken,
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("unknown email or wrong password")]
    InvalidCredentials,
    /// Too many recent failures on the address or from the client.
    #[error("too many failed logins; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("the email address is not verified")]
    EmailNotVerified,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error(transparent)]
    Port(#[from] PortError),
}

impl LoginError {
    /// The failure's name, as the audit trail and the metrics record it.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::InvalidCredentials => "invalid_credentials",
            LoginError::Throttled { .. } => "throttled",
            LoginError::EmailNotVerified => "email_not_verified",
            LoginError::AccountDisabled => "account_disabled",
            LoginError::Port(_) => "error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is not live")]
    Invalid,
    #[error("the refresh token has expired")]
    Expired,
    #[error("a spent refresh token came back; its session is revoked")]
    Reused,
    /// A refresh from a browser cookie without its session's CSRF token.
    #[error("the CSRF token does not match the refresh token's session")]
    CsrfFailed,
    #[error(transparent)]
    Port(#[from] PortError),
}

impl RefreshError {
    /// The failure's name, as the metrics record it.
    pub fn reason(&self) -> &'static str {
        match self {
            RefreshError::Invalid => "invalid",
            RefreshError::Expired => "expired",
            RefreshError::Reused => "reused",
            RefreshError::CsrfFailed => "csrf_failed",
            RefreshError::Port(_) => "error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    #[error("the access token is not live")]
    Invalid,
    #[error("the access token has expired")]
    Expired,
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyEmailError {
    #[error("the link token is unknown, used or expired")]
    InvalidToken,
    /// An email change whose new address another account took meanwhile.
    #[error("the new address belongs to another account")]
    AddressTaken,
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum OwnPasswordError {
    /// The current password given does not match.
    #[error("the current password is wrong")]
    WrongPassword,
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("the current password is wrong")]
    WrongPassword,
    /// The new password breaks a rule.
    #[error("the new password is refused")]
    Invalid(FieldErrors),
    #[error(transparent)]
    Port(#[from] PortError),
}

impl From<OwnPasswordError> for ChangePasswordError {
    fn from(error: OwnPasswordError) -> Self {
        match error {
            OwnPasswordError::WrongPassword => Self::WrongPassword,
            OwnPasswordError::Port(error) => Self::Port(error),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResetPasswordError {
    /// Unknown, used, expired or superseded.
    #[error("the reset link is not live")]
    InvalidToken,
    #[error("the new password is refused")]
    Invalid(FieldErrors),
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum EmailChangeError {
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the new address is the current one")]
    SameAddress,
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeSessionError {
    /// No live session of the caller has this id.
    #[error("no such session")]
    NotFound,
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, thiserror::Error)]
pub enum MeError {
    /// The account vanished between authentication and this call.
    #[error("the user no longer exists")]
    NotFound,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Why a request to a mail-sending endpoint was refused before it was read.
#[derive(Debug, thiserror::Error)]
pub enum MailRequestError {
    #[error("too many mail-sending requests from this client")]
    Throttled { retry_after: u64 },
    #[error(transparent)]
    Port(#[from] PortError),
}
