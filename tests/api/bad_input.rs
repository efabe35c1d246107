//! Bad input of every kind gets the contract's error shape and status, never a 500.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{assert_error, send, spawn_app, Backend, TestApp, JWT_SECRET, PASSWORD};

async fn app() -> TestApp {
    spawn_app(Backend::Sqlite).await
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_invalid_json() {
    let app = app().await;
    for body in ["", "   ", "{", "{\"email\": }", "[]", "\"text\"", "42", "null", "\u{feff}{}"] {
        let response = post_raw(&app, "/api/v1/auth/login", Some("application/json"), body.to_owned()).await;
        assert_error(response, 400, "invalid_json").await;
    }
    let deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    assert_error(post_raw(&app, "/api/v1/auth/login", Some("application/json"), deep).await, 400, "invalid_json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_mistyped_fields_are_validation_errors() {
    let app = app().await;
    let body = assert_error(app.post("/api/v1/auth/signup", &json!({})).await, 400, "validation_error").await;
    assert_eq!(body["errors"]["email"], json!(["This field is required."]));
    assert_eq!(body["errors"]["password"], json!(["This field is required."]));
    let body = assert_error(
        app.post("/api/v1/auth/login", &json!({ "email": 5, "password": null })).await,
        400,
        "validation_error",
    )
    .await;
    assert!(body["errors"]["email"].is_array() && body["errors"]["password"].is_array());
    assert_error(app.post("/api/v1/auth/token/refresh", &json!({})).await, 400, "validation_error").await;
    assert_error(app.post("/api/v1/auth/email/verify", &json!({ "token": "" })).await, 400, "validation_error").await;
    let tc =
        app.post("/api/v1/auth/signup", &json!({ "email": "a@example.com", "password": PASSWORD, "tc": "yes" })).await;
    assert_error(tc, 400, "validation_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_emails_and_weak_passwords_are_refused_with_reasons() {
    let app = app().await;
    for email in ["not-an-email", "a@", "@example.com", "Ada <ada@example.com>"] {
        let response = app.post("/api/v1/auth/signup", &json!({ "email": email, "password": PASSWORD })).await;
        let body = assert_error(response, 400, "validation_error").await;
        assert!(body["errors"]["email"].is_array(), "{email}: {body}");
    }
    let long = format!("{}@example.com", "a".repeat(250));
    assert_error(
        app.post("/api/v1/auth/signup", &json!({ "email": long, "password": PASSWORD })).await,
        400,
        "validation_error",
    )
    .await;
    let cases = [
        ("short", "This password is too short. It must contain at least 8 characters."),
        ("password", "This password is too common."),
        ("12345678", "This password is entirely numeric."),
        ("ada.lovelace", "The password is too similar to your email or name."),
    ];
    for (password, message) in cases {
        let response = app
            .post("/api/v1/auth/signup", &json!({ "email": "ada.lovelace@example.com", "password": password }))
            .await;
        let body = assert_error(response, 400, "validation_error").await;
        let messages = body["errors"]["password"].as_array().unwrap();
        assert!(messages.iter().any(|m| m == message), "{password}: {body}");
    }
    let mismatch = app
        .post("/api/v1/auth/signup", &json!({ "email": "a@example.com", "password": PASSWORD, "password2": "other" }))
        .await;
    let body = assert_error(mismatch, 400, "validation_error").await;
    assert_eq!(body["errors"]["non_field_errors"], json!(["Passwords do not match."]));
    // Over 1024 bytes is refused at login too, before any hashing.
    let huge = "x".repeat(1025);
    let body = assert_error(app.login("a@example.com", &huge).await, 400, "validation_error").await;
    assert!(body["errors"]["password"].is_array());
    // Nothing was stored by the refused signups.
    assert!(app.mails_to("ada.lovelace@example.com").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_foreign_bodies_are_refused() {
    let app = app().await;
    let megabyte = format!("{{\"email\": \"{}\"}}", "a".repeat(1024 * 1024));
    let response = post_raw(&app, "/api/v1/auth/login", Some("application/json"), megabyte.clone()).await;
    assert_error(response, 413, "payload_too_large").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        megabyte.into_bytes().chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = post_raw(&app, "/api/v1/auth/login", Some("application/json"), chunked).await;
    assert_error(response, 413, "payload_too_large").await;
    let form =
        post_raw(&app, "/api/v1/auth/login", Some("application/x-www-form-urlencoded"), "email=a&password=b").await;
    assert_error(form, 415, "unsupported_media_type").await;
    let untyped = post_raw(&app, "/api/v1/auth/login", None, "{\"email\": \"a@example.com\"}").await;
    assert_error(untyped, 415, "unsupported_media_type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_in_shape() {
    let app = app().await;
    assert_error(app.client.get(app.url("/api/v1/nope")).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.client.get(app.url("/api/v1/auth/login")).send().await.unwrap(), 405, "method_not_allowed").await;
    assert_error(app.client.put(app.url("/api/v1/auth/me")).send().await.unwrap(), 405, "method_not_allowed").await;
}

fn forge(claims: Value, secret: &str) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tampered_and_expired_tokens_are_refused() {
    let app = app().await;
    let login = app.verified_login("ada@example.com").await;
    let access = login["access"].as_str().unwrap();

    let missing = app.client.get(app.url("/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_error(missing, 401, "not_authenticated").await;
    for header in ["Basic YTpi", "Bearer", "Token abc", access] {
        let response = app.client.get(app.url("/api/v1/auth/me")).header("authorization", header).send().await.unwrap();
        assert_error(response, 401, "not_authenticated").await;
    }
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", &format!("{access}x"), &access[..access.len() - 2]]
    {
        assert_error(app.get_auth("/api/v1/auth/me", garbage).await, 401, "token_invalid").await;
    }
    // A tampered payload breaks the signature.
    let parts: Vec<&str> = access.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], parts[1].replacen('e', "f", 1), parts[2]);
    assert_error(app.get_auth("/api/v1/auth/me", &tampered).await, 401, "token_invalid").await;

    let me: Value = app.get_auth("/api/v1/auth/me", access).await.json().await.unwrap();
    let claims: Value = {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        serde_json::from_slice(&payload).unwrap()
    };
    assert_eq!(claims["sub"], me["id"].to_string());
    assert_eq!(claims["token_type"], "access");
    let now = claims["iat"].as_i64().unwrap();

    let mut expired = claims.clone();
    expired["exp"] = json!(now - 10);
    expired["iat"] = json!(now - 400);
    expired["nbf"] = json!(now - 400);
    assert_error(app.get_auth("/api/v1/auth/me", &forge(expired.clone(), JWT_SECRET)).await, 401, "token_expired")
        .await;
    let verify = app.post("/api/v1/auth/token/verify", &json!({ "token": forge(expired, JWT_SECRET) })).await;
    assert_error(verify, 401, "token_expired").await;

    let mut wrong_type = claims.clone();
    wrong_type["token_type"] = json!("refresh");
    assert_error(app.get_auth("/api/v1/auth/me", &forge(wrong_type, JWT_SECRET)).await, 401, "token_invalid").await;
    let mut wrong_audience = claims.clone();
    wrong_audience["aud"] = json!("someone-else");
    assert_error(app.get_auth("/api/v1/auth/me", &forge(wrong_audience, JWT_SECRET)).await, 401, "token_invalid").await;
    let other_key = forge(claims.clone(), "another-secret-that-is-also-32-bytes-long");
    assert_error(app.get_auth("/api/v1/auth/me", &other_key).await, 401, "token_invalid").await;
    let hs512 =
        encode(&Header::new(jsonwebtoken::Algorithm::HS512), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes()))
            .unwrap();
    assert_error(app.get_auth("/api/v1/auth/me", &hs512).await, 401, "token_invalid").await;

    assert_error(app.post("/api/v1/auth/token/refresh", &json!({ "refresh": "garbage" })).await, 401, "token_invalid")
        .await;
    assert_error(app.post("/api/v1/auth/token/refresh", &json!({ "refresh": access })).await, 401, "token_invalid")
        .await;
    assert_error(app.post("/api/v1/auth/email/verify", &json!({ "token": "garbage" })).await, 400, "token_invalid")
        .await;
    assert_error(app.post("/api/v1/auth/token/verify", &json!({ "token": "garbage" })).await, 401, "token_invalid")
        .await;
    // A refresh token is not an access token.
    let refresh = login["refresh"].as_str().unwrap();
    assert_error(app.get_auth("/api/v1/auth/me", refresh).await, 401, "token_invalid").await;
}

/// An authenticated route checks the session before it reads the body: a
/// dead session is a 401 whatever the body holds, on every such route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_is_refused_before_its_body_is_read() {
    let app = app().await;
    let login = app.verified_login("ada@example.com").await;
    let access = login["access"].as_str().unwrap();
    assert_eq!(
        app.post_auth("/api/v1/auth/logout", access, &json!({ "refresh": login["refresh"] })).await.status(),
        204
    );
    for (method, path) in [
        (reqwest::Method::PATCH, "/api/v1/auth/me"),
        (reqwest::Method::DELETE, "/api/v1/auth/me"),
        (reqwest::Method::POST, "/api/v1/auth/email/change"),
        (reqwest::Method::POST, "/api/v1/auth/password/change"),
        (reqwest::Method::POST, "/api/v1/admin/users"),
        (reqwest::Method::POST, "/api/v1/admin/groups"),
    ] {
        for body in [json!({ "profile": 5, "password": null, "new_email": 1, "email": [] }), json!([1])] {
            let response = send(&app, method.clone(), path, access, Some(body)).await;
            assert_error(response, 401, "token_invalid").await;
        }
    }
}
