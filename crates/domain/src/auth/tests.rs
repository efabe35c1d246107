//! Every branch of the account use cases, against mocked ports.

use super::*;
use crate::error::Overloaded;
use crate::mfa::{Challenge, MockMfaStore, MockTotpFactor, SealedSecret, StoredTotp};
use crate::password::PasswordHash;
use crate::ports::ThrottleKey;
use crate::ports::{
    Credentials, MailKind, MockAccessTokens, MockAccountStore, MockAuditLog, MockClock, MockPasswordHasher, MockRandom,
    MockSessionStore, MockThrottle, SignedAccessToken, ThrottleWindow,
};
use crate::session::{AuthMethods, SessionInfo};
use crate::user::Profile;
use mockall::predicate::{always, eq};
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

fn user(id: i64, verified: bool) -> User {
    User {
        id: UserId::new(id),
        email: Email::parse("ada@example.com").unwrap(),
        first_name: "Ada".into(),
        last_name: String::new(),
        is_active: true,
        is_staff: false,
        is_superuser: false,
        is_verified: verified,
        mfa_enabled: false,
        date_joined: NOW,
        last_login: None,
        groups: vec!["Regular User".into()],
        profile: Profile::default(),
    }
}

fn credentials(active: bool, verified: bool) -> Credentials {
    Credentials {
        user: User { is_active: active, ..user(1, verified) },
        password_hash: Some(PasswordHash::new("$argon2id$stored")),
    }
}

fn sid() -> SessionId {
    SessionId::new(uuid::Uuid::from_u128(0x5e55))
}

/// Mocks with the harmless defaults most tests want; each test adds its own expectations.
struct Mocks {
    accounts: MockAccountStore,
    sessions: MockSessionStore,
    throttle: MockThrottle,
    audit: MockAuditLog,
    hasher: MockPasswordHasher,
    tokens: MockAccessTokens,
    mfa: MockMfaStore,
    totp: MockTotpFactor,
    policy: AuthPolicy,
}

impl Mocks {
    fn new() -> Self {
        Self {
            accounts: MockAccountStore::new(),
            sessions: MockSessionStore::new(),
            throttle: MockThrottle::new(),
            audit: MockAuditLog::new(),
            hasher: MockPasswordHasher::new(),
            tokens: MockAccessTokens::new(),
            mfa: MockMfaStore::new(),
            totp: MockTotpFactor::new(),
            policy: AuthPolicy::default(),
        }
    }

    /// An active, verified account (user 1) whose password matches.
    fn expect_right_password(&mut self) {
        self.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
        self.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    }

    fn expect_session_opened(&mut self) {
        self.sessions.expect_start_session().times(1).returning(|_| Ok(()));
        self.expect_token_issued();
    }

    fn expect_token_issued(&mut self) {
        self.tokens
            .expect_issue()
            .times(1)
            .returning(|_, _| Ok(SignedAccessToken { token: OpaqueToken::new("access.jwt".into()), expires_in: 300 }));
    }

    fn service(mut self) -> AuthService {
        // The first attempt in its window unless a test says otherwise (its expectations come first).
        self.throttle.expect_reserve().returning(|_, now, _| Ok(ThrottleWindow { hits: 1, opened_at: now }));
        self.throttle.expect_release().returning(|_| Ok(()));
        self.throttle.expect_clear().returning(|_| Ok(()));
        self.audit.expect_record().returning(|_, _| Ok(()));
        let mut random = MockRandom::new();
        random.expect_token().returning(|| OpaqueToken::new("random-token".into()));
        random.expect_session_id().returning(sid);
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| NOW);
        let ports = Ports {
            accounts: Arc::new(self.accounts),
            sessions: Arc::new(self.sessions),
            throttle: Arc::new(self.throttle),
            audit: Arc::new(self.audit),
            hasher: Arc::new(self.hasher),
            tokens: Arc::new(self.tokens),
            random: Arc::new(random),
            clock: Arc::new(clock),
            server_key: server_key(),
            mfa: Arc::new(self.mfa),
            totp: Arc::new(self.totp),
        };
        AuthService::new(ports, Links::new("https://app.example.com"), self.policy)
    }
}

fn signup_request() -> SignupRequest {
    SignupRequest::parse(RawSignup {
        email: "Ada@Example.com",
        password: "correct horse battery staple",
        first_name: Some("Ada"),
        ..Default::default()
    })
    .unwrap()
}

fn login_request(password: &str) -> LoginRequest {
    LoginRequest::parse("ada@example.com", password).unwrap()
}

// --- parsing -------------------------------------------------------------

#[test]
fn signup_parse_reports_every_broken_field() {
    let errors = SignupRequest::parse(RawSignup {
        email: "not-an-email",
        password: "short",
        password2: Some("other"),
        tc: Some(false),
        ..Default::default()
    })
    .unwrap_err();
    for field in ["email", "password", "non_field_errors", "tc"] {
        assert!(errors.contains(field), "{field} missing from {errors:?}");
    }
}

#[test]
fn signup_parse_accepts_matching_password2() {
    let parsed = SignupRequest::parse(RawSignup {
        email: "ada@example.com",
        password: "correct horse battery staple",
        password2: Some("correct horse battery staple"),
        tc: Some(true),
        ..Default::default()
    });
    assert!(parsed.is_ok());
}

#[test]
fn signup_parse_rejects_a_password_like_the_email() {
    let errors = SignupRequest::parse(RawSignup {
        email: "zanzibar.quokka@example.com",
        password: "zanzibar.quokka",
        ..Default::default()
    })
    .unwrap_err();
    assert!(errors.contains("password"));
}

#[test]
fn login_parse_refuses_oversized_passwords_and_bad_emails() {
    let errors = LoginRequest::parse("nope", &"x".repeat(1025)).unwrap_err();
    assert!(errors.contains("email"));
    assert!(errors.contains("password"));
}

// --- signup --------------------------------------------------------------

