//! The admin console over HTTP, as a browser without scripts drives it:
//! cookies kept between requests, forms posted with their hidden fields.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options, TestApp, PASSWORD};
use crate::mfa::{code, enable};
use crate::on_both_stores;

on_both_stores!(
    without_a_session_every_page_is_the_sign_in_form,
    signing_in_refuses_wrong_passwords_forged_forms_and_outside_redirects,
    two_factor_accounts_sign_in_with_a_code,
    an_expired_session_resumes_through_the_refresh_cookie_and_comes_back,
    each_page_and_action_checks_the_apis_permissions,
    forms_without_their_csrf_field_or_from_elsewhere_are_refused,
    a_superuser_signs_in_finds_changes_and_audits_a_user,
    creating_users_and_groups_and_deleting_them_after_a_confirmation,
    hostile_and_stale_input_gets_a_page_never_a_500,
);

pub(crate) const ROOT: &str = "root@example.com";

/// An answer as the console test reads it.
pub(crate) struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The value of the first hidden `name` field.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start =
            self.body.find(&marker).unwrap_or_else(|| panic!("no {name} field in {}", self.body)) + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    pub fn is_sign_in(&self) -> bool {
        self.body.contains("action=\"/admin/login\"") && self.body.contains("name=\"password\"")
    }
}

/// A browser without scripts: a cookie jar that forgets cookies past their
/// `Max-Age` (paths aside), and the forms it posts.
pub(crate) struct Console<'a> {
    pub app: &'a TestApp,
    jar: Mutex<BTreeMap<String, (String, Option<Instant>)>>,
}

impl<'a> Console<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self { app, jar: Mutex::new(BTreeMap::new()) }
    }

    fn live(&self) -> BTreeMap<String, String> {
        let now = Instant::now();
        let jar = self.jar.lock().unwrap();
        let live = jar.iter().filter(|(_, (_, until))| until.is_none_or(|until| until > now));
        live.map(|(name, (value, _))| (name.clone(), value.clone())).collect()
    }

    fn cookie_header(&self) -> String {
        self.live().iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.live().contains_key(name)
    }

    async fn read(&self, response: reqwest::Response) -> Page {
        self.keep_cookies(response.headers());
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Page { status, headers, body: response.text().await.unwrap() }
    }

    fn keep_cookies(&self, headers: &HeaderMap) {
        let mut jar = self.jar.lock().unwrap();
        for set in headers.get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (name, rest) = set.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap();
            let max_age = rest.split("; ").find_map(|attribute| attribute.strip_prefix("Max-Age="));
            let until = max_age.map(|seconds| Instant::now() + Duration::from_secs(seconds.parse().unwrap()));
            jar.insert(name.to_owned(), (value.to_owned(), until));
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.live().remove(name)
    }

    pub async fn get(&self, path: &str) -> Page {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut request = self.app.client.get(self.app.url(path)).header(COOKIE, self.cookie_header());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.read(request.send().await.unwrap()).await
    }

    /// Posts the fields as a form does, from the console's own origin.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_from(path, fields, Some(&self.app.address)).await
    }

    pub async fn post_from(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in fields {
            body.append_pair(name, value);
        }
        let mut request = self
            .app
            .client
            .post(self.app.url(path))
            .header(COOKIE, self.cookie_header())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.finish());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        self.read(request.send().await.unwrap()).await
    }

    /// Signs in through the form of `page` (a sign-in form): the answer.
    pub async fn sign_in_from(&self, page: &Page, email: &str, password: &str) -> Page {
        let (csrf, next) = (page.hidden("csrf_token"), page.hidden("next"));
        let fields = [("csrf_token", csrf.as_str()), ("next", next.as_str()), ("email", email), ("password", password)];
        self.post("/admin/login", &fields).await
    }

    /// Signs in from the start page; panics unless it works.
    pub async fn sign_in(&self, email: &str) {
        let form = self.get("/admin/").await;
        let signed_in = self.sign_in_from(&form, email, PASSWORD).await;
        assert_eq!(signed_in.status, 303, "{}", signed_in.body);
        assert_eq!(signed_in.location(), "/admin/");
    }

    /// The session's CSRF token, from any signed-in page's forms.
    pub async fn csrf(&self) -> String {
        self.get("/admin/").await.hidden("csrf_token")
    }

    /// Posts a form of a signed-in page, with its CSRF token.
    pub async fn submit(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf().await;
        let mut all = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }
}

