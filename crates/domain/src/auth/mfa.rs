//! Two-factor login with TOTP and recovery codes: setting it up, the second
//! step of a login, turning it off, new recovery codes, an admin's reset.

use serde_json::json;

use super::{AuthService, LoginError, LoginOutcome, Principal, Settled};
use crate::audit::{AuditEvent, AuditKind};
use crate::error::{FieldErrors, PortError};
use crate::mail;
use crate::mfa::{MfaChange, StoredTotp};
use crate::password::PlainPassword;
use crate::ports::ThrottleKey;
use crate::session::{AuthMethods, ClientInfo, OpaqueToken, SettledThrottle, TokenHash};
use crate::user::{User, UserId};

/// Wrong codes one `mfa_token` survives; the fifth kills it.
pub const MAX_CODE_FAILURES_PER_TOKEN: i64 = 5;
/// Wrong codes per account per throttle window before `login/mfa` answers 429.
pub const MAX_CODE_FAILURES_PER_ACCOUNT: i64 = 10;
pub const RECOVERY_CODES: usize = 10;

/// A login's first step: done, or waiting for the second factor.
#[derive(Debug)]
pub enum LoginStep {
    Done(Box<LoginOutcome>),
    MfaRequired { mfa_token: OpaqueToken, expires_in: u64 },
}

/// What the user presents as their second factor.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    /// Six digits from the authenticator app.
    Code(String),
    RecoveryCode(String),
}

impl SecondFactor {
    /// The field a wrong one is reported on.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Code(_) => "code",
            Self::RecoveryCode(_) => "recovery_code",
        }
    }

    /// A code as the body gave it: six digits, or a recovery code as printed
    /// (case, spaces and dashes do not matter); anything else a field error.
    pub fn parse(code: Option<&str>, recovery_code: Option<&str>) -> Result<Self, FieldErrors> {
        match (code, recovery_code) {
            (Some(code), None) => {
                let code = code.trim();
                if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(Self::Code(code.to_owned()))
                } else {
                    Err(FieldErrors::single("code", "Enter the six digits your authenticator app shows."))
                }
            }
            (None, Some(recovery)) => {
                let normalized: String =
                    recovery.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_lowercase()).collect();
                if normalized.is_empty() || normalized.len() > 64 {
                    return Err(FieldErrors::single("recovery_code", "Enter one of your recovery codes."));
                }
                Ok(Self::RecoveryCode(normalized))
            }
            (Some(_), Some(_)) => {
                Err(FieldErrors::single("non_field_errors", "Send either code or recovery_code, not both."))
            }
            (None, None) => Err(FieldErrors::single("code", "This field is required.")),
        }
    }
}

