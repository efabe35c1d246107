//! Changing the address: proven by the new mailbox, told to the old one, and
//! silent about addresses that belong to someone else.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, Backend, PASSWORD};
use crate::on_both_stores;

on_both_stores!(an_email_change_takes_effect_when_the_new_mailbox_confirms, a_taken_new_address_is_not_revealed,);

async fn an_email_change_takes_effect_when_the_new_mailbox_confirms(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("ada@example.com").await;
    let access = login["access"].as_str().unwrap();

    let wrong = app
        .post_auth(
            "/api/v1/auth/email/change",
            access,
            &json!({ "new_email": "ada@new.example.com", "password": "nope nope" }),
        )
        .await;
    let body = assert_error(wrong, 400, "validation_error").await;
    assert!(body["errors"]["password"].is_array());
    let bad = app
        .post_auth("/api/v1/auth/email/change", access, &json!({ "new_email": "not-an-address", "password": PASSWORD }))
        .await;
    assert_error(bad, 400, "validation_error").await;

    let asked = app
        .post_auth(
            "/api/v1/auth/email/change",
            access,
            &json!({ "new_email": "Ada@New.example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(asked.status(), 202);
    // The old address is told at once; nothing has changed yet.
    let old = app.wait_for_mails("ada@example.com", 2).await;
    assert_eq!(old[1].subject(), "A change of your email address was requested");
    assert!(!old[1].raw.contains("token="));
    let me: Value = app.get_auth("/api/v1/auth/me", access).await.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);

    let link = app.wait_for_mails("Ada@new.example.com", 1).await.remove(0);
    let token = link.link_token("verify-email");
    let confirmed = app.post("/api/v1/auth/email/verify", &json!({ "token": token })).await;
    assert_eq!(confirmed.status(), 200);
    let confirmed: Value = confirmed.json().await.unwrap();
    assert_eq!(confirmed["user"]["email"], "Ada@new.example.com");
    assert_eq!(confirmed["user"]["is_verified"], true);
    assert_error(app.post("/api/v1/auth/email/verify", &json!({ "token": token })).await, 400, "token_invalid").await;
    assert_error(app.login("ada@example.com", PASSWORD).await, 401, "invalid_credentials").await;
    assert_eq!(app.login("ada@NEW.example.com", PASSWORD).await.status(), 200);
}

async fn a_taken_new_address_is_not_revealed(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.verified_login("ada@example.com").await;
    app.verified_login("grace@example.com").await;
    let access = login["access"].as_str().unwrap();
    let taken = app
        .post_auth(
            "/api/v1/auth/email/change",
            access,
            &json!({ "new_email": "GRACE@example.com", "password": PASSWORD }),
        )
        .await;
    let free = app
        .post_auth(
            "/api/v1/auth/email/change",
            access,
            &json!({ "new_email": "free@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!((taken.status().as_u16(), free.status().as_u16()), (202, 202));
    assert_eq!(taken.bytes().await.unwrap(), free.bytes().await.unwrap(), "byte-identical");
    let warned = app.wait_for_mails("grace@example.com", 2).await;
    assert_eq!(warned[1].subject(), "Someone tried to use your address");
    assert!(!warned[1].raw.contains("token="), "no link to the taken address");
    let same = app
        .post_auth(
            "/api/v1/auth/email/change",
            access,
            &json!({ "new_email": "ADA@example.com", "password": PASSWORD }),
        )
        .await;
    let body = assert_error(same, 400, "validation_error").await;
    assert!(body["errors"]["new_email"].is_array());
}
