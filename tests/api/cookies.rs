//! Browser sessions over HTTP: `"transport": "cookie"`, authentication by
//! the access cookie with its CSRF rules, refresh through the refresh
//! cookie, and cookies cleared when the session ends. The cookies are read
//! from `Set-Cookie` and sent back by hand, as a browser would.

use std::collections::BTreeMap;

use reqwest::header::{HeaderValue, COOKIE, SET_COOKIE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app_with, Backend, Options, TestApp, PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    a_cookie_login_sets_the_three_cookies_and_no_token_in_the_body,
    the_access_cookie_authenticates_and_unsafe_calls_need_the_sessions_csrf_token,
    the_origin_of_a_cookie_call_must_be_the_services_own_or_allowed,
    an_authorization_header_wins_over_the_cookies,
    refresh_through_the_cookie_rotates_and_a_reuse_revokes_the_session,
    logout_clears_the_cookies_and_a_dead_session_clears_them_too,
    bad_cookies_are_refused_in_the_contracts_shape,
    tabs_refreshing_by_cookie_together_share_one_successor,
);

const ACCESS: &str = "__Host-gh_access";
const REFRESH: &str = "__Secure-gh_refresh";
const CSRF: &str = "__Host-gh_csrf";
/// An origin in the test service's `cors.origins` (the defaults).
const ALLOWED_ORIGIN: &str = "http://localhost:3000";

/// A service where signup logs in at once, and a replayed refresh token is reuse.
async fn app(backend: Backend) -> TestApp {
    let grace = vec![("GATEHOUSE__AUTH__REFRESH_GRACE_SECONDS".to_owned(), "0".to_owned())];
    spawn_app_with(backend, Options { require_verified_email: Some(false), extra: grace, ..Options::default() }).await
}

/// The cookies a response sets, by name: the whole `Set-Cookie` line.
fn set_cookies(response: &reqwest::Response) -> BTreeMap<String, String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| {
            let line = value.to_str().unwrap().to_owned();
            (line.split('=').next().unwrap().to_owned(), line)
        })
        .collect()
}

