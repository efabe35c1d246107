//! Two-factor login over HTTP on both stores, with codes computed from the
//! setup's secret as an authenticator app computes them.

use serde_json::{json, Value};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, Options, TestApp, PASSWORD};
use crate::import_django::rows;
use crate::on_both_stores;

on_both_stores!(
    totp_is_set_up_confirmed_and_asked_for_at_login,
    recovery_codes_work_once_even_when_raced,
    wrong_codes_kill_the_mfa_token_and_then_throttle_the_account,
    turning_it_off_regenerating_and_the_admin_reset,
    bad_second_factor_input_is_refused_and_changes_nothing,
    a_stolen_mfa_token_dies_with_its_lifetime,
);

const EMAIL: &str = "mfa.user@example.com";

/// The code of the step `offset` steps from now.
pub(crate) fn code(secret: &str, offset: i64) -> String {
    let totp = TOTP::new(Algorithm::SHA1, 6, 0, 30, Secret::Encoded(secret.to_owned()).to_bytes().unwrap()).unwrap();
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
    totp.generate(u64::try_from(now + offset * 30).unwrap())
}

fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A verified user with MFA on: their access token, secret and recovery codes.
async fn enrolled(app: &TestApp) -> (String, String, Vec<String>) {
    let login = app.verified_login(EMAIL).await;
    let access = login["access"].as_str().unwrap().to_owned();
    let (secret, codes) = enable(app, &access).await;
    (access, secret, codes)
}

/// Sets up and confirms TOTP for the caller: the secret and the recovery codes.
pub(crate) async fn enable(app: &TestApp, access: &str) -> (String, Vec<String>) {
    let setup = app.post_auth("/api/v1/auth/mfa/totp/setup", access, &json!({ "password": PASSWORD })).await;
    assert_eq!(setup.status(), 200);
    let setup: Value = setup.json().await.unwrap();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let confirmed = app.post_auth("/api/v1/auth/mfa/totp/confirm", access, &json!({ "code": code(&secret, 0) })).await;
    assert_eq!(confirmed.status(), 200);
    let codes: Value = confirmed.json().await.unwrap();
    let codes = codes["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    (secret, codes)
}

/// The first step of a login: its mfa_token.
async fn mfa_token(app: &TestApp) -> String {
    let first = app.login(EMAIL, PASSWORD).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["mfa_required"], true);
    assert_eq!(first["expires_in"], 300);
    assert!(first.get("access").is_none() && first.get("refresh").is_none(), "no session yet: {first}");
    first["mfa_token"].as_str().unwrap().to_owned()
}

async fn second_step(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/api/v1/auth/login/mfa", &body).await
}

async fn events(app: &TestApp, admin: &str, user_id: i64, event: &str) -> usize {
    let page = app.get_auth(&format!("/api/v1/admin/audit?user={user_id}&event={event}"), admin).await;
    let page: Value = page.json().await.unwrap();
    page["count"].as_u64().unwrap() as usize
}