/// A superuser made by the CLI, and a verified user to manage: the user's id.
pub(crate) async fn root_and_user(app: &TestApp) -> i64 {
    app.superuser_login(ROOT).await;
    let user = app.verified_login("ada@example.com").await;
    user["user"]["id"].as_i64().unwrap()
}

async fn user_by_api(app: &TestApp, id: i64) -> Value {
    let login = app.login(ROOT, PASSWORD).await.json::<Value>().await.unwrap();
    let access = login["access"].as_str().unwrap();
    app.get_auth(&format!("/api/v1/admin/users/{id}"), access).await.json().await.unwrap()
}

async fn without_a_session_every_page_is_the_sign_in_form(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = root_and_user(&app).await;
    let console = Console::new(&app);
    for path in ["/admin/", "/admin/users", &format!("/admin/users/{id}"), "/admin/groups", "/admin/audit", "/admin/x"]
    {
        let page = console.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.is_sign_in(), "{path}: {}", page.body);
        assert!(!page.body.contains("ada@example.com"), "no data without a session");
        assert_eq!(page.hidden("next"), path, "signing in leads back to {path}");
        assert_eq!(page.headers[CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = page.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'") && policy.contains("form-action 'self'"), "{policy}");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert_eq!(page.headers["referrer-policy"], "same-origin", "so that forms are posted with their Origin");
        assert!(page.body.contains("<label for=\"email\">"), "labelled fields");
    }
    assert!(console.has_cookie("__Host-gh_signin"), "the sign-in form's token is in a cookie too");
    let bare = console.get("/admin").await;
    assert_eq!((bare.status, bare.location()), (303, "/admin/"));
    let css = app.client.get(app.url("/admin/console.css")).send().await.unwrap();
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");

    // An action without a session does nothing and shows the sign-in form.
    let posted = console.post(&format!("/admin/users/{id}/delete"), &[]).await;
    assert!(posted.is_sign_in() && posted.status == 200);
    assert_eq!(posted.hidden("next"), format!("/admin/users/{id}"), "back to the page the action was on");
    assert_eq!(user_by_api(&app, id).await["email"], "ada@example.com");
}

async fn signing_in_refuses_wrong_passwords_forged_forms_and_outside_redirects(backend: Backend) {
    let app = spawn_app(backend).await;
    root_and_user(&app).await;
    let console = Console::new(&app);
    let form = console.get("/admin/users?search=ada").await;

    let wrong = console.sign_in_from(&form, ROOT, "not the password at all").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.is_sign_in() && wrong.body.contains("No active account found with the given credentials."));
    assert!(wrong.body.contains("value=\"root@example.com\""), "the address is kept, the password is not");
    assert!(!wrong.body.contains("not the password at all"));

    let fields = |csrf: &'static str| [("csrf_token", csrf), ("email", ROOT), ("password", PASSWORD)];
    let forged = console.post("/admin/login", &fields("made-up")).await;
    assert_eq!(forged.status, 403, "a token that is not the cookie's");
    assert!(forged.is_sign_in() && forged.body.contains("The sign-in form had expired"));
    let csrf = form.hidden("csrf_token");
    let elsewhere = [("csrf_token", csrf.as_str()), ("email", ROOT), ("password", PASSWORD)];
    let cross_site = console.post_from("/admin/login", &elsewhere, Some("https://evil.example")).await;
    assert_eq!(cross_site.status, 403, "another site cannot sign a browser in");
    let cookieless = Console::new(&app).post("/admin/login", &elsewhere).await;
    assert_eq!(cookieless.status, 403, "the token must match this browser's cookie");
    assert!(!console.has_cookie("__Host-gh_access"));

    let signed_in = console.sign_in_from(&form, ROOT, PASSWORD).await;
    assert_eq!(
        (signed_in.status, signed_in.location()),
        (303, "/admin/users?search=ada"),
        "back to the page asked for"
    );
    for name in ["__Host-gh_access", "__Secure-gh_refresh", "__Host-gh_csrf"] {
        assert!(console.has_cookie(name), "the browser session's {name}");
    }
    let list = console.get(signed_in.location()).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("ada@example.com") && list.body.contains("1 in all"), "{}", list.body);

    for next in ["https://evil.example/", "//evil.example/admin/", "/admin/\\evil", "/api/v1/auth/me"] {
        let again = Console::new(&app);
        let form = again.get("/admin/").await;
        let csrf = form.hidden("csrf_token");
        let fields = [("csrf_token", csrf.as_str()), ("next", next), ("email", ROOT), ("password", PASSWORD)];
        let answer = again.post("/admin/login", &fields).await;
        assert_eq!((answer.status, answer.location()), (303, "/admin/"), "{next} is not followed");
    }

    // Signing out ends the session: its token no longer works anywhere.
    let access = console.cookie("__Host-gh_access").unwrap();
    let out = console.submit("/admin/logout", &[]).await;
    assert_eq!((out.status, out.location()), (303, "/admin/?done=signed_out"));
    assert!(!console.has_cookie("__Host-gh_access"));
    let after = console.get(out.location()).await;
    assert!(after.is_sign_in() && after.body.contains("You are signed out."));
    assert_eq!(app.get_auth("/api/v1/auth/me", &access).await.status(), 401);
}