/// The value of a `Set-Cookie` line.
fn value_of(line: &str) -> String {
    line.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// `Set-Cookie` attributes, sorted.
fn attributes(line: &str) -> Vec<String> {
    let mut parts: Vec<String> = line.split("; ").skip(1).map(str::to_owned).collect();
    parts.sort();
    parts
}

/// What a browser holds for one session.
#[derive(Debug, Clone)]
struct Jar {
    access: String,
    refresh: String,
    csrf: String,
}

impl Jar {
    fn from(response: &reqwest::Response) -> Self {
        let cookies = set_cookies(response);
        Self {
            access: value_of(&cookies[ACCESS]),
            refresh: value_of(&cookies[REFRESH]),
            csrf: value_of(&cookies[CSRF]),
        }
    }

    /// The `Cookie` header a browser sends to a path under `/api/v1/auth/token`.
    fn all(&self) -> String {
        format!("{ACCESS}={}; {REFRESH}={}; {CSRF}={}", self.access, self.refresh, self.csrf)
    }

    /// The `Cookie` header elsewhere: the refresh cookie stays on its path.
    fn site(&self) -> String {
        format!("{ACCESS}={}; {CSRF}={}", self.access, self.csrf)
    }
}

async fn cookie_login(app: &TestApp, email: &str) -> (Jar, Value) {
    let response =
        app.post("/api/v1/auth/login", &json!({ "email": email, "password": PASSWORD, "transport": "cookie" })).await;
    assert_eq!(response.status(), 200);
    let jar = Jar::from(&response);
    (jar, response.json().await.unwrap())
}

/// Signs up (logged in at once, by bearer) and opens a browser session.
async fn browser_session(app: &TestApp, email: &str) -> Jar {
    assert_eq!(app.signup(email).await.status(), 201);
    cookie_login(app, email).await.0
}

async fn call(app: &TestApp, method: Method, path: &str, cookies: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.request(method.clone(), app.url(path)).header(COOKIE, cookies);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == Method::PATCH {
        request = request.json(&json!({ "first_name": "Changed" }));
    }
    request.send().await.unwrap()
}

async fn a_cookie_login_sets_the_three_cookies_and_no_token_in_the_body(backend: Backend) {
    let app = app(backend).await;
    let signup = app
        .post(
            "/api/v1/auth/signup",
            &json!({ "email": "ada@example.com", "password": PASSWORD, "transport": "cookie" }),
        )
        .await;
    assert_eq!(signup.status(), 201);
    assert_eq!(set_cookies(&signup).len(), 3, "a signup that logs in sets the cookies");
    let body: Value = signup.json().await.unwrap();
    assert_eq!(body["token_type"], "Cookie");
    assert!(body.get("access").is_none() && body.get("refresh").is_none(), "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");

    let response = app
        .post("/api/v1/auth/login", &json!({ "email": "ada@example.com", "password": PASSWORD, "transport": "cookie" }))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    assert_eq!(attributes(&cookies[ACCESS]), ["HttpOnly", "Max-Age=300", "Path=/", "SameSite=Lax", "Secure"]);
    assert_eq!(
        attributes(&cookies[REFRESH]),
        ["HttpOnly", "Max-Age=86400", "Path=/api/v1/auth/token", "SameSite=Strict", "Secure"]
    );
    assert_eq!(attributes(&cookies[CSRF]), ["Max-Age=86400", "Path=/", "SameSite=Strict", "Secure"]);
    let jar = Jar::from(&response);
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["csrf_token", "expires_in", "token_type", "user"]);
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Cookie"), Some(300)));
    assert_eq!(body["csrf_token"], jar.csrf.as_str(), "the body and the readable cookie carry one token");
    assert_eq!(jar.access.split('.').count(), 3, "the access cookie is the JWT");
    assert!(!body.to_string().contains(&jar.access) && !body.to_string().contains(&jar.refresh));

    // The body transport is the default, and says so when asked.
    let bearer = app
        .post("/api/v1/auth/login", &json!({ "email": "ada@example.com", "password": PASSWORD, "transport": "body" }))
        .await;
    assert!(set_cookies(&bearer).is_empty());
    let bearer: Value = bearer.json().await.unwrap();
    assert_eq!(bearer["token_type"], "Bearer");
    assert!(bearer["access"].is_string() && bearer["refresh"].is_string());

    for transport in [json!("Cookie"), json!("header"), json!(""), json!(1), json!(null), json!(["cookie"])] {
        let login = json!({ "email": "ada@example.com", "password": PASSWORD, "transport": transport });
        let refused = app.post("/api/v1/auth/login", &login).await;
        assert!(set_cookies(&refused).is_empty());
        let body = assert_error(refused, 400, "validation_error").await;
        assert!(body["errors"]["transport"].is_array(), "{transport}: {body}");
        let refresh = json!({ "refresh": "whatever", "transport": transport });
        let body = assert_error(app.post("/api/v1/auth/token/refresh", &refresh).await, 400, "validation_error").await;
        assert!(body["errors"]["transport"].is_array(), "{body}");
    }
}

async fn the_access_cookie_authenticates_and_unsafe_calls_need_the_sessions_csrf_token(backend: Backend) {
    let app = app(backend).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let me = call(&app, Method::GET, "/api/v1/auth/me", &jar.site(), &[]).await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["email"], "ada@example.com");

    // Another session of the same user: its CSRF token is not this one's,
    // even planted as this browser's CSRF cookie.
    let (other, _) = cookie_login(&app, "ada@example.com").await;
    assert_ne!(other.csrf, jar.csrf);
    let planted = format!("{ACCESS}={}; {CSRF}={}", jar.access, other.csrf);
    let long = "a".repeat(8000);
    for (cookies, csrf) in [
        (jar.site(), None),
        (jar.site(), Some("")),
        (jar.site(), Some("not-the-token")),
        (jar.site(), Some(other.csrf.as_str())),
        (planted.clone(), Some(other.csrf.as_str())),
        (jar.site(), Some(&jar.csrf[..63])),
        (jar.site(), Some(long.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = csrf.map(|token| ("x-csrf-token", token)).into_iter().collect();
        for (method, path) in [(Method::PATCH, "/api/v1/auth/me"), (Method::POST, "/api/v1/auth/logout")] {
            let refused = call(&app, method, path, &cookies, &headers).await;
            assert!(set_cookies(&refused).is_empty(), "a CSRF refusal clears nothing");
            assert_error(refused, 403, "csrf_failed").await;
        }
    }
    let me: Value = call(&app, Method::GET, "/api/v1/auth/me", &jar.site(), &[]).await.json().await.unwrap();
    assert_eq!(me["first_name"], "Ada", "nothing changed");

    let changed = call(&app, Method::PATCH, "/api/v1/auth/me", &planted, &[("x-csrf-token", &jar.csrf)]).await;
    assert_eq!(changed.status(), 200, "the header decides, not the CSRF cookie");
    assert_eq!(changed.json::<Value>().await.unwrap()["first_name"], "Changed");
    let sessions = call(&app, Method::GET, "/api/v1/auth/sessions", &jar.site(), &[]).await;
    assert_eq!(sessions.status(), 200, "safe methods need no CSRF token");
    let listed: Vec<Value> = sessions.json().await.unwrap();
    assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1);
}

