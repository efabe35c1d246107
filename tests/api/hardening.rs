//! The defects an outside battery found, each shown closed from outside.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, send, spawn_app, spawn_app_with, Backend, Options, TestApp, JWT_SECRET, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    control_characters_are_validation_errors_everywhere_text_comes_in,
    without_grace_concurrent_refreshes_spend_a_token_once,
    replays_within_the_grace_window_get_the_one_successor,
    an_admin_patch_changes_the_profile_under_its_rules,
    a_domain_in_two_spellings_is_one_account,
    mail_sending_endpoints_are_limited_per_address_and_per_ip,
    two_workers_and_a_slow_mail_server_send_each_mail_once,
);

/// Sends a request that must be a 400 naming `field`.
async fn refused(response: reqwest::Response, field: &str) {
    let body = assert_error(response, 400, "validation_error").await;
    assert!(body["errors"][field].is_array(), "{field}: {body}");
}

async fn control_characters_are_validation_errors_everywhere_text_comes_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let nul = "a\u{0}b";
    for field in ["first_name", "last_name"] {
        let body = json!({ "email": "nul@example.com", "password": PASSWORD, field: nul });
        refused(app.post("/api/v1/auth/signup", &body).await, field).await;
    }
    refused(
        app.post("/api/v1/auth/signup", &json!({ "email": "a\u{0}b@example.com", "password": PASSWORD })).await,
        "email",
    )
    .await;
    assert!(app.mails_to("nul@example.com").is_empty(), "no account was made");

    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let me_before: Value = app.get_auth("/api/v1/auth/me", access).await.json().await.unwrap();
    for (body, field) in [
        (json!({ "first_name": nul }), "first_name"),
        (json!({ "last_name": "tab\there" }), "last_name"),
        (json!({ "profile": { "gender": nul } }), "profile.gender"),
        (json!({ "profile": { "bio": nul } }), "profile.bio"),
        (json!({ "profile": { "phone": "+1234\u{0}5678" } }), "profile.phone"),
    ] {
        refused(send(&app, Method::PATCH, "/api/v1/auth/me", access, Some(body)).await, field).await;
    }
    let lines = json!({ "profile": { "bio": "line one\nline two\ttabbed" } });
    let changed = send(&app, Method::PATCH, "/api/v1/auth/me", access, Some(lines)).await;
    assert_eq!(changed.status(), 200, "a bio keeps its line breaks and tabs");
    let me_after: Value = changed.json().await.unwrap();
    assert_eq!(me_after["first_name"], me_before["first_name"]);
    assert_eq!(me_after["profile"]["bio"], "line one\nline two\ttabbed");

    let search = app.get_auth("/api/v1/admin/users?search=a%00b", access).await;
    refused(search, "search").await;
    refused(send(&app, Method::POST, "/api/v1/admin/groups", access, Some(json!({ "name": nul }))).await, "name").await;
    let create = json!({ "email": "new@example.com", "first_name": nul });
    refused(send(&app, Method::POST, "/api/v1/admin/users", access, Some(create)).await, "first_name").await;
    let create = json!({ "email": "new@example.com", "groups": [nul] });
    refused(send(&app, Method::POST, "/api/v1/admin/users", access, Some(create)).await, "groups").await;
    let id = root["user"]["id"].as_i64().unwrap();
    let path = format!("/api/v1/admin/users/{id}");
    refused(send(&app, Method::PATCH, &path, access, Some(json!({ "last_name": nul }))).await, "last_name").await;
    refused(send(&app, Method::PATCH, &path, access, Some(json!({ "groups": [nul] }))).await, "groups").await;
    let groups: Value = app.get_auth("/api/v1/admin/groups", access).await.json().await.unwrap();
    assert_eq!(groups.as_array().map(Vec::len), Some(2), "no group was made: {groups}");
    let users: Value = app.get_auth("/api/v1/admin/users", access).await.json().await.unwrap();
    assert_eq!(users["count"], 1, "no user was made: {users}");
}

