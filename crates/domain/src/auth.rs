//! The account use cases: signup, email verification, login, tokens, sessions
//! and the caller's own profile.

mod errors;
mod mfa;
mod requests;
#[cfg(test)]
mod tests;

pub use errors::{
    AuthenticateError, ChangePasswordError, EmailChangeError, LoginError, MailRequestError, MeError, OwnPasswordError,
    RefreshError, ResetPasswordError, RevokeSessionError, SignupError, VerifyEmailError,
};
pub use mfa::{
    LoginStep, MfaError, SecondFactor, TotpSetup, MAX_CODE_FAILURES_PER_ACCOUNT, MAX_CODE_FAILURES_PER_TOKEN,
    RECOVERY_CODES,
};
pub use requests::{LoginOutcome, LoginRequest, Principal, RawSignup, SignupOutcome, SignupRequest, TokenPair};

use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::audit::{record_or_warn, AuditEvent, AuditKind};
use crate::email::Email;
use crate::error::{FieldErrors, PortError};
use crate::mail::{self, Links};
use crate::mfa::{MfaStore, TotpFactor};
use crate::password::{Password, PasswordHash, PlainPassword};
use crate::ports::{
    AccessClaims, AccessTokenError, AccessTokens, AccountStore, AuditLog, Clock, CreateAccountError, EmailConfirmation,
    MailKind, NewAccount, NewOneTimeToken, PasswordCheck, PasswordHasher, Random, SessionStore, Throttle, ThrottleKey,
    TokenPurpose,
};
use crate::session::{
    AuthMethods, ClientInfo, NewRefreshToken, NewSession, OpaqueToken, Rehash, Rotation, ServerKey, SessionId,
    SessionInfo, SessionState, SettledThrottle, TokenHash,
};
use crate::user::{ProfilePatch, User, UserId};

/// Presented tokens longer than this are rejected before any work.
const MAX_PRESENTED_TOKEN_LEN: usize = 512;

/// Whether a presented token could be one of ours: anything empty or longer
/// than any token we issue is refused before it is hashed or looked up.
fn presentable(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_PRESENTED_TOKEN_LEN
}

/// The knobs of the account rules, from configuration.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Block login until the address is verified (and hide known addresses at signup).
    pub require_verified_email: bool,
    pub verification_ttl: Duration,
    /// How long a password-reset link lives.
    pub reset_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Failed logins are counted over this window.
    pub throttle_window: Duration,
    /// Failures on one address within the window before it is throttled.
    pub max_failures_per_email: i64,
    /// Failures from one client IP within the window before it is throttled; 0 turns it off.
    pub max_failures_per_ip: i64,
    /// How long a just-spent refresh token may be presented again without
    /// counting as reuse: several tabs refreshing at once is normal.
    pub refresh_grace: Duration,
    /// The window of the mail limits.
    pub mail_window: Duration,
    /// Mails of one kind to one address per window; 0 turns the limit off.
    pub max_mails_per_address: i64,
    /// Requests to the mail-sending endpoints per client IP per window; 0 turns it off.
    pub max_mail_requests_per_ip: i64,
    /// How long a login may wait for its second factor (the `mfa_token`).
    pub mfa_token_ttl: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            require_verified_email: true,
            verification_ttl: Duration::hours(24),
            reset_ttl: Duration::seconds(600),
            refresh_ttl: Duration::days(1),
            refresh_grace: Duration::seconds(10),
            mail_window: Duration::seconds(900),
            max_mails_per_address: 3,
            max_mail_requests_per_ip: 20,
            throttle_window: Duration::minutes(15),
            max_failures_per_email: 10,
            max_failures_per_ip: 100,
            mfa_token_ttl: Duration::seconds(300),
        }
    }
}