async fn the_origin_of_a_cookie_call_must_be_the_services_own_or_allowed(backend: Backend) {
    let app = app(backend).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let csrf = ("x-csrf-token", jar.csrf.as_str());
    for origin in ["https://evil.example", "null", "http://localhost:3000.evil.example", "http://localhost:3001"] {
        let refused = call(&app, Method::PATCH, "/api/v1/auth/me", &jar.site(), &[csrf, ("origin", origin)]).await;
        assert_error(refused, 403, "csrf_failed").await;
        let refresh =
            call(&app, Method::POST, "/api/v1/auth/token/refresh", &jar.all(), &[csrf, ("origin", origin)]).await;
        assert_error(refresh, 403, "csrf_failed").await;
    }
    for origin in [ALLOWED_ORIGIN, &app.address] {
        let allowed = call(&app, Method::PATCH, "/api/v1/auth/me", &jar.site(), &[csrf, ("origin", origin)]).await;
        assert_eq!(allowed.status(), 200, "{origin}");
    }
    // A bearer client is no browser: its Origin is not the cookie rule's business.
    let bearer = app.signup("grace@example.com").await.json::<Value>().await.unwrap();
    let patched = app
        .client
        .patch(app.url("/api/v1/auth/me"))
        .bearer_auth(bearer["access"].as_str().unwrap())
        .header("origin", "https://evil.example")
        .json(&json!({ "first_name": "Grace" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
}

async fn an_authorization_header_wins_over_the_cookies(backend: Backend) {
    let app = app(backend).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let grace = app.signup("grace@example.com").await.json::<Value>().await.unwrap();
    let grace_access = format!("Bearer {}", grace["access"].as_str().unwrap());

    let me = call(&app, Method::GET, "/api/v1/auth/me", &jar.site(), &[("authorization", &grace_access)]).await;
    assert_eq!(me.json::<Value>().await.unwrap()["email"], "grace@example.com");
    let patched = call(&app, Method::PATCH, "/api/v1/auth/me", &jar.site(), &[("authorization", &grace_access)]).await;
    assert_eq!(patched.status(), 200, "a bearer call needs no CSRF token");
    assert_eq!(patched.json::<Value>().await.unwrap()["email"], "grace@example.com");

    for header in ["Bearer not.a.token", "Basic YWRhOnB3"] {
        let refused = call(&app, Method::GET, "/api/v1/auth/me", &jar.site(), &[("authorization", header)]).await;
        assert_eq!(refused.status(), 401, "{header}: the cookie does not rescue a bad header");
        assert!(set_cookies(&refused).is_empty(), "nor is it cleared");
    }
    let me = call(&app, Method::GET, "/api/v1/auth/me", &jar.site(), &[]).await;
    assert_eq!(me.json::<Value>().await.unwrap()["first_name"], "Ada", "the cookie's user was never touched");
}

async fn refresh_through_the_cookie_rotates_and_a_reuse_revokes_the_session(backend: Backend) {
    let app = app(backend).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let refresh_only = format!("{REFRESH}={}", jar.refresh);
    let refresh = |cookies: String, csrf: Option<String>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = csrf.iter().map(|token| ("x-csrf-token", token.as_str())).collect();
            let mut request =
                app.client.post(app.url("/api/v1/auth/token/refresh")).header(COOKIE, cookies).json(&json!({}));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.unwrap()
        }
    };

    // Without the session's CSRF token nothing is spent.
    for csrf in [None, Some("forged".to_owned())] {
        let refused = refresh(refresh_only.clone(), csrf).await;
        assert!(set_cookies(&refused).is_empty());
        assert_error(refused, 403, "csrf_failed").await;
    }
    let other = browser_session(&app, "grace@example.com").await;
    assert_error(refresh(refresh_only.clone(), Some(other.csrf.clone())).await, 403, "csrf_failed").await;

    // The access cookie may have expired: the refresh cookie and the CSRF token suffice.
    let rotated = refresh(refresh_only.clone(), Some(jar.csrf.clone())).await;
    assert_eq!(rotated.status(), 200);
    let next = Jar::from(&rotated);
    assert_eq!(attributes(&set_cookies(&rotated)[REFRESH])[2], "Path=/api/v1/auth/token");
    let body: Value = rotated.json().await.unwrap();
    assert_eq!(body["token_type"], "Cookie");
    assert!(body.get("refresh").is_none() && body.get("access").is_none());
    assert_eq!(body["csrf_token"], jar.csrf.as_str(), "one session, one CSRF token");
    assert_ne!(next.refresh, jar.refresh);
    assert_eq!(call(&app, Method::GET, "/api/v1/auth/me", &next.site(), &[]).await.status(), 200);

    // A refresh token from the body may answer in cookies too.
    let (bearer_jar, _) = cookie_login(&app, "ada@example.com").await;
    let by_body =
        app.post("/api/v1/auth/token/refresh", &json!({ "refresh": bearer_jar.refresh, "transport": "cookie" })).await;
    assert_eq!(by_body.status(), 200);
    assert_eq!(set_cookies(&by_body).len(), 3);

    // The spent cookie again, as a thief would replay it: the session dies,
    // and the answer clears the browser's cookies.
    let reused = refresh(refresh_only, Some(jar.csrf.clone())).await;
    let cleared = set_cookies(&reused);
    assert_eq!(cleared.len(), 3);
    assert!(cleared.values().all(|line| line.contains("Max-Age=0")), "{cleared:?}");
    assert_error(reused, 401, "token_reused").await;
    let dead = call(&app, Method::GET, "/api/v1/auth/me", &next.site(), &[]).await;
    assert_eq!(set_cookies(&dead).len(), 3, "a dead session's cookies are cleared");
    assert_error(dead, 401, "token_invalid").await;
    assert_error(refresh(next.all(), Some(next.csrf.clone())).await, 401, "token_invalid").await;

    // No refresh field and no cookie: the field is missing.
    let body = assert_error(refresh(String::new(), None).await, 400, "validation_error").await;
    assert!(body["errors"]["refresh"].is_array());
}

async fn logout_clears_the_cookies_and_a_dead_session_clears_them_too(backend: Backend) {
    let app = app(backend).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let logout = call(&app, Method::POST, "/api/v1/auth/logout", &jar.site(), &[("x-csrf-token", &jar.csrf)]).await;
    assert_eq!(logout.status(), 204);
    let cleared = set_cookies(&logout);
    assert_eq!(cleared.keys().collect::<Vec<_>>(), [ACCESS, CSRF, REFRESH]);
    assert!(cleared.values().all(|line| line.contains("Max-Age=0")));
    assert!(cleared[REFRESH].contains("Path=/api/v1/auth/token"), "cleared where it was set");
    let dead = call(&app, Method::GET, "/api/v1/auth/me", &jar.site(), &[]).await;
    assert_eq!(set_cookies(&dead).len(), 3);
    assert_error(dead, 401, "token_invalid").await;
    let patch = call(&app, Method::PATCH, "/api/v1/auth/me", &jar.site(), &[("x-csrf-token", &jar.csrf)]).await;
    assert_eq!(set_cookies(&patch).len(), 3);
    assert_error(patch, 401, "token_invalid").await;

    // logout/all clears them whatever authenticated it.
    let (second, login) = cookie_login(&app, "ada@example.com").await;
    let bearer = app.login("ada@example.com", PASSWORD).await.json::<Value>().await.unwrap();
    let all = app.post_auth("/api/v1/auth/logout/all", bearer["access"].as_str().unwrap(), &json!({})).await;
    assert_eq!(all.status(), 204);
    assert_eq!(set_cookies(&all).len(), 3);
    assert_eq!(login["user"]["email"], "ada@example.com");
    assert_error(call(&app, Method::GET, "/api/v1/auth/me", &second.site(), &[]).await, 401, "token_invalid").await;
}

async fn bad_cookies_are_refused_in_the_contracts_shape(backend: Backend) {
    let app = app(backend).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let garbage = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    for (cookies, code) in [
        (String::new(), "not_authenticated"),
        (";;; =; ==; ,,\t".to_owned(), "not_authenticated"),
        (format!("{ACCESS}="), "not_authenticated"),
        ("gh_access=x".to_owned(), "not_authenticated"),
        (format!("{ACCESS}={garbage}"), "token_invalid"),
        (format!("{ACCESS}={}", "x".repeat(4000)), "token_invalid"),
        (format!("{ACCESS}={}; {ACCESS}={}", jar.access, jar.access), "token_invalid"),
        (format!("{ACCESS}={garbage}; {ACCESS}={}", jar.access), "token_invalid"),
    ] {
        let response = call(&app, Method::GET, "/api/v1/auth/me", &cookies, &[]).await;
        assert_error(response, 401, code).await;
    }
    // Bytes a header may carry but no cookie should: refused, never a 500.
    let raw = HeaderValue::from_bytes(b"__Host-gh_access=\xff\xfe; x=\x80").unwrap();
    let response = app.client.get(app.url("/api/v1/auth/me")).header(COOKIE, raw).send().await.unwrap();
    assert_error(response, 401, "not_authenticated").await;
    // Someone else's junk beside a good cookie does not break it.
    let with_junk = format!("junk; {}; other=\"quoted\"", jar.site());
    assert_eq!(call(&app, Method::GET, "/api/v1/auth/me", &with_junk, &[]).await.status(), 200);
    let two_refresh = format!("{REFRESH}={}; {REFRESH}=planted", jar.refresh);
    let response =
        call(&app, Method::POST, "/api/v1/auth/token/refresh", &two_refresh, &[("x-csrf-token", &jar.csrf)]).await;
    assert_error(response, 401, "token_invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_secure_cookies_the_names_lose_their_prefixes() {
    let extra = vec![("GATEHOUSE__COOKIES__SECURE".to_owned(), "false".to_owned())];
    let app =
        spawn_app_with(Backend::Sqlite, Options { require_verified_email: Some(false), extra, ..Options::default() })
            .await;
    assert_eq!(app.signup("ada@example.com").await.status(), 201);
    let response = app
        .post("/api/v1/auth/login", &json!({ "email": "ada@example.com", "password": PASSWORD, "transport": "cookie" }))
        .await;
    let cookies = set_cookies(&response);
    assert_eq!(cookies.keys().collect::<Vec<_>>(), ["gh_access", "gh_csrf", "gh_refresh"]);
    assert!(cookies.values().all(|line| !line.contains("Secure")), "{cookies:?}");
    let access = value_of(&cookies["gh_access"]);
    let me = call(&app, Method::GET, "/api/v1/auth/me", &format!("gh_access={access}"), &[]).await;
    assert_eq!(me.status(), 200);
}

async fn tabs_refreshing_by_cookie_together_share_one_successor(backend: Backend) {
    // The default grace window: tabs of one browser refresh at once.
    let app = spawn_app_with(backend, Options { require_verified_email: Some(false), ..Options::default() }).await;
    let jar = browser_session(&app, "ada@example.com").await;
    let cookies = format!("{REFRESH}={}", jar.refresh);
    let tab = || {
        let request = app
            .client
            .post(app.url("/api/v1/auth/token/refresh"))
            .header(COOKIE, cookies.as_str())
            .header("x-csrf-token", jar.csrf.as_str());
        async move { request.send().await.unwrap() }
    };
    let answers = futures_util::future::join_all((0..4).map(|_| tab())).await;
    let successors: Vec<String> = answers
        .iter()
        .map(|answer| {
            assert_eq!(answer.status(), 200);
            value_of(&set_cookies(answer)[REFRESH])
        })
        .collect();
    assert!(successors.iter().all(|next| *next == successors[0] && *next != jar.refresh), "{successors:?}");
    let next = format!("{ACCESS}={}", value_of(&set_cookies(&answers[0])[ACCESS]));
    assert_eq!(call(&app, Method::GET, "/api/v1/auth/me", &next, &[]).await.status(), 200);
}
