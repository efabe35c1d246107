//! The OpenAPI 3 document, generated from the handlers' annotations, the
//! request types they read and the response types, served at
//! `/api/openapi.json` and rendered at `/docs` without any outside asset. The
//! shapes below exist only for the document: the answers that are built as
//! plain JSON.

#![allow(dead_code, missing_debug_implementations)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use actix_web::http::header::{ContentType, CONTENT_SECURITY_POLICY};
use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use crate::routes::admin::{AuditEventView, AuditPageView, GroupView, PageView};
pub use crate::views::{LoginView, ProfileView, SessionView, SignupView, TokensView, UserView, VerifiedView};

/// Every non-2xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    /// Machine-readable and stable, e.g. `validation_error`, `token_invalid`.
    code: String,
    /// Messages per request field (dotted for nested ones) or `non_field_errors`.
    errors: BTreeMap<String, Vec<String>>,
    /// Only on 500 `internal_error`: the id the logs carry too.
    request_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DetailResponse {
    detail: String,
}

/// `{}`.
#[derive(Serialize, ToSchema)]
pub struct EmptyResponse {}

#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    status: String,
}

/// 503 adds `code` and `errors` in the error shape, and names the failing check.
#[derive(Serialize, ToSchema)]
pub struct ReadinessResponse {
    status: String,
    checks: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct JwksResponse {
    #[schema(value_type = Vec<Object>)]
    keys: Vec<serde_json::Value>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Authentication and user accounts over JSON.\n\n\
Choices the contract leaves open: token errors name the body field they come from (`refresh`, `token`) and bearer \
errors use `non_field_errors` with `WWW-Authenticate: Bearer error=\\\"invalid_token\\\"`; unknown body fields are \
ignored; a body without Content-Type is 415 unless empty (then `invalid_json`); resend, reset and email change \
answer 202 with a `detail`; a spent refresh token presented again within 10 s rotates again (tabs refreshing \
together), later it revokes the session; a wrong current password is a 400 naming `old_password` or `password`; \
an email-change link whose address was taken meanwhile is 409; the last superuser and unknown groups are 400; \
granting beyond one's permissions is 403; the user list caps `page_size` at 100."
    ),
    paths(
        crate::routes::account::signup,
        crate::routes::tokens::login,
        crate::routes::tokens::refresh,
        crate::routes::tokens::verify,
        crate::routes::account::verify_email,
        crate::routes::account::resend_verification,
        crate::routes::credentials::request_reset,
        crate::routes::credentials::confirm_reset,
        crate::routes::account::me,
        crate::routes::account::update_me,
        crate::routes::account::delete_me,
        crate::routes::credentials::change_password,
        crate::routes::account::change_email,
        crate::routes::tokens::logout,
        crate::routes::tokens::logout_all,
        crate::routes::sessions::list,
        crate::routes::sessions::revoke,
        crate::routes::admin::list_users,
        crate::routes::admin::create_user,
        crate::routes::admin::get_user,
        crate::routes::admin::update_user,
        crate::routes::admin::delete_user,
        crate::routes::admin::revoke_sessions,
        crate::routes::admin::list_groups,
        crate::routes::admin::create_group,
        crate::routes::admin::get_group,
        crate::routes::admin::update_group,
        crate::routes::admin::delete_group,
        crate::routes::admin::list_audit,
        crate::routes::health::live,
        crate::routes::health::ready,
        crate::routes::health::jwks,
        openapi_json,
        docs,
        crate::metrics::scrape,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> = LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());
static PAGE: LazyLock<String> = LazyLock::new(|| render(&ApiDoc::openapi()));

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type(ContentType::json()).body(DOCUMENT.as_str())
}

/// The document as a page for people.
#[utoipa::path(get, path = "/docs", tag = "operations", responses((status = 200, description = "HTML")))]
/// The page styles itself inline and loads nothing else.
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((
            CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(PAGE.as_str())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A plain HTML page: every operation with its summary, parameters, body and answers.
fn render(document: &utoipa::openapi::OpenApi) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Gatehouse API</title><style>\
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
code{background:#f3f3f3;padding:0 .2em}.op{border-top:1px solid #ddd;padding:.6rem 0}\
.m{display:inline-block;min-width:4.5rem;font-weight:bold}.lock{color:#a60}</style></head><body>",
    );
    let _ = write!(page, "<h1>{}</h1>", escape(&document.info.title));
    for paragraph in document.info.description.as_deref().unwrap_or_default().split("\n\n") {
        let _ = write!(page, "<p>{}</p>", escape(paragraph));
    }
    page.push_str(
        "<p>The machine-readable document is at <a href=\"/api/openapi.json\"><code>/api/openapi.json</code></a>.</p>",
    );
    for (path, item) in &document.paths.paths {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let locked = if operation.security.is_some() { " <span class=\"lock\">(bearer token)</span>" } else { "" };
            let _ = write!(
                page,
                "<div class=\"op\"><span class=\"m\">{method}</span><code>{}</code>{locked}<br>{}",
                escape(path),
                escape(operation.summary.as_deref().unwrap_or_default())
            );
            if let Some(utoipa::openapi::RefOr::T(body)) = &operation.request_body {
                let schema = body.content.values().next().and_then(|content| match content {
                    utoipa::openapi::RefOr::T(content) => content.schema.as_ref().map(schema_name),
                    utoipa::openapi::RefOr::Ref(_) => None,
                });
                let _ = write!(page, "<br>Body: <code>{}</code>", escape(&schema.unwrap_or_default()));
            }
            let answers: Vec<String> = operation
                .responses
                .responses
                .iter()
                .map(|(status, response)| match response {
                    utoipa::openapi::RefOr::T(r) => format!("{status} {}", r.description),
                    utoipa::openapi::RefOr::Ref(_) => status.clone(),
                })
                .collect();
            let _ = write!(page, "<br>Answers: {}</div>", escape(&answers.join("; ")));
        }
    }
    let schemas =
        document.components.as_ref().map(|c| c.schemas.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let _ = write!(page, "<h2>Schemas</h2><p>{}</p></body></html>", escape(&schemas.join(", ")));
    page
}

fn schema_name(schema: &utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> String {
    match schema {
        utoipa::openapi::RefOr::Ref(reference) => {
            reference.ref_location.rsplit('/').next().unwrap_or_default().to_owned()
        }
        utoipa::openapi::RefOr::T(_) => "inline".to_owned(),
    }
}
