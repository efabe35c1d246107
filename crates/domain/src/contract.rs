//! The store contract: behaviour every store adapter must show, run by each
//! adapter's tests on its own database through [`store_contract_tests!`].
//! Each check gets a fresh, migrated store.

// Test code: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use futures_util::future::join_all;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::admin::{Permission, UserOrdering, UserQuery};
use crate::audit::{AuditEvent, AuditKind, AuditQuery};
use crate::mail::OutgoingMail;
use crate::mfa::{Challenge, MfaChange, SealedSecret, StoredTotp};
use crate::ports::{AdminNewUser, AdminWrite, GroupWrite};
use crate::ports::{
    AdminUserChanges, CreateAccountError, EmailConfirmation, NewAccount, NewOneTimeToken, ThrottleKey, ThrottleWindow,
    TokenPurpose,
};
use crate::session::{
    AuthMethods, ClientInfo, NewRefreshToken, NewSession, Rehash, Rotation, SessionId, SessionState, SettledThrottle,
    TokenHash,
};
use crate::user::{ProfilePatch, UserId, ADMIN_USER_GROUP, REGULAR_USER_GROUP};
use crate::{Email, PasswordHash};

pub use crate::ports::Store;

const T0: OffsetDateTime = datetime!(2030-01-01 10:00 UTC);

fn email(raw: &str) -> Email {
    Email::parse(raw).expect("test addresses are valid")
}

fn mail_to(to: &str, subject: &str) -> OutgoingMail {
    OutgoingMail { to: email(to), subject: subject.into(), text: "text".into(), html: "<p>html</p>".into() }
}

fn account(address: &str) -> NewAccount {
    NewAccount {
        email: email(address),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        is_verified: false,
        date_joined: T0,
    }
}

fn verification(token: &str, expires_at: OffsetDateTime) -> NewOneTimeToken {
    NewOneTimeToken {
        hash: TokenHash::of(token),
        purpose: TokenPurpose::VerifyEmail,
        new_email: None,
        created_at: T0,
        expires_at,
    }
}

/// The user a verification link verified, if it did.
async fn verified_user<S: Store>(
    store: &S,
    token: &TokenHash,
    now: OffsetDateTime,
) -> Result<Option<crate::User>, crate::PortError> {
    Ok(match store.confirm_email(token, now).await? {
        EmailConfirmation::Verified(user) => Some(user),
        _ => None,
    })
}

async fn signup<S: Store>(store: &S, address: &str, token: &str) -> UserId {
    store
        .create_account(
            account(address),
            verification(token, T0 + Duration::hours(24)),
            vec![mail_to(address, "verify")],
        )
        .await
        .expect("signup succeeds")
        .id
}

fn session_id(n: u128) -> SessionId {
    SessionId::new(uuid::Uuid::from_u128(n))
}

fn refresh(token: &str, expires_at: OffsetDateTime) -> NewRefreshToken {
    NewRefreshToken { hash: TokenHash::of(token), expires_at }
}

async fn login<S: Store>(store: &S, user_id: UserId, sid: SessionId, token: &str) {
    store
        .start_session(NewSession {
            id: sid,
            user_id,
            client: ClientInfo::new(Some("203.0.113.7".into()), Some("contract-test")),
            created_at: T0,
            refresh: refresh(token, T0 + Duration::days(1)),
            event: None,
            throttle: SettledThrottle::default(),
            rehash: None,
            amr: AuthMethods::Password,
        })
        .await
        .expect("session starts");
}

pub async fn a_sessions_audit_event_is_recorded_with_it<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let client = ClientInfo::new(Some("203.0.113.7".into()), Some("contract-test"));
    store
        .start_session(NewSession {
            id: session_id(1),
            user_id: id,
            client: client.clone(),
            created_at: T0,
            refresh: refresh("r1", T0 + Duration::days(1)),
            event: Some(AuditEvent::new(AuditKind::LoginSucceeded, Some(id), &client)),
            throttle: SettledThrottle::default(),
            rehash: None,
            amr: AuthMethods::Password,
        })
        .await
        .expect("session starts");
    let page = store.list_events(&AuditQuery { user: Some(id), event: None, page: 1, page_size: 20 }).await;
    let page = page.expect("read");
    assert_eq!(page.count, 1);
    assert_eq!(page.results[0].event, AuditKind::LoginSucceeded.as_str());
    assert_eq!(page.results[0].at, T0);
}

pub async fn create_account_stores_user_profile_group_and_mail<S: Store>(store: &S) {
    let created = store
        .create_account(
            account("Ada@Example.com"),
            verification("tok", T0 + Duration::hours(24)),
            vec![mail_to("Ada@example.com", "verify")],
        )
        .await
        .expect("signup succeeds");
    assert_eq!(created.email.as_ref(), "Ada@example.com");
    assert_eq!(created.groups, vec![REGULAR_USER_GROUP.to_owned()]);
    assert_eq!(created.profile.bio, "");
    assert!(created.profile.phone.is_none());
    assert!(!created.is_verified && created.is_active && !created.is_staff && !created.is_superuser);
    assert_eq!(created.date_joined, T0);
    assert!(created.last_login.is_none());
    assert_eq!(store.get_user(created.id).await.expect("read"), Some(created.clone()));
    let credentials = store.find_credentials(&email("ADA@example.COM").key()).await.expect("read").expect("found");
    assert_eq!(credentials.user, created, "the whole account comes with its hash");
    assert!(credentials.password_hash.expect("has a hash").expose().starts_with("$argon2id$"));
    assert_eq!(store.pending_count().await.expect("count"), 1);
}

pub async fn an_address_taken_in_any_case_is_refused_and_nothing_is_left<S: Store>(store: &S) {
    signup(store, "ada@example.com", "first").await;
    let second = store
        .create_account(
            account("ADA@example.com"),
            verification("second", T0 + Duration::hours(24)),
            vec![mail_to("ADA@example.com", "v")],
        )
        .await;
    assert!(matches!(second, Err(CreateAccountError::EmailTaken)));
    assert_eq!(store.pending_count().await.expect("count"), 1, "the refused signup queued no mail");
    assert!(verified_user(store, &TokenHash::of("second"), T0).await.expect("read").is_none());
}

pub async fn unknown_users_and_addresses_are_none<S: Store>(store: &S) {
    assert!(store.get_user(UserId::new(987_654)).await.expect("read").is_none());
    assert!(store.find_credentials(&email("nobody@example.com").key()).await.expect("read").is_none());
    assert!(store.find_user_by_email(&email("nobody@example.com").key()).await.expect("read").is_none());
}

pub async fn find_user_by_email_ignores_case<S: Store>(store: &S) {
    let id = signup(store, "Grace@example.com", "t").await;
    let found = store.find_user_by_email(&email("grace@EXAMPLE.com").key()).await.expect("read");
    assert_eq!(found.map(|u| u.id), Some(id));
}

pub async fn a_verification_token_works_once_and_marks_the_user_verified<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "tok").await;
    let verified = verified_user(store, &TokenHash::of("tok"), T0 + Duration::hours(1)).await.expect("write");
    assert_eq!(verified.as_ref().map(|u| (u.id, u.is_verified)), Some((id, true)));
    assert!(verified_user(store, &TokenHash::of("tok"), T0 + Duration::hours(1)).await.expect("write").is_none());
    assert!(store.get_user(id).await.expect("read").expect("found").is_verified);
}

pub async fn an_expired_or_unknown_verification_token_does_nothing<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "tok").await;
    let late = T0 + Duration::hours(25);
    assert!(verified_user(store, &TokenHash::of("tok"), late).await.expect("write").is_none());
    assert!(verified_user(store, &TokenHash::of("nope"), T0).await.expect("write").is_none());
    assert!(!store.get_user(id).await.expect("read").expect("found").is_verified);
}

pub async fn a_reissued_verification_token_also_works<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "first").await;
    store
        .issue_token(id, verification("second", T0 + Duration::hours(24)), vec![mail_to("ada@example.com", "again")])
        .await
        .expect("write");
    assert_eq!(store.pending_count().await.expect("count"), 2);
    assert!(verified_user(store, &TokenHash::of("second"), T0).await.expect("write").is_some());
    // The address is proven: the older link is spent with it.
    assert!(verified_user(store, &TokenHash::of("first"), T0).await.expect("write").is_none());
}

pub async fn concurrent_verifications_succeed_once<S: Store>(store: &S) {
    signup(store, "ada@example.com", "tok").await;
    let presented = TokenHash::of("tok");
    let attempts = (0..10).map(|_| verified_user(store, &presented, T0));
    let outcomes = join_all(attempts).await;
    let successes = outcomes.into_iter().filter(|outcome| outcome.as_ref().expect("write").is_some()).count();
    assert_eq!(successes, 1);
}

