//! `spawn_app()`: the real service on port 0 with a fresh database and a real
//! SMTP server on loopback, driven over HTTP like a frontend would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use gatehouse_api::{Application, Settings};
use mailin_embedded::response::{self, Response};
use mailin_embedded::{Handler, Server};
use serde_json::{json, Value};

/// The HS256 key of every test service, so tests can forge tokens.
pub const JWT_SECRET: &str = "black-box-test-secret-of-at-least-32-bytes";
pub const FRONTEND: &str = "https://app.example.test";
/// The key that seals every test service's TOTP secrets.
pub const MFA_KEY: &str = "black-box-test-totp-sealing-key-of-32-bytes";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Quiet logs unless TEST_LOG=1.
fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
            let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
        }
    });
}

/// One received message: its recipients and raw text.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub raw: String,
}

impl Mail {
    /// The `token` query parameter of the first link to the frontend.
    pub fn link_token(&self, page: &str) -> String {
        let marker = format!("{FRONTEND}/{page}?token=");
        let start =
            self.raw.find(&marker).unwrap_or_else(|| panic!("no {marker} link in:\n{}", self.raw)) + marker.len();
        self.raw[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
    }

    pub fn subject(&self) -> &str {
        self.raw.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default()
    }
}

/// The received mail, shared; each connection's message in progress is its own
/// (the server clones the handler for every connection).
#[derive(Clone, Default)]
struct Inbox {
    /// How long the server takes over each message, as a slow server would.
    delay: Duration,
    mails: Arc<Mutex<Vec<Mail>>>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Inbox {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        std::thread::sleep(self.delay);
        let raw = String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned();
        let to = std::mem::take(&mut self.to);
        self.mails.lock().unwrap().push(Mail { to, raw });
        response::OK
    }
}

/// A real SMTP server on a loopback port, on its own thread (it never returns).
fn smtp_server(delay: Duration) -> (u16, Inbox) {
    let inbox = Inbox { delay, ..Inbox::default() };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = Server::new(inbox.clone());
    server.with_name("localhost").with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (port, inbox)
}

pub struct TestApp {
    pub address: String,
    /// The port of this test's SMTP server.
    pub smtp_port: u16,
    /// Where `/metrics` is served when it has an address of its own.
    pub metrics_address: Option<String>,
    pub client: reqwest::Client,
    pub database_url: String,
    inbox: Inbox,
}

/// Settings beyond the defaults for one test.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub require_verified_email: Option<bool>,
    pub database_url: Option<String>,
    pub extra: Vec<(String, String)>,
    /// How long the test's SMTP server takes over each message.
    pub smtp_delay: Duration,
}

pub async fn database_url(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("gatehouse-api-tests");
            format!("sqlite://{}/{}.db", dir.display(), uuid::Uuid::new_v4())
        }
        Backend::Postgres => gatehouse_store_postgres::testing::fresh_database().await,
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: Options) -> TestApp {
    init_logs();
    let (smtp_port, inbox) = smtp_server(options.smtp_delay);
    let database_url = match options.database_url {
        Some(url) => url,
        None => database_url(backend).await,
    };
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", database_url.clone()),
        ("GATEHOUSE_BIND", "127.0.0.1:0".into()),
        ("GATEHOUSE_MAILER", format!("smtp://127.0.0.1:{smtp_port}")),
        ("GATEHOUSE_FRONTEND_URL", FRONTEND.into()),
        ("GATEHOUSE_JWT_SECRET", JWT_SECRET.into()),
        ("GATEHOUSE__MFA__ENCRYPTION_KEY", MFA_KEY.into()),
        ("GATEHOUSE__MAIL__POLL_INTERVAL_MS", "50".into()),
        ("GATEHOUSE__SERVER__WORKERS", "2".into()),
        ("GATEHOUSE__DATABASE__POOL_SIZE", "4".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(required) = options.require_verified_email {
        vars.insert("GATEHOUSE_REQUIRE_VERIFIED_EMAIL".into(), required.to_string());
    }
    vars.extend(options.extra);
    let settings = Settings::load_from(vars).expect("test settings are valid");
    let app = Application::build(settings).await.expect("the service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_port().map(|port| format!("http://127.0.0.1:{port}"));
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    TestApp { address, smtp_port, metrics_address, client, database_url, inbox }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request sent")
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request sent")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request sent")
    }

    pub async fn signup(&self, email: &str) -> reqwest::Response {
        self.post("/api/v1/auth/signup", &json!({ "email": email, "password": PASSWORD, "first_name": "Ada" })).await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post("/api/v1/auth/login", &json!({ "email": email, "password": password })).await
    }

    /// Mails received so far for `to`.
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        self.inbox
            .mails
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .cloned()
            .collect()
    }

    /// Waits (up to 10 s) until `count` mails have reached `to`.
    pub async fn wait_for_mails(&self, to: &str, count: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.mails_to(to);
            if mails.len() >= count {
                return mails;
            }
            assert!(Instant::now() < deadline, "expected {count} mail(s) to {to}, got {}", mails.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Makes a superuser with the real `gatehouse create-superuser` command on
    /// this app's database, then logs in: the tokens and user.
    pub async fn superuser_login(&self, email: &str) -> Value {
        let output = run_cli(&self.database_url, &["create-superuser", "--email", email, "--password-stdin"], PASSWORD);
        assert!(output.status.success(), "create-superuser failed: {}", String::from_utf8_lossy(&output.stderr));
        let login = self.login(email, PASSWORD).await;
        assert_eq!(login.status(), 200);
        login.json().await.unwrap()
    }

    /// Signs up, follows the verification link, and logs in: the tokens and user.
    pub async fn verified_login(&self, email: &str) -> Value {
        assert_eq!(self.signup(email).await.status(), 201);
        let mail = self.wait_for_mails(email, 1).await.remove(0);
        let verified =
            self.post("/api/v1/auth/email/verify", &json!({ "token": mail.link_token("verify-email") })).await;
        assert_eq!(verified.status(), 200);
        let login = self.login(email, PASSWORD).await;
        assert_eq!(login.status(), 200);
        login.json().await.unwrap()
    }
}

/// Asserts the contract's error shape, status and code; returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["code"], code, "{body}");
    let errors = body["errors"].as_object().unwrap_or_else(|| panic!("errors is an object: {body}"));
    assert!(!errors.is_empty(), "{body}");
    for messages in errors.values() {
        assert!(messages.as_array().is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string)), "{body}");
    }
    body
}