/// Signs `claims` under `header` (raw JSON) with the test secret, as a forger holding the key would.
fn forge_with_header(header: &str, claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{signing_input}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_read_strictly() {
    let app = spawn_app(Backend::Sqlite).await;
    let login = app.verified_login("strict@example.com").await;
    let access = login["access"].as_str().unwrap();
    let claims: Value = {
        use base64::Engine as _;
        let payload = access.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let plain = r#"{"alg":"HS256","typ":"JWT"}"#;
    assert_eq!(app.get_auth("/api/v1/auth/me", &forge_with_header(plain, &claims)).await.status(), 200);

    let critical = r#"{"alg":"HS256","typ":"JWT","crit":["x-ext"],"x-ext":true}"#;
    assert_error(app.get_auth("/api/v1/auth/me", &forge_with_header(critical, &claims)).await, 401, "token_invalid")
        .await;
    for claim in ["jti", "iat", "sid"] {
        let mut missing = claims.clone();
        missing.as_object_mut().unwrap().remove(claim);
        let response = app.get_auth("/api/v1/auth/me", &forge_with_header(plain, &missing)).await;
        assert_error(response, 401, "token_invalid").await;
    }
    let mut future = claims.clone();
    future["iat"] = json!(claims["iat"].as_i64().unwrap() + 3600);
    future["nbf"] = claims["iat"].clone();
    future["exp"] = json!(claims["iat"].as_i64().unwrap() + 7200);
    assert_error(app.get_auth("/api/v1/auth/me", &forge_with_header(plain, &future)).await, 401, "token_invalid").await;

    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"Bearer caf\xc3\xa9\xff").unwrap();
    let response = app.client.get(app.url("/api/v1/auth/me")).header("authorization", non_ascii).send().await.unwrap();
    assert_error(response, 401, "token_invalid").await;
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/api/v1/auth/token/refresh", &json!({ "refresh": token })).await
}

/// Two refreshes of one token at once, 20 times over: exactly one rotates,
/// the other is reuse and ends the session, so neither chain lives on.
async fn without_grace_concurrent_refreshes_spend_a_token_once(backend: Backend) {
    let grace = vec![("GATEHOUSE__AUTH__REFRESH_GRACE_SECONDS".to_owned(), "0".to_owned())];
    let app = spawn_app_with(backend, Options { extra: grace, ..Options::default() }).await;
    app.verified_login("twice@example.com").await;
    for trial in 0..20 {
        let login: Value = app.login("twice@example.com", PASSWORD).await.json().await.unwrap();
        let token = login["refresh"].as_str().unwrap();
        let (a, b) = tokio::join!(refresh(&app, token), refresh(&app, token));
        let (winner, loser) = if a.status() == 200 { (a, b) } else { (b, a) };
        assert_eq!(winner.status(), 200, "trial {trial}: one rotation succeeds");
        assert_error(loser, 401, "token_reused").await;
        let successor: Value = winner.json().await.unwrap();
        let next = refresh(&app, successor["refresh"].as_str().unwrap()).await;
        assert_error(next, 401, "token_invalid").await;
    }
}

/// A fresh token refreshed by five tabs at once, 20 times over: every answer
/// carries the same successor, and the session has that one live token.
async fn replays_within_the_grace_window_get_the_one_successor(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_login("tabs@example.com").await;
    for trial in 0..20 {
        let login: Value = app.login("tabs@example.com", PASSWORD).await.json().await.unwrap();
        let token = login["refresh"].as_str().unwrap();
        let answers = futures_util::future::join_all((0..5).map(|_| refresh(&app, token))).await;
        let mut successors = Vec::new();
        for answer in answers {
            assert_eq!(answer.status(), 200, "trial {trial}");
            let pair: Value = answer.json().await.unwrap();
            assert_eq!(app.get_auth("/api/v1/auth/me", pair["access"].as_str().unwrap()).await.status(), 200);
            successors.push(pair["refresh"].as_str().unwrap().to_owned());
        }
        successors.dedup();
        assert_eq!(successors.len(), 1, "trial {trial}: one successor, not a fork");
        let next = refresh(&app, &successors[0]).await;
        assert_eq!(next.status(), 200, "the successor rotates on");
        let next: Value = next.json().await.unwrap();
        assert_ne!(next["refresh"].as_str(), Some(successors[0].as_str()));
        let again: Value = refresh(&app, &successors[0]).await.json().await.unwrap();
        assert_eq!(again["refresh"], next["refresh"], "and its replay gets its one successor");
    }
}

async fn an_admin_patch_changes_the_profile_under_its_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login("root@example.com").await;
    let access = root["access"].as_str().unwrap();
    let ada = app.verified_login("ada@example.com").await;
    let path = format!("/api/v1/admin/users/{}", ada["user"]["id"]);

    let body = json!({ "last_name": "King", "profile": { "bio": "Analyst", "phone": "+441234567890" } });
    let changed = send(&app, Method::PATCH, &path, access, Some(body)).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["last_name"], "King");
    assert_eq!(changed["profile"], json!({ "phone": "+441234567890", "gender": null, "bio": "Analyst" }));

    for (profile, field) in [
        (json!({ "phone": "555" }), "profile.phone"),
        (json!({ "bio": "x".repeat(501) }), "profile.bio"),
        (json!({ "gender": "g".repeat(33) }), "profile.gender"),
    ] {
        let body = json!({ "first_name": "Changed", "profile": profile });
        refused(send(&app, Method::PATCH, &path, access, Some(body)).await, field).await;
    }
    let cleared = send(&app, Method::PATCH, &path, access, Some(json!({ "profile": { "phone": null } }))).await;
    let cleared: Value = cleared.json().await.unwrap();
    assert_eq!(cleared["first_name"], changed["first_name"], "no refused patch changed anything");
    assert_eq!(cleared["profile"], json!({ "phone": null, "gender": null, "bio": "Analyst" }));
    let me: Value = app.get_auth("/api/v1/auth/me", ada["access"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["profile"], cleared["profile"], "the user sees what the administrator set");

    let trail: Value = app.get_auth("/api/v1/admin/audit?event=admin_action", access).await.json().await.unwrap();
    let details: Vec<&Value> = trail["results"].as_array().unwrap().iter().map(|e| &e["detail"]).collect();
    assert!(details.iter().any(|d| d["changes"]["profile"] == json!(["phone", "bio"])), "{details:?}");
    assert!(!trail.to_string().contains("+441234567890"), "the trail names profile fields, not their values");
}

