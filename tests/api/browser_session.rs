//! A browser session in a real browser: headless Chromium, driven over
//! WebDriver, runs a page on a second local origin (allowed in
//! `cors.origins`) that logs in with the cookie transport and
//! `credentials: "include"`, reads and changes the account with the CSRF
//! header, fails without it, refreshes and logs out — and never sees a token.

use serde_json::{json, Value};

use crate::helpers::{serve_page, spawn_app_with, Backend, Browser, Options, PASSWORD};
use crate::on_both_stores;

on_both_stores!(a_page_on_another_origin_holds_a_session_it_cannot_read);

/// The frontend: nothing but a page for the scripts below to run in.
const PAGE: &str = "<!doctype html><html><head><title>frontend</title></head><body>frontend</body></html>";

/// `call(method, path, body, headers)`: a fetch to the service with the
/// browser's cookies, answered as `{ status, body }`.
const CALL: &str = r#"
const call = async (method, path, body, headers = {}) => {
  const init = { method, credentials: "include", headers: { ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(api + path, init);
  const text = await response.text();
  let parsed = null;
  try { parsed = JSON.parse(text); } catch (_) {}
  return { status: response.status, body: parsed };
};
"#;

/// Logs in by cookie, reads `/me`, changes a name with and without the CSRF header.
const SIGN_IN: &str = r#"
const [api, email, password, done] = arguments;
(async () => {
  const steps = {};
  steps.login = await call("POST", "/api/v1/auth/login", { email, password, transport: "cookie" });
  const csrf = steps.login.body && steps.login.body.csrf_token;
  steps.me = await call("GET", "/api/v1/auth/me");
  steps.with_csrf = await call("PATCH", "/api/v1/auth/me", { first_name: "Browser" }, { "X-CSRF-Token": csrf });
  steps.without_csrf = await call("PATCH", "/api/v1/auth/me", { first_name: "Forged" });
  steps.document_cookie = document.cookie;
  return steps;
})().then(done, (error) => done({ error: String(error) }));
"#;

/// Refreshes by cookie (no body field), then logs out.
const REFRESH_AND_LEAVE: &str = r#"
const [api, csrf, done] = arguments;
(async () => {
  const steps = {};
  steps.refresh_without_csrf = await call("POST", "/api/v1/auth/token/refresh", {});
  steps.refresh = await call("POST", "/api/v1/auth/token/refresh", {}, { "X-CSRF-Token": csrf });
  steps.me = await call("GET", "/api/v1/auth/me");
  steps.logout = await call("POST", "/api/v1/auth/logout", undefined, { "X-CSRF-Token": csrf });
  steps.me_after_logout = await call("GET", "/api/v1/auth/me");
  steps.document_cookie = document.cookie;
  return steps;
})().then(done, (error) => done({ error: String(error) }));
"#;

async fn a_page_on_another_origin_holds_a_session_it_cannot_read(backend: Backend) {
    let page_port = serve_page(PAGE).await;
    let frontend = format!("http://localhost:{page_port}");
    let extra = vec![("GATEHOUSE_CORS_ORIGINS".to_owned(), frontend.clone())];
    let app =
        spawn_app_with(backend, Options { require_verified_email: Some(false), extra, ..Options::default() }).await;
    assert_eq!(app.signup("ada@example.com").await.status(), 201);
    // The service as the browser reaches it: localhost too, so the page and
    // the service are one site on two origins (SameSite cookies travel).
    let api = app.address.replace("127.0.0.1", "localhost");

    let browser = Browser::start().await;
    let run = async {
        browser.client.goto(&format!("{frontend}/")).await.expect("the frontend page loads");
        let script = format!("{CALL}{SIGN_IN}");
        let signed_in =
            browser.client.execute_async(&script, vec![json!(api), json!("ada@example.com"), json!(PASSWORD)]);
        let signed_in = signed_in.await.expect("the sign-in script runs");
        let held = browser.client.get_all_cookies().await.expect("the browser lists its cookies");
        let csrf = signed_in["login"]["body"]["csrf_token"].clone();
        let script = format!("{CALL}{REFRESH_AND_LEAVE}");
        let left = browser.client.execute_async(&script, vec![json!(api), csrf]).await.expect("the script runs");
        (signed_in, held, left)
    };
    let (signed_in, held, left) = run.await;
    browser.close().await;

    assert!(signed_in.get("error").is_none(), "{signed_in}");
    let login = &signed_in["login"];
    assert_eq!(login["status"], 200, "{signed_in}");
    assert_eq!(login["body"]["token_type"], "Cookie");
    assert!(login["body"].get("access").is_none() && login["body"].get("refresh").is_none());
    let csrf = login["body"]["csrf_token"].as_str().unwrap();
    assert_eq!(signed_in["me"]["status"], 200, "the access cookie authenticates: {signed_in}");
    assert_eq!(signed_in["me"]["body"]["email"], "ada@example.com");
    assert_eq!(signed_in["with_csrf"]["status"], 200, "{signed_in}");
    assert_eq!(signed_in["with_csrf"]["body"]["first_name"], "Browser");
    assert_eq!(signed_in["without_csrf"]["status"], 403);
    assert_eq!(signed_in["without_csrf"]["body"]["code"], "csrf_failed");

    // Scripts see the CSRF token and nothing else of the session.
    let document_cookie = signed_in["document_cookie"].as_str().unwrap();
    assert!(document_cookie.contains(&format!("__Host-gh_csrf={csrf}")), "{document_cookie}");
    assert!(!document_cookie.contains("gh_access") && !document_cookie.contains("gh_refresh"), "{document_cookie}");
    assert!(!document_cookie.contains("eyJ"), "no JWT is readable: {document_cookie}");
    let access =
        held.iter().find(|cookie| cookie.name() == "__Host-gh_access").expect("the browser keeps the access cookie");
    assert_eq!((access.http_only(), access.secure()), (Some(true), Some(true)));
    assert!(access.value().starts_with("eyJ"), "the access cookie is the JWT");

    assert!(left.get("error").is_none(), "{left}");
    assert_eq!(left["refresh_without_csrf"]["status"], 403, "{left}");
    assert_eq!(left["refresh"]["status"], 200, "the refresh cookie travels to its path: {left}");
    assert_eq!(left["refresh"]["body"]["token_type"], "Cookie");
    assert_eq!(left["me"]["status"], 200);
    assert_eq!(left["logout"]["status"], 204);
    assert_eq!(left["me_after_logout"]["status"], 401, "logout cleared the cookies: {left}");
    assert_eq!(left["me_after_logout"]["body"]["code"], "not_authenticated");
    assert_eq!(left["document_cookie"], "", "{left}");

    let me = app.login("ada@example.com", PASSWORD).await.json::<Value>().await.unwrap();
    assert_eq!(me["user"]["first_name"], "Browser", "only the change with the CSRF header was made");
}