/// The adapters the use cases run on.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Ports {
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub throttle: Arc<dyn Throttle>,
    pub audit: Arc<dyn AuditLog>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub tokens: Arc<dyn AccessTokens>,
    pub random: Arc<dyn Random>,
    pub clock: Arc<dyn Clock>,
    pub server_key: ServerKey,
    pub mfa: Arc<dyn MfaStore>,
    pub totp: Arc<dyn TotpFactor>,
}

/// The account use cases, over their ports.
#[derive(Clone)]
pub struct AuthService {
    ports: Ports,
    links: Links,
    policy: AuthPolicy,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("links", &self.links).field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// The words a user's password must not resemble.
fn personal_words(user: &User) -> Vec<&str> {
    vec![user.email.as_ref(), user.email.local_part(), &user.first_name, &user.last_name]
}

/// What a new session settles in its own transaction: a login's trail
/// entry, its throttle keys and its password hash upgrade.
#[derive(Debug, Default)]
struct Settled {
    event: Option<AuditEvent>,
    throttle: SettledThrottle,
    rehash: Option<Rehash>,
    amr: AuthMethods,
}

impl AuthService {
    pub fn new(ports: Ports, links: Links, policy: AuthPolicy) -> Self {
        Self { ports, links, policy }
    }

    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// Creates an account and queues its verification mail. A known address,
    /// when verification is required, gets the same outcome and its owner a notice.
    #[tracing::instrument(skip_all)]
    pub async fn signup(&self, request: SignupRequest, client: ClientInfo) -> Result<SignupOutcome, SignupError> {
        let now = self.ports.clock.now();
        // Hash before looking at the address, so both paths cost the same.
        let password_hash = self.ports.hasher.hash(request.password.plain()).await?;
        let token = self.ports.random.token();
        // Counted for the address whichever mail it gets, the link or the notice.
        let may_mail = self.may_mail(MailKind::Verification, &request.email, now).await?;
        let mail = mail::verification(&request.email, &self.links, &token);
        let account = NewAccount {
            email: request.email.clone(),
            password_hash,
            first_name: request.first_name,
            last_name: request.last_name,
            is_verified: false,
            date_joined: now,
        };
        let verification = self.one_time_token(&token, TokenPurpose::VerifyEmail, now, self.policy.verification_ttl);
        let mails = if may_mail { vec![mail] } else { Vec::new() };
        match self.ports.accounts.create_account(account, verification, mails).await {
            Ok(user) => {
                tracing::info!(user_id = %user.id, "account created");
                self.audit(AuditEvent::new(AuditKind::Signup, Some(user.id), &client)).await;
                let login = if self.policy.require_verified_email {
                    None
                } else {
                    Some(self.open_session(user, client, now, Settled::default()).await?)
                };
                Ok(SignupOutcome { email: request.email, login })
            }
            Err(CreateAccountError::EmailTaken) if self.policy.require_verified_email => {
                if may_mail {
                    let notice = mail::already_registered(&request.email, &self.links);
                    self.ports.accounts.enqueue_mails(vec![notice]).await?;
                }
                Ok(SignupOutcome { email: request.email, login: None })
            }
            Err(CreateAccountError::EmailTaken) => Err(SignupError::EmailTaken),
            Err(CreateAccountError::Port(error)) => Err(error.into()),
        }
    }