#[tokio::test]
async fn signup_creates_the_account_with_its_verification_mail() {
    let mut m = Mocks::new();
    m.hasher.expect_hash().times(1).returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.accounts
        .expect_create_account()
        .withf(|account, token, mails| {
            account.email.as_ref() == "Ada@example.com"
                && !account.is_verified
                && token.purpose == TokenPurpose::VerifyEmail
                && token.hash == TokenHash::of("random-token")
                && token.expires_at == NOW + Duration::hours(24)
                && mails.len() == 1
                && mails[0].text.contains("https://app.example.com/verify-email?token=random-token")
        })
        .times(1)
        .returning(|_, _, _| Ok(user(1, false)));
    let outcome = m.service().signup(signup_request(), ClientInfo::default()).await.unwrap();
    assert_eq!(outcome.email.as_ref(), "Ada@example.com");
    assert!(outcome.login.is_none());
}

#[tokio::test]
async fn signup_with_a_known_address_mails_its_owner_and_answers_the_same() {
    let mut m = Mocks::new();
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.accounts.expect_create_account().returning(|_, _, _| Err(CreateAccountError::EmailTaken));
    m.accounts
        .expect_enqueue_mails()
        .withf(|mails| {
            mails.len() == 1 && mails[0].subject.contains("tried to sign up") && !mails[0].text.contains("token=")
        })
        .times(1)
        .returning(|_| Ok(()));
    let outcome = m.service().signup(signup_request(), ClientInfo::default()).await.unwrap();
    assert!(outcome.login.is_none());
}

#[tokio::test]
async fn signup_without_required_verification_logs_in_at_once() {
    let mut m = Mocks::new();
    m.policy.require_verified_email = false;
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.accounts.expect_create_account().returning(|_, _, _| Ok(user(1, false)));
    m.expect_session_opened();
    let outcome = m.service().signup(signup_request(), ClientInfo::default()).await.unwrap();
    let login = outcome.login.unwrap();
    assert_eq!(login.user.last_login, Some(NOW));
    assert_eq!(login.tokens.refresh.expose(), "random-token");
    assert_eq!(login.tokens.expires_in, 300);
}

#[tokio::test]
async fn signup_without_required_verification_reveals_a_taken_address() {
    let mut m = Mocks::new();
    m.policy.require_verified_email = false;
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.accounts.expect_create_account().returning(|_, _, _| Err(CreateAccountError::EmailTaken));
    let error = m.service().signup(signup_request(), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, SignupError::EmailTaken));
}

#[tokio::test]
async fn signup_passes_store_failures_through() {
    let mut m = Mocks::new();
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.accounts
        .expect_create_account()
        .returning(|_, _, _| Err(CreateAccountError::Port(PortError::unavailable("db down"))));
    let error = m.service().signup(signup_request(), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, SignupError::Port(PortError::Unavailable(_))));
}

// --- login ---------------------------------------------------------------

#[tokio::test]
async fn login_with_the_right_password_opens_a_session() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().times(1).returning(|_| Ok(Some(credentials(true, true))));
    m.accounts.expect_get_user().never();
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.expect_session_opened();
    let LoginStep::Done(outcome) = m.service().login(login_request("pw-right"), ClientInfo::default()).await.unwrap()
    else {
        panic!("no second factor was asked for")
    };
    assert_eq!(outcome.user.id, UserId::new(1));
    assert_eq!(outcome.tokens.access.expose(), "access.jwt");
}

#[tokio::test]
async fn login_with_an_unknown_address_spends_a_dummy_verification() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(None));
    m.hasher.expect_verify_dummy().times(1).returning(|_| Ok(()));
    let error = m.service().login(login_request("whatever"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, LoginError::InvalidCredentials));
}

#[tokio::test]
async fn login_of_an_account_without_password_is_like_an_unknown_address() {
    let mut m = Mocks::new();
    m.accounts
        .expect_find_credentials()
        .returning(|_| Ok(Some(Credentials { password_hash: None, ..credentials(true, true) })));
    m.hasher.expect_verify_dummy().times(1).returning(|_| Ok(()));
    let error = m.service().login(login_request("whatever"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, LoginError::InvalidCredentials));
}

#[tokio::test]
async fn login_with_a_wrong_password_fails_alike() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Mismatch));
    let error = m.service().login(login_request("wrong"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, LoginError::InvalidCredentials));
}

#[tokio::test]
async fn a_wrong_password_does_not_reveal_a_disabled_account() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(false, false))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Mismatch));
    let error = m.service().login(login_request("wrong"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, LoginError::InvalidCredentials));
}

#[tokio::test]
async fn login_of_a_disabled_account_is_refused_after_the_password() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(false, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    let error = m.service().login(login_request("right"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, LoginError::AccountDisabled));
}

#[tokio::test]
async fn login_of_an_unverified_account_is_refused_when_verification_is_required() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, false))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    let error = m.service().login(login_request("right"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, LoginError::EmailNotVerified));
}

#[tokio::test]
async fn login_of_an_unverified_account_passes_when_verification_is_optional() {
    let mut m = Mocks::new();
    m.policy.require_verified_email = false;
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, false))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.expect_session_opened();
    assert!(m.service().login(login_request("right"), ClientInfo::default()).await.is_ok());
}

#[tokio::test]
async fn login_upgrades_an_outdated_hash_in_the_sessions_transaction() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: true }));
    m.hasher.expect_hash().times(1).returning(|_| Ok(PasswordHash::new("$argon2id$upgraded")));
    m.sessions
        .expect_start_session()
        .withf(|s| {
            s.rehash.as_ref().is_some_and(|r| {
                r.to.expose() == "$argon2id$upgraded"
                    && r.from.expose() == credentials(true, true).password_hash.unwrap().expose()
            })
        })
        .times(1)
        .returning(|_| Ok(()));
    m.expect_token_issued();
    assert!(m.service().login(login_request("right"), ClientInfo::default()).await.is_ok());
}

#[tokio::test]
async fn a_failed_hash_upgrade_does_not_fail_the_login() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: true }));
    m.hasher.expect_hash().returning(|_| Err(PortError::unavailable("queue full")));
    m.sessions.expect_start_session().withf(|s| s.rehash.is_none()).times(1).returning(|_| Ok(()));
    m.expect_token_issued();
    assert!(m.service().login(login_request("right"), ClientInfo::default()).await.is_ok());
}

