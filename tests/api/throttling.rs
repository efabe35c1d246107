//! Failed logins are throttled per address and per client IP, counted in the
//! store so that instances sharing a database count together.

use serde_json::json;

use crate::helpers::{assert_error, database_url, spawn_app, spawn_app_with, Backend, Options, TestApp, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    the_eleventh_failure_on_an_address_is_refused_even_with_the_right_password,
    the_ip_limit_counts_across_addresses,
    concurrent_guesses_over_two_instances_are_checked_no_more_than_the_limit,
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

/// Sixty wrong guesses at once on one address, spread over two instances of
/// one database, 20 times over: each is counted before it is checked, so
/// exactly ten are checked and the rest refused, and then the right password
/// is refused too.
async fn concurrent_guesses_over_two_instances_are_checked_no_more_than_the_limit(backend: Backend) {
    // The one address's limit is under test; the client IP's is another test's.
    let no_ip_limit = vec![("GATEHOUSE_LOGIN_IP_LIMIT".to_owned(), "0".to_owned())];
    let options = Options { require_verified_email: Some(false), extra: no_ip_limit, ..Options::default() };
    let first = spawn_app_with(backend, options.clone()).await;
    let shared = Options { database_url: Some(first.database_url.clone()), ..options };
    let second = spawn_app_with(backend, shared).await;
    for trial in 0..20 {
        let email = format!("target-{trial}@example.com");
        assert_eq!(first.signup(&email).await.status(), 201);
        // A client of the trial's own: no connection is reused across trials.
        let client = reqwest::Client::new();
        let guesses = (0..60).map(|n| {
            let app = if n % 2 == 0 { &first } else { &second };
            let body = json!({ "email": email, "password": "certainly not the password" });
            client.post(app.url("/api/v1/auth/login")).json(&body).send()
        });
        let mut statuses: Vec<u16> = futures_util::future::join_all(guesses)
            .await
            .iter()
            .map(|r| r.as_ref().unwrap().status().as_u16())
            .collect();
        statuses.sort_unstable();
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((checked, refused), (10, 50), "trial {trial}: {statuses:?}");
        assert_throttled(second.login(&email, PASSWORD).await).await;
    }
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
