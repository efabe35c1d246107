//! Failed logins are throttled per address and per client IP, counted in the
//! store so that instances sharing a database count together.

use serde_json::json;

use crate::helpers::{assert_error, database_url, spawn_app, spawn_app_with, Backend, Options, TestApp, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    the_eleventh_failure_on_an_address_is_refused_even_with_the_right_password,
    the_ip_limit_counts_across_addresses,
);

async fn fail(app: &TestApp, email: &str) -> reqwest::Response {
    app.login(email, "certainly not the password").await
}

async fn assert_throttled(response: reqwest::Response) {
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "Retry-After {retry_after}");
    assert_error(response, 429, "rate_limited").await;
}

async fn the_eleventh_failure_on_an_address_is_refused_even_with_the_right_password(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_login("ada@example.com").await;
    for attempt in 0..10 {
        // Any letter case counts against the one address.
        let email = if attempt % 2 == 0 { "ada@example.com" } else { "ADA@Example.com" };
        assert_error(fail(&app, email).await, 401, "invalid_credentials").await;
    }
    assert_throttled(fail(&app, "ada@example.com").await).await;
    assert_throttled(app.login("Ada@example.com", PASSWORD).await).await;
    // Unknown addresses are throttled alike; other addresses are not affected.
    for _ in 0..10 {
        assert_error(fail(&app, "ghost@example.com").await, 401, "invalid_credentials").await;
    }
    assert_throttled(fail(&app, "ghost@example.com").await).await;
    app.verified_login("grace@example.com").await;
}

async fn the_ip_limit_counts_across_addresses(backend: Backend) {
    let limit = vec![("GATEHOUSE_LOGIN_IP_LIMIT".to_owned(), "3".to_owned())];
    let app = spawn_app_with(backend, Options { extra: limit, ..Options::default() }).await;
    for n in 0..3 {
        assert_error(fail(&app, &format!("user{n}@example.com")).await, 401, "invalid_credentials").await;
    }
    assert_throttled(fail(&app, "someone-else@example.com").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_count_together() {
    let url = database_url(Backend::Postgres).await;
    let first =
        spawn_app_with(Backend::Postgres, Options { database_url: Some(url.clone()), ..Options::default() }).await;
    let second = spawn_app_with(Backend::Postgres, Options { database_url: Some(url), ..Options::default() }).await;
    for attempt in 0..10 {
        let app = if attempt % 2 == 0 { &first } else { &second };
        assert_error(fail(app, "ada@example.com").await, 401, "invalid_credentials").await;
    }
    assert_throttled(fail(&first, "ada@example.com").await).await;
    assert_throttled(fail(&second, "ada@example.com").await).await;
    let body = json!({ "email": "ada@example.com", "password": PASSWORD });
    let response = second.post("/api/v1/auth/login", &body).await;
    assert_throttled(response).await;
}