#[tokio::test]
async fn login_records_the_client_on_the_session() {
    let mut m = Mocks::new();
    m.expect_right_password();
    m.sessions
        .expect_start_session()
        .withf(|s| {
            s.client.ip.as_deref() == Some("203.0.113.9")
                && s.refresh.hash == TokenHash::of("random-token")
                && s.refresh.expires_at == NOW + Duration::days(1)
                && s.id == sid()
        })
        .times(1)
        .returning(|_| Ok(()));
    m.tokens
        .expect_issue()
        .with(eq(AccessClaims { user_id: UserId::new(1), session_id: sid(), amr: AuthMethods::Password }), eq(NOW))
        .returning(|_, _| Ok(SignedAccessToken { token: OpaqueToken::new("a".into()), expires_in: 300 }));
    let client = ClientInfo::new(Some("203.0.113.9".into()), Some("curl/8"));
    assert!(m.service().login(login_request("right"), client).await.is_ok());
}

// --- refresh -------------------------------------------------------------

fn server_key() -> ServerKey {
    ServerKey::new(b"a server key for the unit tests of the domain")
}

async fn refresh_with(rotation: Rotation) -> Result<TokenPair, RefreshError> {
    let mut m = Mocks::new();
    let expected = rotation.clone();
    m.sessions
        .expect_rotate_refresh()
        .withf(|presented, next, now, grace, _| {
            *presented == TokenHash::of("old-token")
                && next.hash == server_key().successor("old-token").hash()
                && *now == NOW
                && *grace == Duration::seconds(10)
        })
        .returning(move |_, _, _, _, _| Ok(expected.clone()));
    // The new access token says how the session's user authenticated.
    let amr = match rotation {
        Rotation::Rotated { amr, .. } => amr,
        _ => AuthMethods::Password,
    };
    m.tokens
        .expect_issue()
        .withf(move |claims, _| claims.amr == amr)
        .returning(|_, _| Ok(SignedAccessToken { token: OpaqueToken::new("access.jwt".into()), expires_in: 300 }));
    m.service().refresh("old-token", None, &ClientInfo::default()).await
}

#[tokio::test]
async fn refresh_rotates_the_token() {
    let pair = refresh_with(Rotation::Rotated {
        user_id: UserId::new(1),
        session_id: sid(),
        amr: AuthMethods::PasswordAndOtp,
    })
    .await
    .unwrap();
    assert_eq!(pair.refresh.expose(), server_key().successor("old-token").expose());
    assert_eq!(pair.access.expose(), "access.jwt");
}

#[test]
fn successors_are_keyed_and_deterministic() {
    let key = server_key();
    assert_eq!(key.successor("a").expose(), key.successor("a").expose(), "a replay recomputes the same one");
    assert_ne!(key.successor("a").expose(), key.successor("b").expose());
    assert_ne!(key.successor("a").expose(), ServerKey::new(b"another key").successor("a").expose());
    assert_eq!(key.successor("a").expose().len(), 64, "256 bits");
}

#[tokio::test]
async fn refresh_maps_every_rotation_outcome() {
    assert!(matches!(refresh_with(Rotation::Unknown).await, Err(RefreshError::Invalid)));
    assert!(matches!(refresh_with(Rotation::SessionDead).await, Err(RefreshError::Invalid)));
    assert!(matches!(refresh_with(Rotation::Expired).await, Err(RefreshError::Expired)));
    let reused = Rotation::Reused { user_id: UserId::new(1), session_id: sid() };
    assert!(matches!(refresh_with(reused).await, Err(RefreshError::Reused)));
}

#[tokio::test]
async fn refresh_refuses_empty_or_huge_tokens_without_a_lookup() {
    let service = Mocks::new().service();
    assert!(matches!(service.refresh("", None, &ClientInfo::default()).await, Err(RefreshError::Invalid)));
    assert!(matches!(
        service.refresh(&"x".repeat(600), None, &ClientInfo::default()).await,
        Err(RefreshError::Invalid)
    ));
}

#[tokio::test]
async fn a_cookie_refresh_spends_nothing_without_its_sessions_csrf_token() {
    let mut m = Mocks::new();
    m.sessions.expect_refresh_session().returning(|_| Ok(Some(sid())));
    m.sessions.expect_rotate_refresh().never();
    let service = m.service();
    let other_session = server_key().csrf_token(SessionId::new(uuid::Uuid::from_u128(7)));
    for csrf in ["", "forged", other_session.as_str()] {
        let outcome = service.refresh("old-token", Some(csrf), &ClientInfo::default()).await;
        assert!(matches!(outcome, Err(RefreshError::CsrfFailed)), "{csrf:?}");
    }
}

#[tokio::test]
async fn a_cookie_refresh_of_an_unknown_token_is_invalid_before_any_csrf_check() {
    let mut m = Mocks::new();
    m.sessions.expect_refresh_session().returning(|_| Ok(None));
    m.sessions.expect_rotate_refresh().never();
    let outcome = m.service().refresh("old-token", Some("anything"), &ClientInfo::default()).await;
    assert!(matches!(outcome, Err(RefreshError::Invalid)));
}

#[tokio::test]
async fn a_cookie_refresh_with_its_sessions_csrf_token_rotates() {
    let mut m = Mocks::new();
    m.sessions.expect_refresh_session().returning(|_| Ok(Some(sid())));
    m.sessions.expect_rotate_refresh().returning(|_, _, _, _, _| {
        Ok(Rotation::Rotated { user_id: UserId::new(1), session_id: sid(), amr: AuthMethods::PasswordAndOtp })
    });
    m.tokens
        .expect_issue()
        .returning(|_, _| Ok(SignedAccessToken { token: OpaqueToken::new("access.jwt".into()), expires_in: 300 }));
    let csrf = server_key().csrf_token(sid());
    let pair = m.service().refresh("old-token", Some(&csrf), &ClientInfo::default()).await.unwrap();
    assert_eq!(pair.session_id, sid());
}

// --- authenticate --------------------------------------------------------