    /// Checks the password (against a dummy hash for unknown addresses, so
    /// timing tells nothing) and opens a session. Each attempt is counted
    /// before the password is checked, so that however many arrive at once,
    /// no more than the limit are ever checked; past it, `Throttled` before
    /// any hashing. A wrong password leaves its count standing as the failure.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, request: LoginRequest, client: ClientInfo) -> Result<LoginStep, LoginError> {
        let now = self.ports.clock.now();
        let keys = self.throttle_keys(&request.email, &client);
        if let Err(error) = self.reserve_attempt(&keys, now).await {
            self.audit_login_failure(None, &error, &client).await;
            return Err(error);
        }
        match self.check_credentials(&request).await {
            Err((LoginError::InvalidCredentials, user_id)) => {
                tracing::info!("login failed");
                self.audit_login_failure(user_id, &LoginError::InvalidCredentials, &client).await;
                Err(LoginError::InvalidCredentials)
            }
            Err((LoginError::Port(error), _)) if error.retry_after().is_some() => {
                // Refused by the saturated hash queue (its deadline or its
                // limit), nothing checked: the answer goes now, and the
                // attempt back behind it. Under a storm such refusals come
                // together, and their give-backs would queue for the
                // database with everyone else's work.
                self.ports.throttle.release_later(keys);
                Err(LoginError::Port(error))
            }
            Err((error, user_id)) => {
                // The right password on an account that may not log in, or
                // no answer at all: not a guess to hold against anyone.
                self.ports.throttle.release(&keys).await?;
                self.audit_login_failure(user_id, &error, &client).await;
                Err(error)
            }
            Ok((user, _)) if user.mfa_enabled => self.challenge(&user, &keys).await,
            Ok((user, rehash)) => {
                // Settled with the session, in its transaction.
                let settled = Settled {
                    event: Some(AuditEvent::new(AuditKind::LoginSucceeded, Some(user.id), &client)),
                    throttle: Self::settled_after_password(&keys),
                    rehash,
                    amr: AuthMethods::Password,
                };
                let outcome = self.open_session(user, client, self.ports.clock.now(), settled).await?;
                tracing::info!(user_id = %outcome.user.id, "login succeeded");
                Ok(LoginStep::Done(Box::new(outcome)))
            }
        }
    }

    /// What a right password does to the login's keys: the address's count
    /// is cleared, the attempt counted under the client's IP given back.
    fn settled_after_password(keys: &[ThrottleKey]) -> SettledThrottle {
        SettledThrottle { clear: keys.first().cloned(), release: keys.get(1..).unwrap_or_default().to_vec() }
    }

    /// The address first, then the client IP when that limit is on.
    fn throttle_keys(&self, email: &Email, client: &ClientInfo) -> Vec<ThrottleKey> {
        let mut keys = vec![ThrottleKey::Email(email.key())];
        if let Some(ip) = client.ip.as_ref().filter(|_| self.policy.max_failures_per_ip > 0) {
            keys.push(ThrottleKey::Ip(ip.clone()));
        }
        keys
    }

    /// Counts the attempt under each key in turn; past a key's limit, gives
    /// back what it counted (a refused attempt checks nothing, so it is no
    /// guess, and an address's refusals do not count against the IP) and refuses.
    async fn reserve_attempt(&self, keys: &[ThrottleKey], now: OffsetDateTime) -> Result<(), LoginError> {
        let window = self.policy.throttle_window;
        for (counted_keys, key) in keys.iter().enumerate() {
            let counted = self.ports.throttle.reserve(key, now, window).await?;
            // A login's keys are its address and its client's IP.
            let limit = match key {
                ThrottleKey::Email(_) => self.policy.max_failures_per_email,
                _ => self.policy.max_failures_per_ip,
            };
            if counted.hits > limit {
                self.ports.throttle.release(&keys[..=counted_keys]).await?;
                let retry_after = (counted.opened_at + window - now).whole_seconds().max(1).unsigned_abs();
                tracing::warn!(scope = key.scope(), retry_after, "login throttled");
                return Err(LoginError::Throttled { retry_after });
            }
        }
        Ok(())
    }

    /// Counts a mail of `kind` to `to`; false past the limit, when the mail
    /// is not sent (and the caller answers as it would have).
    async fn may_mail(&self, kind: MailKind, to: &Email, now: OffsetDateTime) -> Result<bool, PortError> {
        let limit = self.policy.max_mails_per_address;
        if limit == 0 {
            return Ok(true);
        }
        let counted =
            self.ports.throttle.reserve(&ThrottleKey::MailTo(kind, to.key()), now, self.policy.mail_window).await?;
        if counted.hits > limit {
            tracing::warn!(scope = ThrottleKey::MailTo(kind, to.key()).scope(), "mail limit reached; not sent");
        }
        Ok(counted.hits <= limit)
    }

