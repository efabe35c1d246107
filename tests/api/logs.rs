//! The logs of a full flow, captured at debug level, hold no password, hash or token.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, PASSWORD};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().json().with_env_filter("debug").with_writer(move || writer.clone()).finish();
    tracing::subscriber::set_global_default(subscriber).expect("this test owns the process's logs");

    let app = spawn_app(Backend::Sqlite).await;
    let login = app.verified_login("ada@example.com").await;
    let verify_token = app.mails_to("ada@example.com")[0].link_token("verify-email");
    let refreshed: Value =
        app.post("/api/v1/auth/token/refresh", &json!({ "refresh": login["refresh"] })).await.json().await.unwrap();
    assert_eq!(app.login("ada@example.com", "a wrong password here").await.status(), 401);
    let new_password = "a new password for the log test";
    let change = json!({ "old_password": PASSWORD, "new_password": new_password });
    assert_eq!(
        app.post_auth("/api/v1/auth/password/change", refreshed["access"].as_str().unwrap(), &change).await.status(),
        200
    );
    assert_eq!(app.post("/api/v1/auth/password/reset", &json!({ "email": "ada@example.com" })).await.status(), 202);
    let reset_token = loop {
        if let Some(mail) = app.mails_to("ada@example.com").iter().find(|m| m.raw.contains("reset-password?token=")) {
            break mail.link_token("reset-password");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    let reset_password = "the password after the reset";
    let confirm = json!({ "token": reset_token, "new_password": reset_password });
    assert_eq!(app.post("/api/v1/auth/password/reset/confirm", &confirm).await.status(), 200);
    let last: Value = app.login("ada@example.com", reset_password).await.json().await.unwrap();
    assert_eq!(app.post_auth("/api/v1/auth/logout", last["access"].as_str().unwrap(), &json!({})).await.status(), 204);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("login succeeded"), "the logs were captured");
    assert!(logs.contains("\"user_id\""), "a login records the user id");
    let secrets = [
        PASSWORD,
        new_password,
        reset_password,
        "a wrong password here",
        login["access"].as_str().unwrap(),
        login["refresh"].as_str().unwrap(),
        refreshed["access"].as_str().unwrap(),
        refreshed["refresh"].as_str().unwrap(),
        last["access"].as_str().unwrap(),
        &verify_token,
        &reset_token,
        "$argon2id$",
        crate::helpers::JWT_SECRET,
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret reached the logs: {}…", &secret[..secret.len().min(6)]);
    }
}