fn claims() -> AccessClaims {
    AccessClaims { user_id: UserId::new(1), session_id: sid(), amr: AuthMethods::Password }
}

#[tokio::test]
async fn authenticate_needs_a_live_session_of_the_same_user() {
    let mut m = Mocks::new();
    m.tokens.expect_verify().returning(|_| Ok(claims()));
    m.sessions.expect_session_state().returning(|_, _| Ok(SessionState::Live { user_id: UserId::new(1) }));
    let principal = m.service().authenticate("jwt").await.unwrap();
    assert_eq!(principal, Principal { user_id: UserId::new(1), session_id: sid() });
}

#[tokio::test]
async fn authenticate_refuses_a_revoked_session() {
    let mut m = Mocks::new();
    m.tokens.expect_verify().returning(|_| Ok(claims()));
    m.sessions.expect_session_state().returning(|_, _| Ok(SessionState::Dead));
    assert!(matches!(m.service().authenticate("jwt").await, Err(AuthenticateError::Invalid)));
}

#[tokio::test]
async fn authenticate_refuses_a_session_of_another_user() {
    let mut m = Mocks::new();
    m.tokens.expect_verify().returning(|_| Ok(claims()));
    m.sessions.expect_session_state().returning(|_, _| Ok(SessionState::Live { user_id: UserId::new(2) }));
    assert!(matches!(m.service().authenticate("jwt").await, Err(AuthenticateError::Invalid)));
}

#[tokio::test]
async fn authenticate_maps_token_errors_without_a_lookup() {
    let mut m = Mocks::new();
    m.tokens.expect_verify().with(eq("expired")).returning(|_| Err(AccessTokenError::Expired));
    m.tokens.expect_verify().with(eq("garbage")).returning(|_| Err(AccessTokenError::Invalid));
    let service = m.service();
    assert!(matches!(service.authenticate("expired").await, Err(AuthenticateError::Expired)));
    assert!(matches!(service.authenticate("garbage").await, Err(AuthenticateError::Invalid)));
}

#[tokio::test]
async fn current_user_reads_the_session_and_user_together() {
    let mut m = Mocks::new();
    m.tokens.expect_verify().returning(|_| Ok(claims()));
    m.sessions.expect_session_user().with(eq(sid()), always()).returning(|_, _| Ok(Some(user(1, true))));
    m.sessions.expect_session_state().never();
    m.accounts.expect_get_user().never();
    assert_eq!(m.service().current_user("jwt").await.unwrap().id, UserId::new(1));
}

#[tokio::test]
async fn current_user_refuses_a_dead_session_or_another_users() {
    for found in [None, Some(user(2, true))] {
        let mut m = Mocks::new();
        m.tokens.expect_verify().returning(|_| Ok(claims()));
        m.sessions.expect_session_user().return_once(move |_, _| Ok(found));
        assert!(matches!(m.service().current_user("jwt").await, Err(AuthenticateError::Invalid)));
    }
}

// --- email verification --------------------------------------------------

#[tokio::test]
async fn verify_email_spends_the_token() {
    let mut m = Mocks::new();
    m.accounts
        .expect_confirm_email()
        .withf(|hash, now| *hash == TokenHash::of("link-token") && *now == NOW)
        .returning(|_, _| Ok(EmailConfirmation::Verified(user(1, true))));
    let user = m.service().verify_email("link-token", &ClientInfo::default()).await.unwrap();
    assert!(user.is_verified);
}

#[tokio::test]
async fn verify_email_refuses_a_dead_token() {
    let mut m = Mocks::new();
    m.accounts.expect_confirm_email().returning(|_, _| Ok(EmailConfirmation::NotLive));
    let service = m.service();
    assert!(matches!(service.verify_email("used", &ClientInfo::default()).await, Err(VerifyEmailError::InvalidToken)));
    assert!(matches!(service.verify_email("", &ClientInfo::default()).await, Err(VerifyEmailError::InvalidToken)));
}