pub async fn a_session_starts_live_and_sets_last_login<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "r1").await;
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Live { user_id: id });
    assert_eq!(store.get_user(id).await.expect("read").expect("found").last_login, Some(T0));
    assert_eq!(store.session_state(session_id(99), T0).await.expect("read"), SessionState::Dead);
    assert_eq!(store.session_state(session_id(1), T0 + Duration::days(2)).await.expect("read"), SessionState::Dead);
}

pub async fn a_live_sessions_user_is_read_with_it<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let groups = vec![ADMIN_USER_GROUP.to_owned(), REGULAR_USER_GROUP.to_owned()];
    let changes = AdminUserChanges { groups: Some(groups.clone()), ..AdminUserChanges::default() };
    store.admin_update_user(id, changes, T0).await.expect("write");
    login(store, id, session_id(1), "r1").await;
    login(store, id, session_id(2), "r2").await;
    let user = store.session_user(session_id(1), T0).await.expect("read").expect("live");
    assert_eq!(user.groups, groups, "one user however many groups");
    assert_eq!(Some(user), store.get_user(id).await.expect("read"));
    assert!(store.session_user(session_id(99), T0).await.expect("read").is_none());
    assert!(store.session_user(session_id(1), T0 + Duration::days(2)).await.expect("read").is_none());
    store.revoke_session(id, session_id(1), T0).await.expect("write");
    assert!(store.session_user(session_id(1), T0).await.expect("read").is_none());
    assert!(store.session_user(session_id(2), T0).await.expect("read").is_some());
    let disabled = AdminUserChanges { is_active: Some(false), ..AdminUserChanges::default() };
    store.admin_update_user(id, disabled, T0).await.expect("write");
    assert!(store.session_user(session_id(2), T0).await.expect("read").is_none());
}

pub async fn refresh_rotation_spends_the_token_and_detects_reuse<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "r1").await;
    let later = T0 + Duration::minutes(10);
    let rotated = store
        .rotate_refresh(&TokenHash::of("r1"), refresh("r2", later + Duration::days(1)), later, Duration::ZERO, None)
        .await;
    assert_eq!(
        rotated.expect("write"),
        Rotation::Rotated { user_id: id, session_id: session_id(1), amr: AuthMethods::Password }
    );
    let replay = store
        .rotate_refresh(&TokenHash::of("r1"), refresh("r3", later + Duration::days(1)), later, Duration::ZERO, None)
        .await;
    assert_eq!(replay.expect("write"), Rotation::Reused { user_id: id, session_id: session_id(1) });
    assert_eq!(store.session_state(session_id(1), later).await.expect("read"), SessionState::Dead);
    let newest = store
        .rotate_refresh(&TokenHash::of("r2"), refresh("r4", later + Duration::days(1)), later, Duration::ZERO, None)
        .await;
    assert_eq!(newest.expect("write"), Rotation::SessionDead, "the newest token died with its session");
    let unknown =
        store.rotate_refresh(&TokenHash::of("never"), refresh("r5", later), later, Duration::ZERO, None).await;
    assert_eq!(unknown.expect("write"), Rotation::Unknown);
}

pub async fn a_replay_within_the_grace_window_keeps_the_one_successor<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "r1").await;
    let grace = Duration::seconds(10);
    let expires = T0 + Duration::days(1);
    let rotated = Rotation::Rotated { user_id: id, session_id: session_id(1), amr: AuthMethods::Password };
    let first =
        store.rotate_refresh(&TokenHash::of("r1"), refresh("s1", expires), T0, grace, None).await.expect("write");
    assert_eq!(first, rotated);
    // Tabs replaying at once, their clocks a little apart, one before the spender's.
    let r1 = TokenHash::of("r1");
    let replays = (-2..18).map(|ms| {
        let at = T0 + Duration::milliseconds(ms * 500);
        store.rotate_refresh(&r1, refresh("s1", expires), at, grace, None)
    });
    for replay in join_all(replays).await {
        assert_eq!(replay.expect("a replay stores nothing, so nothing conflicts"), rotated);
    }
    let next = store
        .rotate_refresh(&TokenHash::of("s1"), refresh("s2", expires), T0 + Duration::seconds(10), grace, None)
        .await;
    assert_eq!(next.expect("write"), rotated, "the one successor rotates on");
    let late = store
        .rotate_refresh(&TokenHash::of("r1"), refresh("s1", expires), T0 + Duration::seconds(11), grace, None)
        .await;
    assert_eq!(late.expect("write"), Rotation::Reused { user_id: id, session_id: session_id(1) });
    let newest = store
        .rotate_refresh(&TokenHash::of("s2"), refresh("s3", expires), T0 + Duration::seconds(12), grace, None)
        .await;
    assert_eq!(newest.expect("write"), Rotation::SessionDead);
}

pub async fn sessions_are_listed_newest_use_first_without_dead_ones<S: Store>(store: &S) {
    let ada = signup(store, "ada@example.com", "t1").await;
    let bob = signup(store, "bob@example.com", "t2").await;
    login(store, ada, session_id(1), "a1").await;
    login(store, ada, session_id(2), "a2").await;
    login(store, ada, session_id(3), "a3").await;
    login(store, bob, session_id(4), "b1").await;
    let later = T0 + Duration::minutes(5);
    store
        .rotate_refresh(&TokenHash::of("a1"), refresh("a1b", later + Duration::days(1)), later, Duration::ZERO, None)
        .await
        .expect("write");
    store.revoke_session(ada, session_id(3), later).await.expect("write");
    let sessions = store.list_sessions(ada, later).await.expect("read");
    assert_eq!(sessions.iter().map(|s| s.id).collect::<Vec<_>>(), [session_id(1), session_id(2)]);
    assert_eq!(sessions[0].last_used_at, later);
    assert_eq!(sessions[0].created_at, T0);
    assert_eq!(sessions[0].ip.as_deref(), Some("203.0.113.7"), "a rotation without an address keeps the last");
    let moved = T0 + Duration::minutes(6);
    let next = refresh("a1c", moved + Duration::days(1));
    store
        .rotate_refresh(&TokenHash::of("a1b"), next, moved, Duration::ZERO, Some("198.51.100.4".into()))
        .await
        .expect("write");
    let sessions = store.list_sessions(ada, moved).await.expect("read");
    assert_eq!(sessions[0].ip.as_deref(), Some("198.51.100.4"), "a session's ip is that of its latest use");
    assert_eq!(sessions[0].user_agent.as_deref(), Some("contract-test"));
    assert!(store.list_sessions(ada, T0 + Duration::days(3)).await.expect("read").is_empty(), "expired");
}

pub async fn an_expired_refresh_token_is_expired<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "r1").await;
    let late = T0 + Duration::days(2);
    let rotation = store
        .rotate_refresh(&TokenHash::of("r1"), refresh("r2", late + Duration::days(1)), late, Duration::ZERO, None)
        .await;
    assert_eq!(rotation.expect("write"), Rotation::Expired);
}

pub async fn concurrent_rotations_of_one_token_rotate_once<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "r1").await;
    let presented = TokenHash::of("r1");
    let attempts = (0..10).map(|n| {
        let next = refresh(&format!("next-{n}"), T0 + Duration::days(1));
        store.rotate_refresh(&presented, next, T0, Duration::ZERO, None)
    });
    let outcomes = join_all(attempts).await;
    let rotated =
        outcomes.into_iter().filter(|o| matches!(o.as_ref().expect("write"), Rotation::Rotated { .. })).count();
    assert_eq!(rotated, 1);
}

/// Without grace, one token is spent once even when the callers' clocks
/// disagree and a later caller's reads earlier than the spender's: 20 trials.
pub async fn without_grace_a_token_is_spent_once_whatever_the_clocks<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    for trial in 0..20_u128 {
        let presented = format!("trial-{trial}");
        login(store, id, session_id(100 + trial), &presented).await;
        let hash = TokenHash::of(&presented);
        let attempts = (0..6).map(|n| {
            let at = T0 + Duration::milliseconds(10 * (3 - n));
            let next = refresh(&format!("trial-{trial}-next-{n}"), T0 + Duration::days(1));
            store.rotate_refresh(&hash, next, at, Duration::ZERO, None)
        });
        let outcomes: Vec<Rotation> = join_all(attempts).await.into_iter().map(|o| o.expect("write")).collect();
        let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count();
        assert_eq!(rotated, 1, "trial {trial}: {outcomes:?}");
        assert!(outcomes.iter().any(|o| matches!(o, Rotation::Reused { .. })), "trial {trial}: {outcomes:?}");
    }
}

