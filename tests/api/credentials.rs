//! Changing the password and deleting the account.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, Backend, PASSWORD};
use crate::on_both_stores;

on_both_stores!(a_password_change_logs_out_other_sessions_only, deleting_the_account_needs_its_password,);

const NEW_PASSWORD: &str = "an entirely new passphrase";

async fn a_password_change_logs_out_other_sessions_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let here = app.verified_login("ada@example.com").await;
    let elsewhere = app.login("ada@example.com", PASSWORD).await.json::<Value>().await.unwrap();
    let access = here["access"].as_str().unwrap();

    let wrong = app
        .post_auth(
            "/api/v1/auth/password/change",
            access,
            &json!({ "old_password": "not it at all", "new_password": NEW_PASSWORD }),
        )
        .await;
    let body = assert_error(wrong, 400, "validation_error").await;
    assert!(body["errors"]["old_password"].is_array(), "{body}");
    let weak = app
        .post_auth(
            "/api/v1/auth/password/change",
            access,
            &json!({ "old_password": PASSWORD, "new_password": "password" }),
        )
        .await;
    let body = assert_error(weak, 400, "validation_error").await;
    assert!(body["errors"]["new_password"].is_array(), "{body}");
    let mismatch = app
        .post_auth(
            "/api/v1/auth/password/change",
            access,
            &json!({ "old_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password2": "other" }),
        )
        .await;
    assert_error(mismatch, 400, "validation_error").await;
    // Nothing changed so far.
    assert_eq!(app.get_auth("/api/v1/auth/me", elsewhere["access"].as_str().unwrap()).await.status(), 200);

    let changed = app
        .post_auth(
            "/api/v1/auth/password/change",
            access,
            &json!({ "old_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    assert_eq!(app.get_auth("/api/v1/auth/me", access).await.status(), 200, "this session stays");
    assert_error(app.get_auth("/api/v1/auth/me", elsewhere["access"].as_str().unwrap()).await, 401, "token_invalid")
        .await;
    let refresh = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": elsewhere["refresh"] })).await;
    assert_error(refresh, 401, "token_invalid").await;
    assert_error(app.login("ada@example.com", PASSWORD).await, 401, "invalid_credentials").await;
    assert_eq!(app.login("ada@example.com", NEW_PASSWORD).await.status(), 200);
    let mails = app.wait_for_mails("ada@example.com", 2).await;
    assert!(mails.iter().any(|m| m.subject() == "Your password was changed"));
}

async fn deleting_the_account_needs_its_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("ada@example.com").await;
    let access = login["access"].as_str().unwrap();
    let delete = |password: &str| {
        app.client.delete(app.url("/api/v1/auth/me")).bearer_auth(access).json(&json!({ "password": password })).send()
    };

    let body = assert_error(delete("not the password").await.unwrap(), 400, "validation_error").await;
    assert!(body["errors"]["password"].is_array());
    assert_eq!(app.get_auth("/api/v1/auth/me", access).await.status(), 200);
    let missing =
        app.client.delete(app.url("/api/v1/auth/me")).bearer_auth(access).json(&json!({})).send().await.unwrap();
    assert_error(missing, 400, "validation_error").await;

    assert_eq!(delete(PASSWORD).await.unwrap().status(), 204);
    assert_error(app.get_auth("/api/v1/auth/me", access).await, 401, "token_invalid").await;
    assert_error(app.login("ada@example.com", PASSWORD).await, 401, "invalid_credentials").await;
    let refresh = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": login["refresh"] })).await;
    assert_error(refresh, 401, "token_invalid").await;
    let mails = app.wait_for_mails("ada@example.com", 2).await;
    assert!(mails.iter().any(|m| m.subject() == "Your account was deleted"));
    // The address can sign up afresh.
    assert_eq!(app.signup("ada@example.com").await.status(), 201);
}
