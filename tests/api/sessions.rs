//! Sessions as their owner sees them, and refresh-token families under concurrency.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, Options, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    sessions_are_listed_and_revoked_by_their_owner_only,
    tabs_refreshing_together_stay_logged_in,
    a_replay_after_the_grace_window_revokes_the_family,
);

async fn login_as(app: &crate::helpers::TestApp, email: &str, agent: &str) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", agent)
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn sessions_are_listed_and_revoked_by_their_owner_only(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_login("ada@example.com").await;
    let laptop = login_as(&app, "ada@example.com", "Laptop/1.0").await;
    let phone = login_as(&app, "ada@example.com", "Phone/2.0").await;
    let laptop_access = laptop["access"].as_str().unwrap();

    let listed = app.get_auth("/api/v1/auth/sessions", laptop_access).await;
    assert_eq!(listed.status(), 200);
    let sessions: Vec<Value> = listed.json().await.unwrap();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["user_agent"], "Laptop/1.0");
    assert_eq!(current[0]["ip"], "127.0.0.1");
    for session in &sessions {
        for field in ["id", "created_at", "last_used_at"] {
            assert!(session[field].is_string(), "{field}: {session}");
        }
    }
    let phone_session =
        sessions.iter().find(|s| s["user_agent"] == "Phone/2.0").unwrap()["id"].as_str().unwrap().to_owned();

    // Another user cannot see or touch it: 404, not 403.
    let grace = app.verified_login("grace@example.com").await;
    let grace_access = grace["access"].as_str().unwrap();
    let foreign = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{phone_session}")))
        .bearer_auth(grace_access)
        .send()
        .await
        .unwrap();
    assert_error(foreign, 404, "not_found").await;
    let grace_sessions: Vec<Value> = app.get_auth("/api/v1/auth/sessions", grace_access).await.json().await.unwrap();
    assert_eq!(grace_sessions.len(), 1);

    let revoked = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{phone_session}")))
        .bearer_auth(laptop_access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_error(app.get_auth("/api/v1/auth/me", phone["access"].as_str().unwrap()).await, 401, "token_invalid").await;
    let refresh = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": phone["refresh"] })).await;
    assert_error(refresh, 401, "token_invalid").await;
    let sessions: Vec<Value> = app.get_auth("/api/v1/auth/sessions", laptop_access).await.json().await.unwrap();
    assert_eq!(sessions.len(), 2);

    for missing in [phone_session.as_str(), "00000000-0000-0000-0000-000000000000", "not-a-session"] {
        let response = app
            .client
            .delete(app.url(&format!("/api/v1/auth/sessions/{missing}")))
            .bearer_auth(laptop_access)
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "not_found").await;
    }
    let anonymous = app.client.get(app.url("/api/v1/auth/sessions")).send().await.unwrap();
    assert_error(anonymous, 401, "not_authenticated").await;
}

async fn tabs_refreshing_together_stay_logged_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("ada@example.com").await;
    let body = json!({ "refresh": login["refresh"] });
    let (first, second) =
        tokio::join!(app.post("/api/v1/auth/token/refresh", &body), app.post("/api/v1/auth/token/refresh", &body));
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let (first, second): (Value, Value) = (first.json().await.unwrap(), second.json().await.unwrap());
    for pair in [&first, &second] {
        assert_eq!(app.get_auth("/api/v1/auth/me", pair["access"].as_str().unwrap()).await.status(), 200);
        let next = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": pair["refresh"] })).await;
        assert_eq!(next.status(), 200, "each tab's token still works");
    }
}

async fn a_replay_after_the_grace_window_revokes_the_family(backend: Backend) {
    let grace = vec![("GATEHOUSE__AUTH__REFRESH_GRACE_SECONDS".to_owned(), "1".to_owned())];
    let app = spawn_app_with(backend, Options { extra: grace, ..Options::default() }).await;
    let login = app.verified_login("ada@example.com").await;
    let refreshed: Value =
        app.post("/api/v1/auth/token/refresh", &json!({ "refresh": login["refresh"] })).await.json().await.unwrap();
    let newest: Value =
        app.post("/api/v1/auth/token/refresh", &json!({ "refresh": refreshed["refresh"] })).await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let replay = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": login["refresh"] })).await;
    assert_error(replay, 401, "token_reused").await;
    let after = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": newest["refresh"] })).await;
    assert_error(after, 401, "token_invalid").await;
    assert_error(app.get_auth("/api/v1/auth/me", newest["access"].as_str().unwrap()).await, 401, "token_invalid").await;
}
