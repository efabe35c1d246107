//! /metrics shows the series an operator watches, after a real flow.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_requests_logins_refreshes_and_gauges() {
    let app = spawn_app(Backend::Sqlite).await;
    let login = app.verified_login("ada@example.com").await;
    assert_eq!(app.login("ada@example.com", "not the password at all").await.status(), 401);
    let refresh = json!({ "refresh": login["refresh"] });
    assert_eq!(app.post("/api/v1/auth/token/refresh", &refresh).await.status(), 200);
    let user = format!("/api/v1/admin/users/{}", login["user"]["id"]);
    assert_eq!(app.get_auth(&user, login["access"].as_str().unwrap()).await.status(), 403);

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for series in [
        r#"gatehouse_http_requests_total{method="POST",route="/api/v1/auth/login",status="200"} 1"#,
        r#"gatehouse_http_requests_total{method="POST",route="/api/v1/auth/login",status="401"} 1"#,
        r#"gatehouse_http_requests_total{method="GET",route="/api/v1/admin/users/{id}",status="403"} 1"#,
        r#"gatehouse_http_request_duration_seconds_bucket{method="POST",route="/api/v1/auth/signup",le="0.5"}"#,
        r#"gatehouse_logins_total{outcome="success"} 1"#,
        r#"gatehouse_logins_total{outcome="invalid_credentials"} 1"#,
        r#"gatehouse_refreshes_total{outcome="rotated"} 1"#,
        "gatehouse_outbox_pending ",
        "gatehouse_outbox_oldest_pending_seconds ",
        "gatehouse_hash_queue_length 0",
        "gatehouse_hash_finish_allowance_milliseconds ",
        "gatehouse_db_pool_connections ",
        "gatehouse_db_pool_idle_connections ",
        "gatehouse_db_pool_max_connections ",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    let value =
        |name: &str| text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
    assert!(value("gatehouse_db_statements_total").is_some_and(|n| n > 0.0), "statements counted:\n{text}");
    // Signup, the verified login's own, the wrong password and nothing else hashed.
    assert_eq!(value("gatehouse_hashes_total"), Some(3.0), "hashes counted:\n{text}");
    assert!(value("gatehouse_hash_cpu_seconds_total").is_some_and(|s| s > 0.0), "hash CPU counted:\n{text}");
    assert!(!text.contains(&format!("/api/v1/admin/users/{}", login["user"]["id"])), "raw paths never become labels");
    assert!(!text.contains("gatehouse_state"), "one metric per quantity, no mixed family");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_an_address_of_their_own() {
    let own = vec![("GATEHOUSE__SERVER__METRICS_BIND".to_owned(), "127.0.0.1:0".to_owned())];
    let app = spawn_app_with(Backend::Sqlite, Options { extra: own, ..Options::default() }).await;
    assert_error(app.client.get(app.url("/metrics")).send().await.unwrap(), 404, "not_found").await;
    let metrics = app.metrics_address.clone().expect("a metrics address");
    let response = app.client.get(format!("{metrics}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("gatehouse_hash_queue_length"));
    let elsewhere = app.client.get(format!("{metrics}/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(elsewhere.status(), 404, "the metrics address serves nothing else");
}
