//! The admin user API's writes and their rules.

use serde_json::{json, Value};

use crate::helpers::{assert_error, send, spawn_app, Backend, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    admins_create_users_with_a_password_or_an_invitation,
    admins_change_disable_revoke_and_delete_users,
    the_last_superuser_cannot_be_removed_and_only_superusers_make_superusers,
);

async fn admins_create_users_with_a_password_or_an_invitation(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();

    let body = json!({ "email": "Grace@Example.com", "password": "a strong staff passphrase", "first_name": "Grace",
                       "is_verified": true, "is_staff": true, "groups": ["Admin User"] });
    let created = send(&app, reqwest::Method::POST, "/api/v1/admin/users", access, Some(body)).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email"], "Grace@example.com");
    assert_eq!(
        (created["is_staff"].as_bool(), created["is_verified"].as_bool(), created["is_superuser"].as_bool()),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(created["groups"], json!(["Admin User", "Regular User"]), "every account is a Regular User");
    assert_eq!(app.login("grace@example.com", "a strong staff passphrase").await.status(), 200);

    let duplicate =
        send(&app, reqwest::Method::POST, "/api/v1/admin/users", access, Some(json!({ "email": "GRACE@example.com" })))
            .await;
    let body = assert_error(duplicate, 400, "validation_error").await;
    assert!(body["errors"]["email"].is_array());
    let weak = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/admin/users",
        access,
        Some(json!({ "email": "w@example.com", "password": "password" })),
    )
    .await;
    assert_error(weak, 400, "validation_error").await;
    let unknown_group = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/admin/users",
        access,
        Some(json!({ "email": "u@example.com", "groups": ["Wizards"] })),
    )
    .await;
    let body = assert_error(unknown_group, 400, "validation_error").await;
    assert!(body["errors"]["groups"].is_array());

    // Without a password, the new user is invited to choose one through the reset flow.
    let invited =
        send(&app, reqwest::Method::POST, "/api/v1/admin/users", access, Some(json!({ "email": "hedy@example.com" })))
            .await;
    assert_eq!(invited.status(), 201);
    let invitation = app.wait_for_mails("hedy@example.com", 1).await.remove(0);
    assert_eq!(invitation.subject(), "You are invited: choose your password");
    let token = invitation.link_token("reset-password");
    let chosen = app
        .post(
            "/api/v1/auth/password/reset/confirm",
            &json!({ "token": token, "new_password": "hedy's own passphrase" }),
        )
        .await;
    assert_eq!(chosen.status(), 200);
    let login = app.login("hedy@example.com", "hedy's own passphrase").await;
    assert_eq!(login.status(), 200);
    assert_eq!(login.json::<Value>().await.unwrap()["user"]["is_verified"], true);
}

