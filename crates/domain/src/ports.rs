//! The ports: what the use cases need from the outside world. Adapters
//! implement them; unit tests mock them.

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use crate::admin::{Grants, Group, Permission, UserPage, UserQuery};
use crate::audit::{AuditEvent, AuditPage, AuditQuery};
use crate::email::{Email, EmailKey};
use crate::error::PortError;
use crate::mail::OutgoingMail;
use crate::password::{PasswordHash, PlainPassword};
use crate::session::{
    AuthMethods, NewRefreshToken, NewSession, OpaqueToken, Rotation, SessionId, SessionInfo, SessionState, TokenHash,
};
use crate::user::{ProfilePatch, User, UserId};

/// An account about to be created.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: Email,
    pub password_hash: PasswordHash,
    pub first_name: String,
    pub last_name: String,
    pub is_verified: bool,
    pub date_joined: OffsetDateTime,
}

/// What one-time links are for. The token knows its purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
    ChangeEmail,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::ChangeEmail => "change_email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::VerifyEmail, Self::ResetPassword, Self::ChangeEmail].into_iter().find(|p| p.as_str() == raw)
    }

    /// Whether a newer token of this purpose kills the older ones. Verification
    /// links stay valid until used; reset and email-change links do not.
    pub fn supersedes(self) -> bool {
        !matches!(self, Self::VerifyEmail)
    }
}

/// A one-time link token about to be stored (its hash only).
#[derive(Debug, Clone)]
pub struct NewOneTimeToken {
    pub hash: TokenHash,
    pub purpose: TokenPurpose,
    /// The address an email-change link moves the account to.
    pub new_email: Option<Email>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// An account and its password hash, read together: what a login needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    /// `None` for an account that never set one (an invitation not yet used).
    pub password_hash: Option<PasswordHash>,
}

/// What spending a mailbox-proving link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailConfirmation {
    Verified(User),
    Changed(User),
    /// The new address of an email change belongs to another account by now.
    AddressTaken,
    /// Unknown, used, expired or superseded.
    NotLive,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    /// Another account holds this address (compared case-insensitively).
    #[error("the email address is taken")]
    EmailTaken,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Users, their one-time tokens, and the mail that goes with each change.
