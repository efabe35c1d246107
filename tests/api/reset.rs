//! Password reset: the answers hide which addresses are known, and the link
//! is single-use, short-lived, superseded by a newer one, and dead after a
//! password change.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, Options, TestApp, FRONTEND, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    a_reset_sets_a_new_password_and_ends_every_session,
    reset_answers_alike_for_known_and_unknown_addresses,
    reset_links_die_when_used_superseded_or_outdated,
    an_expired_reset_link_is_refused,
    ten_concurrent_confirms_succeed_once,
);

const NEW_PASSWORD: &str = "an entirely new passphrase";

async fn reset_link(app: &TestApp, email: &str, mails_before: usize) -> String {
    let answer = app.post("/api/v1/auth/password/reset", &json!({ "email": email })).await;
    assert_eq!(answer.status(), 202);
    let mails = app.wait_for_mails(email, mails_before + 1).await;
    mails[mails_before].link_token("reset-password")
}

async fn confirm(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post("/api/v1/auth/password/reset/confirm", &json!({ "token": token, "new_password": password })).await
}

async fn a_reset_sets_a_new_password_and_ends_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("ada@example.com").await;
    // The link goes to the configured frontend whatever the request claims.
    let answer = app
        .client
        .post(app.url("/api/v1/auth/password/reset"))
        .header("host", "evil.example.com")
        .header("x-forwarded-host", "evil.example.com")
        .json(&json!({ "email": "ADA@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let mail = app.wait_for_mails("ada@example.com", 2).await.remove(1);
    assert!(mail.raw.contains(&format!("{FRONTEND}/reset-password?token=")));
    assert!(!mail.raw.contains("evil.example.com"));
    let token = mail.link_token("reset-password");

    let weak = confirm(&app, &token, "password").await;
    let body = assert_error(weak, 400, "validation_error").await;
    assert!(body["errors"]["new_password"].is_array());
    let mismatch = app
        .post(
            "/api/v1/auth/password/reset/confirm",
            &json!({ "token": token, "new_password": NEW_PASSWORD, "new_password2": "x" }),
        )
        .await;
    assert_error(mismatch, 400, "validation_error").await;

    assert_eq!(confirm(&app, &token, NEW_PASSWORD).await.status(), 200);
    assert_error(app.get_auth("/api/v1/auth/me", login["access"].as_str().unwrap()).await, 401, "token_invalid").await;
    assert_error(app.login("ada@example.com", PASSWORD).await, 401, "invalid_credentials").await;
    assert_eq!(app.login("ada@example.com", NEW_PASSWORD).await.status(), 200);
    let mails = app.wait_for_mails("ada@example.com", 3).await;
    assert_eq!(mails[2].subject(), "Your password was reset");
}

async fn reset_answers_alike_for_known_and_unknown_addresses(backend: Backend) {
    let app = spawn_app(backend).await;
    // An unverified account can reset too, and is verified by it.
    assert_eq!(app.signup("grace@example.com").await.status(), 201);
    app.wait_for_mails("grace@example.com", 1).await;
    let known = app.post("/api/v1/auth/password/reset", &json!({ "email": "grace@example.com" })).await;
    let unknown = app.post("/api/v1/auth/password/reset", &json!({ "email": "nobody@example.com" })).await;
    assert_eq!((known.status().as_u16(), unknown.status().as_u16()), (202, 202));
    assert_eq!(known.bytes().await.unwrap(), unknown.bytes().await.unwrap(), "byte-identical");
    let token = app.wait_for_mails("grace@example.com", 2).await[1].link_token("reset-password");
    assert_eq!(confirm(&app, &token, NEW_PASSWORD).await.status(), 200);
    let login = app.login("grace@example.com", NEW_PASSWORD).await;
    assert_eq!(login.status(), 200, "the reset proved the mailbox");
    assert_eq!(login.json::<Value>().await.unwrap()["user"]["is_verified"], true);
    assert!(app.mails_to("nobody@example.com").is_empty());
    let bad = app.post("/api/v1/auth/password/reset", &json!({ "email": "not-an-email" })).await;
    assert_error(bad, 400, "validation_error").await;
}

async fn reset_links_die_when_used_superseded_or_outdated(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("ada@example.com").await;
    let first = reset_link(&app, "ada@example.com", 1).await;
    let second = reset_link(&app, "ada@example.com", 2).await;
    assert_error(confirm(&app, &first, NEW_PASSWORD).await, 400, "token_invalid").await;

    // A password change kills the pending link.
    let change = json!({ "old_password": PASSWORD, "new_password": NEW_PASSWORD });
    let changed = app.post_auth("/api/v1/auth/password/change", login["access"].as_str().unwrap(), &change).await;
    assert_eq!(changed.status(), 200);
    assert_error(confirm(&app, &second, "yet another passphrase").await, 400, "token_invalid").await;

    let third = reset_link(&app, "ada@example.com", 4).await;
    assert_eq!(confirm(&app, &third, "a third fresh passphrase").await.status(), 200);
    assert_error(confirm(&app, &third, "a fourth fresh passphrase").await, 400, "token_invalid").await;
    assert_error(confirm(&app, "garbage", NEW_PASSWORD).await, 400, "token_invalid").await;
    assert_eq!(app.login("ada@example.com", "a third fresh passphrase").await.status(), 200);
}

async fn an_expired_reset_link_is_refused(backend: Backend) {
    let ttl = vec![("GATEHOUSE__AUTH__RESET_TTL_SECONDS".to_owned(), "1".to_owned())];
    let app = spawn_app_with(backend, Options { extra: ttl, ..Options::default() }).await;
    app.verified_login("ada@example.com").await;
    let token = reset_link(&app, "ada@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_error(confirm(&app, &token, NEW_PASSWORD).await, 400, "token_invalid").await;
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
}

async fn ten_concurrent_confirms_succeed_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_login("ada@example.com").await;
    let token = reset_link(&app, "ada@example.com", 1).await;
    let confirms = (0..10).map(|n| {
        let body = json!({ "token": token, "new_password": format!("concurrent passphrase number {n}") });
        let request = app.client.post(app.url("/api/v1/auth/password/reset/confirm")).json(&body);
        async move { request.send().await.unwrap() }
    });
    let answers = futures_util::future::join_all(confirms).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 9, "{statuses:?}");
}