async fn two_factor_accounts_sign_in_with_a_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.superuser_login(ROOT).await;
    let (secret, recovery) = enable(&app, root["access"].as_str().unwrap()).await;
    let console = Console::new(&app);
    let form = console.get("/admin/audit").await;
    let step = console.sign_in_from(&form, ROOT, PASSWORD).await;
    assert_eq!(step.status, 200);
    assert!(step.body.contains("action=\"/admin/login/mfa\"") && !console.has_cookie("__Host-gh_access"));
    let (mfa_token, csrf) = (step.hidden("mfa_token"), step.hidden("csrf_token"));
    let with = |code: String| {
        [
            ("csrf_token", csrf.clone()),
            ("next", "/admin/audit".to_owned()),
            ("mfa_token", mfa_token.clone()),
            ("code", code),
        ]
    };
    let fields = |pairs: &[(&'static str, String); 4]| pairs.iter().map(|(n, v)| (*n, v.clone())).collect::<Vec<_>>();
    let wrong_fields = fields(&with("12345".to_owned()));
    let wrong_refs: Vec<(&str, &str)> = wrong_fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let wrong = console.post("/admin/login/mfa", &wrong_refs).await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.body.contains("This code is wrong, or it was used already."), "{}", wrong.body);
    assert_eq!(wrong.hidden("mfa_token"), mfa_token, "the same step again");
    let right_fields = fields(&with(code(&secret, 1)));
    let right_refs: Vec<(&str, &str)> = right_fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let done = console.post("/admin/login/mfa", &right_refs).await;
    assert_eq!((done.status, done.location()), (303, "/admin/audit"), "{}", done.body);
    assert!(console.has_cookie("__Host-gh_access"));
    let trail = console.get("/admin/audit").await;
    assert!(trail.body.contains("mfa_enabled"), "{}", trail.body);

    // Another account's lost phone: the reset button, its notice and its mail.
    let ada = app.verified_login("ada@example.com").await;
    let ada_id = ada["user"]["id"].as_i64().unwrap();
    enable(&app, ada["access"].as_str().unwrap()).await;
    let page = console.get(&format!("/admin/users/{ada_id}")).await;
    assert!(page.body.contains(&format!("action=\"/admin/users/{ada_id}/mfa/reset\"")));
    let reset = console.submit(&format!("/admin/users/{ada_id}/mfa/reset"), &[]).await;
    assert_eq!(reset.location(), format!("/admin/users/{ada_id}?done=mfa_reset"));
    let page = console.get(reset.location()).await;
    assert!(page.body.contains("Two-factor authentication is off for this user"));
    assert!(!page.body.contains("/mfa/reset"), "nothing left to turn off");
    let mails = app.wait_for_mails("ada@example.com", 3).await;
    assert!(mails.iter().any(|mail| mail.subject().to_lowercase().contains("two-factor")), "ada is told");
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.json::<Value>().await.unwrap()["user"]["mfa_enabled"],
        false
    );

    // A recovery code works as well; a spent mfa_token starts over.
    let other = Console::new(&app);
    let form = other.get("/admin/").await;
    let step = other.sign_in_from(&form, ROOT, PASSWORD).await;
    let (mfa_token, csrf) = (step.hidden("mfa_token"), step.hidden("csrf_token"));
    let fields = [("csrf_token", csrf.as_str()), ("mfa_token", mfa_token.as_str()), ("code", recovery[0].as_str())];
    assert_eq!(other.post("/admin/login/mfa", &fields).await.status, 303);
    let replay = other.post("/admin/login/mfa", &fields).await;
    assert_eq!(replay.status, 401);
    assert!(replay.is_sign_in(), "a used mfa_token leads back to the password");
}