/// Every method is one transaction.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates the user, their profile, their `Regular User` membership, the
    /// verification token and the mails, all or nothing. MUST return
    /// `EmailTaken` when the address's key exists, leaving nothing behind.
    async fn create_account(
        &self,
        account: NewAccount,
        token: NewOneTimeToken,
        mails: Vec<OutgoingMail>,
    ) -> Result<User, CreateAccountError>;

    /// Stores a one-time token for the user and queues its mails together.
    async fn issue_token(
        &self,
        user_id: UserId,
        token: NewOneTimeToken,
        mails: Vec<OutgoingMail>,
    ) -> Result<(), PortError>;

    /// Queues mails on their own, together.
    async fn enqueue_mails(&self, mails: Vec<OutgoingMail>) -> Result<(), PortError>;

    async fn find_credentials(&self, email: &EmailKey) -> Result<Option<Credentials>, PortError>;

    async fn find_user_by_email(&self, email: &EmailKey) -> Result<Option<User>, PortError>;

    async fn get_user(&self, id: UserId) -> Result<Option<User>, PortError>;

    /// Spends an unused, unexpired link token that proves a mailbox, atomically:
    /// a verification link marks its user verified; an email-change link moves
    /// the account to its new address (verified) and kills the user's other
    /// change and reset links. Of several concurrent callers, one succeeds.
    async fn confirm_email(&self, token: &TokenHash, now: OffsetDateTime) -> Result<EmailConfirmation, PortError>;

    /// Applies a profile patch; `None` when the user does not exist.
    async fn update_profile(&self, id: UserId, patch: ProfilePatch) -> Result<Option<User>, PortError>;

    async fn find_credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>, PortError>;

    /// The user of an unused, unexpired token of the purpose, without spending it.
    async fn peek_token(
        &self,
        token: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<User>, PortError>;

    /// Sets a new password chosen by the user: stores the hash, revokes every
    /// session but `keep`, kills pending reset links, and queues `notice`,
    /// in one transaction.
    async fn change_password(
        &self,
        id: UserId,
        hash: PasswordHash,
        keep: Option<SessionId>,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<(), PortError>;

    /// Spends a live reset token and sets the password it was issued for:
    /// stores the hash, marks the address verified (the mailbox was proven),
    /// revokes every session, kills other reset links and queues `notice`, in
    /// one transaction. `None` when the token is not live; of several
    /// concurrent callers with one token, exactly one gets the user.
    async fn reset_password(
        &self,
        token: &TokenHash,
        hash: PasswordHash,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<Option<User>, PortError>;

    /// Deletes the user with their profile, memberships, sessions and pending
    /// tokens, and queues `goodbye`, in one transaction; false when no such user.
    async fn delete_account(&self, id: UserId, goodbye: OutgoingMail) -> Result<bool, PortError>;

    /// Creates a verified, active superuser and staff member in the `Admin User`
    /// group (and `Regular User`, like every account), or promotes the existing
    /// account with this address and sets its password, in one transaction.
    async fn upsert_superuser(&self, email: Email, hash: PasswordHash, now: OffsetDateTime) -> Result<User, PortError>;
}

/// Sessions and their refresh tokens.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores the session and its first refresh token, sets the user's
    /// `last_login` and records the session's audit event, in one transaction.
    async fn start_session(&self, session: NewSession) -> Result<(), PortError>;

    /// Spends `presented` and stores `next` in its session, atomically: of
    /// several concurrent callers with one token, exactly one gets `Rotated`
    /// when `grace` is zero, whatever their clocks say. A spent token
    /// presented again within `grace` of its spending (tabs refreshing
    /// together) is `Rotated` again without storing anything: the caller
    /// derives `next` from `presented`, so the successor is the one the first
    /// rotation stored. Later, or with no grace, it revokes its session
    /// (`Reused`). A rotation records `client_ip` as the session's latest.
    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
        grace: Duration,
        client_ip: Option<String>,
    ) -> Result<Rotation, PortError>;

    /// The session a refresh token (spent or not) belongs to, if it is known.
    async fn refresh_session(&self, token: &TokenHash) -> Result<Option<SessionId>, PortError>;

    /// The user's live sessions, most recently used first.
    async fn list_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<Vec<SessionInfo>, PortError>;

    /// One indexed read: is this session live, and whose is it?
    async fn session_state(&self, id: SessionId, now: OffsetDateTime) -> Result<SessionState, PortError>;

    /// The user of a live session (as [`SessionState::Live`] defines it),
    /// read with the session in one query: all that `GET /me` needs.
    async fn session_user(&self, id: SessionId, now: OffsetDateTime) -> Result<Option<User>, PortError>;

    /// Revokes one session of the user; false when the user has no such live session.
    async fn revoke_session(&self, user_id: UserId, id: SessionId, now: OffsetDateTime) -> Result<bool, PortError>;

    /// Revokes every session of the user.
    async fn revoke_all_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<(), PortError>;
}

/// The kinds of mail counted per address by the mail limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A signup's link, its notice to a known address, and resends.
    Verification,
    Reset,
    /// The link to the new address and the notice to the old one.
    EmailChange,
}

/// What attempts are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleKey {
    /// Failed logins on the whole address lower-cased, whether or not an account has it.
    Email(EmailKey),
    /// Failed logins from the client's IP address.
    Ip(String),
    /// Mails of one kind to one address.
    MailTo(MailKind, EmailKey),
    /// Requests to the endpoints that send mail, from the client's IP address.
    MailRequests(String),
    /// Wrong second-factor codes on one account (its id).
    MfaCodes(String),
}

impl ThrottleKey {
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Email(_) => "email",
            Self::Ip(_) => "ip",
            Self::MailTo(MailKind::Verification, _) => "mail_verification",
            Self::MailTo(MailKind::Reset, _) => "mail_reset",
            Self::MailTo(MailKind::EmailChange, _) => "mail_email_change",
            Self::MailRequests(_) => "mail_requests_ip",
            Self::MfaCodes(_) => "mfa_codes",
        }
    }

    pub fn subject(&self) -> &str {
        match self {
            Self::Email(key) | Self::MailTo(_, key) => key.as_str(),
            Self::Ip(ip) | Self::MailRequests(ip) => ip,
            Self::MfaCodes(user) => user,
        }
    }
}

/// One key's attempts in its current window, the one just counted included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleWindow {
    pub hits: i64,
    /// When the window opened: it closes `window` later.
    pub opened_at: OffsetDateTime,
}

