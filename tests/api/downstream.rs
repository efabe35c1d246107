//! Another service trusting Gatehouse's tokens through `gatehouse-verifier`:
//! the crate's own example (`examples/downstream.rs`) served beside a real
//! Gatehouse, over HTTP. Logins are accepted downstream, forgeries are not,
//! rotations are followed without a restart, strict routes see a
//! revocation at once, and a failing key endpoint never makes it accept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_verifier::{Verifier, VerifierConfig};
use serde_json::{json, Value};

use crate::helpers::{assert_error, Backend, TestApp};
use crate::signing_keys::{
    access_token, app_signing_with, claims, forgeries, header_of, jwks, keys_command, keys_path, kids, login_token,
    now, published_within_10_s, sign_with_file_key,
};

#[path = "../../crates/verifier/examples/downstream.rs"]
#[allow(dead_code)]
mod example;

/// The example service on a port of its own, trusting the Gatehouse at `gatehouse`.
struct Downstream {
    url: String,
    verifier: Verifier,
    client: reqwest::Client,
}

impl Downstream {
    fn start(config: VerifierConfig) -> Self {
        let verifier = Verifier::new(config).unwrap();
        let shared = verifier.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().app_data(shared.clone()).configure(example::routes)
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { url, verifier, client: reqwest::Client::new() }
    }

    fn of(app: &TestApp) -> Self {
        Self::start(VerifierConfig::new(&app.address))
    }

    async fn orders(&self, token: &str) -> reqwest::Response {
        self.client.get(format!("{}/orders", self.url)).bearer_auth(token).send().await.unwrap()
    }

    async fn orders_status(&self, token: &str) -> u16 {
        self.orders(token).await.status().as_u16()
    }

    async fn pay(&self, token: &str) -> reqwest::Response {
        self.client.post(format!("{}/payments", self.url)).bearer_auth(token).send().await.unwrap()
    }
}