async fn an_expired_session_resumes_through_the_refresh_cookie_and_comes_back(backend: Backend) {
    let short = vec![("GATEHOUSE__AUTH__ACCESS_TTL_SECONDS".to_owned(), "1".to_owned())];
    let app = spawn_app_with(backend, Options { extra: short, ..Options::default() }).await;
    root_and_user(&app).await;
    let console = Console::new(&app);
    console.sign_in(ROOT).await;
    let expire = || tokio::time::sleep(Duration::from_millis(2_100));
    expire().await;

    let page = console.get("/admin/users?search=ada").await;
    assert_eq!(page.status, 303, "an expired access cookie is no reason to sign in again");
    assert_eq!(page.location(), "/api/v1/auth/token/resume?next=%2Fadmin%2Fusers%3Fsearch%3Dada");
    let spent = console.cookie("__Secure-gh_refresh");
    let resumed = console.get_with(page.location(), &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!((resumed.status, resumed.location()), (303, "/admin/users?search=ada"));
    assert_eq!(resumed.headers["cache-control"], "no-store");
    assert_ne!(console.cookie("__Secure-gh_refresh"), spent, "the refresh cookie was spent for a new one");
    let back = console.get(resumed.location()).await;
    assert_eq!(back.status, 200);
    assert!(back.body.contains("ada@example.com"));

    // Another site cannot make the browser spend its session: nothing is
    // spent, nothing cleared.
    expire().await;
    assert!(!console.has_cookie("__Host-gh_access"), "the access cookie is gone with its token");
    let held = console.cookie("__Secure-gh_refresh");
    let page = console.get("/admin/").await;
    assert_eq!(page.status, 303, "the CSRF cookie says there is a session to resume");
    let refused = console.get_with(page.location(), &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!((refused.status, refused.location()), (303, "/admin/"));
    assert_eq!(console.cookie("__Secure-gh_refresh"), held, "not spent");
    assert!(refused.headers.get(SET_COOKIE).is_none(), "nothing cleared");

    // A session that cannot go on (here: signed out elsewhere) clears the
    // cookies, and the console asks to sign in rather than come back.
    let root = app.login(ROOT, PASSWORD).await.json::<Value>().await.unwrap();
    let everywhere = app.post_auth("/api/v1/auth/logout/all", root["access"].as_str().unwrap(), &json!({})).await;
    assert_eq!(everywhere.status(), 204);
    let ended = console.get_with(page.location(), &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!((ended.status, ended.location()), (303, "/admin/"));
    assert!(!console.has_cookie("__Host-gh_csrf") && !console.has_cookie("__Secure-gh_refresh"));
    assert!(console.get("/admin/").await.is_sign_in());
    for next in ["https://evil.example/", "//evil.example", "/api/v1/auth/me"] {
        let path = format!(
            "/api/v1/auth/token/resume?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        assert_eq!(console.get(&path).await.location(), "/admin/", "{next} is not followed");
    }
}

/// A user in a group of `permissions`, signed in to the console.
async fn operator_with<'a>(app: &'a TestApp, root_access: &str, email: &str, permissions: &[&str]) -> Console<'a> {
    let group = format!("holders of {}", permissions.join(" "));
    let created =
        app.post_auth("/api/v1/admin/groups", root_access, &json!({ "name": group, "permissions": permissions })).await;
    assert_eq!(created.status(), 201);
    let body = json!({ "email": email, "password": PASSWORD, "is_verified": true, "groups": [group] });
    assert_eq!(app.post_auth("/api/v1/admin/users", root_access, &body).await.status(), 201);
    let console = Console::new(app);
    console.sign_in(email).await;
    console
}

async fn each_page_and_action_checks_the_apis_permissions(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = root_and_user(&app).await;
    let root = app.login(ROOT, PASSWORD).await.json::<Value>().await.unwrap();
    let access = root["access"].as_str().unwrap();
    let viewer = operator_with(&app, access, "viewer@example.com", &["users.view"]).await;

    let page = viewer.get(&format!("/admin/users/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("ada@example.com"));
    assert!(!page.body.contains(&format!("action=\"/admin/users/{id}\"")), "no edit form without users.change");
    assert!(!page.body.contains("/sessions/revoke") && !page.body.contains("/delete"));
    assert!(!page.body.contains("href=\"/admin/groups\"") && !page.body.contains("href=\"/admin/audit\""));
    let forged =
        viewer.submit(&format!("/admin/users/{id}"), &[("email", "ada@example.com"), ("first_name", "X")]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("You do not have permission"));
    for path in
        ["/admin/groups", "/admin/groups/1", "/admin/audit", "/admin/users/new", &format!("/admin/users/{id}/delete")]
    {
        let refused = viewer.get(path).await;
        assert_eq!(refused.status, 403, "{path}");
        assert!(!refused.body.contains("Regular User") && !refused.body.contains("login_succeeded"), "{path}");
    }
    for (path, fields) in [
        (format!("/admin/users/{id}/delete"), vec![]),
        (format!("/admin/users/{id}/sessions/revoke"), vec![]),
        ("/admin/users/new".to_owned(), vec![("email", "new@example.com")]),
        ("/admin/groups".to_owned(), vec![("name", "Mine"), ("permissions", "users.delete")]),
    ] {
        assert_eq!(viewer.submit(&path, &fields).await.status, 403, "{path}");
    }
    assert_eq!(user_by_api(&app, id).await["first_name"], "Ada", "nothing changed");

    let auditor = operator_with(&app, access, "auditor@example.com", &["audit.view"]).await;
    let users = auditor.get("/admin/users").await;
    assert_eq!(users.status, 403);
    assert!(!users.body.contains("ada@example.com"));
    assert_eq!(auditor.get("/admin/audit").await.status, 200);

    let nobody = Console::new(&app);
    nobody.sign_in("ada@example.com").await;
    let home = nobody.get("/admin/").await;
    assert_eq!(home.status, 403, "a signed-in account without any admin permission");
    assert!(home.body.contains("no administrator permission") && home.body.contains("action=\"/admin/logout\""));
}

async fn forms_without_their_csrf_field_or_from_elsewhere_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = root_and_user(&app).await;
    let console = Console::new(&app);
    console.sign_in(ROOT).await;
    let path = format!("/admin/users/{id}");
    let change = [("email", "ada@example.com"), ("first_name", "Forged"), ("is_active", "on"), ("is_verified", "on")];

    let missing = console.post(&path, &change).await;
    assert_eq!(missing.status, 403, "no csrf_token field");
    assert!(missing.body.contains("This form has expired or was sent from another site."));
    let mut wrong = vec![("csrf_token", "not-the-sessions-token")];
    wrong.extend_from_slice(&change);
    assert_eq!(console.post(&path, &wrong).await.status, 403);
    let csrf = console.csrf().await;
    let mut right = vec![("csrf_token", csrf.as_str())];
    right.extend_from_slice(&change);
    assert_eq!(console.post_from(&path, &right, Some("https://evil.example")).await.status, 403, "another origin");
    assert_eq!(console.post_from(&path, &right, Some("null")).await.status, 403);
    let json = app
        .client
        .post(app.url(&path))
        .header(COOKIE, console.cookie_header())
        .header(CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 415);
    assert_eq!(user_by_api(&app, id).await["first_name"], "Ada", "nothing was changed");

    let saved = console.post(&path, &right).await;
    assert_eq!((saved.status, saved.location()), (303, format!("{path}?done=saved").as_str()), "{}", saved.body);
    assert_eq!(user_by_api(&app, id).await["first_name"], "Forged");
}

async fn a_superuser_signs_in_finds_changes_and_audits_a_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = root_and_user(&app).await;
    let console = Console::new(&app);
    console.sign_in(ROOT).await;

    let home = console.get("/admin/").await;
    assert_eq!(home.status, 200);
    for section in ["/admin/users", "/admin/groups", "/admin/audit"] {
        assert!(home.body.contains(&format!("href=\"{section}\"")), "{section}");
    }
    let found = console.get("/admin/users?search=ADA&is_active=true&ordering=email").await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains(&format!("href=\"/admin/users/{id}\"")) && found.body.contains("1 in all"));
    assert!(found.body.contains("<option value=\"email\" selected>"), "the form keeps the ordering");
    let none = console.get("/admin/users?search=nobody&is_staff=true").await;
    assert!(none.body.contains("No user matches."));
    let paged = console.get("/admin/users?page_size=1&ordering=email").await;
    assert!(paged.body.contains("Page 1 of 2") && paged.body.contains("page_size=1"), "{}", paged.body);
    assert!(paged.body.contains("ordering=email&amp;page_size=1&amp;page=2"), "the next page keeps the filters");

    let page = console.get(&format!("/admin/users/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("action=\"/admin/users/{id}\"")), "the edit form");
    let csrf = page.hidden("csrf_token");
    let change = [
        ("csrf_token", csrf.as_str()),
        ("email", "ada@example.com"),
        ("first_name", "Augusta"),
        ("last_name", "King"),
        ("is_verified", "on"),
        ("groups", "Regular User"),
        ("groups", "Admin User"),
        ("profile.phone", "+441234567890"),
        ("profile.gender", ""),
        ("profile.bio", "Analyst"),
    ];
    let saved = console.post(&format!("/admin/users/{id}"), &change).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let shown = console.get(saved.location()).await;
    assert!(shown.body.contains("The changes are saved."));
    let user = user_by_api(&app, id).await;
    assert_eq!((user["first_name"].as_str(), user["last_name"].as_str()), (Some("Augusta"), Some("King")));
    assert_eq!(user["is_active"], false, "an unticked box is off");
    assert_eq!(user["groups"], json!(["Admin User", "Regular User"]));
    assert_eq!(user["profile"]["phone"], "+441234567890");
    assert_eq!(user["profile"]["bio"], "Analyst");
    let again = console.post(&format!("/admin/users/{id}"), &change).await;
    assert!(again.location().ends_with("?done=unchanged"), "the same form twice changes nothing more");

    let trail = console.get(&format!("/admin/audit?user={id}&event=admin_action")).await;
    assert_eq!(trail.status, 200);
    assert!(trail.body.contains("user.update") && trail.body.contains("is_active"), "{}", trail.body);
    assert_eq!(trail.body.matches("user.update").count(), 1, "one audited change, not two");

    let revoked = console.submit(&format!("/admin/users/{id}/sessions/revoke"), &[]).await;
    assert!(revoked.location().ends_with("?done=sessions_revoked"));
    let events = console.get(&format!("/admin/audit?user={id}")).await;
    assert!(events.body.contains("user.sessions_revoke"));
}