/// What went wrong with a second factor, or around it.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// A wrong password on setup, disable or regenerate (400 on `password`).
    #[error("the password is wrong")]
    WrongPassword,
    /// A wrong, used or unknown code (400 on its field).
    #[error("the code is wrong")]
    WrongCode { field: &'static str },
    /// A request that does not fit the factor's state (400).
    #[error("{0}")]
    Refused(&'static str),
    /// A dead, expired or unknown `mfa_token` (401 `token_invalid`).
    #[error("the mfa_token is not live")]
    TokenInvalid,
    #[error("too many wrong codes; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error(transparent)]
    Port(#[from] PortError),
}

impl From<super::OwnPasswordError> for MfaError {
    fn from(error: super::OwnPasswordError) -> Self {
        match error {
            super::OwnPasswordError::WrongPassword => Self::WrongPassword,
            super::OwnPasswordError::Port(error) => Self::Port(error),
        }
    }
}

/// A fresh secret for the user's app.
#[derive(Debug)]
pub struct TotpSetup {
    pub secret: String,
    pub otpauth_uri: String,
}

impl AuthService {
    /// The login of an account with MFA stops after the password: its
    /// throttle keys are settled as a success, and a challenge waits.
    pub(super) async fn challenge(&self, user: &User, keys: &[ThrottleKey]) -> Result<LoginStep, LoginError> {
        // Settled now: no session (whose transaction would settle them) starts yet.
        let throttle = Self::settled_after_password(keys);
        if let Some(key) = &throttle.clear {
            self.ports.throttle.clear(key).await?;
        }
        self.ports.throttle.release(&throttle.release).await?;
        let token = self.ports.random.token();
        let ttl = self.policy.mfa_token_ttl;
        let expires_at = self.ports.clock.now() + ttl;
        self.ports.mfa.open_challenge(&token.hash(), user.id, expires_at).await?;
        tracing::info!(user_id = %user.id, "password accepted; waiting for the second factor");
        Ok(LoginStep::MfaRequired { mfa_token: token, expires_in: ttl.whole_seconds().unsigned_abs() })
    }

    /// The second step of a login: a code of the account's factor, or one of
    /// its recovery codes, with the `mfa_token` of the first step.
    #[tracing::instrument(skip_all)]
    pub async fn login_mfa(
        &self,
        mfa_token: &str,
        factor: SecondFactor,
        client: ClientInfo,
    ) -> Result<LoginOutcome, MfaError> {
        if !super::presentable(mfa_token) {
            return Err(MfaError::TokenInvalid);
        }
        let now = self.ports.clock.now();
        let token = TokenHash::of(mfa_token);
        let challenge = self.ports.mfa.challenge(&token, now).await?.ok_or(MfaError::TokenInvalid)?;
        if challenge.failures >= MAX_CODE_FAILURES_PER_TOKEN {
            return Err(MfaError::TokenInvalid);
        }
        let user = self.ports.accounts.get_user(challenge.user_id).await?;
        let Some(user) = user.filter(|u| u.is_active && u.mfa_enabled) else {
            return Err(MfaError::TokenInvalid);
        };
        let key = ThrottleKey::MfaCodes(user.id.to_string());
        let window = self.policy.throttle_window;
        let counted = self.ports.throttle.reserve(&key, now, window).await?;
        if counted.hits > MAX_CODE_FAILURES_PER_ACCOUNT {
            self.ports.throttle.release(std::slice::from_ref(&key)).await?;
            let retry_after = (counted.opened_at + window - now).whole_seconds().max(1).unsigned_abs();
            return Err(MfaError::Throttled { retry_after });
        }
        let Some(amr) = self.spend(user.id, &factor, &client).await? else {
            // The attempt stays counted against the account.
            let failures = self.ports.mfa.fail_challenge(&token).await?;
            if failures >= MAX_CODE_FAILURES_PER_TOKEN {
                self.ports.mfa.close_challenge(&token).await?;
            }
            let detail = json!({ "reason": "wrong_code", "field": factor.field() });
            self.audit(AuditEvent::new(AuditKind::MfaFailed, Some(user.id), &client).with_detail(detail)).await;
            return Err(MfaError::WrongCode { field: factor.field() });
        };
        if !self.ports.mfa.close_challenge(&token).await? {
            // Another request finished this login first.
            return Err(MfaError::TokenInvalid);
        }
        let settled = Settled {
            event: Some(AuditEvent::new(AuditKind::LoginSucceeded, Some(user.id), &client)),
            throttle: SettledThrottle { clear: None, release: vec![key] },
            rehash: None,
            amr,
        };
        let outcome = self.open_session(user, client, self.ports.clock.now(), settled).await?;
        tracing::info!(user_id = %outcome.user.id, "login succeeded with a second factor");
        Ok(outcome)
    }

    /// Spends the factor if it is right: the step of a TOTP code once, a
    /// recovery code once ever. The methods it proves, or `None`.
    async fn spend(
        &self,
        user_id: UserId,
        factor: &SecondFactor,
        client: &ClientInfo,
    ) -> Result<Option<AuthMethods>, PortError> {
        let now = self.ports.clock.now();
        match factor {
            SecondFactor::Code(code) => {
                let Some(StoredTotp { secret, confirmed: true, .. }) = self.ports.mfa.totp(user_id).await? else {
                    return Ok(None);
                };
                let step = self.ports.totp.matching_step(user_id, &secret, code, now)?;
                match step {
                    Some(step) if self.ports.mfa.spend_totp_step(user_id, step).await? => {
                        Ok(Some(AuthMethods::PasswordAndOtp))
                    }
                    _ => Ok(None),
                }
            }
            SecondFactor::RecoveryCode(code) => {
                if !self.ports.mfa.spend_recovery_code(user_id, &TokenHash::of(code), now).await? {
                    return Ok(None);
                }
                self.audit(AuditEvent::new(AuditKind::RecoveryCodeUsed, Some(user_id), client)).await;
                Ok(Some(AuthMethods::PasswordAndRecoveryCode))
            }
        }
    }

    /// A new pending secret, after the password; MFA must be off.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn totp_setup(&self, principal: Principal, password: &PlainPassword) -> Result<TotpSetup, MfaError> {
        self.check_own_password(principal.user_id, password).await?;
        let user = self.me(principal.user_id).await.map_err(|_| MfaError::TokenInvalid)?;
        if user.mfa_enabled {
            return Err(MfaError::Refused("Two-factor authentication is already on; turn it off first."));
        }
        let secret = self.ports.totp.new_secret(user.id, &user.email)?;
        if !self.ports.mfa.begin_totp(user.id, secret.sealed).await? {
            return Err(MfaError::Refused("Two-factor authentication is already on; turn it off first."));
        }
        Ok(TotpSetup { secret: secret.base32, otpauth_uri: secret.otpauth_uri })
    }

    /// Turns MFA on with a first code of the pending secret: answers the
    /// recovery codes, shown this once.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn totp_confirm(
        &self,
        principal: Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, MfaError> {
        let SecondFactor::Code(code) =
            SecondFactor::parse(Some(code), None).map_err(|_| MfaError::WrongCode { field: "code" })?
        else {
            return Err(MfaError::WrongCode { field: "code" });
        };
        let user = self.me(principal.user_id).await.map_err(|_| MfaError::TokenInvalid)?;
        let Some(StoredTotp { secret, confirmed: false, .. }) = self.ports.mfa.totp(user.id).await? else {
            return Err(MfaError::Refused("There is no pending setup: start one with mfa/totp/setup."));
        };
        let now = self.ports.clock.now();
        let Some(step) = self.ports.totp.matching_step(user.id, &secret, &code, now)? else {
            return Err(MfaError::WrongCode { field: "code" });
        };
        let (codes, hashes) = self.recovery_codes();
        let change = MfaChange {
            mail: mail::mfa_enabled(&user.email, &self.links),
            event: AuditEvent::new(AuditKind::MfaEnabled, Some(user.id), client),
        };
        if !self.ports.mfa.confirm_totp(user.id, &secret, step, hashes, change, now).await? {
            return Err(MfaError::Refused("The setup changed meanwhile: start again."));
        }
        tracing::info!("two-factor authentication turned on");
        Ok(codes)
    }

    /// Turns MFA off, with the password and a code (or a recovery code).
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn totp_disable(
        &self,
        principal: Principal,
        password: &PlainPassword,
        factor: SecondFactor,
        client: &ClientInfo,
    ) -> Result<(), MfaError> {
        let user = self.prove_both(principal, password, &factor, client).await?;
        let change = MfaChange {
            mail: mail::mfa_disabled(&user.email, &self.links),
            event: AuditEvent::new(AuditKind::MfaDisabled, Some(user.id), client),
        };
        self.ports.mfa.remove_totp(user.id, change, self.ports.clock.now()).await?;
        tracing::info!("two-factor authentication turned off");
        Ok(())
    }

    /// New recovery codes, with the password and a code; the old ones die.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn regenerate_recovery_codes(
        &self,
        principal: Principal,
        password: &PlainPassword,
        factor: SecondFactor,
        client: &ClientInfo,
    ) -> Result<Vec<String>, MfaError> {
        let user = self.prove_both(principal, password, &factor, client).await?;
        let (codes, hashes) = self.recovery_codes();
        self.ports.mfa.replace_recovery_codes(user.id, hashes).await?;
        Ok(codes)
    }

    /// The password, then a second factor of an account with MFA on.
    async fn prove_both(
        &self,
        principal: Principal,
        password: &PlainPassword,
        factor: &SecondFactor,
        client: &ClientInfo,
    ) -> Result<User, MfaError> {
        self.check_own_password(principal.user_id, password).await?;
        let user = self.me(principal.user_id).await.map_err(|_| MfaError::TokenInvalid)?;
        if !user.mfa_enabled {
            return Err(MfaError::Refused("Two-factor authentication is not on."));
        }
        if self.spend(user.id, factor, client).await?.is_none() {
            let detail = json!({ "reason": "wrong_code", "field": factor.field() });
            self.audit(AuditEvent::new(AuditKind::MfaFailed, Some(user.id), client).with_detail(detail)).await;
            return Err(MfaError::WrongCode { field: factor.field() });
        }
        Ok(user)
    }

    /// Ten codes as the user writes them down (`abcde-12345`), and their hashes.
    fn recovery_codes(&self) -> (Vec<String>, Vec<TokenHash>) {
        let codes: Vec<String> = (0..RECOVERY_CODES)
            .map(|_| {
                let mut chars = String::new();
                while chars.len() < 10 {
                    let random = self.ports.random.token();
                    chars.extend(
                        random.expose().chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()),
                    );
                }
                format!("{}-{}", &chars[..5], &chars[5..10])
            })
            .collect();
        let hashes = codes.iter().map(|code| TokenHash::of(&code.replace('-', ""))).collect();
        (codes, hashes)
    }
}
