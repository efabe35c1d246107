//! The core account flows end to end: signup, the mailed link, login, me,
//! refresh, reuse detection, logout.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, Options, FRONTEND, PASSWORD};
use crate::on_both_stores;

/// The payload of a JWT, unverified.
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

on_both_stores!(
    signup_verify_login_refresh_and_replay,
    logout_kills_the_session_at_once,
    logout_all_kills_every_session,
    a_known_address_gets_the_same_signup_answer_and_its_owner_a_notice,
    without_required_verification_signup_logs_in_and_duplicates_conflict,
    login_failures_do_not_tell_unknown_from_wrong,
    resend_answers_alike_and_mails_only_unverified_accounts,
    me_can_be_patched_with_dotted_errors,
    health_checks_answer,
);

async fn signup_verify_login_refresh_and_replay(backend: Backend) {
    // No grace window: any replay of a spent refresh token is reuse.
    let grace = vec![("GATEHOUSE__AUTH__REFRESH_GRACE_SECONDS".to_owned(), "0".to_owned())];
    let app = spawn_app_with(backend, Options { extra: grace, ..Options::default() }).await;

    let signup = app.signup("Ada.Lovelace@Example.COM").await;
    assert_eq!(signup.status(), 201);
    let body: Value = signup.json().await.unwrap();
    assert_eq!(body, json!({ "email": "Ada.Lovelace@example.com", "is_verified": false }));

    // The verification mail arrives over SMTP, with the link in both parts.
    let mail = app.wait_for_mails("Ada.Lovelace@example.com", 1).await.remove(0);
    assert!(mail.raw.contains("text/plain") && mail.raw.contains("text/html"));
    assert!(mail.raw.contains(&format!("{FRONTEND}/verify-email?token=")));
    let token = mail.link_token("verify-email");
    assert!(token.len() >= 43, "256-bit token");

    // Not verified yet: the right password is refused with 403.
    assert_error(app.login("ada.lovelace@example.com", PASSWORD).await, 403, "email_not_verified").await;

    let verified = app.post("/api/v1/auth/email/verify", &json!({ "token": token })).await;
    assert_eq!(verified.status(), 200);
    let verified: Value = verified.json().await.unwrap();
    assert_eq!(verified["user"]["is_verified"], true);
    assert_eq!(verified["user"]["email"], "Ada.Lovelace@example.com");
    // Single use.
    let again = app.post("/api/v1/auth/email/verify", &json!({ "token": token })).await;
    assert_error(again, 400, "token_invalid").await;

    // Login in any letter case.
    let login = app.login("ADA.LOVELACE@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);
    assert_eq!(login.headers()["cache-control"], "no-store");
    let login: Value = login.json().await.unwrap();
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 300);
    assert_eq!(login["user"]["groups"], json!(["Regular User"]));
    assert!(login["user"]["last_login"].is_string());
    assert!(login["user"].get("password").is_none());
    let access = login["access"].as_str().unwrap().to_owned();
    let refresh = login["refresh"].as_str().unwrap().to_owned();

    let me = app.get_auth("/api/v1/auth/me", &access).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "Ada.Lovelace@example.com");
    assert_eq!(me["profile"], json!({ "phone": null, "gender": null, "bio": "" }));
    assert_eq!(me["mfa_enabled"], false);
    assert!(me["id"].is_i64());
    assert_eq!(claims_of(&access)["amr"], json!(["pwd"]), "a password login");

    let verify = app.post("/api/v1/auth/token/verify", &json!({ "token": access })).await;
    assert_eq!(verify.status(), 200);
    assert_eq!(verify.json::<Value>().await.unwrap(), json!({}));

    // Refresh returns a new pair; the old refresh token is spent.
    let refreshed = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": refresh })).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let new_refresh = refreshed["refresh"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh);
    let new_access = refreshed["access"].as_str().unwrap().to_owned();
    assert_eq!(app.get_auth("/api/v1/auth/me", &new_access).await.status(), 200);
    assert_eq!(claims_of(&new_access)["amr"], json!(["pwd"]), "a refresh keeps the session's methods");

    // The spent token comes back: the whole session is revoked.
    let replay = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": refresh })).await;
    assert_error(replay, 401, "token_reused").await;
    let newest = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": new_refresh })).await;
    assert_error(newest, 401, "token_invalid").await;
    let me = app.get_auth("/api/v1/auth/me", &new_access).await;
    assert_eq!(me.headers()["www-authenticate"].to_str().unwrap().split(' ').next(), Some("Bearer"));
    assert_error(me, 401, "token_invalid").await;
    let verify = app.post("/api/v1/auth/token/verify", &json!({ "token": new_access })).await;
    assert_error(verify, 401, "token_invalid").await;
}