pub async fn sessions_are_revoked_only_by_their_owner<S: Store>(store: &S) {
    let ada = signup(store, "ada@example.com", "t1").await;
    let bob = signup(store, "bob@example.com", "t2").await;
    login(store, ada, session_id(1), "a1").await;
    login(store, ada, session_id(2), "a2").await;
    login(store, bob, session_id(3), "b1").await;
    assert!(!store.revoke_session(bob, session_id(1), T0).await.expect("write"), "bob cannot revoke ada's session");
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Live { user_id: ada });
    assert!(store.revoke_session(ada, session_id(1), T0).await.expect("write"));
    assert!(!store.revoke_session(ada, session_id(1), T0).await.expect("write"), "already revoked");
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Dead);
    assert_eq!(store.session_state(session_id(2), T0).await.expect("read"), SessionState::Live { user_id: ada });
    store.revoke_all_sessions(ada, T0).await.expect("write");
    assert_eq!(store.session_state(session_id(2), T0).await.expect("read"), SessionState::Dead);
    assert_eq!(store.session_state(session_id(3), T0).await.expect("read"), SessionState::Live { user_id: bob });
    let rotation = store
        .rotate_refresh(&TokenHash::of("a2"), refresh("a3", T0 + Duration::days(1)), T0, Duration::ZERO, None)
        .await;
    assert_eq!(rotation.expect("write"), Rotation::SessionDead);
}

pub async fn a_profile_patch_changes_only_what_it_names<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let patch = ProfilePatch {
        first_name: Some("Augusta".into()),
        phone: Some(Some("+441234567890".into())),
        bio: Some("Analyst".into()),
        ..ProfilePatch::default()
    };
    let user = store.update_profile(id, patch).await.expect("write").expect("found");
    assert_eq!((user.first_name.as_str(), user.last_name.as_str()), ("Augusta", "Lovelace"));
    assert_eq!(user.profile.phone.as_deref(), Some("+441234567890"));
    assert_eq!(user.profile.bio, "Analyst");
    let cleared = ProfilePatch { phone: Some(None), gender: Some(Some("f".into())), ..ProfilePatch::default() };
    let user = store.update_profile(id, cleared).await.expect("write").expect("found");
    assert!(user.profile.phone.is_none());
    assert_eq!(user.profile.gender.as_deref(), Some("f"));
    assert_eq!(user.profile.bio, "Analyst");
    assert!(store.update_profile(UserId::new(987_654), ProfilePatch::default()).await.expect("write").is_none());
}

pub async fn a_session_keeps_how_its_user_authenticated_across_refreshes<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    store
        .start_session(NewSession {
            id: session_id(1),
            user_id: id,
            client: ClientInfo::default(),
            created_at: T0,
            refresh: refresh("r1", T0 + Duration::days(1)),
            event: None,
            throttle: SettledThrottle::default(),
            rehash: None,
            amr: AuthMethods::PasswordAndRecoveryCode,
        })
        .await
        .expect("session starts");
    let next = refresh("r2", T0 + Duration::days(2));
    let rotated = store.rotate_refresh(&TokenHash::of("r1"), next, T0, Duration::seconds(10), None).await;
    let amr = AuthMethods::PasswordAndRecoveryCode;
    assert_eq!(rotated.expect("write"), Rotation::Rotated { user_id: id, session_id: session_id(1), amr });
}

fn mfa_change(kind: AuditKind, user: UserId, subject: &str) -> MfaChange {
    MfaChange {
        mail: mail_to("ada@example.com", subject),
        event: AuditEvent::new(kind, Some(user), &ClientInfo::default()),
    }
}

/// The subjects of every mail due a day after T0, leased as a worker would.
async fn subjects_due<S: Store>(store: &S) -> Vec<String> {
    let now = T0 + Duration::days(1);
    let mut subjects = Vec::new();
    while let Some(leased) = store.claim_next(now, now + Duration::minutes(2), "contract").await.expect("write") {
        subjects.push(leased.mail.subject);
    }
    subjects
}

pub async fn a_totp_factor_is_pending_until_confirmed_then_spends_each_step_once<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    assert_eq!(store.totp(id).await.expect("read"), None);
    assert!(store.begin_totp(id, SealedSecret::new("first")).await.expect("write"));
    assert!(
        store.begin_totp(id, SealedSecret::new("second")).await.expect("write"),
        "a new setup replaces a pending one"
    );
    let pending = StoredTotp { secret: SealedSecret::new("second"), confirmed: false, last_step: None };
    assert_eq!(store.totp(id).await.expect("read"), Some(pending));
    assert!(!store.spend_totp_step(id, 5).await.expect("write"), "a pending factor spends nothing");

    let codes = vec![TokenHash::of("code-1"), TokenHash::of("code-2")];
    let change = || mfa_change(AuditKind::AdminAction, id, "mfa on");
    let stale = store.confirm_totp(id, &SealedSecret::new("first"), 100, codes.clone(), change(), T0).await;
    assert!(!stale.expect("write"), "a replaced secret confirms nothing");
    assert!(!store.get_user(id).await.expect("read").expect("found").mfa_enabled);
    assert!(store.confirm_totp(id, &SealedSecret::new("second"), 100, codes, change(), T0).await.expect("write"));
    let confirmed = StoredTotp { secret: SealedSecret::new("second"), confirmed: true, last_step: Some(100) };
    assert_eq!(store.totp(id).await.expect("read"), Some(confirmed));
    assert!(store.get_user(id).await.expect("read").expect("found").mfa_enabled);
    assert!(subjects_due(store).await.contains(&"mfa on".to_owned()), "the notice is queued with it");
    let page = store.list_events(&AuditQuery { user: Some(id), event: None, page: 1, page_size: 20 }).await;
    assert_eq!(page.expect("read").count, 1, "the trail entry is recorded with it");
    assert!(
        !store.begin_totp(id, SealedSecret::new("third")).await.expect("write"),
        "no setup over a confirmed factor"
    );

    assert!(!store.spend_totp_step(id, 100).await.expect("write"), "the confirming step is spent");
    assert!(!store.spend_totp_step(id, 99).await.expect("write"), "an older step is refused");
    assert!(store.spend_totp_step(id, 101).await.expect("write"));
    assert!(!store.spend_totp_step(id, 101).await.expect("write"), "once per step");
}

pub async fn concurrent_spends_of_one_step_or_one_recovery_code_succeed_once<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    store.begin_totp(id, SealedSecret::new("s")).await.expect("write");
    let codes = vec![TokenHash::of("code-1"), TokenHash::of("code-2")];
    let change = mfa_change(AuditKind::AdminAction, id, "mfa on");
    assert!(store.confirm_totp(id, &SealedSecret::new("s"), 100, codes, change, T0).await.expect("write"));
    let steps = join_all((0..10).map(|_| store.spend_totp_step(id, 101))).await;
    assert_eq!(steps.into_iter().filter(|s| *s.as_ref().expect("write")).count(), 1);
    let code = TokenHash::of("code-1");
    let spends = join_all((0..10).map(|_| store.spend_recovery_code(id, &code, T0))).await;
    assert_eq!(spends.into_iter().filter(|s| *s.as_ref().expect("write")).count(), 1);
    assert!(!store.spend_recovery_code(id, &TokenHash::of("unknown"), T0).await.expect("write"));
    let other = signup(store, "grace@example.com", "u").await;
    assert!(
        !store.spend_recovery_code(other, &TokenHash::of("code-2"), T0).await.expect("write"),
        "another user's code"
    );
    store.replace_recovery_codes(id, vec![TokenHash::of("code-3")]).await.expect("write");
    assert!(!store.spend_recovery_code(id, &TokenHash::of("code-2"), T0).await.expect("write"), "the old ones die");
    assert!(store.spend_recovery_code(id, &TokenHash::of("code-3"), T0).await.expect("write"));
}

pub async fn a_challenge_counts_failures_expires_and_closes_once<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let token = TokenHash::of("mfa-token");
    store.open_challenge(&token, id, T0 + Duration::minutes(5)).await.expect("write");
    assert_eq!(store.challenge(&token, T0).await.expect("read"), Some(Challenge { user_id: id, failures: 0 }));
    assert_eq!(store.fail_challenge(&token).await.expect("write"), 1);
    assert_eq!(store.fail_challenge(&token).await.expect("write"), 2);
    assert_eq!(store.challenge(&token, T0).await.expect("read"), Some(Challenge { user_id: id, failures: 2 }));
    assert_eq!(store.challenge(&token, T0 + Duration::minutes(5)).await.expect("read"), None, "expired");
    assert_eq!(store.challenge(&TokenHash::of("other"), T0).await.expect("read"), None);
    let closes = join_all((0..5).map(|_| store.close_challenge(&token))).await;
    assert_eq!(closes.into_iter().filter(|c| *c.as_ref().expect("write")).count(), 1);
    assert_eq!(store.challenge(&token, T0).await.expect("read"), None);
}