async fn a_domain_in_two_spellings_is_one_account(backend: Backend) {
    let app = spawn_app_with(backend, Options { require_verified_email: Some(false), ..Options::default() }).await;
    let first = app.post("/api/v1/auth/signup", &json!({ "email": "ada@exämple.com", "password": PASSWORD })).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["email"], "ada@exämple.com");
    let punycode = json!({ "email": "Ada@XN--EXMPLE-CUA.com", "password": PASSWORD });
    assert_error(app.post("/api/v1/auth/signup", &punycode).await, 409, "email_taken").await;
    assert_eq!(app.login("ADA@xn--exmple-cua.com", PASSWORD).await.status(), 200, "either spelling logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_in_the_contract_shape() {
    let app = spawn_app(Backend::Sqlite).await;
    let put = app.client.put(app.url("/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(put.headers()["allow"], "GET, PATCH, DELETE");
    assert_error(put, 405, "method_not_allowed").await;
    let get = app.client.get(app.url("/api/v1/admin/users/7")).send().await.unwrap();
    assert_eq!(get.status(), 401, "a routed method is not a 405");
    let delete = app.client.delete(app.url("/api/v1/auth/login")).send().await.unwrap();
    assert_eq!(delete.headers()["allow"], "POST");
    assert_error(delete, 405, "method_not_allowed").await;

    // A preflight from an origin that is not allowed is refused by the CORS layer.
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let body = assert_error(preflight, 400, "validation_error").await;
    assert!(body["errors"]["non_field_errors"][0].as_str().unwrap().to_lowercase().contains("origin"), "{body}");
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", crate::helpers::FRONTEND)
        .header("access-control-request-method", "TRACE")
        .send()
        .await
        .unwrap();
    assert_error(preflight, 400, "validation_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_a_408_and_answers_carry_their_policies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let settings = vec![
        ("GATEHOUSE__SERVER__BODY_TIMEOUT_SECONDS".to_owned(), "1".to_owned()),
        ("GATEHOUSE__SERVER__HSTS_MAX_AGE_SECONDS".to_owned(), "31536000".to_owned()),
    ];
    let app = spawn_app_with(Backend::Sqlite, Options { extra: settings, ..Options::default() }).await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head =
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    // One byte a second, as a slow client would; the server stops waiting first.
    for _ in 0..5 {
        if tokio::time::timeout(Duration::from_secs(1), stream.read_buf(&mut answer)).await.is_ok() {
            break;
        }
        let _ = stream.write_all(b" ").await;
    }
    // The server closes the connection after its answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());

    let live = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
    assert_eq!(live.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert!(docs.headers()["content-security-policy"].to_str().unwrap().contains("style-src 'self' 'unsafe-inline'"));
}

async fn login_from(app: &TestApp, forwarded_for: &str, email: &str, password: &str) -> reqwest::Response {
    let body = json!({ "email": email, "password": password });
    let request = app.client.post(app.url("/api/v1/auth/login")).header("x-forwarded-for", forwarded_for);
    request.json(&body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_is_counted_and_recorded_by_its_own_ip() {
    let settings = vec![
        ("GATEHOUSE_TRUSTED_PROXIES".to_owned(), "127.0.0.1, 10.0.0.0/8".to_owned()),
        ("GATEHOUSE_LOGIN_IP_LIMIT".to_owned(), "3".to_owned()),
    ];
    let app = spawn_app_with(Backend::Sqlite, Options { extra: settings, ..Options::default() }).await;
    app.verified_login("ada@example.com").await;
    for n in 0..3 {
        let response = login_from(&app, "198.51.100.7, 10.0.0.9", &format!("u{n}@example.com"), "wrong password").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    let attacker = login_from(&app, "198.51.100.7", "u9@example.com", "wrong password").await;
    assert_error(attacker, 429, "rate_limited").await;
    let someone_else = login_from(&app, "203.0.113.9", "ada@example.com", PASSWORD).await;
    assert_eq!(someone_else.status(), 200, "one client's failures lock out nobody else");
    let access: Value = someone_else.json().await.unwrap();
    let sessions: Value =
        app.get_auth("/api/v1/auth/sessions", access["access"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(sessions[0]["ip"], "203.0.113.9");
    let moved = app.client.post(app.url("/api/v1/auth/token/refresh")).header("x-forwarded-for", "198.51.100.50");
    let moved: Value = moved.json(&json!({ "refresh": access["refresh"] })).send().await.unwrap().json().await.unwrap();
    let sessions: Value =
        app.get_auth("/api/v1/auth/sessions", moved["access"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(sessions[0]["ip"], "198.51.100.50", "a session's ip is that of its latest use");
    // A forged header in a form that is no address is ignored: the proxy's own address stands.
    let forged = login_from(&app, "198.51.100.7, not-an-ip", "u9@example.com", "wrong password").await;
    assert_error(forged, 401, "invalid_credentials").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_forwarded_header_is_ignored() {
    let limit = vec![("GATEHOUSE_LOGIN_IP_LIMIT".to_owned(), "2".to_owned())];
    let app = spawn_app_with(Backend::Sqlite, Options { extra: limit, ..Options::default() }).await;
    for n in 0..2 {
        let response = login_from(&app, &format!("198.51.100.{n}"), &format!("u{n}@example.com"), "wrong").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    let spoofed = login_from(&app, "203.0.113.200", "u7@example.com", "wrong").await;
    assert_error(spoofed, 429, "rate_limited").await;
}

async fn mail_sending_endpoints_are_limited_per_address_and_per_ip(backend: Backend) {
    let limits = vec![("GATEHOUSE__LIMITS__MAIL_REQUESTS_PER_IP".to_owned(), "9".to_owned())];
    let app = spawn_app_with(backend, Options { extra: limits, ..Options::default() }).await;
    app.verified_login("ada@example.com").await; // a signup: one request of the nine
    let reset = json!({ "email": "ada@example.com" });
    let mut answers = Vec::new();
    for _ in 0..4 {
        let response = app.post("/api/v1/auth/password/reset", &reset).await;
        answers.push((response.status(), response.text().await.unwrap()));
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "the limit answers alike: {answers:?}");
    assert_eq!(answers[0].0, 202);
    let resets = |app: &TestApp| {
        app.mails_to("ada@example.com").iter().filter(|m| m.raw.contains("reset-password?token=")).count()
    };
    app.wait_for_mails("ada@example.com", 4).await; // the verification link, then three reset links
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(resets(&app), 3, "three reset mails to one address per window, not four");

    // Requests from one IP, valid or not: five so far, four more pass, the tenth is refused.
    for body in [json!({}), json!({ "email": "x@example.com" }), json!({ "email": "y@example.com" })] {
        assert_ne!(app.post("/api/v1/auth/password/reset", &body).await.status(), 429);
    }
    assert_ne!(app.post("/api/v1/auth/email/verify/resend", &json!({ "email": "z@example.com" })).await.status(), 429);
    let refused = app.post("/api/v1/auth/signup", &json!({ "email": "new@example.com", "password": PASSWORD })).await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after));
    assert_error(refused, 429, "rate_limited").await;
    assert!(app.mails_to("new@example.com").is_empty());
}

/// Two instances' outbox workers against one slow mail server, with a lease
/// that a whole batch would outlast but one mail does not: every mail
/// arrives once, with a Message-ID of its own.
async fn two_workers_and_a_slow_mail_server_send_each_mail_once(backend: Backend) {
    let slow = |extra: Vec<(String, String)>| Options {
        smtp_delay: Duration::from_millis(300),
        extra: [vec![("GATEHOUSE__MAIL__LEASE_SECONDS".to_owned(), "1".to_owned())], extra].concat(),
        ..Options::default()
    };
    let first = spawn_app_with(backend, slow(Vec::new())).await;
    let same_server = vec![
        ("GATEHOUSE_MAILER".to_owned(), format!("smtp://127.0.0.1:{}", first.smtp_port)),
        ("DATABASE_URL".to_owned(), first.database_url.clone()),
    ];
    let second =
        spawn_app_with(backend, Options { database_url: Some(first.database_url.clone()), ..slow(same_server) }).await;
    let addresses: Vec<String> = (0..8).map(|n| format!("user{n}@example.com")).collect();
    for (n, address) in addresses.iter().enumerate() {
        let app = if n % 2 == 0 { &first } else { &second };
        assert_eq!(app.signup(address).await.status(), 201);
    }
    for address in &addresses {
        first.wait_for_mails(address, 1).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // time for any duplicate to land
    let mut ids = Vec::new();
    for address in &addresses {
        let mails = first.mails_to(address);
        assert_eq!(mails.len(), 1, "{address} got {} copies", mails.len());
        let id = mails[0].raw.lines().find_map(|line| line.strip_prefix("Message-ID: ")).expect("a Message-ID");
        ids.push(id.to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), addresses.len(), "a Message-ID per mail");
}

/// Sends `request` on a fresh connection and reads the answer until the
/// server closes it.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    // Written alongside the read: the server may answer before it has read it
    // all. The writing half is kept open (dropping it would end the request).
    let sending = tokio::spawn(async move { writer.write_all(&request).await.map(|()| writer) });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes the connection after its answer");
    let _ = read
        .unwrap()
        .map_err(|e| panic!("read failed (connection reset?): {e}; got {:?}", String::from_utf8_lossy(&answer)));
    drop(sending);
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_contract_answer(answer: &str, status: &str, code: &str) {
    assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(body["code"], code, "{answer}");
    assert!(body["errors"]["non_field_errors"][0].is_string(), "{answer}");
}

/// What the HTTP layer refuses before any handler runs (heads too large or
/// too slow, framing it cannot parse) is answered in the contract's shape,
/// and a huge head is read out rather than reset, so the answer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_layers_own_refusals_are_in_the_contract_shape() {
    let app = spawn_app(Backend::Sqlite).await;
    for size in [200 * 1024, 2 * 1024 * 1024] {
        let mut request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', size));
        request.extend(b"\r\n\r\n");
        assert_contract_answer(&raw_exchange(&app, &request).await, "431", "request_header_too_large");
    }
    let both = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_contract_answer(&raw_exchange(&app, both).await, "400", "validation_error");
    let bad_length = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n";
    assert_contract_answer(&raw_exchange(&app, bad_length).await, "400", "validation_error");
    let started = std::time::Instant::now();
    let slow_head = b"GET /health/live HTTP/1.1\r\nHost: x\r\n";
    assert_contract_answer(&raw_exchange(&app, slow_head).await, "408", "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
    // The connection's other answers are untouched.
    let live = raw_exchange(&app, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(live.starts_with("HTTP/1.1 200 ") && live.ends_with("{\"status\":\"ok\"}"), "{live}");
}