async fn admins_change_disable_revoke_and_delete_users(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let ada = app.verified_login("ada@example.com").await;
    let path = format!("/api/v1/admin/users/{}", ada["user"]["id"]);

    let changes = json!({ "first_name": "Augusta", "email": "Ada@Lovelace.example", "is_staff": true, "groups": [] });
    let changed = send(&app, reqwest::Method::PATCH, &path, access, Some(changes)).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(
        (changed["first_name"].as_str(), changed["email"].as_str()),
        (Some("Augusta"), Some("Ada@lovelace.example"))
    );
    assert_eq!(changed["groups"], json!([]));
    assert_eq!(app.login("ada@lovelace.example", PASSWORD).await.status(), 200);
    let bad =
        send(&app, reqwest::Method::PATCH, &path, access, Some(json!({ "email": "nope", "is_active": "no" }))).await;
    let body = assert_error(bad, 400, "validation_error").await;
    assert!(body["errors"]["email"].is_array() || body["errors"]["is_active"].is_array());
    let taken = send(&app, reqwest::Method::PATCH, &path, access, Some(json!({ "email": "ROOT@example.com" }))).await;
    assert_error(taken, 400, "validation_error").await;

    // Disabling ends every session at once, and the password no longer opens one.
    let user_access = ada["access"].as_str().unwrap();
    assert_eq!(app.get_auth("/api/v1/auth/me", user_access).await.status(), 200);
    let disabled = send(&app, reqwest::Method::PATCH, &path, access, Some(json!({ "is_active": false }))).await;
    assert_eq!(disabled.status(), 200);
    assert_error(app.get_auth("/api/v1/auth/me", user_access).await, 401, "token_invalid").await;
    let refresh = app.post("/api/v1/auth/token/refresh", &json!({ "refresh": ada["refresh"] })).await;
    assert_error(refresh, 401, "token_invalid").await;
    assert_error(app.login("ada@lovelace.example", PASSWORD).await, 403, "account_disabled").await;
    assert_eq!(
        send(&app, reqwest::Method::PATCH, &path, access, Some(json!({ "is_active": true }))).await.status(),
        200
    );

    let session = app.login("ada@lovelace.example", PASSWORD).await.json::<Value>().await.unwrap();
    let revoked = send(&app, reqwest::Method::POST, &format!("{path}/sessions/revoke"), access, None).await;
    assert_eq!(revoked.status(), 204);
    assert_error(app.get_auth("/api/v1/auth/me", session["access"].as_str().unwrap()).await, 401, "token_invalid")
        .await;

    assert_eq!(send(&app, reqwest::Method::DELETE, &path, access, None).await.status(), 204);
    assert_error(app.get_auth(&path, access).await, 404, "not_found").await;
    assert_error(send(&app, reqwest::Method::DELETE, &path, access, None).await, 404, "not_found").await;
    assert_error(send(&app, reqwest::Method::PATCH, &path, access, Some(json!({}))).await, 404, "not_found").await;
    assert_error(
        send(&app, reqwest::Method::POST, "/api/v1/admin/users/987654/sessions/revoke", access, None).await,
        404,
        "not_found",
    )
    .await;

    // A regular user reaches none of these.
    let other = app.verified_login("bob@example.com").await;
    let other_access = other["access"].as_str().unwrap();
    let own = format!("/api/v1/admin/users/{}", other["user"]["id"]);
    assert_error(
        send(&app, reqwest::Method::PATCH, &own, other_access, Some(json!({ "is_staff": true }))).await,
        403,
        "permission_denied",
    )
    .await;
    assert_error(send(&app, reqwest::Method::DELETE, &own, other_access, None).await, 403, "permission_denied").await;
    assert_error(
        send(
            &app,
            reqwest::Method::POST,
            "/api/v1/admin/users",
            other_access,
            Some(json!({ "email": "x@example.com" })),
        )
        .await,
        403,
        "permission_denied",
    )
    .await;
    assert_error(
        send(&app, reqwest::Method::POST, &format!("{own}/sessions/revoke"), other_access, None).await,
        403,
        "permission_denied",
    )
    .await;
    assert_error(
        app.client.post(app.url("/api/v1/admin/users")).json(&json!({})).send().await.unwrap(),
        401,
        "not_authenticated",
    )
    .await;
}

async fn the_last_superuser_cannot_be_removed_and_only_superusers_make_superusers(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let root_path = format!("/api/v1/admin/users/{}", root["user"]["id"]);
    for change in [json!({ "is_superuser": false }), json!({ "is_active": false })] {
        let refused = send(&app, reqwest::Method::PATCH, &root_path, access, Some(change)).await;
        assert_error(refused, 400, "validation_error").await;
    }
    assert_error(send(&app, reqwest::Method::DELETE, &root_path, access, None).await, 400, "validation_error").await;

    // An admin with every permission but not a superuser cannot make one.
    let staff = send(&app, reqwest::Method::POST, "/api/v1/admin/users", access,
        Some(json!({ "email": "staff@example.com", "password": "a strong staff passphrase", "is_verified": true, "groups": ["Admin User"] }))).await;
    assert_eq!(staff.status(), 201);
    let staff_login: Value = app.login("staff@example.com", "a strong staff passphrase").await.json().await.unwrap();
    let staff_access = staff_login["access"].as_str().unwrap();
    let staff_path = format!("/api/v1/admin/users/{}", staff_login["user"]["id"]);
    let escalate =
        send(&app, reqwest::Method::PATCH, &staff_path, staff_access, Some(json!({ "is_superuser": true }))).await;
    assert_error(escalate, 403, "permission_denied").await;
    assert_eq!(app.get_auth("/api/v1/admin/users", staff_access).await.status(), 200, "the group's permissions work");

    // With a second superuser, the first may step down.
    let promoted = send(&app, reqwest::Method::PATCH, &staff_path, access, Some(json!({ "is_superuser": true }))).await;
    assert_eq!(promoted.status(), 200);
    let stepped_down = send(
        &app,
        reqwest::Method::PATCH,
        &root_path,
        access,
        Some(json!({ "is_superuser": false, "groups": ["Regular User"] })),
    )
    .await;
    assert_eq!(stepped_down.status(), 200);
    assert_error(app.get_auth("/api/v1/admin/users", access).await, 403, "permission_denied").await;
}