async fn creating_users_and_groups_and_deleting_them_after_a_confirmation(backend: Backend) {
    let app = spawn_app_with(backend, Options::default()).await;
    app.superuser_login(ROOT).await;
    let console = Console::new(&app);
    console.sign_in(ROOT).await;

    let form = console.get("/admin/users/new").await;
    assert!(form.body.contains("name=\"is_active\" value=\"on\" checked"), "active unless unticked");
    let create = [("email", "grace@example.com"), ("first_name", "Grace"), ("is_active", "on"), ("is_verified", "on")];
    let created = console.submit("/admin/users/new", &create).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let id: i64 = created.location().trim_start_matches("/admin/users/").split('?').next().unwrap().parse().unwrap();
    assert!(app.wait_for_mails("grace@example.com", 1).await[0].subject().contains("invited"), "an invitation");
    let twice = console.submit("/admin/users/new", &create).await;
    assert_eq!(twice.status, 400, "a double-submitted form");
    assert!(twice.body.contains("A user with this email already exists."));
    let weak = [("email", "weak@example.com"), ("password", "password"), ("is_active", "on")];
    let refused = console.submit("/admin/users/new", &weak).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("id=\"password-errors\""), "beside its field: {}", refused.body);
    assert!(!refused.body.contains("value=\"password\""), "a password is never shown again");

    let confirm = console.get(&format!("/admin/users/{id}/delete")).await;
    assert!(confirm.body.contains("It cannot be undone.") && confirm.body.contains("grace@example.com"));
    assert_eq!(user_by_api(&app, id).await["email"], "grace@example.com", "asking deletes nothing");
    let deleted = console.submit(&format!("/admin/users/{id}/delete"), &[]).await;
    assert_eq!(deleted.location(), "/admin/users?done=deleted");
    assert_eq!(user_by_api(&app, id).await["code"], "not_found");

    let group = console.submit("/admin/groups", &[("name", "Support"), ("permissions", "users.view")]).await;
    assert_eq!(group.status, 303, "{}", group.body);
    let group_path = group.location().split('?').next().unwrap().to_owned();
    let taken = console.submit("/admin/groups", &[("name", "Support")]).await;
    assert_eq!(taken.status, 400);
    assert!(taken.body.contains("A group with this name already exists."));
    let unknown = console.submit("/admin/groups", &[("name", "Odd"), ("permissions", "coffee.make")]).await;
    assert!(unknown.body.contains("There is no permission named"));
    let renamed = console
        .submit(&group_path, &[("name", "Helpdesk"), ("permissions", "users.view"), ("permissions", "audit.view")])
        .await;
    assert_eq!(renamed.status, 303);
    let shown = console.get(&group_path).await;
    assert!(shown.body.contains("Helpdesk") && shown.body.contains("users.view, audit.view"), "{}", shown.body);
    let list = console.get("/admin/groups").await;
    let built_in = list.body.split("href=\"").find(|link| link.contains(">Regular User<")).unwrap();
    let built_in_path = built_in.split('"').next().unwrap();
    let fixed = console.get(built_in_path).await;
    assert!(fixed.body.contains("cannot be changed") && !fixed.body.contains("name=\"permissions\""));
    let confirm = console.get(&format!("{group_path}/delete")).await;
    assert!(confirm.body.contains("This deletes the group <strong>Helpdesk</strong>"), "{}", confirm.body);
    assert_eq!(console.submit(&format!("{group_path}/delete"), &[]).await.location(), "/admin/groups?done=deleted");
    assert_eq!(console.get(&group_path).await.status, 404);
}