pub async fn removing_the_factor_ends_its_codes_and_challenges<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let off = || mfa_change(AuditKind::AdminAction, id, "mfa off");
    assert!(!store.remove_totp(id, off(), T0).await.expect("write"), "nothing to remove");
    store.begin_totp(id, SealedSecret::new("s")).await.expect("write");
    assert!(!store.remove_totp(id, off(), T0).await.expect("write"), "a pending factor is not turned off");
    let on = mfa_change(AuditKind::AdminAction, id, "mfa on");
    let codes = vec![TokenHash::of("code-1")];
    assert!(store.confirm_totp(id, &SealedSecret::new("s"), 100, codes, on, T0).await.expect("write"));
    let token = TokenHash::of("mfa-token");
    store.open_challenge(&token, id, T0 + Duration::minutes(5)).await.expect("write");
    assert!(store.remove_totp(id, off(), T0).await.expect("write"));
    assert!(!store.get_user(id).await.expect("read").expect("found").mfa_enabled);
    assert_eq!(store.totp(id).await.expect("read"), None);
    assert_eq!(store.challenge(&token, T0).await.expect("read"), None);
    assert!(!store.spend_recovery_code(id, &TokenHash::of("code-1"), T0).await.expect("write"));
    assert!(subjects_due(store).await.contains(&"mfa off".to_owned()));
}

pub async fn a_login_upgrades_its_hash_with_its_session<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let imported = account("ada@example.com").password_hash;
    let start = |n: u128, from: &str, to: &str| NewSession {
        id: session_id(n),
        user_id: id,
        client: ClientInfo::default(),
        created_at: T0,
        refresh: refresh(&format!("r{n}"), T0 + Duration::days(1)),
        event: None,
        throttle: SettledThrottle::default(),
        rehash: Some(Rehash { from: PasswordHash::new(from), to: PasswordHash::new(to) }),
        amr: AuthMethods::Password,
    };
    let stored = async || {
        let credentials = store.find_credentials(&email("ada@example.com").key()).await.expect("read");
        credentials.expect("found").password_hash.expect("hash").expose().to_owned()
    };
    store.start_session(start(1, imported.expose(), "$argon2id$new")).await.expect("session starts");
    assert_eq!(stored().await, "$argon2id$new");
    // A password changed since the check is not overwritten by the upgrade.
    store.start_session(start(2, imported.expose(), "$argon2id$stale")).await.expect("session starts");
    assert_eq!(stored().await, "$argon2id$new");
    assert_eq!(
        store.session_state(session_id(2), T0).await.expect("read"),
        SessionState::Live { user_id: id },
        "the session still starts"
    );
}

pub async fn the_outbox_leases_retries_and_forgets_sent_mail<S: Store>(store: &S) {
    store.enqueue_mails(vec![mail_to("first@example.com", "one")]).await.expect("write");
    store.enqueue_mails(vec![mail_to("second@example.com", "two")]).await.expect("write");
    let now = OffsetDateTime::now_utc() + Duration::seconds(1);
    let lease = now + Duration::minutes(2);
    let first = store.claim_next(now, lease, "w1").await.expect("write").expect("due");
    let second = store.claim_next(now, lease, "w2").await.expect("write").expect("due");
    assert_eq!((first.mail.subject.as_str(), second.mail.subject.as_str()), ("one", "two"), "oldest first");
    assert_eq!(first.mail.to.as_ref(), "first@example.com");
    assert_eq!((first.mail.text.as_str(), first.mail.html.as_str()), ("text", "<p>html</p>"));
    assert!(store.claim_next(now, lease, "w3").await.expect("write").is_none(), "both leased");
    assert!(!store.mark_sent(first.id, "w2").await.expect("write"), "only the lease holder marks it");
    assert!(store.mark_sent(first.id, "w1").await.expect("write"));
    assert!(store
        .mark_failed(second.id, "w2", Some(now + Duration::seconds(30)), "421 try later")
        .await
        .expect("write"));
    assert_eq!(store.pending_count().await.expect("count"), 1);
    assert!(store.claim_next(now + Duration::seconds(29), lease, "w1").await.expect("write").is_none());
    let retried = store.claim_next(now + Duration::seconds(30), lease, "w1").await.expect("write").expect("due");
    assert_eq!((retried.id, retried.attempts, retried.created_at), (second.id, 1, second.created_at));
    assert_eq!(retried.message_key(), second.message_key(), "one Message-ID at every attempt");
    assert!(!store.mark_failed(retried.id, "w2", None, "stale").await.expect("write"), "w2 lost the lease");
    assert!(store.mark_failed(retried.id, "w1", None, "550 no such user").await.expect("write"));
    assert_eq!(store.pending_count().await.expect("count"), 0, "given up");
    assert!(store.claim_next(now + Duration::days(9), now + Duration::days(10), "w1").await.expect("write").is_none());
}

/// A lease that ran out goes to the next worker, and the first can no longer mark the mail.
pub async fn an_expired_lease_passes_to_another_worker<S: Store>(store: &S) {
    store.enqueue_mails(vec![mail_to("a@example.com", "slow")]).await.expect("write");
    let now = OffsetDateTime::now_utc() + Duration::seconds(1);
    let first = store.claim_next(now, now + Duration::seconds(5), "w1").await.expect("write").expect("due");
    assert!(store
        .claim_next(now + Duration::seconds(4), now + Duration::seconds(9), "w2")
        .await
        .expect("write")
        .is_none());
    let taken = store.claim_next(now + Duration::seconds(5), now + Duration::seconds(10), "w2").await.expect("write");
    assert_eq!(taken.map(|m| m.id), Some(first.id));
    assert!(!store.mark_sent(first.id, "w1").await.expect("write"));
    assert!(store.mark_sent(first.id, "w2").await.expect("write"));
}

pub async fn a_superuser_is_created_or_promoted<S: Store>(store: &S) {
    let admin = store
        .upsert_superuser(email("root@example.com"), PasswordHash::new("$argon2id$root"), T0)
        .await
        .expect("write");
    assert!(admin.is_superuser && admin.is_staff && admin.is_verified && admin.is_active);
    assert_eq!(admin.groups, vec![ADMIN_USER_GROUP.to_owned(), REGULAR_USER_GROUP.to_owned()]);
    let again =
        store.upsert_superuser(email("ROOT@example.com"), PasswordHash::new("$argon2id$two"), T0).await.expect("write");
    assert_eq!(again.id, admin.id, "idempotent");
    assert_eq!(again.groups.len(), 2);
    let id = signup(store, "ada@example.com", "t").await;
    let promoted =
        store.upsert_superuser(email("ada@example.com"), PasswordHash::new("$argon2id$ada"), T0).await.expect("write");
    assert_eq!(promoted.id, id);
    assert!(promoted.is_superuser && promoted.is_verified);
    let credentials = store.find_credentials(&email("ada@example.com").key()).await.expect("read").expect("found");
    assert_eq!(credentials.password_hash.expect("hash").expose(), "$argon2id$ada");
}

pub async fn a_password_change_keeps_one_session_and_kills_reset_links<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "a1").await;
    login(store, id, session_id(2), "a2").await;
    store.issue_token(id, reset_token("reset"), vec![mail_to("ada@example.com", "reset")]).await.expect("write");
    let before = store.pending_count().await.expect("count");
    let notice = mail_to("ada@example.com", "changed");
    store
        .change_password(id, PasswordHash::new("$argon2id$new"), Some(session_id(1)), T0, notice)
        .await
        .expect("write");
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Live { user_id: id });
    assert_eq!(store.session_state(session_id(2), T0).await.expect("read"), SessionState::Dead);
    let credentials = store.find_credentials_by_id(id).await.expect("read").expect("found");
    assert_eq!(credentials.password_hash.expect("hash").expose(), "$argon2id$new");
    assert_eq!(store.pending_count().await.expect("count"), before + 1, "the notice is queued");
    assert!(store.peek_token(&TokenHash::of("reset"), TokenPurpose::ResetPassword, T0).await.expect("read").is_none());
}

pub async fn a_newer_reset_link_supersedes_the_older<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    for token in ["first", "second"] {
        store.issue_token(id, reset_token(token), vec![mail_to("ada@example.com", token)]).await.expect("write");
    }
    assert!(store.peek_token(&TokenHash::of("first"), TokenPurpose::ResetPassword, T0).await.expect("read").is_none());
    let peeked = store.peek_token(&TokenHash::of("second"), TokenPurpose::ResetPassword, T0).await.expect("read");
    assert_eq!(peeked.map(|u| u.id), Some(id));
    assert!(
        store.peek_token(&TokenHash::of("second"), TokenPurpose::VerifyEmail, T0).await.expect("read").is_none(),
        "purpose"
    );
    let late = T0 + Duration::minutes(11);
    assert!(
        store.peek_token(&TokenHash::of("second"), TokenPurpose::ResetPassword, late).await.expect("read").is_none(),
        "expired"
    );
}