/// Generates one test per store for each listed `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Runs the `gatehouse` binary against a database, feeding `stdin`.
pub fn run_cli(database_url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    run_cli_with(database_url, args, stdin, &[])
}

/// `run_cli` with more settings in the environment.
pub fn run_cli_with(database_url: &str, args: &[&str], stdin: &str, env: &[(&str, String)]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("GATEHOUSE_JWT_SECRET", JWT_SECRET)
        .env("GATEHOUSE__MFA__ENCRYPTION_KEY", MFA_KEY)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the gatehouse binary runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A request with a bearer token and an optional JSON body.
pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    access: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(access);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// The variables `make test` sets to the Chromium the browser tests drive,
/// and to its WebDriver.
pub const CHROMIUM_VAR: &str = "GATEHOUSE_TEST_CHROMIUM";
pub const CHROMEDRIVER_VAR: &str = "GATEHOUSE_TEST_CHROMEDRIVER";

/// Headless, and nothing that reaches beyond loopback.
const CHROMIUM_FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A path from a variable `make test` sets. Browser tests fail loudly, naming
/// the variable, rather than skip.
fn browser_path(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with `make test`, or set it"))
}

/// A fresh profile directory for one browser.
fn browser_profile() -> std::path::PathBuf {
    std::env::temp_dir().join("gatehouse-api-tests").join(format!("chromium-{}", uuid::Uuid::new_v4()))
}

/// The page at `url` as headless Chromium renders it, scripts run: its DOM
/// after the page settles.
pub async fn render_in_chromium(url: &str) -> String {
    let chromium = browser_path(CHROMIUM_VAR);
    let profile = browser_profile();
    let (url, dir) = (url.to_owned(), profile.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&chromium)
            .args(CHROMIUM_FLAGS)
            .args(["--virtual-time-budget=15000", "--dump-dom"])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {CHROMIUM_VAR}: {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Headless Chromium driven over WebDriver (chromedriver on a loopback
/// port), with a profile of its own. [`Browser::close`] ends the session;
/// dropping it stops the driver in any case.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: std::process::Child,
    profile: std::path::PathBuf,
}

impl Browser {
    pub async fn start() -> Self {
        let (chromium, chromedriver) = (browser_path(CHROMIUM_VAR), browser_path(CHROMEDRIVER_VAR));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER_VAR} ({chromedriver}): {e}"));
        let profile = browser_profile();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let options = json!({ "binary": chromium, "args": args });
        let capabilities: serde_json::Map<String, Value> =
            [("goog:chromeOptions".to_owned(), options)].into_iter().collect();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let attempt = fantoccini::ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match attempt {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("chromedriver did not start a browser: {error}"),
            }
        };
        Self { client, driver, profile }
    }

    /// Ends the browser session (the driver closes Chromium).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A second local origin: serves `html` for every request on its own port.
pub async fn serve_page(html: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    html.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(html.as_bytes()).await;
            });
        }
    });
    port
}
