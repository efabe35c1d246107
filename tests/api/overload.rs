//! Overload: a password hash that waits for a core longer than
//! `hashing.queue_deadline_ms` is not started, and its request is answered
//! 503 with `Retry-After` at the deadline rather than after the queue.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::helpers::{spawn_app_with, Backend, Options, PASSWORD};

/// Settings for `Options::extra`.
fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_that_wait_past_the_queue_deadline_get_503_with_retry_after() {
    let extra = [
        ("GATEHOUSE__HASHING__CONCURRENCY", "1"),
        ("GATEHOUSE__HASHING__QUEUE_DEADLINE_MS", "250"),
        ("GATEHOUSE_LOGIN_IP_LIMIT", "0"),
        // One attempt per address: a refusal whose attempt stayed counted would throttle the next.
        ("GATEHOUSE__AUTH__LOGIN_ADDRESS_LIMIT", "1"),
    ];
    let extra = settings(&extra);
    // The accounts are made by a replica without the tight deadline: a first
    // signup's password-strength check alone may take longer than 250 ms.
    let unlimited = settings(&[("GATEHOUSE__LIMITS__MAIL_REQUESTS_PER_IP", "0")]);
    let setup = Options { require_verified_email: Some(false), extra: unlimited, ..Options::default() };
    let setup = spawn_app_with(Backend::Sqlite, setup);
    let setup = setup.await;
    let emails: Vec<String> = (0..32).map(|n| format!("storm-{n}@example.com")).collect();
    for email in &emails {
        assert_eq!(setup.signup(email).await.status(), 201);
    }
    let shared = Some(setup.database_url.clone());
    let options = Options { require_verified_email: Some(false), database_url: shared, extra, ..Options::default() };
    let app = spawn_app_with(Backend::Sqlite, options).await;

    // Thirty-two at once on one hashing thread: together they take longer
    // than the deadline, so the last of them cannot start in time.
    let started = Instant::now();
    let answers = join_all(emails.iter().map(|email| app.login(email, PASSWORD))).await;
    let elapsed = started.elapsed();
    let mut refused = Vec::new();
    for (answer, email) in answers.into_iter().zip(&emails) {
        match answer.status().as_u16() {
            200 => {}
            503 => {
                refused.push(email);
                assert_eq!(answer.headers()["retry-after"], "1", "a deadline of 250 ms: retry in a second");
                let body: serde_json::Value = answer.json().await.unwrap();
                assert_eq!(body["code"], "service_unavailable");
            }
            other => panic!("a login answered {other}"),
        }
    }
    assert!(!refused.is_empty(), "some logins waited past the deadline");
    assert!(elapsed < Duration::from_secs(5), "refused at the deadline, not after the queue: {elapsed:?}");

    // A refusal checked nothing: its attempt is given back (behind the
    // answer, so give it a moment), and the account logs in at once.
    for email in &refused {
        let mut status = 0;
        for _ in 0..50 {
            status = app.login(email, PASSWORD).await.status().as_u16();
            if status != 429 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, 200, "{email} logs in after its refusal");
    }

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|line| line.starts_with("gatehouse_hash_refusals_total{reason=\"deadline\"}"));
    let counted: u64 = line.and_then(|line| line.split(' ').nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(counted >= refused.len() as u64, "the metric counts them: {line:?}");
}

/// The count of one reason in `gatehouse_hash_refusals_total`.
async fn refusals(app: &crate::helpers::TestApp, reason: &str) -> u64 {
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("gatehouse_hash_refusals_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_client_hung_up_is_not_hashed_for() {
    let extra = [
        ("GATEHOUSE__HASHING__CONCURRENCY", "1"),
        ("GATEHOUSE__HASHING__QUEUE_DEADLINE_MS", "0"),
        ("GATEHOUSE_LOGIN_IP_LIMIT", "0"),
    ];
    let extra = settings(&extra);
    let app =
        spawn_app_with(Backend::Sqlite, Options { require_verified_email: Some(false), extra, ..Options::default() })
            .await;
    let emails: Vec<String> = (0..7).map(|n| format!("queue-{n}@example.com")).collect();
    for email in &emails {
        assert_eq!(app.signup(email).await.status(), 201);
    }
    assert_eq!(refusals(&app, "client_gone").await, 0);

    // Six logins keep the one hashing thread busy; the seventh gives up
    // (its client closes the connection) while its hash is still queued.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(40)).build().unwrap();
    let body = serde_json::json!({ "email": emails[6], "password": PASSWORD });
    let (busy, gave_up) = tokio::join!(join_all(emails[..6].iter().map(|email| app.login(email, PASSWORD))), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        impatient.post(app.url("/api/v1/auth/login")).json(&body).send().await
    });
    assert!(gave_up.is_err_and(|error| error.is_timeout()), "the client hung up first");
    assert!(busy.iter().all(|answer| answer.status() == 200), "the others are answered");

    // The thread has passed the abandoned job by now: skipped, not hashed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while refusals(&app, "client_gone").await == 0 {
        assert!(Instant::now() < deadline, "the abandoned hash was not skipped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refusals(&app, "client_gone").await, 1);
    assert_eq!(app.login(&emails[6], PASSWORD).await.status(), 200, "the account itself is fine");
}