pub async fn deleting_an_account_removes_everything_and_queues_goodbye<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "a1").await;
    let before = store.pending_count().await.expect("count");
    assert!(store.delete_account(id, mail_to("ada@example.com", "bye")).await.expect("write"));
    assert!(store.get_user(id).await.expect("read").is_none());
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Dead);
    assert_eq!(
        store
            .rotate_refresh(&TokenHash::of("a1"), refresh("a2", T0 + Duration::days(1)), T0, Duration::ZERO, None)
            .await
            .expect("write"),
        Rotation::Unknown
    );
    assert!(verified_user(store, &TokenHash::of("t"), T0).await.expect("write").is_none());
    assert_eq!(store.pending_count().await.expect("count"), before + 1);
    assert!(!store.delete_account(id, mail_to("ada@example.com", "bye")).await.expect("write"), "already gone");
    // The address is free again.
    signup(store, "ada@example.com", "t2").await;
}

fn reset_token(token: &str) -> NewOneTimeToken {
    NewOneTimeToken {
        hash: TokenHash::of(token),
        purpose: TokenPurpose::ResetPassword,
        new_email: None,
        created_at: T0,
        expires_at: T0 + Duration::minutes(10),
    }
}

pub async fn a_reset_sets_the_password_once_verifies_and_ends_every_session<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "a1").await;
    store.issue_token(id, reset_token("reset"), vec![mail_to("ada@example.com", "reset")]).await.expect("write");
    let notice = mail_to("ada@example.com", "was reset");
    let user =
        store.reset_password(&TokenHash::of("reset"), PasswordHash::new("$argon2id$reset"), T0, notice.clone()).await;
    let user = user.expect("write").expect("the token was live");
    assert_eq!(user.id, id);
    assert!(user.is_verified, "the mailbox was proven");
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Dead);
    let credentials = store.find_credentials_by_id(id).await.expect("read").expect("found");
    assert_eq!(credentials.password_hash.expect("hash").expose(), "$argon2id$reset");
    let again = store.reset_password(&TokenHash::of("reset"), PasswordHash::new("$argon2id$again"), T0, notice).await;
    assert!(again.expect("write").is_none(), "single use");
}

pub async fn an_expired_reset_token_does_nothing<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    store.issue_token(id, reset_token("reset"), vec![mail_to("ada@example.com", "reset")]).await.expect("write");
    let late = T0 + Duration::minutes(10);
    let reset = store
        .reset_password(&TokenHash::of("reset"), PasswordHash::new("$x"), late, mail_to("ada@example.com", "n"))
        .await;
    assert!(reset.expect("write").is_none());
    let credentials = store.find_credentials_by_id(id).await.expect("read").expect("found");
    assert!(credentials.password_hash.expect("hash").expose().starts_with("$argon2id$"));
}

pub async fn concurrent_resets_with_one_token_succeed_once<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    store.issue_token(id, reset_token("reset"), vec![mail_to("ada@example.com", "reset")]).await.expect("write");
    let presented = TokenHash::of("reset");
    let attempts = (0..10).map(|n| {
        store.reset_password(
            &presented,
            PasswordHash::new(format!("$argon2id${n}")),
            T0,
            mail_to("ada@example.com", "n"),
        )
    });
    let outcomes = join_all(attempts).await;
    assert_eq!(outcomes.into_iter().filter(|o| o.as_ref().expect("write").is_some()).count(), 1);
}

fn change_token(token: &str, to: &str) -> NewOneTimeToken {
    NewOneTimeToken {
        hash: TokenHash::of(token),
        purpose: TokenPurpose::ChangeEmail,
        new_email: Some(email(to)),
        created_at: T0,
        expires_at: T0 + Duration::hours(24),
    }
}

pub async fn an_email_change_link_moves_the_account_and_kills_other_links<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "verify").await;
    store.issue_token(id, reset_token("reset"), vec![]).await.expect("write");
    store.issue_token(id, change_token("old-change", "ada@old.example.com"), vec![]).await.expect("write");
    store
        .issue_token(id, change_token("change", "Ada@New.Example.com"), vec![mail_to("Ada@new.example.com", "c")])
        .await
        .expect("write");
    assert_eq!(
        store.confirm_email(&TokenHash::of("old-change"), T0).await.expect("write"),
        EmailConfirmation::NotLive,
        "superseded"
    );
    let EmailConfirmation::Changed(user) = store.confirm_email(&TokenHash::of("change"), T0).await.expect("write")
    else {
        panic!("the change link was live");
    };
    assert_eq!(user.email.as_ref(), "Ada@new.example.com");
    assert!(user.is_verified);
    assert!(store.find_credentials(&email("ada@NEW.example.com").key()).await.expect("read").is_some());
    assert!(
        store.find_credentials(&email("ada@example.com").key()).await.expect("read").is_none(),
        "old address freed"
    );
    assert_eq!(store.confirm_email(&TokenHash::of("change"), T0).await.expect("write"), EmailConfirmation::NotLive);
    assert!(store.peek_token(&TokenHash::of("reset"), TokenPurpose::ResetPassword, T0).await.expect("read").is_none());
    assert_eq!(store.confirm_email(&TokenHash::of("verify"), T0).await.expect("write"), EmailConfirmation::NotLive);
}

pub async fn an_email_change_to_an_address_taken_meanwhile_changes_nothing<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t1").await;
    store.issue_token(id, change_token("change", "grace@example.com"), vec![]).await.expect("write");
    signup(store, "GRACE@example.com", "t2").await;
    assert_eq!(
        store.confirm_email(&TokenHash::of("change"), T0).await.expect("write"),
        EmailConfirmation::AddressTaken
    );
    assert_eq!(store.get_user(id).await.expect("read").expect("found").email.as_ref(), "ada@example.com");
}

pub async fn a_login_settles_its_throttle_keys_with_its_session<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    let email = ThrottleKey::Email(email("ada@example.com").key());
    let ip = ThrottleKey::Ip("203.0.113.7".into());
    let window = Duration::minutes(15);
    for key in [&email, &email, &ip, &ip] {
        store.reserve(key, T0, window).await.expect("write");
    }
    store
        .start_session(NewSession {
            id: session_id(1),
            user_id: id,
            client: ClientInfo::new(Some("203.0.113.7".into()), None),
            created_at: T0,
            refresh: refresh("r1", T0 + Duration::days(1)),
            event: None,
            throttle: SettledThrottle { clear: Some(email.clone()), release: vec![ip.clone()] },
            rehash: None,
            amr: AuthMethods::Password,
        })
        .await
        .expect("session starts");
    let later = T0 + Duration::minutes(1);
    assert_eq!(
        store.reserve(&email, later, window).await.expect("write"),
        ThrottleWindow { hits: 1, opened_at: later }
    );
    assert_eq!(store.reserve(&ip, later, window).await.expect("write"), ThrottleWindow { hits: 2, opened_at: T0 });
}

pub async fn attempts_are_counted_per_key_in_fixed_windows<S: Store>(store: &S) {
    let email = ThrottleKey::Email(email("ada@example.com").key());
    let ip = ThrottleKey::Ip("203.0.113.7".into());
    let window = Duration::minutes(15);
    let counted = async |key: &ThrottleKey, at: OffsetDateTime| store.reserve(key, at, window).await.expect("write");
    for minute in 0..3 {
        let at = T0 + Duration::minutes(minute);
        let expected = ThrottleWindow { hits: minute + 1, opened_at: T0 };
        assert_eq!(counted(&email, at).await, expected, "the window opened with the first attempt");
        assert_eq!(counted(&ip, at).await, expected);
    }
    let other_ip = ThrottleKey::Ip("198.51.100.1".into());
    assert_eq!(counted(&other_ip, T0).await, ThrottleWindow { hits: 1, opened_at: T0 }, "keys count apart");
    store.release(&[email.clone(), ip.clone()]).await.expect("write");
    assert_eq!(counted(&email, T0 + Duration::minutes(4)).await.hits, 3, "one given back, one counted");
    store.clear(&email).await.expect("write");
    let after_clear = T0 + Duration::minutes(5);
    assert_eq!(counted(&email, after_clear).await, ThrottleWindow { hits: 1, opened_at: after_clear });
    assert_eq!(counted(&ip, after_clear).await, ThrottleWindow { hits: 3, opened_at: T0 }, "the IP kept its count");
    // A window over: the next attempt opens a new one.
    let later = T0 + Duration::minutes(15);
    assert_eq!(counted(&ip, later).await, ThrottleWindow { hits: 1, opened_at: later });
    // Giving back never goes below nothing, and an unknown key is no error.
    for _ in 0..2 {
        store.release(std::slice::from_ref(&ip)).await.expect("write");
    }
    store.release(&[ThrottleKey::Ip("192.0.2.1".into())]).await.expect("write");
    assert_eq!(counted(&ip, later).await, ThrottleWindow { hits: 1, opened_at: later });
}