async fn totp_is_set_up_confirmed_and_asked_for_at_login(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login(EMAIL).await;
    let access = login["access"].as_str().unwrap().to_owned();
    let user_id = login["user"]["id"].as_i64().unwrap();
    assert_eq!(login["user"]["mfa_enabled"], false);
    let wrong = app.post_auth("/api/v1/auth/mfa/totp/setup", &access, &json!({ "password": "not the password" })).await;
    assert_error(wrong, 400, "validation_error").await["errors"]["password"].as_array().unwrap();
    let setup: Value = app
        .post_auth("/api/v1/auth/mfa/totp/setup", &access, &json!({ "password": PASSWORD }))
        .await
        .json()
        .await
        .unwrap();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")), "{uri}");
    let stored = rows(&app.database_url, &format!("SELECT secret FROM totp_factors WHERE user_id = {user_id}")).await;
    let stored = stored[0][0].clone().unwrap();
    assert!(!stored.contains(&secret) && stored.starts_with("v1."), "the row holds the sealed secret, not {secret}");

    // Pending: login asks nothing yet; a wrong code does not confirm.
    assert_eq!(app.login(EMAIL, PASSWORD).await.json::<Value>().await.unwrap()["user"]["mfa_enabled"], false);
    let wrong = app.post_auth("/api/v1/auth/mfa/totp/confirm", &access, &json!({ "code": code(&secret, -3) })).await;
    assert!(assert_error(wrong, 400, "validation_error").await["errors"]["code"].is_array());
    let confirming = code(&secret, 0);
    let confirmed: Value = app
        .post_auth("/api/v1/auth/mfa/totp/confirm", &access, &json!({ "code": confirming }))
        .await
        .json()
        .await
        .unwrap();
    let codes = confirmed["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let stored =
        rows(&app.database_url, &format!("SELECT code_hash FROM recovery_codes WHERE user_id = {user_id}")).await;
    assert!(stored.iter().all(|row| !codes.iter().any(|c| Some(c.as_str().unwrap()) == row[0].as_deref())), "hashed");
    app.wait_for_mails(EMAIL, 2).await;
    assert!(app.mails_to(EMAIL).iter().any(|m| m.subject() == "Two-factor authentication is on"));
    let me: Value = app.get_auth("/api/v1/auth/me", &access).await.json().await.unwrap();
    assert_eq!(me["mfa_enabled"], true, "existing sessions stay");
    let again = app.post_auth("/api/v1/auth/mfa/totp/setup", &access, &json!({ "password": PASSWORD })).await;
    assert_error(again, 400, "validation_error").await;

    // Login: the password, then a code. The confirming step is spent; the next one works once.
    let token = mfa_token(&app).await;
    let replayed = second_step(&app, json!({ "mfa_token": token, "code": confirming })).await;
    let body = assert_error(replayed, 400, "validation_error").await;
    assert!(body["errors"]["code"].is_array(), "{body}");
    let next = code(&secret, 1);
    let done = second_step(&app, json!({ "mfa_token": token, "code": next })).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["user"]["id"], user_id);
    assert_eq!(claims_of(done["access"].as_str().unwrap())["amr"], json!(["pwd", "otp"]));
    let refreshed: Value =
        app.post("/api/v1/auth/token/refresh", &json!({ "refresh": done["refresh"] })).await.json().await.unwrap();
    assert_eq!(claims_of(refreshed["access"].as_str().unwrap())["amr"], json!(["pwd", "otp"]), "kept by the session");
    let used = second_step(&app, json!({ "mfa_token": token, "code": next })).await;
    assert_error(used, 401, "token_invalid").await;

    // The code just used, and one from two steps ago, on a new login.
    let token = mfa_token(&app).await;
    for stale in [next, code(&secret, -2)] {
        let refused = second_step(&app, json!({ "mfa_token": token, "code": stale })).await;
        assert_error(refused, 400, "validation_error").await;
    }
    let admin = app.superuser_login("admin@example.com").await;
    let admin = admin["access"].as_str().unwrap();
    assert_eq!(events(&app, admin, user_id, "mfa_enabled").await, 1);
    assert!(events(&app, admin, user_id, "mfa_failed").await >= 2);
}

async fn recovery_codes_work_once_even_when_raced(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, codes) = enrolled(&app).await;
    let token = mfa_token(&app).await;
    let done = second_step(&app, json!({ "mfa_token": token, "recovery_code": codes[0].to_uppercase() })).await;
    assert_eq!(done.status(), 200, "case and dashes do not matter");
    let done: Value = done.json().await.unwrap();
    assert_eq!(claims_of(done["access"].as_str().unwrap())["amr"], json!(["pwd", "mfa"]));
    // The second step answers in the transport it asks for.
    let token = mfa_token(&app).await;
    let body = json!({ "mfa_token": token, "recovery_code": codes[4], "transport": "cookie" });
    let by_cookie = second_step(&app, body).await;
    assert_eq!(by_cookie.status(), 200);
    assert!(by_cookie.headers().get_all("set-cookie").iter().count() >= 3, "the session's cookies");
    let by_cookie: Value = by_cookie.json().await.unwrap();
    assert!(by_cookie.get("access").is_none() && by_cookie["csrf_token"].is_string(), "{by_cookie}");

    let token = mfa_token(&app).await;
    let again = second_step(&app, json!({ "mfa_token": token, "recovery_code": codes[0] })).await;
    assert!(assert_error(again, 400, "validation_error").await["errors"]["recovery_code"].is_array());

    // Two logins present one code at once: exactly one gets in.
    for (round, code) in codes.iter().enumerate().take(4).skip(1) {
        let (first, second) = (mfa_token(&app).await, mfa_token(&app).await);
        let (a, b) = tokio::join!(
            second_step(&app, json!({ "mfa_token": first, "recovery_code": code })),
            second_step(&app, json!({ "mfa_token": second, "recovery_code": code })),
        );
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "round {round}");
    }
    let admin = app.superuser_login("admin@example.com").await;
    let user_id = rows(&app.database_url, &format!("SELECT id FROM users WHERE email = '{EMAIL}'")).await;
    let user_id: i64 = user_id[0][0].as_ref().unwrap().parse().unwrap();
    assert_eq!(events(&app, admin["access"].as_str().unwrap(), user_id, "recovery_code_used").await, 5);
}