async fn logout_kills_the_session_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("grace@example.com").await;
    let access = login["access"].as_str().unwrap();
    let refresh = login["refresh"].as_str().unwrap();
    let other = app.login("grace@example.com", PASSWORD).await.json::<Value>().await.unwrap();

    let logout = app.post_auth("/api/v1/auth/logout", access, &json!({})).await;
    assert_eq!(logout.status(), 204);
    assert_error(app.get_auth("/api/v1/auth/me", access).await, 401, "token_invalid").await;
    let refreshed = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": refresh })).await;
    assert_error(refreshed, 401, "token_invalid").await;
    // Another device's session is untouched.
    assert_eq!(app.get_auth("/api/v1/auth/me", other["access"].as_str().unwrap()).await.status(), 200);
    // Logging out needs a live session.
    assert_error(app.post_auth("/api/v1/auth/logout", access, &json!({})).await, 401, "token_invalid").await;
}

async fn logout_all_kills_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.verified_login("alan@example.com").await;
    let second = app.login("alan@example.com", PASSWORD).await.json::<Value>().await.unwrap();
    let neighbour = app.verified_login("ada@example.com").await;
    let logout = app
        .client
        .post(app.url("/api/v1/auth/logout/all"))
        .bearer_auth(first["access"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    for session in [&first, &second] {
        assert_error(app.get_auth("/api/v1/auth/me", session["access"].as_str().unwrap()).await, 401, "token_invalid")
            .await;
    }
    assert_eq!(app.get_auth("/api/v1/auth/me", neighbour["access"].as_str().unwrap()).await.status(), 200);
}

async fn a_known_address_gets_the_same_signup_answer_and_its_owner_a_notice(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.signup("hedy@example.com").await;
    let first_status = first.status();
    let first_body = first.bytes().await.unwrap();
    let second = app.signup("HEDY@example.com").await;
    assert_eq!(second.status(), first_status);
    let second_body: Value = second.json().await.unwrap();
    assert_eq!(second_body, json!({ "email": "HEDY@example.com", "is_verified": false }));
    assert_eq!(serde_json::from_slice::<Value>(&first_body).unwrap()["is_verified"], false);
    let mails = app.wait_for_mails("hedy@example.com", 2).await;
    assert!(mails.iter().any(|m| m.subject().contains("tried to sign up")), "the owner is told");
    assert_eq!(mails.iter().filter(|m| m.raw.contains("verify-email?token=")).count(), 1, "no second account");
}

async fn without_required_verification_signup_logs_in_and_duplicates_conflict(backend: Backend) {
    let app = spawn_app_with(backend, Options { require_verified_email: Some(false), ..Options::default() }).await;
    let signup = app.signup("joan@example.com").await;
    assert_eq!(signup.status(), 201);
    let body: Value = signup.json().await.unwrap();
    assert_eq!(body["email"], "joan@example.com");
    assert_eq!(body["is_verified"], false);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["user"]["last_login"].is_string(), "signup counts as a login");
    let access = body["access"].as_str().unwrap();
    assert_eq!(app.get_auth("/api/v1/auth/me", access).await.status(), 200);
    // The verification mail is sent in this mode too.
    app.wait_for_mails("joan@example.com", 1).await;
    assert_error(app.signup("JOAN@example.com").await, 409, "email_taken").await;
    assert_eq!(app.login("joan@example.com", PASSWORD).await.status(), 200);
}

