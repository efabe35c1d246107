//! Groups and their permissions, end to end.

use serde_json::{json, Value};

use crate::helpers::{assert_error, send, spawn_app, Backend};
use crate::on_both_stores;

on_both_stores!(a_group_grants_exactly_its_permissions_and_loses_them_at_once, groups_are_managed_with_their_rules,);

async fn a_group_grants_exactly_its_permissions_and_loses_them_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let viewers = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/admin/groups",
        access,
        Some(json!({ "name": "Viewers", "permissions": ["users.view"] })),
    )
    .await;
    assert_eq!(viewers.status(), 201);
    let viewers: Value = viewers.json().await.unwrap();
    assert_eq!(viewers["permissions"], json!(["users.view"]));

    let ada = app.verified_login("ada@example.com").await;
    let ada_access = ada["access"].as_str().unwrap();
    let ada_path = format!("/api/v1/admin/users/{}", ada["user"]["id"]);
    let joined =
        send(&app, reqwest::Method::PATCH, &ada_path, access, Some(json!({ "groups": ["Regular User", "Viewers"] })))
            .await;
    assert_eq!(joined.status(), 200);

    // users.view and nothing more, checked from current data on every request.
    assert_eq!(app.get_auth("/api/v1/admin/users", ada_access).await.status(), 200);
    assert_eq!(app.get_auth(&ada_path, ada_access).await.status(), 200);
    for (method, path, body) in [
        (reqwest::Method::POST, "/api/v1/admin/users".to_owned(), Some(json!({ "email": "x@example.com" }))),
        (reqwest::Method::PATCH, ada_path.clone(), Some(json!({ "first_name": "A" }))),
        (reqwest::Method::DELETE, ada_path.clone(), None),
        (reqwest::Method::GET, "/api/v1/admin/groups".to_owned(), None),
        (reqwest::Method::POST, "/api/v1/admin/groups".to_owned(), Some(json!({ "name": "Mine" }))),
    ] {
        assert_error(send(&app, method, &path, ada_access, body).await, 403, "permission_denied").await;
    }
    let group_path = format!("/api/v1/admin/groups/{}", viewers["id"]);
    let emptied = send(&app, reqwest::Method::PATCH, &group_path, access, Some(json!({ "permissions": [] }))).await;
    assert_eq!(emptied.status(), 200);
    assert_error(app.get_auth("/api/v1/admin/users", ada_access).await, 403, "permission_denied").await;
}

async fn groups_are_managed_with_their_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let create = |body: Value| send(&app, reqwest::Method::POST, "/api/v1/admin/groups", access, Some(body));

    let managers: Value = create(json!({ "name": "Managers", "permissions": ["users.view", "users.change"] }))
        .await
        .json()
        .await
        .unwrap();
    assert_error(create(json!({ "name": "Managers" })).await, 400, "validation_error").await;
    assert_error(create(json!({ "name": "Odd", "permissions": ["users.fly"] })).await, 400, "validation_error").await;
    assert_error(create(json!({ "name": "  " })).await, 400, "validation_error").await;
    let auditors: Value =
        create(json!({ "name": "Auditors", "permissions": ["audit.view"] })).await.json().await.unwrap();

    // A manager holds users.change but not audit.view, so cannot hand out Auditors.
    let bob = app.verified_login("bob@example.com").await;
    let bob_path = format!("/api/v1/admin/users/{}", bob["user"]["id"]);
    let made_manager =
        send(&app, reqwest::Method::PATCH, &bob_path, access, Some(json!({ "groups": ["Regular User", "Managers"] })))
            .await;
    assert_eq!(made_manager.status(), 200);
    let carol = app.verified_login("carol@example.com").await;
    let carol_path = format!("/api/v1/admin/users/{}", carol["user"]["id"]);
    let bob_access = bob["access"].as_str().unwrap();
    let escalate =
        send(&app, reqwest::Method::PATCH, &carol_path, bob_access, Some(json!({ "groups": ["Auditors"] }))).await;
    assert_error(escalate, 403, "permission_denied").await;
    let self_escalate = send(
        &app,
        reqwest::Method::PATCH,
        &bob_path,
        bob_access,
        Some(json!({ "groups": ["Managers", "Admin User"] })),
    )
    .await;
    assert_error(self_escalate, 403, "permission_denied").await;
    let within = send(
        &app,
        reqwest::Method::PATCH,
        &carol_path,
        bob_access,
        Some(json!({ "groups": ["Regular User", "Managers"] })),
    )
    .await;
    assert_eq!(within.status(), 200, "a group within one's own permissions may be given");

    let renamed = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/api/v1/admin/groups/{}", auditors["id"]),
        access,
        Some(json!({ "name": "Inspectors" })),
    )
    .await;
    assert_eq!(renamed.json::<Value>().await.unwrap()["name"], "Inspectors");
    let clash = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/api/v1/admin/groups/{}", auditors["id"]),
        access,
        Some(json!({ "name": "Managers" })),
    )
    .await;
    assert_error(clash, 400, "validation_error").await;

    let groups: Vec<Value> = app.get_auth("/api/v1/admin/groups", access).await.json().await.unwrap();
    for built_in in groups.iter().filter(|g| g["name"] == "Admin User" || g["name"] == "Regular User") {
        let path = format!("/api/v1/admin/groups/{}", built_in["id"]);
        assert_error(send(&app, reqwest::Method::DELETE, &path, access, None).await, 400, "validation_error").await;
        assert_error(
            send(&app, reqwest::Method::PATCH, &path, access, Some(json!({ "name": "Renamed" }))).await,
            400,
            "validation_error",
        )
        .await;
    }
    let managers_path = format!("/api/v1/admin/groups/{}", managers["id"]);
    assert_eq!(send(&app, reqwest::Method::DELETE, &managers_path, access, None).await.status(), 204);
    assert_error(app.get_auth(&managers_path, access).await, 404, "not_found").await;
    let carol_now: Value = app.get_auth(&carol_path, access).await.json().await.unwrap();
    assert_eq!(carol_now["groups"], json!(["Regular User"]), "memberships go with the group");
    assert_error(app.get_auth("/api/v1/admin/users", bob_access).await, 403, "permission_denied").await;
}
