//! What browsers see: CORS for the configured origins, and safe headers on every response.

use crate::helpers::{spawn_app, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_origin_may_call_with_credentials() {
    let app = spawn_app(Backend::Sqlite).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization, x-csrf-token")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("x-csrf-token"), "browser sessions send their CSRF token: {allowed}");

    let call = app.client.get(app.url("/health/live")).header("origin", "http://127.0.0.1:3000").send().await.unwrap();
    assert_eq!(call.headers()["access-control-allow-origin"], "http://127.0.0.1:3000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_get_no_cors_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    let call =
        app.client.get(app.url("/health/live")).header("origin", "https://evil.example.com").send().await.unwrap();
    assert!(call.headers().get("access-control-allow-origin").is_none());
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers_and_a_request_id() {
    let app = spawn_app(Backend::Sqlite).await;
    for response in [
        app.client.get(app.url("/health/live")).send().await.unwrap(),
        app.client.get(app.url("/nowhere")).send().await.unwrap(),
        app.login("ada@example.com", "not a real password").await,
    ] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-request-id"].len(), 32);
    }
}