/// An attempt given back later is given back, without the caller waiting.
pub async fn an_attempt_given_back_later_is_given_back<S: Store>(store: &S) {
    let key = ThrottleKey::Email(email("ada@example.com").key());
    let window = Duration::minutes(15);
    for _ in 0..2 {
        store.reserve(&key, T0, window).await.expect("write");
    }
    store.release_later(vec![key.clone()]);
    // Each look counts one more and gives it back at once: three until the
    // later give-back has run, then two.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        let counted = store.reserve(&key, T0, window).await.expect("write");
        store.release(std::slice::from_ref(&key)).await.expect("write");
        if counted.hits == 2 {
            return;
        }
        assert_eq!(counted.hits, 3, "nothing else counts under the key");
    }
    panic!("the attempt was not given back within 5 s");
}

/// Sixty attempts on one key at once, 20 times over: each sees its own
/// count, so no more than the limit can ever pass.
pub async fn concurrent_attempts_are_each_counted_once<S: Store>(store: &S) {
    for trial in 0..20 {
        let key = ThrottleKey::Email(email(&format!("trial-{trial}@example.com")).key());
        let attempts = (0..60).map(|n| store.reserve(&key, T0 + Duration::milliseconds(n), Duration::minutes(15)));
        let mut hits: Vec<i64> =
            join_all(attempts).await.into_iter().map(|counted| counted.expect("write").hits).collect();
        hits.sort_unstable();
        assert_eq!(hits, (1..=60).collect::<Vec<_>>(), "trial {trial}");
    }
}

/// Many writes at once all commit: none is refused or starved.
pub async fn concurrent_writers_all_commit<S: Store>(store: &S) {
    let ip = ThrottleKey::Ip("198.51.100.9".into());
    let writes = (0..64).map(|n| {
        let (email, ip) = (ThrottleKey::Email(email(&format!("w{n}@example.com")).key()), ip.clone());
        async move {
            store.reserve(&email, T0, Duration::minutes(15)).await?;
            store.reserve(&ip, T0, Duration::minutes(15)).await
        }
    });
    let outcomes = join_all(writes).await;
    assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
    assert_eq!(store.reserve(&ip, T0, Duration::minutes(15)).await.expect("write").hits, 65);
}

pub async fn grants_come_from_groups_and_the_superuser_flag<S: Store>(store: &S) {
    let regular = signup(store, "ada@example.com", "t").await;
    let grants = store.grants_of(regular).await.expect("read").expect("found");
    assert!(grants.is_active && !grants.is_superuser && grants.permissions.is_empty());
    let root = store.upsert_superuser(email("root@example.com"), PasswordHash::new("$x"), T0).await.expect("write");
    let grants = store.grants_of(root.id).await.expect("read").expect("found");
    assert!(grants.is_superuser);
    assert_eq!(grants.permissions, Permission::ALL.into_iter().collect(), "Admin User holds every permission");
    assert!(store.grants_of(UserId::new(987_654)).await.expect("read").is_none());
}

pub async fn the_two_built_in_groups_exist<S: Store>(store: &S) {
    let groups = store.list_groups().await.expect("read");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, [ADMIN_USER_GROUP, REGULAR_USER_GROUP]);
    assert_eq!(groups[0].permissions, Permission::ALL.to_vec());
    assert!(groups[1].permissions.is_empty());
    assert_eq!(store.get_group(groups[1].id).await.expect("read"), Some(groups[1].clone()));
    assert!(store.get_group(987_654).await.expect("read").is_none());
}

async fn listed<S: Store>(store: &S, query: UserQuery) -> (i64, Vec<String>) {
    let page = store.list_users(&query).await.expect("read");
    (page.count, page.results.into_iter().map(|u| u.email.into_inner()).collect())
}

pub async fn the_user_list_searches_filters_orders_and_pages<S: Store>(store: &S) {
    for (n, address) in
        ["carol@example.com", "Alice_Smith@example.com", "bob%jones@example.com", "dave@other.org"].iter().enumerate()
    {
        let id = signup(store, address, &format!("t{n}")).await;
        if n % 2 == 0 {
            verified_user(store, &TokenHash::of(&format!("t{n}")), T0).await.expect("write");
        }
        let _ = id;
    }
    let root = store.upsert_superuser(email("root@example.com"), PasswordHash::new("$x"), T0).await.expect("write");
    let all =
        listed(store, UserQuery { ordering: UserOrdering::parse("email").expect("valid"), ..UserQuery::default() })
            .await;
    assert_eq!(all.0, 5);
    assert_eq!(
        all.1,
        ["Alice_Smith@example.com", "bob%jones@example.com", "carol@example.com", "dave@other.org", "root@example.com"]
    );
    let desc =
        listed(store, UserQuery { ordering: UserOrdering::parse("-email").expect("valid"), ..UserQuery::default() })
            .await;
    assert_eq!(desc.1.first().map(String::as_str), Some("root@example.com"));

    let search = |text: &str| UserQuery { search: Some(text.into()), ..UserQuery::default() };
    assert_eq!(listed(store, search("EXAMPLE.COM")).await.0, 4, "case-insensitive");
    assert_eq!(listed(store, search("_")).await.1, ["Alice_Smith@example.com"], "_ is literal");
    assert_eq!(listed(store, search("%")).await.1, ["bob%jones@example.com"], "% is literal");
    assert_eq!(listed(store, search("ADA")).await.0, 4, "first names match (every signup here is Ada)");
    assert_eq!(listed(store, search("lovelace")).await.0, 4, "last names match");
    assert_eq!(listed(store, search("nobody")).await, (0, vec![]));

    let verified = listed(store, UserQuery { is_verified: Some(true), ..UserQuery::default() }).await;
    assert_eq!(verified.0, 3, "carol, bob%jones and root");
    let staff = listed(store, UserQuery { is_staff: Some(true), ..UserQuery::default() }).await;
    assert_eq!(staff.1, ["root@example.com"]);
    assert_eq!(listed(store, UserQuery { is_active: Some(false), ..UserQuery::default() }).await.0, 0);

    let page = |page: u32| UserQuery {
        ordering: UserOrdering::parse("email").expect("valid"),
        page,
        page_size: 2,
        ..UserQuery::default()
    };
    assert_eq!(listed(store, page(2)).await, (5, vec!["carol@example.com".to_owned(), "dave@other.org".to_owned()]));
    assert_eq!(listed(store, page(3)).await.1, ["root@example.com"]);
    assert_eq!(listed(store, page(4)).await, (5, vec![]), "past the end is empty");

    let by_login = UserQuery { ordering: UserOrdering::parse("-last_login").expect("valid"), ..UserQuery::default() };
    login(store, root.id, session_id(1), "r").await;
    assert_eq!(listed(store, by_login).await.1.first().map(String::as_str), Some("root@example.com"));
    let first = store.list_users(&UserQuery::default()).await.expect("read").results;
    assert_eq!(first[0].groups, [ADMIN_USER_GROUP, REGULAR_USER_GROUP], "groups come with each user");
}

pub async fn the_audit_trail_keeps_events_newest_first_and_filters<S: Store>(store: &S) {
    let client = ClientInfo::new(Some("203.0.113.7".into()), Some("audit-test"));
    for (n, kind) in [AuditKind::Signup, AuditKind::LoginFailed, AuditKind::LoginSucceeded].into_iter().enumerate() {
        let event = AuditEvent::new(kind, Some(UserId::new(1)), &client).with_detail(serde_json::json!({ "n": n }));
        store.record(event, T0 + Duration::seconds(i64::try_from(n).expect("small"))).await.expect("write");
    }
    let admin = AuditEvent::new(AuditKind::AdminAction, Some(UserId::new(2)), &client).by(UserId::new(1));
    store.record(admin, T0 + Duration::minutes(1)).await.expect("write");
    let all = store.list_events(&AuditQuery { user: None, event: None, page: 1, page_size: 20 }).await.expect("read");
    assert_eq!(all.count, 4);
    let names: Vec<&str> = all.results.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["admin_action", "login_succeeded", "login_failed", "signup"]);
    assert_eq!(all.results[0].actor_id, Some(1));
    assert_eq!(all.results[0].user_id, Some(2));
    assert_eq!(all.results[1].detail, serde_json::json!({ "n": 2 }));
    assert_eq!(all.results[1].ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(all.results[1].user_agent.as_deref(), Some("audit-test"));
    assert_eq!(all.results[3].at, T0);
    let by_user =
        store.list_events(&AuditQuery { user: Some(UserId::new(1)), event: None, page: 1, page_size: 20 }).await;
    assert_eq!(by_user.expect("read").count, 3);
    let by_kind =
        AuditQuery { user: Some(UserId::new(1)), event: Some(AuditKind::LoginFailed), page: 1, page_size: 20 };
    assert_eq!(store.list_events(&by_kind).await.expect("read").count, 1);
    let paged = store.list_events(&AuditQuery { user: None, event: None, page: 2, page_size: 3 }).await.expect("read");
    assert_eq!((paged.count, paged.results.len()), (4, 1));
}