async fn wrong_codes_kill_the_mfa_token_and_then_throttle_the_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret, codes) = enrolled(&app).await;
    let token = mfa_token(&app).await;
    for _ in 0..5 {
        let wrong = second_step(&app, json!({ "mfa_token": token, "code": "000000" })).await;
        assert_error(wrong, 400, "validation_error").await;
    }
    let dead = second_step(&app, json!({ "mfa_token": token, "code": code(&secret, 1) })).await;
    assert_error(dead, 401, "token_invalid").await;
    let dead = second_step(&app, json!({ "mfa_token": token, "recovery_code": codes[0] })).await;
    assert_error(dead, 401, "token_invalid").await;

    // Five more on a fresh token make ten on the account: the next answer is 429, whatever the code.
    let token = mfa_token(&app).await;
    for _ in 0..5 {
        assert_error(second_step(&app, json!({ "mfa_token": token, "code": "999999" })).await, 400, "validation_error")
            .await;
    }
    let token = mfa_token(&app).await;
    let throttled = second_step(&app, json!({ "mfa_token": token, "recovery_code": codes[0] })).await;
    assert!(throttled.headers().contains_key("retry-after"));
    assert_error(throttled, 429, "rate_limited").await;
    let unknown = second_step(&app, json!({ "mfa_token": "not-a-live-token", "code": "123456" })).await;
    assert_error(unknown, 401, "token_invalid").await;
}

