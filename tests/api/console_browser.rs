//! The admin console in a real browser: headless Chromium, driven over
//! WebDriver, signs in as the superuser, searches a user, deactivates them
//! and finds the change in the audit trail, on a desktop window and a
//! phone-sized one, loading nothing from elsewhere. The users list and the
//! user page are saved as screenshots under `target/test-artifacts/`.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use crate::console::{root_and_user, ROOT};
use crate::helpers::{spawn_app, spawn_app_with, Backend, Browser, Options, TestApp, PASSWORD};
use crate::on_both_stores;

on_both_stores!(an_operator_deactivates_a_user_in_a_real_browser, an_expired_session_comes_back_in_a_real_browser);

/// Where the screenshots go: `GATEHOUSE_TEST_ARTIFACTS`, or the workspace's `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts"));
    std::fs::create_dir_all(&dir).expect("the artifacts directory can be made");
    dir
}

/// What the current page is made of: every resource it loaded, its scripts,
/// and whether it fits the window's width.
const PAGE_FACTS: &str = r#"
return {
  resources: performance.getEntriesByType("resource").map((entry) => entry.name),
  scripts: document.querySelectorAll("script").length,
  stylesheet: getComputedStyle(document.body).backgroundColor,
  fits: document.documentElement.scrollWidth <= window.innerWidth,
};
"#;

/// Checks the page loads only from `origin`, runs no script and fits its window.
async fn check_page(client: &Client, origin: &str, what: &str) {
    let facts = client.execute(PAGE_FACTS, vec![]).await.expect("the page can be inspected");
    let resources = facts["resources"].as_array().unwrap();
    assert!(!resources.is_empty(), "{what}: the stylesheet is loaded");
    for resource in resources {
        assert!(resource.as_str().unwrap().starts_with(&format!("{origin}/admin/")), "{what} loads {resource}");
    }
    assert_eq!(facts["scripts"], 0, "{what}: no script");
    assert_ne!(facts["stylesheet"], "rgba(0, 0, 0, 0)", "{what}: the console's styles apply");
    assert_eq!(facts["fits"], true, "{what}: no sideways scrolling");
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{name}: a real picture");
    std::fs::write(artifacts().join(format!("{name}.png")), png).expect("the screenshot is saved");
}

/// Waits for an element of the next page, after a click that navigates.
async fn find(client: &Client, css: &str) -> fantoccini::elements::Element {
    match client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await {
        Ok(element) => element,
        Err(error) => {
            let page = client.source().await.unwrap_or_default();
            panic!("no {css} on the page ({error}): {page}");
        }
    }
}

async fn an_operator_deactivates_a_user_in_a_real_browser(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = root_and_user(&app).await;
    // localhost: a secure context, where Chromium keeps the Secure cookies over plain HTTP.
    let origin = app.address.replace("127.0.0.1", "localhost");
    let browser = Browser::start().await;
    let outcome = drive(&browser.client, &origin, id).await;
    browser.close().await;
    outcome.unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(user(&app, id).await["is_active"], false, "the change reached the store");
}

/// Signs in as the superuser through the console's form.
async fn sign_in(client: &Client, origin: &str) -> Result<(), String> {
    client.goto(&format!("{origin}/admin/")).await.map_err(|e| e.to_string())?;
    find(client, "input[name=email]").await.send_keys(ROOT).await.map_err(|e| e.to_string())?;
    find(client, "input[name=password]").await.send_keys(PASSWORD).await.map_err(|e| e.to_string())?;
    find(client, "form[action='/admin/login'] button").await.click().await.map_err(|e| e.to_string())?;
    find(client, "header nav").await;
    Ok(())
}

