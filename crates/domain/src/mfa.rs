//! The second factor: TOTP (RFC 6238) secrets and codes, as the use cases
//! see them. The secret never leaves the adapter unsealed except once, for
//! the user's authenticator app at setup.

use std::fmt;

use time::OffsetDateTime;

use crate::email::Email;
use crate::error::PortError;
use crate::user::UserId;

/// A TOTP secret as the store keeps it: sealed with the server's key and
/// bound to its user, useless to whoever reads the row.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(String);

impl SealedSecret {
    pub fn new(sealed: impl Into<String>) -> Self {
        Self(sealed.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(…)")
    }
}

/// A fresh secret: what the user's app needs (shown once) and what is stored.
pub struct NewTotpSecret {
    /// The secret in base32, as authenticator apps take it typed in.
    pub base32: String,
    /// `otpauth://totp/…`, as apps take it from a QR code.
    pub otpauth_uri: String,
    pub sealed: SealedSecret,
}

impl fmt::Debug for NewTotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewTotpSecret").field("sealed", &self.sealed).finish_non_exhaustive()
    }
}

/// TOTP as the contract fixes it: SHA-1, six digits, 30-second steps, one
/// step either side of now accepted.
#[cfg_attr(test, mockall::automock)]
pub trait TotpFactor: Send + Sync {
    /// A new random secret for `user`, sealed for the store.
    fn new_secret(&self, user: UserId, account: &Email) -> Result<NewTotpSecret, PortError>;

    /// The time step (Unix time / 30) of now, or of one step either side,
    /// whose code `code` is; `None` when it is none of them. Comparisons take
    /// the same time whatever the code. A secret sealed for another user, or
    /// with another key, is an error.
    fn matching_step(
        &self,
        user: UserId,
        sealed: &SealedSecret,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, PortError>;
}