#[tokio::test]
async fn resend_mails_an_unverified_account() {
    let mut m = Mocks::new();
    m.accounts.expect_find_user_by_email().returning(|_| Ok(Some(user(1, false))));
    m.accounts
        .expect_issue_token()
        .withf(|id, token, mail| {
            *id == UserId::new(1) && token.purpose == TokenPurpose::VerifyEmail && mail[0].text.contains("random-token")
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    m.service().resend_verification(&Email::parse("ada@example.com").unwrap()).await.unwrap();
}

#[tokio::test]
async fn resend_does_nothing_for_unknown_verified_or_disabled_accounts() {
    for found in [None, Some(user(1, true)), Some(User { is_active: false, ..user(1, false) })] {
        let mut m = Mocks::new();
        m.accounts.expect_find_user_by_email().returning(move |_| Ok(found.clone()));
        m.accounts.expect_issue_token().never();
        m.service().resend_verification(&Email::parse("ada@example.com").unwrap()).await.unwrap();
    }
}

// --- me, logout ----------------------------------------------------------

#[tokio::test]
async fn me_returns_the_user_or_not_found() {
    let mut m = Mocks::new();
    m.accounts.expect_get_user().with(eq(UserId::new(1))).returning(|_| Ok(Some(user(1, true))));
    m.accounts.expect_get_user().with(eq(UserId::new(2))).returning(|_| Ok(None));
    let service = m.service();
    assert_eq!(service.me(UserId::new(1)).await.unwrap().id, UserId::new(1));
    assert!(matches!(service.me(UserId::new(2)).await, Err(MeError::NotFound)));
}

#[tokio::test]
async fn update_me_applies_the_patch() {
    let mut m = Mocks::new();
    m.accounts
        .expect_update_profile()
        .withf(|id, patch| *id == UserId::new(1) && patch.bio.as_deref() == Some("hi"))
        .returning(|_, _| Ok(Some(user(1, true))));
    let patch = ProfilePatch { bio: Some("hi".into()), ..Default::default() };
    assert!(m.service().update_me(UserId::new(1), patch).await.is_ok());
}

#[tokio::test]
async fn an_empty_patch_reads_without_writing() {
    let mut m = Mocks::new();
    m.accounts.expect_update_profile().never();
    m.accounts.expect_get_user().returning(|_| Ok(Some(user(1, true))));
    assert!(m.service().update_me(UserId::new(1), ProfilePatch::default()).await.is_ok());
}

#[tokio::test]
async fn logout_revokes_the_callers_session_only() {
    let mut m = Mocks::new();
    m.sessions
        .expect_revoke_session()
        .with(eq(UserId::new(1)), eq(sid()), eq(NOW))
        .times(1)
        .returning(|_, _, _| Ok(true));
    m.service().logout(Principal { user_id: UserId::new(1), session_id: sid() }, &ClientInfo::default()).await.unwrap();
}

#[tokio::test]
async fn logout_all_revokes_every_session() {
    let mut m = Mocks::new();
    m.sessions.expect_revoke_all_sessions().with(eq(UserId::new(1)), eq(NOW)).times(1).returning(|_, _| Ok(()));
    m.service().logout_all(UserId::new(1), &ClientInfo::default()).await.unwrap();
}

#[tokio::test]
async fn create_superuser_hashes_and_upserts() {
    let mut m = Mocks::new();
    m.hasher.expect_hash().times(1).returning(|_| Ok(PasswordHash::new("$argon2id$admin")));
    m.accounts
        .expect_upsert_superuser()
        .withf(|email, hash, now| {
            email.as_ref() == "root@example.com" && hash.expose() == "$argon2id$admin" && *now == NOW
        })
        .times(1)
        .returning(|_, _, _| Ok(User { is_superuser: true, ..user(1, true) }));
    let password = Password::parse("correct horse battery staple", &[]).unwrap();
    let created = m.service().create_superuser(Email::parse("root@example.com").unwrap(), password).await.unwrap();
    assert!(created.is_superuser);
}

#[tokio::test]
async fn sessions_mark_the_callers_own() {
    let mut m = Mocks::new();
    let other = SessionId::new(uuid::Uuid::from_u128(9));
    m.sessions.expect_list_sessions().with(eq(UserId::new(1)), eq(NOW)).returning(move |_, _| {
        Ok([sid(), other]
            .into_iter()
            .map(|id| SessionInfo { id, created_at: NOW, last_used_at: NOW, user_agent: None, ip: None })
            .collect())
    });
    let sessions = m.service().sessions(Principal { user_id: UserId::new(1), session_id: sid() }).await.unwrap();
    assert_eq!(
        sessions.iter().map(|(s, current)| (s.id, *current)).collect::<Vec<_>>(),
        [(sid(), true), (other, false)]
    );
}

#[tokio::test]
async fn revoking_a_session_that_is_not_the_callers_is_not_found() {
    let mut m = Mocks::new();
    let other = SessionId::new(uuid::Uuid::from_u128(9));
    m.sessions.expect_revoke_session().with(eq(UserId::new(1)), eq(other), eq(NOW)).returning(|_, _, _| Ok(false));
    m.sessions.expect_revoke_session().with(eq(UserId::new(1)), eq(sid()), eq(NOW)).returning(|_, _, _| Ok(true));
    let service = m.service();
    let principal = Principal { user_id: UserId::new(1), session_id: sid() };
    assert!(matches!(service.revoke_own_session(principal, other).await, Err(RevokeSessionError::NotFound)));
    assert!(service.revoke_own_session(principal, sid()).await.is_ok());
}

// --- own password: change, delete ----------------------------------------

fn principal() -> Principal {
    Principal { user_id: UserId::new(1), session_id: sid() }
}

fn plain(raw: &str) -> PlainPassword {
    PlainPassword::parse(raw).unwrap()
}

#[tokio::test]
async fn change_password_keeps_the_calling_session_and_mails_a_notice() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.accounts.expect_get_user().returning(|_| Ok(Some(user(1, true))));
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.accounts
        .expect_change_password()
        .withf(|id, hash, keep, now, notice| {
            *id == UserId::new(1)
                && hash.expose() == "$argon2id$new"
                && *keep == Some(sid())
                && *now == NOW
                && notice.subject.contains("password was changed")
        })
        .times(1)
        .returning(|_, _, _, _, _| Ok(()));
    m.service()
        .change_password(principal(), &plain("old one"), "a brand new passphrase", &ClientInfo::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn change_password_refuses_a_wrong_current_password() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Mismatch));
    m.accounts.expect_change_password().never();
    let error = m
        .service()
        .change_password(principal(), &plain("wrong"), "a brand new passphrase", &ClientInfo::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ChangePasswordError::WrongPassword));
}

#[tokio::test]
async fn change_password_applies_the_policy_to_the_new_one() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.accounts.expect_get_user().returning(|_| Ok(Some(user(1, true))));
    m.accounts.expect_change_password().never();
    let error = m
        .service()
        .change_password(principal(), &plain("old one"), "password", &ClientInfo::default())
        .await
        .unwrap_err();
    let ChangePasswordError::Invalid(errors) = error else { panic!("expected a policy error") };
    assert!(errors.contains("new_password"));
}

#[tokio::test]
async fn delete_me_needs_the_password_and_queues_goodbye() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher
        .expect_verify()
        .withf(|p, _| p.expose() == "right")
        .returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.accounts.expect_get_user().returning(|_| Ok(Some(user(1, true))));
    m.accounts
        .expect_delete_account()
        .withf(|id, mail| *id == UserId::new(1) && mail.subject.contains("deleted"))
        .times(1)
        .returning(|_, _| Ok(true));
    m.service().delete_me(principal(), &plain("right"), &ClientInfo::default()).await.unwrap();
}

#[tokio::test]
async fn delete_me_with_a_wrong_password_deletes_nothing() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Mismatch));
    m.accounts.expect_delete_account().never();
    assert!(matches!(
        m.service().delete_me(principal(), &plain("wrong"), &ClientInfo::default()).await,
        Err(OwnPasswordError::WrongPassword)
    ));
}

// --- password reset ------------------------------------------------------