async fn hostile_and_stale_input_gets_a_page_never_a_500(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = root_and_user(&app).await;
    let console = Console::new(&app);
    console.sign_in(ROOT).await;

    let nul = console.get("/admin/users?search=a%00b").await;
    assert_eq!(nul.status, 400);
    assert!(nul.body.contains("Remove the control characters"), "{}", nul.body);
    for search in ["%25", "_", "%_%", "<script>alert(1)</script>"] {
        let page = console
            .get(&format!(
                "/admin/users?search={}",
                url::form_urlencoded::byte_serialize(search.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(page.status, 200, "{search}");
        assert!(page.body.contains("No user matches."), "{search} is literal");
        assert!(!page.body.contains("<script>"), "escaped");
    }
    let long = console.get(&format!("/admin/users?search={}", "x".repeat(10_000))).await;
    assert_eq!(long.status, 200);
    for query in ["is_active=maybe", "page=0", "page_size=-1", "ordering=password"] {
        let bad = console.get(&format!("/admin/users?{query}")).await;
        assert_eq!(bad.status, 400, "{query}");
        assert!(bad.body.contains("class=\"errors\""), "{query}: a message beside the filter");
    }
    let bad_audit = console.get("/admin/audit?user=ada&event=coffee").await;
    assert_eq!(bad_audit.status, 400);
    assert!(bad_audit.body.contains("Unknown event name."));

    for path in ["/admin/users/abc", "/admin/users/99999999", "/admin/users/-1", "/admin/groups/x", "/admin/users/1%00"]
    {
        let page = console.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(page.body.contains("There is no such"), "{path}");
    }
    let forged_groups = [("email", "ada@example.com"), ("is_active", "on"), ("groups", "Wizards\u{0}")];
    let refused = console.submit(&format!("/admin/users/{id}"), &forged_groups).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("There is no group named"), "{}", refused.body);
    let names = [("email", "ada@example.com"), ("first_name", "A\u{0}da"), ("profile.phone", "12")];
    let refused = console.submit(&format!("/admin/users/{id}"), &names).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("first_name-errors") && refused.body.contains("profile.phone-errors"));
    assert_eq!(user_by_api(&app, id).await["first_name"], "Ada", "nothing half-written");

    // The same page, after someone else deleted the user.
    let csrf = console.csrf().await;
    assert_eq!(console.submit(&format!("/admin/users/{id}/delete"), &[]).await.status, 303);
    let stale =
        console.post(&format!("/admin/users/{id}"), &[("csrf_token", csrf.as_str()), ("first_name", "Late")]).await;
    assert_eq!(stale.status, 404);
    assert!(stale.body.contains("It may have been deleted since the page was loaded."));
    let twice = console.submit(&format!("/admin/users/{id}/delete"), &[]).await;
    assert_eq!(twice.status, 404, "a double-submitted delete");
    // The same form sent eight times at once (a double click, a retrying proxy): one user.
    let csrf = console.csrf().await;
    let form = [("csrf_token", csrf.as_str()), ("email", "twin@example.com"), ("is_active", "on")];
    let answers = futures_util::future::join_all((0..8).map(|_| console.post("/admin/users/new", &form))).await;
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses.iter().filter(|status| **status == 303).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|status| *status == 303 || *status == 400), "{statuses:?}");
    let huge = console.submit("/admin/users/new", &[("email", &"a".repeat(70_000))]).await;
    assert_eq!(huge.status, 413);
}