/// Attempts counted in the store, so that every instance sees them, in
/// fixed windows per key opened by the first attempt.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Throttle: Send + Sync {
    /// Counts one attempt under the key, atomically however many arrive at
    /// once, opening a new window if the last one is over; the window after
    /// the count.
    async fn reserve(
        &self,
        key: &ThrottleKey,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<ThrottleWindow, PortError>;

    /// Gives back one attempt under each key: it turned out not to count.
    async fn release(&self, keys: &[ThrottleKey]) -> Result<(), PortError>;

    /// [`Throttle::release`] behind the caller's back, for a refusal that
    /// must be answered at once; failures are logged. If the process stops
    /// first, the attempts stay counted until their window closes.
    fn release_later(&self, keys: Vec<ThrottleKey>);

    /// Forgets every attempt under a key (a successful login clears its address).
    async fn clear(&self, key: &ThrottleKey) -> Result<(), PortError>;
}

/// A queued mail as the delivery worker sees it.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    pub id: i64,
    pub mail: OutgoingMail,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
}

impl QueuedMail {
    /// The left part of the mail's `Message-ID`, the same at every attempt,
    /// so a receiver can drop a copy sent again after a crash.
    pub fn message_key(&self) -> String {
        format!("outbox.{}.{}", self.id, self.created_at.unix_timestamp_nanos())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_age_seconds: i64,
}

/// The durable mail queue, from the delivery side.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Leases the oldest due message to `owner` until `lease_until`, so no
    /// other worker takes it meanwhile. One message a lease: a lease need
    /// only outlast one delivery.
    async fn claim_next(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        owner: &str,
    ) -> Result<Option<QueuedMail>, PortError>;

    /// The mail server took it: it leaves the queue (and its link with it),
    /// if `owner` still holds its lease; false when it did not.
    async fn mark_sent(&self, id: i64, owner: &str) -> Result<bool, PortError>;

    /// Delivery failed: try again at `retry_at`, or never when `None`; only
    /// if `owner` still holds the lease (false when it did not).
    async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        retry_at: Option<OffsetDateTime>,
        error: &str,
    ) -> Result<bool, PortError>;

    /// Messages still waiting for delivery.
    async fn pending_count(&self) -> Result<i64, PortError>;

    /// Messages waiting, and the age of the oldest, for monitoring.
    async fn backlog(&self, now: OffsetDateTime) -> Result<Backlog, PortError>;
}

/// Liveness of the store, for readiness checks.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StoreHealth: Send + Sync {
    async fn ping(&self) -> Result<(), PortError>;
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Match { needs_rehash: bool },
    Mismatch,
}

/// Password hashing. Implementations keep the CPU work off the async workers.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &PlainPassword) -> Result<PasswordHash, PortError>;

    async fn verify(&self, password: &PlainPassword, hash: &PasswordHash) -> Result<PasswordCheck, PortError>;

    /// Spends the time of one verification against a fixed hash, so that an
    /// unknown address answers as slowly as a known one.
    async fn verify_dummy(&self, password: &PlainPassword) -> Result<(), PortError>;

    /// Whether `hash` is a format this hasher checks, with costs within its
    /// caps (for hashes imported from elsewhere); why not, when it is not.
    fn check_format(&self, hash: &PasswordHash) -> Result<(), String>;
}

/// The claims of a live access token that the service cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessClaims {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub amr: AuthMethods,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    #[error("the token is not a valid access token")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// A freshly signed access token.
#[derive(Clone)]
pub struct SignedAccessToken {
    pub token: OpaqueToken,
    pub expires_in: u64,
}

impl std::fmt::Debug for SignedAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedAccessToken").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Signs and checks access tokens (signature, algorithm, expiry, issuer,
/// audience and type).
#[cfg_attr(test, mockall::automock)]
pub trait AccessTokens: Send + Sync {
    fn issue(&self, claims: AccessClaims, now: OffsetDateTime) -> Result<SignedAccessToken, PortError>;

    fn verify(&self, token: &str) -> Result<AccessClaims, AccessTokenError>;
}

/// Randomness from the OS: opaque tokens of at least 256 bits, and session ids.
#[cfg_attr(test, mockall::automock)]
pub trait Random: Send + Sync {
    fn token(&self) -> OpaqueToken;
    fn session_id(&self) -> SessionId;
}