fn admin_user(address: &str, groups: &[&str]) -> AdminNewUser {
    AdminNewUser {
        email: email(address),
        password_hash: Some(PasswordHash::new("$argon2id$admin-made")),
        first_name: "Grace".into(),
        last_name: "Hopper".into(),
        is_active: true,
        is_staff: true,
        is_verified: true,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        date_joined: T0,
    }
}

fn written_user(write: AdminWrite) -> crate::User {
    match write {
        AdminWrite::Done(Some(user)) => *user,
        other => panic!("expected a written user, got {other:?}"),
    }
}

pub async fn an_admin_made_user_has_profile_groups_and_maybe_an_invitation<S: Store>(store: &S) {
    let made = store.admin_create_user(admin_user("grace@example.com", &[REGULAR_USER_GROUP]), None).await;
    let made = written_user(made.expect("write"));
    assert_eq!(made.email.as_ref(), "grace@example.com");
    assert!(made.is_staff && made.is_verified && made.is_active && !made.is_superuser);
    assert_eq!(made.groups, [REGULAR_USER_GROUP]);
    assert_eq!(made.profile, crate::Profile::default());
    assert_eq!(store.get_user(made.id).await.expect("read"), Some(made.clone()));
    assert_eq!(store.pending_count().await.expect("count"), 0, "no invitation without a link");

    let invited = AdminNewUser { password_hash: None, ..admin_user("linus@example.com", &[]) };
    let invitation = (reset_token("invite"), mail_to("linus@example.com", "invitation"));
    let invited = written_user(store.admin_create_user(invited, Some(invitation)).await.expect("write"));
    let credentials = store.find_credentials_by_id(invited.id).await.expect("read").expect("found");
    assert!(credentials.password_hash.is_none(), "an invited user has no password until the link is used");
    assert_eq!(store.pending_count().await.expect("count"), 1, "the invitation is queued with the account");
    let peeked = store.peek_token(&TokenHash::of("invite"), TokenPurpose::ResetPassword, T0).await.expect("read");
    assert_eq!(peeked.map(|u| u.id), Some(invited.id));
}

pub async fn an_admin_made_user_with_a_taken_address_leaves_nothing<S: Store>(store: &S) {
    signup(store, "grace@example.com", "t").await;
    let before = store.pending_count().await.expect("count");
    let invitation = (reset_token("invite"), mail_to("GRACE@example.com", "invitation"));
    let taken = AdminNewUser { password_hash: None, ..admin_user("GRACE@example.com", &[]) };
    assert_eq!(store.admin_create_user(taken, Some(invitation)).await.expect("write"), AdminWrite::EmailTaken);
    assert_eq!(store.pending_count().await.expect("count"), before, "no invitation queued");
    assert!(store.peek_token(&TokenHash::of("invite"), TokenPurpose::ResetPassword, T0).await.expect("read").is_none());
}

pub async fn unknown_group_names_are_left_out<S: Store>(store: &S) {
    let named = store.groups_named(&[REGULAR_USER_GROUP.to_owned(), "Nobody's Group".to_owned()]).await;
    let named: Vec<String> = named.expect("read").into_iter().map(|g| g.name).collect();
    assert_eq!(named, [REGULAR_USER_GROUP]);
    // A group deleted between the caller's check and the write is skipped, not an error.
    let made = store.admin_create_user(admin_user("grace@example.com", &[REGULAR_USER_GROUP, "Gone"]), None).await;
    let made = written_user(made.expect("write"));
    assert_eq!(made.groups, [REGULAR_USER_GROUP]);
    let changes = AdminUserChanges { groups: Some(vec!["Gone".into()]), ..AdminUserChanges::default() };
    let changed = written_user(store.admin_update_user(made.id, changes, T0).await.expect("write"));
    assert!(changed.groups.is_empty());
}

pub async fn an_admin_update_changes_what_it_names_and_disabling_ends_sessions<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "a1").await;
    let auditors = store.create_group("Auditors", &[Permission::AuditView]).await.expect("write").expect("new name");
    let changes = AdminUserChanges {
        email: Some(email("Countess@example.com")),
        profile: ProfilePatch {
            last_name: Some("King".into()),
            phone: Some(Some("+441234567890".into())),
            bio: Some("Analyst".into()),
            ..ProfilePatch::default()
        },
        is_staff: Some(true),
        groups: Some(vec![auditors.name.clone()]),
        ..AdminUserChanges::default()
    };
    let changed = written_user(store.admin_update_user(id, changes, T0).await.expect("write"));
    assert_eq!(changed.email.as_ref(), "Countess@example.com");
    assert_eq!((changed.first_name.as_str(), changed.last_name.as_str()), ("Ada", "King"));
    assert_eq!(
        (changed.profile.phone.as_deref(), changed.profile.gender.as_deref(), changed.profile.bio.as_str()),
        (Some("+441234567890"), None, "Analyst")
    );
    assert!(changed.is_staff && changed.is_active && !changed.is_verified);
    assert_eq!(changed.groups, ["Auditors"], "the groups are replaced, not added to");
    assert!(store.find_credentials(&email("countess@EXAMPLE.com").key()).await.expect("read").is_some());
    assert!(store.find_credentials(&email("ada@example.com").key()).await.expect("read").is_none());
    let grants = store.grants_of(id).await.expect("read").expect("found");
    assert_eq!(grants.permissions, [Permission::AuditView].into_iter().collect());
    assert!(matches!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Live { .. }));

    let disable = AdminUserChanges { is_active: Some(false), ..AdminUserChanges::default() };
    let disabled = written_user(store.admin_update_user(id, disable, T0).await.expect("write"));
    assert!(!disabled.is_active);
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Dead);

    let nothing = AdminUserChanges::default();
    assert_eq!(store.admin_update_user(UserId::new(987_654), nothing, T0).await.expect("write"), AdminWrite::NotFound);
}

pub async fn an_admin_update_to_a_taken_address_changes_nothing<S: Store>(store: &S) {
    signup(store, "ada@example.com", "t1").await;
    let grace = signup(store, "grace@example.com", "t2").await;
    let changes = AdminUserChanges {
        email: Some(email("ADA@example.com")),
        profile: ProfilePatch {
            first_name: Some("Changed".into()),
            bio: Some("Changed".into()),
            ..ProfilePatch::default()
        },
        ..AdminUserChanges::default()
    };
    assert_eq!(store.admin_update_user(grace, changes, T0).await.expect("write"), AdminWrite::EmailTaken);
    let unchanged = store.get_user(grace).await.expect("read").expect("found");
    assert_eq!((unchanged.email.as_ref(), unchanged.first_name.as_str()), ("grace@example.com", "Ada"));
    assert_eq!(unchanged.profile.bio, "", "the profile is untouched too");
}

pub async fn the_last_active_superuser_is_never_demoted_disabled_or_deleted<S: Store>(store: &S) {
    let root = store.upsert_superuser(email("root@example.com"), PasswordHash::new("$x"), T0).await.expect("write");
    for changes in [
        AdminUserChanges { is_superuser: Some(false), ..AdminUserChanges::default() },
        AdminUserChanges { is_active: Some(false), ..AdminUserChanges::default() },
    ] {
        assert_eq!(store.admin_update_user(root.id, changes, T0).await.expect("write"), AdminWrite::LastSuperuser);
    }
    assert_eq!(store.admin_delete_user(root.id).await.expect("write"), AdminWrite::LastSuperuser);
    assert_eq!(store.get_user(root.id).await.expect("read"), Some(root.clone()), "nothing changed");

    // With a second active superuser, the first may go.
    let second = store.upsert_superuser(email("second@example.com"), PasswordHash::new("$x"), T0).await;
    let second = second.expect("write");
    let demote = AdminUserChanges { is_superuser: Some(false), ..AdminUserChanges::default() };
    let demoted = written_user(store.admin_update_user(root.id, demote, T0).await.expect("write"));
    assert!(!demoted.is_superuser);
    assert_eq!(store.admin_delete_user(second.id).await.expect("write"), AdminWrite::LastSuperuser);
    assert_eq!(store.admin_delete_user(root.id).await.expect("write"), AdminWrite::Done(None));
    assert!(store.get_user(root.id).await.expect("read").is_none());
    assert_eq!(store.admin_delete_user(root.id).await.expect("write"), AdminWrite::NotFound);
}