    /// Counts a request to an endpoint that sends mail, valid or not, from
    /// the client's IP; past the limit, `Throttled`.
    pub async fn count_mail_request(&self, client: &ClientInfo) -> Result<(), MailRequestError> {
        let (limit, Some(ip)) = (self.policy.max_mail_requests_per_ip, client.ip.as_ref()) else { return Ok(()) };
        if limit == 0 {
            return Ok(());
        }
        let now = self.ports.clock.now();
        let window = self.policy.mail_window;
        let counted = self.ports.throttle.reserve(&ThrottleKey::MailRequests(ip.clone()), now, window).await?;
        if counted.hits > limit {
            let retry_after = (counted.opened_at + window - now).whole_seconds().max(1).unsigned_abs();
            tracing::warn!(retry_after, "mail-sending requests throttled for a client IP");
            return Err(MailRequestError::Throttled { retry_after });
        }
        Ok(())
    }

    /// The user behind the credentials, if they may log in, with the
    /// upgrade of their hash when it is imported or outdated; on failure,
    /// the account concerned when there is one (for the audit trail only).
    async fn check_credentials(
        &self,
        request: &LoginRequest,
    ) -> Result<(User, Option<Rehash>), (LoginError, Option<UserId>)> {
        let credentials =
            self.ports.accounts.find_credentials(&request.email.key()).await.map_err(|e| (e.into(), None))?;
        let Some((credentials, hash)) = credentials.and_then(|c| c.password_hash.clone().map(|h| (c, h))) else {
            self.ports.hasher.verify_dummy(&request.password).await.map_err(|e| (e.into(), None))?;
            return Err((LoginError::InvalidCredentials, None));
        };
        let user = credentials.user;
        let known = Some(user.id);
        let needs_rehash =
            match self.ports.hasher.verify(&request.password, &hash).await.map_err(|e| (e.into(), known))? {
                PasswordCheck::Mismatch => return Err((LoginError::InvalidCredentials, known)),
                PasswordCheck::Match { needs_rehash } => needs_rehash,
            };
        if !user.is_active {
            return Err((LoginError::AccountDisabled, known));
        }
        if self.policy.require_verified_email && !user.is_verified {
            return Err((LoginError::EmailNotVerified, known));
        }
        let rehash = match needs_rehash {
            true => self.upgraded_hash(user.id, &request.password).await.map(|to| Rehash { from: hash, to }),
            false => None,
        };
        Ok((user, rehash))
    }

    async fn audit_login_failure(&self, user_id: Option<UserId>, error: &LoginError, client: &ClientInfo) {
        if let LoginError::Port(_) = error {
            return;
        }
        let detail = json!({ "reason": error.reason() });
        let event = AuditEvent::new(AuditKind::LoginFailed, user_id, client).with_detail(detail);
        self.audit(event).await;
    }

    async fn audit(&self, event: AuditEvent) {
        record_or_warn(self.ports.audit.as_ref(), event, self.ports.clock.now()).await;
    }

    /// A failed upgrade only delays it to the next login.
    async fn upgraded_hash(&self, user_id: UserId, password: &PlainPassword) -> Option<PasswordHash> {
        let hashed = self.ports.hasher.hash(password).await;
        if let Err(error) = &hashed {
            tracing::warn!(%user_id, error = error as &dyn std::error::Error, "password hash upgrade failed");
        }
        hashed.ok()
    }

    async fn open_session(
        &self,
        mut user: User,
        client: ClientInfo,
        now: OffsetDateTime,
        settled: Settled,
    ) -> Result<LoginOutcome, PortError> {
        let session_id = self.ports.random.session_id();
        let refresh = self.ports.random.token();
        self.ports
            .sessions
            .start_session(NewSession {
                id: session_id,
                user_id: user.id,
                client,
                created_at: now,
                refresh: NewRefreshToken { hash: refresh.hash(), expires_at: now + self.policy.refresh_ttl },
                event: settled.event,
                throttle: settled.throttle,
                rehash: settled.rehash,
                amr: settled.amr,
            })
            .await?;
        user.last_login = Some(now);
        let access = self.ports.tokens.issue(AccessClaims { user_id: user.id, session_id, amr: settled.amr }, now)?;
        Ok(LoginOutcome {
            user,
            tokens: TokenPair { session_id, access: access.token, refresh, expires_in: access.expires_in },
        })
    }