#[cfg_attr(test, mockall::automock)]
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the server is down, busy, or answered 4xx.
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// Retrying will not help: the server refused the message for good (5xx).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// Hands one message to a mail server (or a file, in development).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait MailSender: Send + Sync {
    /// `message_key` is the left part of its `Message-ID`, stable across attempts.
    async fn send(&self, mail: &OutgoingMail, message_key: &str) -> Result<(), SendError>;
}

/// Reads for administration.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// The user's flags and the permissions of their groups, in one read.
    async fn grants_of(&self, id: UserId) -> Result<Option<Grants>, PortError>;

    /// One page of users, filtered, searched and ordered, with the total count.
    async fn list_users(&self, query: &UserQuery) -> Result<UserPage, PortError>;

    /// Every group by name.
    async fn list_groups(&self) -> Result<Vec<Group>, PortError>;

    async fn get_group(&self, id: i64) -> Result<Option<Group>, PortError>;
}

/// An account made by an administrator.
#[derive(Debug, Clone)]
pub struct AdminNewUser {
    pub email: Email,
    /// `None` for an invitation: the user sets it through a reset link.
    pub password_hash: Option<PasswordHash>,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_verified: bool,
    /// Group names; `Regular User` is always added.
    pub groups: Vec<String>,
    pub date_joined: OffsetDateTime,
}

/// The fields an administrator may change; `None` leaves one alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminUserChanges {
    pub email: Option<Email>,
    /// Names and profile fields, under the rules of the user's own patch.
    pub profile: ProfilePatch,
    pub is_active: Option<bool>,
    pub is_staff: Option<bool>,
    pub is_superuser: Option<bool>,
    pub is_verified: Option<bool>,
    /// The complete new set of group names.
    pub groups: Option<Vec<String>>,
}

/// What an administrative write found, decided inside its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminWrite {
    Done(Option<Box<User>>),
    NotFound,
    EmailTaken,
    /// It would leave no active superuser.
    LastSuperuser,
}

/// Writes for administration; each is one transaction.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AdminWrites: Send + Sync {
    /// The groups with these names; unknown names are left out.
    async fn groups_named(&self, names: &[String]) -> Result<Vec<Group>, PortError>;

    /// Creates the user with profile and groups, and the invitation link and
    /// mail when there is no password.
    async fn admin_create_user(
        &self,
        user: AdminNewUser,
        invitation: Option<(NewOneTimeToken, OutgoingMail)>,
    ) -> Result<AdminWrite, PortError>;

    /// Applies the changes; disabling revokes every session. MUST refuse
    /// (`LastSuperuser`) to leave no active superuser.
    async fn admin_update_user(
        &self,
        id: UserId,
        changes: AdminUserChanges,
        now: OffsetDateTime,
    ) -> Result<AdminWrite, PortError>;

    /// Deletes the user and everything they hold. MUST refuse to delete the last active superuser.
    async fn admin_delete_user(&self, id: UserId) -> Result<AdminWrite, PortError>;

    /// `None` when the name is taken.
    async fn create_group(&self, name: &str, permissions: &[Permission]) -> Result<Option<Group>, PortError>;

    /// Renames and/or sets the permissions of a group.
    async fn update_group(
        &self,
        id: i64,
        name: Option<String>,
        permissions: Option<Vec<Permission>>,
    ) -> Result<GroupWrite, PortError>;

    /// False when there is no such group. Memberships go with it.
    async fn delete_group(&self, id: i64) -> Result<bool, PortError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupWrite {
    Done(Group),
    NotFound,
    NameTaken,
}

/// The append-only audit trail.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record(&self, event: AuditEvent, at: OffsetDateTime) -> Result<(), PortError>;

    /// A page of events, newest first, with the total count.
    async fn list_events(&self, query: &AuditQuery) -> Result<AuditPage, PortError>;
}

/// Every persistence port: what one store adapter serves, and what the
/// contract suite checks.
pub trait Store:
    AccountStore
    + SessionStore
    + Throttle
    + AdminStore
    + AdminWrites
    + AuditLog
    + Outbox
    + StoreHealth
    + crate::import::ImportStore
    + crate::mfa::MfaStore
    + 'static
{
}

impl<T> Store for T where
    T: AccountStore
        + SessionStore
        + Throttle
        + AdminStore
        + AdminWrites
        + AuditLog
        + Outbox
        + StoreHealth
        + crate::import::ImportStore
        + crate::mfa::MfaStore
        + 'static
{
}