async fn accepted_downstream(algorithm: &str) {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Sqlite, algorithm, &keys_file).await;
    let downstream = Downstream::of(&app);
    let body: Value = app.signup("downstream@example.com").await.json().await.unwrap();
    let token = body["access"].as_str().unwrap();
    let response = downstream.orders(token).await;
    assert_eq!(response.status(), 200);
    let orders: Value = response.json().await.unwrap();
    assert_eq!(orders["user"], body["user"]["id"].to_string());

    let missing = downstream.client.get(format!("{}/orders", downstream.url)).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_error(missing, 401, "not_authenticated").await;
    let refresh = body["refresh"].as_str().unwrap();
    assert_error(downstream.orders(refresh).await, 401, "token_invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eddsa_login_is_accepted_downstream() {
    accepted_downstream("EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_login_is_accepted_downstream() {
    accepted_downstream("RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_tokens_are_refused_downstream() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Sqlite, "EdDSA", &keys_file).await;
    let downstream = Downstream::of(&app);
    let genuine = access_token(&app, "forged@example.com").await;
    assert_eq!(downstream.orders_status(&genuine).await, 200);
    for (what, token) in forgeries(&keys_file, &genuine, &jwks(&app).await) {
        assert_error(downstream.orders(&token).await, 401, "token_invalid").await;
        assert!(downstream.verifier.verify(&token).await.is_err(), "{what}");
    }
    let expired = sign_with_file_key(&keys_file, &claims("gatehouse", "gatehouse", "access", now() - 600, 300));
    assert_error(downstream.orders(&expired).await, 401, "token_expired").await;
    let early = sign_with_file_key(&keys_file, &claims("gatehouse", "gatehouse", "access", now() + 600, 300));
    assert_error(downstream.orders(&early).await, 401, "token_invalid").await;
}

/// The careful path: `add`, wait past the verifiers' cache age, `rotate`:
/// the new key is known downstream before the first token it signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_downstream_follows_a_careful_rotation_without_restarting() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Sqlite, "EdDSA", &keys_file).await;
    // A short cache age stands for the 300 s an operator waits.
    let downstream = Downstream::start(VerifierConfig {
        refresh_interval: Duration::from_secs(1),
        refetch_interval: Duration::from_secs(1),
        ..VerifierConfig::new(&app.address)
    });
    let old = access_token(&app, "careful@example.com").await;
    assert_eq!(downstream.orders_status(&old).await, 200);

    keys_command(&keys_file, "EdDSA", &["add"]);
    let set = published_within_10_s(&app, |set| kids(set).len() == 2).await;
    let start = Instant::now();
    while downstream.verifier.key_ids().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(15), "the downstream never refreshed its keys");
        assert_eq!(downstream.orders_status(&old).await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    keys_command(&keys_file, "EdDSA", &["rotate"]);
    let second = kids(&set)[1].clone();
    published_within_10_s(&app, |set| kids(set)[0] == second).await;
    let new = login_token(&app, "careful@example.com").await;
    assert_eq!(header_of(&new)["kid"], second.as_str());
    assert_eq!(downstream.orders_status(&new).await, 200, "known before it signed");
    assert_eq!(downstream.orders_status(&old).await, 200, "the old key still verifies");
}

/// The hasty path (`rotate` alone): the new `kid` is unknown downstream
/// and refetches the keys, but at most once per 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_keys_at_most_once_per_10_s() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Sqlite, "EdDSA", &keys_file).await;
    let downstream = Downstream::of(&app);
    let old = access_token(&app, "hasty@example.com").await;
    let fetched = Instant::now();
    assert_eq!(downstream.orders_status(&old).await, 200);

    let first = kids(&jwks(&app).await)[0].clone();
    keys_command(&keys_file, "EdDSA", &["rotate"]);
    published_within_10_s(&app, |set| kids(set)[0] != first).await;
    let new = login_token(&app, "hasty@example.com").await;
    if fetched.elapsed() < Duration::from_secs(9) {
        assert_eq!(downstream.orders_status(&new).await, 401, "fetched too recently to fetch again");
    }
    loop {
        if downstream.orders_status(&new).await == 200 {
            break;
        }
        assert!(fetched.elapsed() < Duration::from_secs(20), "the new key was never fetched");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(fetched.elapsed() >= Duration::from_secs(10), "refetched within 10 s of the last fetch");
    assert_eq!(downstream.orders_status(&old).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_routes_refuse_a_revoked_session_at_once_others_until_expiry() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Postgres, "EdDSA", &keys_file).await;
    let downstream = Downstream::of(&app);
    let token = access_token(&app, "strict@example.com").await;
    assert_eq!(downstream.pay(&token).await.status(), 200);

    let logout = app.post_auth("/api/v1/auth/logout", &token, &json!({})).await;
    assert_eq!(logout.status(), 204);
    // The strict answer is remembered 1 s; past it, Gatehouse is asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_error(downstream.pay(&token).await, 401, "token_invalid").await;
    assert_eq!(downstream.orders_status(&token).await, 200, "a local check cannot see the revocation");

    // A token never seen before is asked about at once.
    let other = login_token(&app, "strict@example.com").await;
    assert_eq!(app.post_auth("/api/v1/auth/logout", &other, &json!({})).await.status(), 204);
    assert_error(downstream.pay(&other).await, 401, "token_invalid").await;
}

/// A stand-in for Gatehouse's key endpoint whose answer a test sets.
struct KeyEndpoint {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
}

impl KeyEndpoint {
    fn start(status: u16, body: String) -> Self {
        let answer = Arc::new(Mutex::new((status, body)));
        let shared = answer.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(move || {
            let shared = shared.clone();
            actix_web::App::new().default_service(actix_web::web::to(move || {
                let (status, body) = shared.lock().unwrap().clone();
                async move {
                    actix_web::HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body(body)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { url, answer }
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_endpoint_keeps_the_last_good_keys_and_never_accepts_without_keys() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Sqlite, "EdDSA", &keys_file).await;
    let token = access_token(&app, "outage@example.com").await;
    let endpoint = KeyEndpoint::start(200, jwks(&app).await.to_string());
    let downstream = Downstream::start(VerifierConfig::new(&endpoint.url));
    assert_eq!(downstream.orders_status(&token).await, 200);

    for (status, body) in [(500, "{}"), (200, "<html>down for maintenance</html>"), (200, "{\"keys\": 7}")] {
        endpoint.answer(status, body);
        assert!(downstream.verifier.refresh().await.is_err(), "{status} {body}");
        assert!(downstream.verifier.last_error().is_some());
        assert_eq!(downstream.orders_status(&token).await, 200, "the last good keys stay");
    }
    endpoint.answer(200, &jwks(&app).await.to_string());
    downstream.verifier.refresh().await.unwrap();
    assert_eq!(downstream.verifier.last_error(), None, "a good fetch clears the error");

    endpoint.answer(200, "garbage");
    let cold = Downstream::start(VerifierConfig::new(&endpoint.url));
    let refused = cold.orders(&token).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 503, "service_unavailable").await;
    assert!(cold.verifier.last_error().unwrap().contains("not a JWK Set"));
}