    /// Spends a refresh token and returns a new pair for the same session.
    /// A refresh token from a browser cookie comes with `csrf`, the CSRF
    /// token the page sent: unless it is the token's session's, nothing
    /// changes (a forged request must not spend, nor revoke, the session).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        presented: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<TokenPair, RefreshError> {
        if !presentable(presented) {
            return Err(RefreshError::Invalid);
        }
        if let Some(csrf) = csrf {
            let Some(session_id) = self.ports.sessions.refresh_session(&TokenHash::of(presented)).await? else {
                return Err(RefreshError::Invalid);
            };
            if !self.csrf_matches(session_id, csrf) {
                return Err(RefreshError::CsrfFailed);
            }
        }
        let now = self.ports.clock.now();
        let next = self.ports.server_key.successor(presented);
        let rotation = self
            .ports
            .sessions
            .rotate_refresh(
                &TokenHash::of(presented),
                NewRefreshToken { hash: next.hash(), expires_at: now + self.policy.refresh_ttl },
                now,
                self.policy.refresh_grace,
                client.ip.clone(),
            )
            .await?;
        match rotation {
            Rotation::Rotated { user_id, session_id, amr } => {
                let access = self.ports.tokens.issue(AccessClaims { user_id, session_id, amr }, now)?;
                Ok(TokenPair { session_id, access: access.token, refresh: next, expires_in: access.expires_in })
            }
            Rotation::Unknown | Rotation::SessionDead => Err(RefreshError::Invalid),
            Rotation::Expired => Err(RefreshError::Expired),
            Rotation::Reused { user_id, session_id } => {
                tracing::warn!(%user_id, %session_id, "refresh token reused; session revoked");
                let detail = json!({ "session_id": session_id.to_string() });
                self.audit(AuditEvent::new(AuditKind::RefreshReused, Some(user_id), client).with_detail(detail)).await;
                Err(RefreshError::Reused)
            }
        }
    }

    /// The CSRF token of a browser session.
    pub fn csrf_token(&self, session_id: SessionId) -> String {
        self.ports.server_key.csrf_token(session_id)
    }

    /// Whether `presented` is the CSRF token of the session, in constant time.
    pub fn csrf_matches(&self, session_id: SessionId, presented: &str) -> bool {
        self.ports.server_key.csrf_matches(session_id, presented)
    }

    /// Resolves a bearer token to its caller: a valid signature is not
    /// enough, the session must still be live.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthenticateError> {
        let claims = self.verify_access(bearer)?;
        let now = self.ports.clock.now();
        match self.ports.sessions.session_state(claims.session_id, now).await? {
            SessionState::Live { user_id } if user_id == claims.user_id => {
                Ok(Principal { user_id, session_id: claims.session_id })
            }
            _ => Err(AuthenticateError::Invalid),
        }
    }

    /// [`Self::authenticate`] and [`Self::me`] in one read of the store: the
    /// hottest request of all costs a token check and one indexed query.
    pub async fn current_user(&self, bearer: &str) -> Result<User, AuthenticateError> {
        let claims = self.verify_access(bearer)?;
        match self.ports.sessions.session_user(claims.session_id, self.ports.clock.now()).await? {
            Some(user) if user.id == claims.user_id => Ok(user),
            _ => Err(AuthenticateError::Invalid),
        }
    }

    fn verify_access(&self, bearer: &str) -> Result<AccessClaims, AuthenticateError> {
        self.ports.tokens.verify(bearer).map_err(|error| match error {
            AccessTokenError::Invalid => AuthenticateError::Invalid,
            AccessTokenError::Expired => AuthenticateError::Expired,
        })
    }

    /// Spends a verification link token and marks the address verified.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, presented: &str, client: &ClientInfo) -> Result<User, VerifyEmailError> {
        if !presentable(presented) {
            return Err(VerifyEmailError::InvalidToken);
        }
        let now = self.ports.clock.now();
        let (user, event) = match self.ports.accounts.confirm_email(&TokenHash::of(presented), now).await? {
            EmailConfirmation::Verified(user) => {
                let event = AuditEvent::new(AuditKind::EmailVerified, Some(user.id), client);
                (user, event)
            }
            EmailConfirmation::Changed(user) => {
                let event = AuditEvent::new(AuditKind::EmailChanged, Some(user.id), client)
                    .with_detail(json!({ "email": user.email.as_ref() }));
                (user, event)
            }
            EmailConfirmation::AddressTaken => return Err(VerifyEmailError::AddressTaken),
            EmailConfirmation::NotLive => return Err(VerifyEmailError::InvalidToken),
        };
        tracing::info!(user_id = %user.id, "email verified");
        self.audit(event).await;
        Ok(user)
    }

    /// Mails a new verification link to an unverified, active account; does
    /// nothing otherwise. The caller answers the same either way.
    #[tracing::instrument(skip_all)]
    pub async fn resend_verification(&self, email: &Email) -> Result<(), PortError> {
        let Some(user) = self.ports.accounts.find_user_by_email(&email.key()).await? else {
            return Ok(());
        };
        let now = self.ports.clock.now();
        if user.is_verified || !user.is_active || !self.may_mail(MailKind::Verification, &user.email, now).await? {
            return Ok(());
        }
        let token = self.ports.random.token();
        let mail = mail::verification(&user.email, &self.links, &token);
        let record = self.one_time_token(&token, TokenPurpose::VerifyEmail, now, self.policy.verification_ttl);
        self.ports.accounts.issue_token(user.id, record, vec![mail]).await
    }

    pub async fn me(&self, user_id: UserId) -> Result<User, MeError> {
        self.ports.accounts.get_user(user_id).await?.ok_or(MeError::NotFound)
    }

    #[tracing::instrument(skip_all, fields(%user_id))]
    pub async fn update_me(&self, user_id: UserId, patch: ProfilePatch) -> Result<User, MeError> {
        if patch.is_empty() {
            return self.me(user_id).await;
        }
        self.ports.accounts.update_profile(user_id, patch).await?.ok_or(MeError::NotFound)
    }

    /// Revokes the caller's session: its access tokens fail from the next request.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn logout(&self, principal: Principal, client: &ClientInfo) -> Result<(), PortError> {
        let now = self.ports.clock.now();
        self.ports.sessions.revoke_session(principal.user_id, principal.session_id, now).await?;
        let detail = json!({ "scope": "session", "session_id": principal.session_id.to_string() });
        self.audit(AuditEvent::new(AuditKind::Logout, Some(principal.user_id), client).with_detail(detail)).await;
        Ok(())
    }

    /// The caller's live sessions, each marked whether it is the calling one.
    pub async fn sessions(&self, principal: Principal) -> Result<Vec<(SessionInfo, bool)>, PortError> {
        let sessions = self.ports.sessions.list_sessions(principal.user_id, self.ports.clock.now()).await?;
        Ok(sessions.into_iter().map(|s| (s.id == principal.session_id, s)).map(|(current, s)| (s, current)).collect())
    }

    /// Revokes one of the caller's sessions. Another user's session is
    /// indistinguishable from one that does not exist.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn revoke_own_session(&self, principal: Principal, id: SessionId) -> Result<(), RevokeSessionError> {
        let now = self.ports.clock.now();
        if self.ports.sessions.revoke_session(principal.user_id, id, now).await? {
            Ok(())
        } else {
            Err(RevokeSessionError::NotFound)
        }
    }

    /// Checks the caller's current password; `WrongPassword` names no one but the caller.
    async fn check_own_password(&self, user_id: UserId, password: &PlainPassword) -> Result<(), OwnPasswordError> {
        let credentials = self.ports.accounts.find_credentials_by_id(user_id).await?;
        let Some(hash) = credentials.and_then(|c| c.password_hash) else {
            self.ports.hasher.verify_dummy(password).await?;
            return Err(OwnPasswordError::WrongPassword);
        };
        match self.ports.hasher.verify(password, &hash).await? {
            PasswordCheck::Match { .. } => Ok(()),
            PasswordCheck::Mismatch => Err(OwnPasswordError::WrongPassword),
        }
    }

    /// Sets a new password after checking the current one; every other
    /// session is revoked and the user is told by mail.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn change_password(
        &self,
        principal: Principal,
        old_password: &PlainPassword,
        new_password: &str,
        client: &ClientInfo,
    ) -> Result<(), ChangePasswordError> {
        self.check_own_password(principal.user_id, old_password).await?;
        let user = self.me(principal.user_id).await.map_err(|_| ChangePasswordError::WrongPassword)?;
        let password = Password::parse(new_password, &personal_words(&user))
            .map_err(|rules| ChangePasswordError::Invalid(FieldErrors::broken("new_password", &rules)))?;
        let hash = self.ports.hasher.hash(password.plain()).await?;
        let notice = mail::password_changed(&user.email, &self.links);
        let now = self.ports.clock.now();
        self.ports.accounts.change_password(user.id, hash, Some(principal.session_id), now, notice).await?;
        tracing::info!(user_id = %user.id, "password changed");
        self.audit(AuditEvent::new(AuditKind::PasswordChanged, Some(user.id), client)).await;
        Ok(())
    }

    /// Mails a reset link to a known, active account (verified or not); does
    /// nothing otherwise. The caller answers the same either way.
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(&self, email: &Email) -> Result<(), PortError> {
        let Some(user) = self.ports.accounts.find_user_by_email(&email.key()).await? else {
            return Ok(());
        };
        let now = self.ports.clock.now();
        if !user.is_active || !self.may_mail(MailKind::Reset, &user.email, now).await? {
            return Ok(());
        }
        let token = self.ports.random.token();
        let mail = mail::password_reset(&user.email, &self.links, &token, self.policy.reset_ttl.whole_minutes());
        let record = self.one_time_token(&token, TokenPurpose::ResetPassword, now, self.policy.reset_ttl);
        self.ports.accounts.issue_token(user.id, record, vec![mail]).await?;
        tracing::info!(user_id = %user.id, "password reset link issued");
        Ok(())
    }

    /// Sets a new password through a reset link: single use, and every session ends.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_password_reset(
        &self,
        presented: &str,
        new_password: &str,
        client: &ClientInfo,
    ) -> Result<User, ResetPasswordError> {
        if !presentable(presented) {
            return Err(ResetPasswordError::InvalidToken);
        }
        let token = TokenHash::of(presented);
        let now = self.ports.clock.now();
        let user = self
            .ports
            .accounts
            .peek_token(&token, TokenPurpose::ResetPassword, now)
            .await?
            .ok_or(ResetPasswordError::InvalidToken)?;
        let password = Password::parse(new_password, &personal_words(&user))
            .map_err(|rules| ResetPasswordError::Invalid(FieldErrors::broken("new_password", &rules)))?;
        let hash = self.ports.hasher.hash(password.plain()).await?;
        let notice = mail::password_was_reset(&user.email, &self.links);
        let user = self
            .ports
            .accounts
            .reset_password(&token, hash, now, notice)
            .await?
            .ok_or(ResetPasswordError::InvalidToken)?;
        tracing::info!(user_id = %user.id, "password reset");
        self.audit(AuditEvent::new(AuditKind::PasswordReset, Some(user.id), client)).await;
        Ok(user)
    }

    /// Starts moving the caller's account to a new address: the new mailbox
    /// gets a link, the old one a notice at once. A new address that belongs
    /// to someone else gets a notice instead of a link, and the caller the
    /// same answer.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn request_email_change(
        &self,
        principal: Principal,
        new_email: Email,
        password: &PlainPassword,
    ) -> Result<(), EmailChangeError> {
        self.check_own_password(principal.user_id, password).await.map_err(|error| match error {
            OwnPasswordError::WrongPassword => EmailChangeError::WrongPassword,
            OwnPasswordError::Port(error) => EmailChangeError::Port(error),
        })?;
        let user = self.me(principal.user_id).await.map_err(|_| EmailChangeError::WrongPassword)?;
        if new_email.key() == user.email.key() {
            return Err(EmailChangeError::SameAddress);
        }
        let now = self.ports.clock.now();
        // Each address counts the mail it gets: the notice, the link or the warning.
        let mut mails = Vec::new();
        if self.may_mail(MailKind::EmailChange, &user.email, now).await? {
            mails.push(mail::address_change_requested(&user.email, &new_email, &self.links));
        }
        let new_address_mailed = self.may_mail(MailKind::EmailChange, &new_email, now).await?;
        if self.ports.accounts.find_credentials(&new_email.key()).await?.is_some() || !new_address_mailed {
            if new_address_mailed {
                mails.push(mail::address_in_use(&new_email, &self.links));
            }
            if !mails.is_empty() {
                self.ports.accounts.enqueue_mails(mails).await?;
            }
            return Ok(());
        }
        let token = self.ports.random.token();
        mails.insert(0, mail::confirm_new_address(&new_email, &self.links, &token));
        let record = NewOneTimeToken {
            new_email: Some(new_email),
            ..self.one_time_token(&token, TokenPurpose::ChangeEmail, now, self.policy.verification_ttl)
        };
        self.ports.accounts.issue_token(user.id, record, mails).await?;
        tracing::info!(user_id = %user.id, "email change requested");
        Ok(())
    }

    /// Deletes the caller's account after checking their password.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn delete_me(
        &self,
        principal: Principal,
        password: &PlainPassword,
        client: &ClientInfo,
    ) -> Result<(), OwnPasswordError> {
        self.check_own_password(principal.user_id, password).await?;
        let user = self.me(principal.user_id).await.map_err(|_| OwnPasswordError::WrongPassword)?;
        self.ports.accounts.delete_account(user.id, mail::goodbye(&user.email)).await?;
        tracing::info!(user_id = %user.id, "account deleted");
        let detail = json!({ "email": user.email.as_ref() });
        self.audit(AuditEvent::new(AuditKind::AccountDeleted, Some(user.id), client).with_detail(detail)).await;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(%user_id))]
    pub async fn logout_all(&self, user_id: UserId, client: &ClientInfo) -> Result<(), PortError> {
        self.ports.sessions.revoke_all_sessions(user_id, self.ports.clock.now()).await?;
        let detail = json!({ "scope": "all" });
        self.audit(AuditEvent::new(AuditKind::Logout, Some(user_id), client).with_detail(detail)).await;
        Ok(())
    }

    /// Makes (or promotes) a verified superuser: the operator's bootstrap.
    #[tracing::instrument(skip_all)]
    pub async fn create_superuser(&self, email: Email, password: Password) -> Result<User, PortError> {
        let hash = self.ports.hasher.hash(password.plain()).await?;
        let user = self.ports.accounts.upsert_superuser(email, hash, self.ports.clock.now()).await?;
        tracing::info!(user_id = %user.id, "superuser created or promoted");
        Ok(user)
    }

    fn one_time_token(
        &self,
        token: &OpaqueToken,
        purpose: TokenPurpose,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> NewOneTimeToken {
        NewOneTimeToken { hash: token.hash(), purpose, new_email: None, created_at: now, expires_at: now + ttl }
    }
}