async fn login_failures_do_not_tell_unknown_from_wrong(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_login("katherine@example.com").await;
    let wrong = app.login("katherine@example.com", "not the password at all").await;
    let wrong_status = wrong.status();
    let wrong_body = wrong.bytes().await.unwrap();
    let unknown = app.login("nobody@example.com", "not the password at all").await;
    assert_eq!(unknown.status(), wrong_status);
    assert_eq!(unknown.bytes().await.unwrap(), wrong_body);
    let body: Value = serde_json::from_slice(&wrong_body).unwrap();
    assert_eq!(body["code"], "invalid_credentials");
    assert_eq!(wrong_status, 401);
}

async fn resend_answers_alike_and_mails_only_unverified_accounts(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.signup("mary@example.com").await.status(), 201);
    app.wait_for_mails("mary@example.com", 1).await;
    let known = app.post("/api/v1/auth/email/verify/resend", &json!({ "email": "MARY@example.com" })).await;
    assert_eq!(known.status(), 202);
    let known = known.bytes().await.unwrap();
    let unknown = app.post("/api/v1/auth/email/verify/resend", &json!({ "email": "ghost@example.com" })).await;
    assert_eq!(unknown.status(), 202);
    assert_eq!(unknown.bytes().await.unwrap(), known, "byte-identical answers");
    let mails = app.wait_for_mails("mary@example.com", 2).await;
    // Both links work until one is used.
    let newest = mails[1].link_token("verify-email");
    assert_ne!(newest, mails[0].link_token("verify-email"));
    assert_eq!(app.post("/api/v1/auth/email/verify", &json!({ "token": newest })).await.status(), 200);
    // A verified account gets nothing more.
    app.post("/api/v1/auth/email/verify/resend", &json!({ "email": "mary@example.com" })).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("mary@example.com").len(), 2);
    assert!(app.mails_to("ghost@example.com").is_empty());
}

async fn me_can_be_patched_with_dotted_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("rosalind@example.com").await;
    let access = login["access"].as_str().unwrap();
    let patch = |body: Value| app.client.patch(app.url("/api/v1/auth/me")).bearer_auth(access).json(&body).send();

    let patched = patch(json!({ "first_name": "Rosalind", "last_name": "Franklin", "profile": { "phone": "+441234567890", "gender": "female", "bio": "X-ray crystallographer" }, "is_staff": true, "email": "evil@example.com" })).await.unwrap();
    assert_eq!(patched.status(), 200);
    let user: Value = patched.json().await.unwrap();
    assert_eq!(user["first_name"], "Rosalind");
    assert_eq!(user["last_name"], "Franklin");
    assert_eq!(
        user["profile"],
        json!({ "phone": "+441234567890", "gender": "female", "bio": "X-ray crystallographer" })
    );
    assert_eq!(user["is_staff"], false, "read-only fields are ignored");
    assert_eq!(user["email"], "rosalind@example.com");

    let bad = patch(json!({ "profile": { "phone": "12345", "bio": "b".repeat(501), "gender": "g".repeat(33) } }))
        .await
        .unwrap();
    let body = assert_error(bad, 400, "validation_error").await;
    for key in ["profile.phone", "profile.bio", "profile.gender"] {
        assert!(body["errors"][key].is_array(), "{key} in {body}");
    }
    // Nothing was half-written.
    let me: Value = app.get_auth("/api/v1/auth/me", access).await.json().await.unwrap();
    assert_eq!(me["profile"]["phone"], "+441234567890");

    let cleared = patch(json!({ "profile": { "phone": null } })).await.unwrap();
    assert_eq!(cleared.json::<Value>().await.unwrap()["profile"]["phone"], Value::Null);
    let not_object = patch(json!({ "profile": "nope" })).await.unwrap();
    assert_error(not_object, 400, "validation_error").await;
}

async fn health_checks_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let live = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({ "status": "ok", "checks": { "database": "ok" } }));
    let jwks = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    assert_eq!(jwks.json::<Value>().await.unwrap(), json!({ "keys": [] }), "HS256 publishes no key");
}
