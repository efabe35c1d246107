//! The second factor: TOTP (RFC 6238) secrets and codes, as the use cases
//! see them. The secret never leaves the adapter unsealed except once, for
//! the user's authenticator app at setup.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::AuditEvent;
use crate::email::Email;
use crate::error::PortError;
use crate::mail::OutgoingMail;
use crate::session::TokenHash;
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

/// An account's TOTP factor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTotp {
    pub secret: SealedSecret,
    /// A pending factor (set up, not yet confirmed) asks nothing at login.
    pub confirmed: bool,
    /// The last time step a code was accepted for: no code of it or before is again.
    pub last_step: Option<i64>,
}

/// What turning the factor on or off writes besides: the notice to the
/// account's address and the trail entry.
#[derive(Debug, Clone)]
pub struct MfaChange {
    pub mail: OutgoingMail,
    pub event: AuditEvent,
}

/// A login waiting for its second factor, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub user_id: UserId,
    /// Wrong codes presented with it so far.
    pub failures: i64,
}

/// The second factor's storage. Every "once" holds under concurrency: of
/// callers racing to spend one step, one recovery code or one challenge,
/// exactly one is told it did.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait MfaStore: Send + Sync {
    async fn totp(&self, user: UserId) -> Result<Option<StoredTotp>, PortError>;

    /// Stores a pending secret, replacing a pending one; while a confirmed
    /// factor exists, writes nothing and answers false.
    async fn begin_totp(&self, user: UserId, secret: SealedSecret) -> Result<bool, PortError>;

    /// In one transaction: confirms the pending factor if its secret is still
    /// `secret`, with `step` spent; replaces the recovery codes; turns
    /// `mfa_enabled` on; queues the notice and records the event. False, and
    /// nothing written, when that secret is not pending any more.
    async fn confirm_totp(
        &self,
        user: UserId,
        secret: &SealedSecret,
        step: i64,
        recovery_codes: Vec<TokenHash>,
        change: MfaChange,
        now: OffsetDateTime,
    ) -> Result<bool, PortError>;

    /// Spends a step of the confirmed factor: true only for a step after the
    /// last one spent.
    async fn spend_totp_step(&self, user: UserId, step: i64) -> Result<bool, PortError>;

    /// Spends an unused recovery code of the user: true once ever.
    async fn spend_recovery_code(&self, user: UserId, code: &TokenHash, now: OffsetDateTime)
        -> Result<bool, PortError>;

    /// Replaces every recovery code of the user (the old ones die).
    async fn replace_recovery_codes(&self, user: UserId, codes: Vec<TokenHash>) -> Result<(), PortError>;

    /// In one transaction: removes the factor, its recovery codes and the
    /// user's challenges, turns `mfa_enabled` off, queues the notice and
    /// records the event. False, and nothing written, when there was no
    /// confirmed factor.
    async fn remove_totp(&self, user: UserId, change: MfaChange, now: OffsetDateTime) -> Result<bool, PortError>;

    async fn open_challenge(
        &self,
        token: &TokenHash,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> Result<(), PortError>;

    /// The challenge, if it exists and has not expired.
    async fn challenge(&self, token: &TokenHash, now: OffsetDateTime) -> Result<Option<Challenge>, PortError>;

    /// Counts a wrong code against the challenge; answers the count.
    async fn fail_challenge(&self, token: &TokenHash) -> Result<i64, PortError>;

    /// Ends the challenge: true for the one caller that ended it.
    async fn close_challenge(&self, token: &TokenHash) -> Result<bool, PortError>;
}