async fn turning_it_off_regenerating_and_the_admin_reset(backend: Backend) {
    let app = spawn_app(backend).await;
    let (access, _, codes) = enrolled(&app).await;
    let path = "/api/v1/auth/mfa/recovery-codes";
    let wrong = app.post_auth(path, &access, &json!({ "password": "wrong password", "code": codes[0] })).await;
    assert!(assert_error(wrong, 400, "validation_error").await["errors"]["password"].is_array());
    let fresh: Value =
        app.post_auth(path, &access, &json!({ "password": PASSWORD, "code": codes[0] })).await.json().await.unwrap();
    let fresh: Vec<String> =
        fresh["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(fresh.len(), 10);
    let token = mfa_token(&app).await;
    assert_error(
        second_step(&app, json!({ "mfa_token": token, "recovery_code": codes[1] })).await,
        400,
        "validation_error",
    )
    .await;
    let done = second_step(&app, json!({ "mfa_token": token, "recovery_code": fresh[0] })).await;
    assert_eq!(done.status(), 200, "the new codes work, the old ones died");

    let off = app.client.delete(app.url("/api/v1/auth/mfa/totp")).bearer_auth(&access);
    let off = off.json(&json!({ "password": PASSWORD, "code": fresh[1] })).send().await.unwrap();
    assert_eq!(off.status(), 204);
    let login: Value = app.login(EMAIL, PASSWORD).await.json().await.unwrap();
    assert!(login["access"].is_string() && login["user"]["mfa_enabled"] == false, "{login}");
    assert_eq!(claims_of(login["access"].as_str().unwrap())["amr"], json!(["pwd"]));
    app.wait_for_mails(EMAIL, 3).await;
    assert!(app.mails_to(EMAIL).iter().any(|m| m.subject() == "Two-factor authentication is off"));

    // An administrator turns it off for a user who lost their phone.
    enable(&app, &access).await;
    let user_id = login["user"]["id"].as_i64().unwrap();
    let admin = app.superuser_login("admin@example.com").await;
    let admin = admin["access"].as_str().unwrap();
    let reset = app.post_auth(&format!("/api/v1/admin/users/{user_id}/mfa/reset"), admin, &json!({})).await;
    assert_eq!(reset.status(), 204);
    let unknown = app.post_auth("/api/v1/admin/users/987654/mfa/reset", admin, &json!({})).await;
    assert_error(unknown, 404, "not_found").await;
    let denied = app.post_auth(&format!("/api/v1/admin/users/{user_id}/mfa/reset"), &access, &json!({})).await;
    assert_error(denied, 403, "permission_denied").await;
    let login: Value = app.login(EMAIL, PASSWORD).await.json().await.unwrap();
    assert!(login["access"].is_string(), "no second factor after the reset: {login}");
    assert_eq!(events(&app, admin, user_id, "mfa_disabled").await, 2);
    // Verification, on, off, on again, and the reset's notice.
    let mails = app.wait_for_mails(EMAIL, 5).await;
    let notices = mails.iter().filter(|m| m.subject() == "Two-factor authentication is off").count();
    assert_eq!(notices, 2, "the user is told of the reset too");
}

async fn bad_second_factor_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login(EMAIL).await;
    let access = login["access"].as_str().unwrap().to_owned();
    let confirm = app.post_auth("/api/v1/auth/mfa/totp/confirm", &access, &json!({ "code": "123456" })).await;
    assert_error(confirm, 400, "validation_error").await;
    let (_, secret, _) = {
        let setup: Value = app
            .post_auth("/api/v1/auth/mfa/totp/setup", &access, &json!({ "password": PASSWORD }))
            .await
            .json()
            .await
            .unwrap();
        (access.clone(), setup["secret"].as_str().unwrap().to_owned(), ())
    };
    for bad in ["12345", "1234567", "12a456", "", "ABCDEF"] {
        let refused = app.post_auth("/api/v1/auth/mfa/totp/confirm", &access, &json!({ "code": bad })).await;
        assert!(assert_error(refused, 400, "validation_error").await["errors"]["code"].is_array(), "{bad}");
    }
    let me: Value = app.get_auth("/api/v1/auth/me", &access).await.json().await.unwrap();
    assert_eq!(me["mfa_enabled"], false, "nothing confirmed");
    let confirmed = app.post_auth("/api/v1/auth/mfa/totp/confirm", &access, &json!({ "code": code(&secret, 0) })).await;
    assert_eq!(confirmed.status(), 200);
    let token = mfa_token(&app).await;
    for body in [
        json!({ "code": code(&secret, 1) }),
        json!({ "mfa_token": token, "code": "12a456" }),
        json!({ "mfa_token": token }),
        json!({ "mfa_token": token, "code": code(&secret, 1), "recovery_code": "abcde-fghij" }),
    ] {
        assert_error(second_step(&app, body.clone()).await, 400, "validation_error").await;
    }
    let done = second_step(&app, json!({ "mfa_token": token, "code": code(&secret, 1) })).await;
    assert_eq!(done.status(), 200, "malformed requests did not count against the token");
}

async fn a_stolen_mfa_token_dies_with_its_lifetime(backend: Backend) {
    // The lifetime is mfa.token_ttl_seconds (300 by default); two seconds here.
    let extra = vec![("GATEHOUSE__MFA__TOKEN_TTL_SECONDS".to_owned(), "2".to_owned())];
    let app = spawn_app_with(backend, Options { extra, ..Options::default() }).await;
    let (_, _, codes) = enrolled(&app).await;
    let first: Value = app.login(EMAIL, PASSWORD).await.json().await.unwrap();
    assert_eq!(first["expires_in"], 2);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let late = second_step(&app, json!({ "mfa_token": first["mfa_token"], "recovery_code": codes[0] })).await;
    assert_error(late, 401, "token_invalid").await;
}
