//! The admin API: who may reach it, and the user list's rules.

use serde_json::{json, Value};

use crate::helpers::{assert_error, run_cli, spawn_app, Backend, TestApp, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    admin_routes_need_a_token_and_the_permission,
    the_user_list_searches_filters_orders_and_pages,
    create_superuser_is_idempotent_and_promotes,
);

const ADMIN_GETS: [&str; 4] =
    ["/api/v1/admin/users", "/api/v1/admin/users/1", "/api/v1/admin/groups", "/api/v1/admin/groups/1"];

async fn admin_routes_need_a_token_and_the_permission(backend: Backend) {
    let app = spawn_app(backend).await;
    let regular = app.verified_login("ada@example.com").await;
    let root = app.superuser_login("root@example.com").await;
    for path in ADMIN_GETS {
        assert_error(app.client.get(app.url(path)).send().await.unwrap(), 401, "not_authenticated").await;
        assert_error(app.get_auth(path, regular["access"].as_str().unwrap()).await, 403, "permission_denied").await;
    }
    // Validation and unknown ids do not leak past the permission check.
    let probe = app.get_auth("/api/v1/admin/users?ordering=password", regular["access"].as_str().unwrap()).await;
    assert_error(probe, 403, "permission_denied").await;
    assert_error(
        app.get_auth("/api/v1/admin/users/abc", regular["access"].as_str().unwrap()).await,
        403,
        "permission_denied",
    )
    .await;

    let access = root["access"].as_str().unwrap();
    let me: Value = app.get_auth("/api/v1/auth/me", access).await.json().await.unwrap();
    assert_eq!(
        (me["is_superuser"].as_bool(), me["is_staff"].as_bool(), me["is_verified"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(me["groups"], json!(["Admin User", "Regular User"]));
    let user: Value =
        app.get_auth(&format!("/api/v1/admin/users/{}", regular["user"]["id"]), access).await.json().await.unwrap();
    assert_eq!(user["email"], "ada@example.com");
    assert!(user.get("password").is_none());
    assert_error(app.get_auth("/api/v1/admin/users/987654", access).await, 404, "not_found").await;
    assert_error(app.get_auth("/api/v1/admin/users/abc", access).await, 404, "not_found").await;

    let groups: Vec<Value> = app.get_auth("/api/v1/admin/groups", access).await.json().await.unwrap();
    assert_eq!(groups.len(), 2);
    let admin_group = groups.iter().find(|g| g["name"] == "Admin User").unwrap();
    assert_eq!(admin_group["permissions"].as_array().unwrap().len(), 7);
    let regular_group = groups.iter().find(|g| g["name"] == "Regular User").unwrap();
    assert_eq!(regular_group["permissions"], json!([]));
    let one: Value =
        app.get_auth(&format!("/api/v1/admin/groups/{}", admin_group["id"]), access).await.json().await.unwrap();
    assert_eq!(&one, admin_group);
}

async fn list(app: &TestApp, access: &str, query: &str) -> Value {
    let response = app.get_auth(&format!("/api/v1/admin/users?{query}"), access).await;
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

fn emails(page: &Value) -> Vec<&str> {
    page["results"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect()
}

async fn the_user_list_searches_filters_orders_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    for email in ["carol@example.com", "al_ice@example.com", "bob%x@example.com"] {
        app.verified_login(email).await;
    }
    assert_eq!(app.signup("unverified@example.com").await.status(), 201);
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();

    let all = list(&app, access, "").await;
    assert_eq!((all["count"].as_i64(), all["page"].as_i64(), all["page_size"].as_i64()), (Some(5), Some(1), Some(20)));
    assert_eq!(emails(&all)[0], "root@example.com", "newest first by default");
    let by_email = list(&app, access, "ordering=email").await;
    assert_eq!(
        emails(&by_email),
        ["al_ice@example.com", "bob%x@example.com", "carol@example.com", "root@example.com", "unverified@example.com"]
    );
    assert_eq!(emails(&list(&app, access, "search=_").await), ["al_ice@example.com"]);
    assert_eq!(emails(&list(&app, access, "search=%25").await), ["bob%x@example.com"]);
    assert_eq!(list(&app, access, "search=EXAMPLE").await["count"], 5);
    assert_eq!(emails(&list(&app, access, "is_verified=false").await), ["unverified@example.com"]);
    assert_eq!(emails(&list(&app, access, "is_staff=true").await), ["root@example.com"]);
    assert_eq!(list(&app, access, "is_active=true").await["count"], 5);
    let second = list(&app, access, "ordering=-email&page=2&page_size=2").await;
    assert_eq!(emails(&second), ["carol@example.com", "bob%x@example.com"]);
    let past = list(&app, access, "page=9").await;
    assert_eq!((past["count"].as_i64(), past["results"].as_array().map(Vec::len)), (Some(5), Some(0)));
    assert_eq!(list(&app, access, "page_size=1000").await["page_size"], 100, "capped");
    let by_login = list(&app, access, "ordering=-last_login").await;
    assert_eq!(emails(&by_login)[0], "root@example.com");

    for bad in ["ordering=password", "ordering=-", "is_active=yes", "page=0", "page=x", "page_size=0"] {
        let response = app.get_auth(&format!("/api/v1/admin/users?{bad}"), access).await;
        assert_error(response, 400, "validation_error").await;
    }
}

async fn create_superuser_is_idempotent_and_promotes(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.verified_login("ada@example.com").await;
    let output = run_cli(
        &app.database_url,
        &["create-superuser", "--email", "ADA@example.com", "--password-stdin"],
        "another admin passphrase\n",
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let again = run_cli(
        &app.database_url,
        &["create-superuser", "--email", "ada@example.com", "--password-stdin"],
        "another admin passphrase\n",
    );
    assert!(again.status.success());
    let login = app.login("ada@example.com", "another admin passphrase").await;
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.unwrap();
    assert_eq!(login["user"]["id"], before["user"]["id"], "promoted, not duplicated");
    assert_eq!(login["user"]["is_superuser"], true);
    assert_error(app.login("ada@example.com", PASSWORD).await, 401, "invalid_credentials").await;

    let weak =
        run_cli(&app.database_url, &["create-superuser", "--email", "x@example.com", "--password-stdin"], "password\n");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too common"));
    let bad_email = run_cli(&app.database_url, &["create-superuser", "--email", "nope", "--password-stdin"], "x\n");
    assert!(!bad_email.status.success());
    assert!(String::from_utf8_lossy(&bad_email.stderr).contains("invalid --email"));
}