/// Two superusers demoting each other at once: however the race falls, one stays.
pub async fn concurrent_demotions_leave_one_active_superuser<S: Store>(store: &S) {
    let mut survivor = None;
    for trial in 0..8 {
        let a = store.upsert_superuser(email(&format!("a{trial}@example.com")), PasswordHash::new("$x"), T0).await;
        let b = store.upsert_superuser(email(&format!("b{trial}@example.com")), PasswordHash::new("$x"), T0).await;
        let (a, b) = (a.expect("write").id, b.expect("write").id);
        if let Some(earlier) = survivor {
            assert_eq!(store.admin_delete_user(earlier).await.expect("write"), AdminWrite::Done(None));
        }
        let demote = || AdminUserChanges { is_superuser: Some(false), ..AdminUserChanges::default() };
        let outcomes =
            join_all([store.admin_update_user(a, demote(), T0), store.admin_update_user(b, demote(), T0)]).await;
        let refused = outcomes.iter().filter(|o| matches!(o, Ok(AdminWrite::LastSuperuser))).count();
        assert_eq!(refused, 1, "trial {trial}: exactly one demotion is refused: {outcomes:?}");
        let users = store.list_users(&UserQuery::default()).await.expect("read").results;
        let left: Vec<UserId> = users.iter().filter(|u| u.is_superuser && u.is_active).map(|u| u.id).collect();
        assert_eq!(left.len(), 1, "trial {trial}: one active superuser is left");
        survivor = left.first().copied();
    }
}

pub async fn deleting_a_user_removes_their_sessions_links_and_memberships<S: Store>(store: &S) {
    let id = signup(store, "ada@example.com", "t").await;
    login(store, id, session_id(1), "a1").await;
    assert_eq!(store.admin_delete_user(id).await.expect("write"), AdminWrite::Done(None));
    assert!(store.get_user(id).await.expect("read").is_none());
    assert_eq!(store.session_state(session_id(1), T0).await.expect("read"), SessionState::Dead);
    assert!(verified_user(store, &TokenHash::of("t"), T0).await.expect("write").is_none());
    let groups = store.list_groups().await.expect("read");
    assert_eq!(groups.len(), 2, "the groups stay");
    signup(store, "ada@example.com", "t2").await;
}

pub async fn a_group_is_created_renamed_given_permissions_and_deleted<S: Store>(store: &S) {
    let created = store
        .create_group("Support", &[Permission::UsersView, Permission::AuditView])
        .await
        .expect("write")
        .expect("a new name");
    assert_eq!(created.name, "Support");
    assert_eq!(created.permissions, [Permission::UsersView, Permission::AuditView]);
    assert_eq!(store.get_group(created.id).await.expect("read"), Some(created.clone()));
    assert!(store.create_group("Support", &[]).await.expect("write").is_none(), "the name is taken");
    let empty = store.create_group("Empty", &[]).await.expect("write").expect("a new name");
    assert!(empty.permissions.is_empty());

    let renamed = store.update_group(created.id, Some("Helpdesk".into()), None).await.expect("write");
    let GroupWrite::Done(renamed) = renamed else { panic!("renamed: {renamed:?}") };
    assert_eq!((renamed.name.as_str(), renamed.permissions.len()), ("Helpdesk", 2), "permissions kept");
    let same_name = store.update_group(created.id, Some("Helpdesk".into()), None).await.expect("write");
    assert!(matches!(same_name, GroupWrite::Done(_)), "keeping its own name is no clash");
    let clash = store.update_group(created.id, Some("Empty".into()), Some(vec![])).await.expect("write");
    assert_eq!(clash, GroupWrite::NameTaken);
    assert_eq!(store.get_group(created.id).await.expect("read"), Some(renamed.clone()), "a clash changes nothing");
    let regranted = store.update_group(created.id, None, Some(vec![Permission::GroupsView])).await.expect("write");
    let GroupWrite::Done(regranted) = regranted else { panic!("regranted: {regranted:?}") };
    assert_eq!(
        (regranted.name.as_str(), regranted.permissions.as_slice()),
        ("Helpdesk", &[Permission::GroupsView][..])
    );
    assert_eq!(store.update_group(987_654, Some("X".into()), None).await.expect("write"), GroupWrite::NotFound);

    let member = signup(store, "ada@example.com", "t").await;
    let join = AdminUserChanges { groups: Some(vec!["Helpdesk".into()]), ..AdminUserChanges::default() };
    written_user(store.admin_update_user(member, join, T0).await.expect("write"));
    assert!(store.delete_group(created.id).await.expect("write"));
    assert!(!store.delete_group(created.id).await.expect("write"), "already gone");
    assert!(store.get_group(created.id).await.expect("read").is_none());
    let member = store.get_user(member).await.expect("read").expect("the member stays");
    assert!(member.groups.is_empty(), "the membership went with the group");
}

pub async fn ping_answers<S: Store>(store: &S) {
    store.ping().await.expect("the store answers");
}

/// Expands to one `#[tokio::test]` per contract check. `$fresh` is an
/// expression giving a future of a fresh, migrated store.
#[macro_export]
macro_rules! store_contract_tests {
    ($fresh:expr) => {
        $crate::store_contract_tests!(@by_ref $fresh;
            create_account_stores_user_profile_group_and_mail,
            an_address_taken_in_any_case_is_refused_and_nothing_is_left,
            unknown_users_and_addresses_are_none,
            find_user_by_email_ignores_case,
            a_verification_token_works_once_and_marks_the_user_verified,
            an_expired_or_unknown_verification_token_does_nothing,
            a_reissued_verification_token_also_works,
            a_session_starts_live_and_sets_last_login,
            a_live_sessions_user_is_read_with_it,
            a_sessions_audit_event_is_recorded_with_it,
            refresh_rotation_spends_the_token_and_detects_reuse,
            an_expired_refresh_token_is_expired,
            a_replay_within_the_grace_window_keeps_the_one_successor,
            without_grace_a_token_is_spent_once_whatever_the_clocks,
            sessions_are_listed_newest_use_first_without_dead_ones,
            sessions_are_revoked_only_by_their_owner,
            a_profile_patch_changes_only_what_it_names,
            a_login_upgrades_its_hash_with_its_session,
            a_session_keeps_how_its_user_authenticated_across_refreshes,
            a_totp_factor_is_pending_until_confirmed_then_spends_each_step_once,
            concurrent_spends_of_one_step_or_one_recovery_code_succeed_once,
            a_challenge_counts_failures_expires_and_closes_once,
            removing_the_factor_ends_its_codes_and_challenges,
            the_outbox_leases_retries_and_forgets_sent_mail,
            an_expired_lease_passes_to_another_worker,
            ping_answers,
            the_audit_trail_keeps_events_newest_first_and_filters,
            grants_come_from_groups_and_the_superuser_flag,
            the_two_built_in_groups_exist,
            the_user_list_searches_filters_orders_and_pages,
            attempts_are_counted_per_key_in_fixed_windows,
            a_login_settles_its_throttle_keys_with_its_session,
            concurrent_attempts_are_each_counted_once,
            an_attempt_given_back_later_is_given_back,
            an_email_change_link_moves_the_account_and_kills_other_links,
            an_email_change_to_an_address_taken_meanwhile_changes_nothing,
            a_reset_sets_the_password_once_verifies_and_ends_every_session,
            an_expired_reset_token_does_nothing,
            concurrent_resets_with_one_token_succeed_once,
            a_password_change_keeps_one_session_and_kills_reset_links,
            a_newer_reset_link_supersedes_the_older,
            deleting_an_account_removes_everything_and_queues_goodbye,
            a_superuser_is_created_or_promoted,
            concurrent_verifications_succeed_once,
            concurrent_rotations_of_one_token_rotate_once,
            an_admin_made_user_has_profile_groups_and_maybe_an_invitation,
            an_admin_made_user_with_a_taken_address_leaves_nothing,
            unknown_group_names_are_left_out,
            an_admin_update_changes_what_it_names_and_disabling_ends_sessions,
            an_admin_update_to_a_taken_address_changes_nothing,
            the_last_active_superuser_is_never_demoted_disabled_or_deleted,
            concurrent_demotions_leave_one_active_superuser,
            deleting_a_user_removes_their_sessions_links_and_memberships,
            a_group_is_created_renamed_given_permissions_and_deleted,
            concurrent_writers_all_commit,
        );
    };
    (@by_ref $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $fresh.await;
                $crate::contract::$name(&store).await;
            }
        )*
    };
}
