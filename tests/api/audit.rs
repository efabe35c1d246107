//! The audit trail records security events, and only audit.view reads it.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app_with, Backend, Options, PASSWORD};
use crate::on_both_stores;

on_both_stores!(security_events_are_recorded_without_secrets,);

async fn security_events_are_recorded_without_secrets(backend: Backend) {
    let grace = vec![("GATEHOUSE__AUTH__REFRESH_GRACE_SECONDS".to_owned(), "0".to_owned())];
    let app = spawn_app_with(backend, Options { extra: grace, ..Options::default() }).await;
    let ada = app.verified_login("ada@example.com").await;
    let ada_id = ada["user"]["id"].as_i64().unwrap();
    assert_eq!(app.login("ada@example.com", "the wrong password!").await.status(), 401);
    assert_eq!(app.login("nobody@example.com", "the wrong password!").await.status(), 401);
    let refreshed = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": ada["refresh"] })).await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(app.post("/api/v1/auth/token/refresh", &json!({ "refresh": ada["refresh"] })).await.status(), 401);
    let session = app.login("ada@example.com", PASSWORD).await.json::<Value>().await.unwrap();
    let change = json!({ "old_password": PASSWORD, "new_password": "a completely new passphrase" });
    assert_eq!(
        app.post_auth("/api/v1/auth/password/change", session["access"].as_str().unwrap(), &change).await.status(),
        200
    );
    assert_eq!(
        app.post_auth("/api/v1/auth/logout", session["access"].as_str().unwrap(), &json!({})).await.status(),
        204
    );

    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let patched = app
        .client
        .patch(app.url(&format!("/api/v1/admin/users/{ada_id}")))
        .bearer_auth(access)
        .json(&json!({ "is_staff": true, "first_name": "Augusta" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let trail = app.get_auth(&format!("/api/v1/admin/audit?user={ada_id}&page_size=100"), access).await;
    assert_eq!(trail.status(), 200);
    let text = trail.text().await.unwrap();
    for secret in [
        PASSWORD,
        "a completely new passphrase",
        "the wrong password!",
        ada["refresh"].as_str().unwrap(),
        ada["access"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "the trail holds no secret");
    }
    let trail: Value = serde_json::from_str(&text).unwrap();
    let events: Vec<&str> = trail["results"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in [
        "signup",
        "email_verified",
        "login_succeeded",
        "login_failed",
        "refresh_reused",
        "password_changed",
        "logout",
        "admin_action",
    ] {
        assert!(events.contains(&expected), "{expected} in {events:?}");
    }
    assert_eq!(events[0], "admin_action", "newest first");
    let admin_event = &trail["results"][0];
    assert_eq!(admin_event["actor_id"], root["user"]["id"]);
    assert_eq!(admin_event["user_id"], ada_id);
    assert_eq!(admin_event["detail"]["changes"], json!({ "is_staff": true, "first_name": "Augusta" }));
    assert_eq!(admin_event["ip"], "127.0.0.1");
    for field in ["id", "at", "user_agent"] {
        assert!(admin_event.get(field).is_some(), "{field}");
    }
    let failure = trail["results"].as_array().unwrap().iter().find(|e| e["event"] == "login_failed").unwrap();
    assert_eq!(failure["detail"]["reason"], "invalid_credentials");

    let failed = app.get_auth("/api/v1/admin/audit?event=login_failed", access).await.json::<Value>().await.unwrap();
    assert_eq!(failed["count"], 2, "the unknown address's failure is recorded too");
    assert_error(app.get_auth("/api/v1/admin/audit?event=nope", access).await, 400, "validation_error").await;
    let regular = app.verified_login("bob@example.com").await;
    assert_error(
        app.get_auth("/api/v1/admin/audit", regular["access"].as_str().unwrap()).await,
        403,
        "permission_denied",
    )
    .await;
    assert_error(app.client.get(app.url("/api/v1/admin/audit")).send().await.unwrap(), 401, "not_authenticated").await;

    // Deleting the account leaves its trail, with the deletion in it.
    let me = app.login("ada@example.com", "a completely new passphrase").await.json::<Value>().await.unwrap();
    let delete = app
        .client
        .delete(app.url("/api/v1/auth/me"))
        .bearer_auth(me["access"].as_str().unwrap())
        .json(&json!({ "password": "a completely new passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let after = app
        .get_auth(&format!("/api/v1/admin/audit?user={ada_id}&event=account_deleted"), access)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(after["count"], 1);
}