async fn drive(client: &Client, origin: &str, id: i64) -> Result<(), String> {
    client.set_window_size(1280, 900).await.map_err(|e| e.to_string())?;
    sign_in(client, origin).await?;

    find(client, "nav a[href='/admin/users']").await.click().await.map_err(|e| e.to_string())?;
    find(client, "input[name=search]").await.send_keys("ada").await.map_err(|e| e.to_string())?;
    find(client, "form[role=search] button").await.click().await.map_err(|e| e.to_string())?;
    let searched = format!("{origin}/admin/users?search=ada&is_active=&is_verified=&is_staff=&ordering=");
    let searched = url::Url::parse(&searched).map_err(|e| e.to_string())?;
    client.wait().at_most(Duration::from_secs(10)).for_url(&searched).await.map_err(|e| e.to_string())?;
    let link = find(client, &format!("table a[href='/admin/users/{id}']")).await;
    check_page(client, origin, "the users list").await;
    screenshot(client, "console-users").await;

    link.click().await.map_err(|e| e.to_string())?;
    let active = find(client, "input[name=is_active]").await;
    assert!(active.is_selected().await.map_err(|e| e.to_string())?, "ada is active");
    check_page(client, origin, "the user page").await;
    screenshot(client, "console-user").await;
    active.click().await.map_err(|e| e.to_string())?;
    let save = find(client, &format!("form[action='/admin/users/{id}'] button[type=submit]")).await;
    save.click().await.map_err(|e| e.to_string())?;
    let notice = find(client, "p.notice").await.text().await.map_err(|e| e.to_string())?;
    assert_eq!(notice, "The changes are saved.");
    let active = find(client, "input[name=is_active]").await;
    assert!(!active.is_selected().await.map_err(|e| e.to_string())?, "ada is inactive now");

    find(client, &format!("a[href='/admin/audit?user={id}']")).await.click().await.map_err(|e| e.to_string())?;
    let trail = find(client, "table tbody").await.text().await.map_err(|e| e.to_string())?;
    assert!(trail.contains("admin_action"), "{trail}");
    let detail = find(client, "table tbody tr td code").await.text().await.map_err(|e| e.to_string())?;
    assert!(detail.contains("user.update") && detail.contains("is_active"), "{detail}");
    check_page(client, origin, "the audit trail").await;

    // A phone's width: the same pages fit without sideways scrolling.
    client.set_window_size(390, 844).await.map_err(|e| e.to_string())?;
    for page in [format!("/admin/users/{id}"), "/admin/audit".to_owned(), "/admin/users".to_owned()] {
        client.goto(&format!("{origin}{page}")).await.map_err(|e| e.to_string())?;
        find(client, "main h1").await;
        check_page(client, origin, &format!("{page} on a phone")).await;
    }
    screenshot(client, "console-users-phone").await;
    Ok(())
}

/// With access tokens of two seconds, a page opened after its access cookie
/// expired still opens: the browser takes the refresh cookie to its path and back.
async fn an_expired_session_comes_back_in_a_real_browser(backend: Backend) {
    let short = vec![("GATEHOUSE__AUTH__ACCESS_TTL_SECONDS".to_owned(), "2".to_owned())];
    let app = spawn_app_with(backend, Options { extra: short, ..Options::default() }).await;
    let id = root_and_user(&app).await;
    let origin = app.address.replace("127.0.0.1", "localhost");
    let browser = Browser::start().await;
    let outcome = async {
        sign_in(&browser.client, &origin).await?;
        let before = access_cookie(&browser.client).await;
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        browser.client.goto(&format!("{origin}/admin/users/{id}")).await.map_err(|e| e.to_string())?;
        find(&browser.client, "input[name=is_active]").await;
        let url = browser.client.current_url().await.map_err(|e| e.to_string())?;
        assert_eq!(url.path(), format!("/admin/users/{id}"), "back on the page asked for");
        assert_ne!(access_cookie(&browser.client).await, before, "a new access cookie");
        Ok::<(), String>(())
    }
    .await;
    browser.close().await;
    outcome.unwrap_or_else(|failure| panic!("{failure}"));
}

async fn access_cookie(client: &Client) -> Option<String> {
    let cookies = client.get_all_cookies().await.ok()?;
    cookies.iter().find(|cookie| cookie.name() == "__Host-gh_access").map(|cookie| cookie.value().to_owned())
}

async fn user(app: &TestApp, id: i64) -> Value {
    let login = app.post("/api/v1/auth/login", &json!({ "email": ROOT, "password": PASSWORD })).await;
    let access = login.json::<Value>().await.unwrap()["access"].as_str().unwrap().to_owned();
    app.get_auth(&format!("/api/v1/admin/users/{id}"), &access).await.json().await.unwrap()
}