#[tokio::test]
async fn a_reset_link_goes_to_known_active_accounts_only() {
    for (found, mailed) in
        [(Some(user(1, false)), true), (Some(User { is_active: false, ..user(1, true) }), false), (None, false)]
    {
        let mut m = Mocks::new();
        m.accounts.expect_find_user_by_email().returning(move |_| Ok(found.clone()));
        m.accounts
            .expect_issue_token()
            .withf(|id, token, mails| {
                *id == UserId::new(1)
                    && token.purpose == TokenPurpose::ResetPassword
                    && token.expires_at == NOW + Duration::seconds(600)
                    && mails[0].text.contains("https://app.example.com/reset-password?token=random-token")
            })
            .times(usize::from(mailed))
            .returning(|_, _, _| Ok(()));
        m.service().request_password_reset(&Email::parse("ada@example.com").unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn a_reset_confirm_checks_the_policy_against_the_tokens_user() {
    let mut m = Mocks::new();
    m.accounts
        .expect_peek_token()
        .withf(|hash, purpose, _| *hash == TokenHash::of("link") && *purpose == TokenPurpose::ResetPassword)
        .returning(|_, _, _| Ok(Some(user(1, false))));
    m.accounts.expect_reset_password().never();
    let error =
        m.service().confirm_password_reset("link", "ada@example.com", &ClientInfo::default()).await.unwrap_err();
    let ResetPasswordError::Invalid(errors) = error else { panic!("expected a policy error") };
    assert!(errors.contains("new_password"));
}

#[tokio::test]
async fn a_reset_confirm_spends_the_token() {
    let mut m = Mocks::new();
    m.accounts.expect_peek_token().returning(|_, _, _| Ok(Some(user(1, false))));
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$reset")));
    m.accounts
        .expect_reset_password()
        .withf(|hash, new, now, notice| {
            *hash == TokenHash::of("link")
                && new.expose() == "$argon2id$reset"
                && *now == NOW
                && notice.subject.contains("reset")
        })
        .times(1)
        .returning(|_, _, _, _| Ok(Some(user(1, true))));
    assert!(
        m.service()
            .confirm_password_reset("link", "a brand new passphrase", &ClientInfo::default())
            .await
            .unwrap()
            .is_verified
    );
}

#[tokio::test]
async fn a_dead_or_raced_reset_token_is_invalid() {
    let mut m = Mocks::new();
    m.accounts.expect_peek_token().with(eq(TokenHash::of("dead")), always(), always()).returning(|_, _, _| Ok(None));
    m.accounts
        .expect_peek_token()
        .with(eq(TokenHash::of("raced")), always(), always())
        .returning(|_, _, _| Ok(Some(user(1, true))));
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$reset")));
    m.accounts.expect_reset_password().returning(|_, _, _, _| Ok(None));
    let service = m.service();
    for token in ["dead", "raced", ""] {
        let error =
            service.confirm_password_reset(token, "a brand new passphrase", &ClientInfo::default()).await.unwrap_err();
        assert!(matches!(error, ResetPasswordError::InvalidToken), "{token}");
    }
}

// --- email change --------------------------------------------------------

fn new_address() -> Email {
    Email::parse("ada@new.example.com").unwrap()
}

fn with_right_password(m: &mut Mocks) {
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.accounts.expect_get_user().returning(|_| Ok(Some(user(1, true))));
}

#[tokio::test]
async fn an_email_change_mails_a_link_to_the_new_address_and_a_notice_to_the_old() {
    let mut m = Mocks::new();
    with_right_password(&mut m);
    m.accounts.expect_find_credentials().returning(|_| Ok(None));
    m.accounts
        .expect_issue_token()
        .withf(|id, token, mails| {
            *id == UserId::new(1)
                && token.purpose == TokenPurpose::ChangeEmail
                && token.new_email == Some(new_address())
                && mails.len() == 2
                && mails[0].to == new_address()
                && mails[0].text.contains("verify-email?token=random-token")
                && mails[1].to.as_ref() == "ada@example.com"
                && !mails[1].text.contains("token=")
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    m.service().request_email_change(principal(), new_address(), &plain("right")).await.unwrap();
}

#[tokio::test]
async fn an_email_change_to_a_taken_address_answers_the_same_and_warns_its_owner() {
    let mut m = Mocks::new();
    with_right_password(&mut m);
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    m.accounts.expect_issue_token().never();
    m.accounts
        .expect_enqueue_mails()
        .withf(|mails| mails.len() == 2 && mails[1].to == new_address() && !mails[1].text.contains("token="))
        .times(1)
        .returning(|_| Ok(()));
    m.service().request_email_change(principal(), new_address(), &plain("right")).await.unwrap();
}

#[tokio::test]
async fn an_email_change_needs_the_password_and_a_different_address() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials_by_id().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().withf(|p, _| p.expose() == "wrong").returning(|_, _| Ok(PasswordCheck::Mismatch));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.accounts.expect_get_user().returning(|_| Ok(Some(user(1, true))));
    let service = m.service();
    let wrong = service.request_email_change(principal(), new_address(), &plain("wrong")).await;
    assert!(matches!(wrong, Err(EmailChangeError::WrongPassword)));
    let same =
        service.request_email_change(principal(), Email::parse("ADA@example.com").unwrap(), &plain("right")).await;
    assert!(matches!(same, Err(EmailChangeError::SameAddress)));
}

#[tokio::test]
async fn confirming_a_change_to_a_taken_address_is_refused() {
    let mut m = Mocks::new();
    m.accounts.expect_confirm_email().returning(|_, _| Ok(EmailConfirmation::AddressTaken));
    assert!(matches!(
        m.service().verify_email("link", &ClientInfo::default()).await,
        Err(VerifyEmailError::AddressTaken)
    ));
}

// --- mail limits ---------------------------------------------------------

#[tokio::test]
async fn past_the_per_address_limit_a_signup_answers_the_same_and_mails_nothing() {
    let mut m = Mocks::new();
    m.hasher.expect_hash().returning(|_| Ok(PasswordHash::new("$argon2id$new")));
    m.throttle
        .expect_reserve()
        .withf(|key, _, window| {
            matches!(key, ThrottleKey::MailTo(MailKind::Verification, _)) && *window == Duration::seconds(900)
        })
        .returning(|_, _, _| Ok(ThrottleWindow { hits: 4, opened_at: NOW }));
    m.accounts
        .expect_create_account()
        .withf(|_, _, mails| mails.is_empty())
        .times(1)
        .returning(|_, _, _| Ok(user(1, false)));
    let outcome = m.service().signup(signup_request(), ClientInfo::default()).await.unwrap();
    assert!(outcome.login.is_none());
}

#[tokio::test]
async fn past_the_per_address_limit_a_reset_sends_nothing() {
    let mut m = Mocks::new();
    m.accounts.expect_find_user_by_email().returning(|_| Ok(Some(user(1, true))));
    m.throttle.expect_reserve().returning(|_, _, _| Ok(ThrottleWindow { hits: 4, opened_at: NOW }));
    m.accounts.expect_issue_token().never();
    assert!(m.service().request_password_reset(&Email::parse("ada@example.com").unwrap()).await.is_ok());
}

#[tokio::test]
async fn past_the_per_ip_limit_mail_requests_are_throttled() {
    let mut m = Mocks::new();
    m.throttle
        .expect_reserve()
        .withf(|key, _, _| *key == ThrottleKey::MailRequests("203.0.113.9".into()))
        .returning(|_, _, _| Ok(ThrottleWindow { hits: 21, opened_at: NOW - Duration::seconds(300) }));
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    let refused = m.service().count_mail_request(&client).await;
    assert!(matches!(refused, Err(MailRequestError::Throttled { retry_after: 600 })), "{refused:?}");
}

#[tokio::test]
async fn a_limit_of_zero_counts_nothing() {
    let mut m = Mocks::new();
    m.policy.max_mail_requests_per_ip = 0;
    m.throttle.expect_reserve().never();
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    assert!(m.service().count_mail_request(&client).await.is_ok());
}

// --- throttling ----------------------------------------------------------

fn counted(hits: i64, opened_at: OffsetDateTime) -> ThrottleWindow {
    ThrottleWindow { hits, opened_at }
}

#[tokio::test]
async fn the_eleventh_attempt_on_an_address_is_throttled_without_hashing_and_given_back() {
    let mut m = Mocks::new();
    m.throttle.expect_reserve().times(1).returning(|key, now, window| {
        assert_eq!((now, window), (NOW, Duration::minutes(15)));
        assert_eq!(*key, ThrottleKey::Email(Email::parse("ADA@example.com").unwrap().key()));
        Ok(counted(11, NOW - Duration::minutes(5)))
    });
    m.throttle.expect_release().withf(|keys| matches!(keys, [ThrottleKey::Email(_)])).times(1).returning(|_| Ok(()));
    m.hasher.expect_verify().never();
    m.hasher.expect_verify_dummy().never();
    m.accounts.expect_find_credentials().never();
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    let error = m.service().login(login_request("right"), client).await.unwrap_err();
    assert!(matches!(error, LoginError::Throttled { retry_after: 600 }), "{error:?}");
}

#[tokio::test]
async fn a_login_refused_at_the_hash_queue_deadline_is_answered_before_its_attempt_goes_back() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    let overloaded = || Overloaded { what: "a password hash waited past the queue deadline", retry_after: 2 };
    m.hasher.expect_verify().times(1).returning(move |_, _| Err(PortError::unavailable(overloaded())));
    m.throttle.expect_release().never();
    m.throttle
        .expect_release_later()
        .withf(|keys| matches!(keys.as_slice(), [ThrottleKey::Email(_)]))
        .times(1)
        .return_const(());
    m.audit.expect_record().never();
    let error = m.service().login(login_request("right"), ClientInfo::default()).await.unwrap_err();
    assert!(matches!(&error, LoginError::Port(port) if port.retry_after() == Some(2)), "{error:?}");
}

#[tokio::test]
async fn the_tenth_attempt_is_still_checked() {
    let mut m = Mocks::new();
    m.throttle.expect_reserve().returning(|_, _, _| Ok(counted(10, NOW)));
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().times(1).returning(|_, _| Ok(PasswordCheck::Mismatch));
    m.throttle.expect_release().never();
    assert!(matches!(
        m.service().login(login_request("wrong"), ClientInfo::default()).await,
        Err(LoginError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn a_client_ip_over_its_limit_is_throttled_and_both_counts_given_back() {
    let mut m = Mocks::new();
    m.throttle.expect_reserve().returning(|key, _, _| match key {
        ThrottleKey::Email(_) => Ok(counted(1, NOW)),
        ThrottleKey::Ip(ip) => {
            assert_eq!(ip, "203.0.113.9");
            Ok(counted(101, NOW - Duration::seconds(899)))
        }
        other => panic!("a login counts no {other:?}"),
    });
    m.throttle.expect_release().withf(|keys| keys.len() == 2).times(1).returning(|_| Ok(()));
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    let error = m.service().login(login_request("right"), client).await.unwrap_err();
    assert!(matches!(error, LoginError::Throttled { retry_after: 1 }), "{error:?}");
}

#[tokio::test]
async fn an_ip_limit_of_zero_turns_the_ip_key_off() {
    let mut m = Mocks::new();
    m.policy.max_failures_per_ip = 0;
    m.throttle
        .expect_reserve()
        .withf(|key, _, _| matches!(key, ThrottleKey::Email(_)))
        .times(1)
        .returning(|_, _, _| Ok(counted(1, NOW)));
    m.accounts.expect_find_credentials().returning(|_| Ok(None));
    m.hasher.expect_verify_dummy().returning(|_| Ok(()));
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    assert!(matches!(m.service().login(login_request("x"), client).await, Err(LoginError::InvalidCredentials)));
}

#[tokio::test]
async fn a_wrong_password_leaves_its_count_standing() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(true, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Mismatch));
    m.throttle.expect_reserve().times(2).returning(|_, _, _| Ok(counted(3, NOW)));
    m.throttle.expect_release().never();
    m.throttle.expect_clear().never();
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    assert!(matches!(m.service().login(login_request("wrong"), client).await, Err(LoginError::InvalidCredentials)));
}

#[tokio::test]
async fn the_right_password_on_a_disabled_account_gives_its_count_back() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| Ok(Some(credentials(false, true))));
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.throttle.expect_release().withf(|keys| keys.len() == 2).times(1).returning(|_| Ok(()));
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    assert!(matches!(m.service().login(login_request("right"), client).await, Err(LoginError::AccountDisabled)));
}

#[tokio::test]
async fn a_successful_login_clears_the_address_and_gives_the_ip_its_count_back_with_its_session() {
    let mut m = Mocks::new();
    m.throttle.expect_reserve().returning(|_, _, _| Ok(counted(3, NOW)));
    m.expect_right_password();
    m.throttle.expect_clear().never();
    m.throttle.expect_release().never();
    m.sessions
        .expect_start_session()
        .withf(|session| {
            matches!(session.throttle.clear, Some(ThrottleKey::Email(_)))
                && matches!(session.throttle.release.as_slice(), [ThrottleKey::Ip(_)])
        })
        .times(1)
        .returning(|_| Ok(()));
    m.tokens
        .expect_issue()
        .returning(|_, _| Ok(SignedAccessToken { token: OpaqueToken::new("access.jwt".into()), expires_in: 300 }));
    let client = ClientInfo::new(Some("203.0.113.9".into()), None);
    assert!(m.service().login(login_request("right"), client).await.is_ok());
}

#[tokio::test]
async fn a_login_records_its_audit_event_with_the_session() {
    let mut m = Mocks::new();
    m.expect_right_password();
    m.sessions
        .expect_start_session()
        .withf(|session| {
            session
                .event
                .as_ref()
                .is_some_and(|e| e.kind == AuditKind::LoginSucceeded && e.user_id == Some(UserId::new(1)))
        })
        .times(1)
        .returning(|_| Ok(()));
    m.tokens
        .expect_issue()
        .returning(|_, _| Ok(SignedAccessToken { token: OpaqueToken::new("access.jwt".into()), expires_in: 300 }));
    m.audit.expect_record().never();
    assert!(m.service().login(login_request("right"), ClientInfo::default()).await.is_ok());
}

// --- two-factor login ----------------------------------------------------

fn mfa_user() -> User {
    User { mfa_enabled: true, ..user(1, true) }
}

#[tokio::test]
async fn the_password_of_an_account_with_mfa_opens_a_challenge_not_a_session() {
    let mut m = Mocks::new();
    m.accounts.expect_find_credentials().returning(|_| {
        let mut found = credentials(true, true);
        found.user = mfa_user();
        Ok(Some(found))
    });
    m.hasher.expect_verify().returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: false }));
    m.mfa
        .expect_open_challenge()
        .withf(|token, user, expires_at| {
            *token == TokenHash::of("random-token")
                && *user == UserId::new(1)
                && *expires_at == NOW + Duration::seconds(300)
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    m.sessions.expect_start_session().never();
    let step = m.service().login(login_request("right"), ClientInfo::default()).await.unwrap();
    let LoginStep::MfaRequired { mfa_token, expires_in } = step else { panic!("a session was opened") };
    assert_eq!((mfa_token.expose(), expires_in), ("random-token", 300));
}

/// A challenge of user 1 with `failures` wrong codes so far, whose factor matches no code.
fn wrong_code_mocks(failures: i64) -> Mocks {
    let mut m = Mocks::new();
    m.mfa.expect_challenge().returning(move |_, _| Ok(Some(Challenge { user_id: UserId::new(1), failures })));
    m.accounts.expect_get_user().returning(|_| Ok(Some(mfa_user())));
    m.mfa.expect_totp().returning(|_| {
        Ok(Some(StoredTotp { secret: SealedSecret::new("sealed"), confirmed: true, last_step: Some(10) }))
    });
    m
}

#[tokio::test]
async fn the_fifth_wrong_code_kills_the_mfa_token() {
    let mut m = wrong_code_mocks(4);
    m.totp.expect_matching_step().returning(|_, _, _, _| Ok(None));
    m.mfa.expect_fail_challenge().times(1).returning(|_| Ok(5));
    m.mfa.expect_close_challenge().times(1).returning(|_| Ok(true));
    let code = SecondFactor::parse(Some("123456"), None).unwrap();
    let error = m.service().login_mfa("mfa-token", code, ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, MfaError::WrongCode { field: "code" }), "{error:?}");
}

#[tokio::test]
async fn a_killed_mfa_token_checks_no_code() {
    let mut m = wrong_code_mocks(MAX_CODE_FAILURES_PER_TOKEN);
    m.totp.expect_matching_step().never();
    let code = SecondFactor::parse(Some("123456"), None).unwrap();
    let error = m.service().login_mfa("mfa-token", code, ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, MfaError::TokenInvalid), "{error:?}");
}

#[tokio::test]
async fn a_code_of_a_spent_step_is_wrong() {
    let mut m = wrong_code_mocks(0);
    m.totp.expect_matching_step().returning(|_, _, _, _| Ok(Some(10)));
    m.mfa.expect_spend_totp_step().withf(|_, step| *step == 10).returning(|_, _| Ok(false));
    m.mfa.expect_fail_challenge().returning(|_| Ok(1));
    m.sessions.expect_start_session().never();
    let code = SecondFactor::parse(Some("123456"), None).unwrap();
    let error = m.service().login_mfa("mfa-token", code, ClientInfo::default()).await.unwrap_err();
    assert!(matches!(error, MfaError::WrongCode { .. }), "{error:?}");
}

#[test]
fn second_factors_are_parsed_as_their_fields_say() {
    assert!(matches!(SecondFactor::parse(Some(" 123456 "), None), Ok(SecondFactor::Code(c)) if c == "123456"));
    assert!(
        matches!(SecondFactor::parse(None, Some("ABCDE-12345")), Ok(SecondFactor::RecoveryCode(c)) if c == "abcde12345")
    );
    for bad in ["12345", "1234567", "12a456", ""] {
        assert!(SecondFactor::parse(Some(bad), None).is_err(), "{bad}");
    }
    assert!(SecondFactor::parse(None, None).is_err());
    assert!(SecondFactor::parse(Some("123456"), Some("abcde-12345")).is_err());
}
