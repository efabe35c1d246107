//! The routes of the HTTP contract, and JSON answers for unknown routes and methods.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod credentials;
pub(crate) mod health;
pub(crate) mod mfa;
pub(crate) mod sessions;
pub(crate) mod tokens;

use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, Resource, ResponseError};
use gatehouse_domain::PortError;

use crate::error::ApiError;
use crate::extract::Client;
use crate::state::AppState;

/// A resource that answers a JSON 405, with `Allow`, to methods it does not route.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(|req: HttpRequest| async move {
        let pattern = req.match_pattern().unwrap_or_default();
        let allowed: Vec<&str> = ROUTES.iter().filter(|(_, p)| *p == pattern).map(|(method, _)| *method).collect();
        Err::<HttpResponse, _>(ApiError::method_not_allowed(allowed.join(", ")))
    }))
}

/// Counts a request to an endpoint that sends mail against its client's IP,
/// before the body is read: valid or not, each request counts.
async fn mail_request_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let client = Client::extract(req.request()).await?;
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        state.auth.count_mail_request(&client.0).await.map_err(ApiError::from)?;
    }
    next.call(req).await
}

/// A resource whose requests send mail, under the per-IP mail limit.
fn mail_resource(
    path: &str,
) -> Resource<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    resource(path).wrap(actix_web::middleware::from_fn(mail_request_limit))
}

/// Puts every error answer in the contract's shape: one that a layer below
/// the handlers made (a CORS refusal, a framework's own error) in plain text
/// gets the JSON body its status calls for, its other headers kept.
pub async fn contract_shape(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let response = next.call(req).await?;
    // JSON is the contract's shape already; HTML is the console's own error page.
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json" || v.as_bytes().starts_with(b"text/html"));
    if response.status().as_u16() < 400 || shaped {
        return Ok(response.map_into_left_body());
    }
    let (req, plain) = response.into_parts();
    let status = plain.status();
    let headers = plain.headers().clone();
    let message = actix_web::body::to_bytes_limited(plain.into_body(), 1024).await.ok().and_then(Result::ok);
    let message = message.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    let mut shaped = ApiError::of_status(status, message.trim()).error_response();
    let own = shaped.headers().clone();
    for (name, value) in headers.iter().filter(|(name, _)| !own.contains_key(*name) && *name != header::CONTENT_LENGTH)
    {
        shaped.headers_mut().append(name.clone(), value.clone());
    }
    Ok(ServiceResponse::new(req, shaped).map_into_right_body())
}

/// Every route the service answers, as (method, path) pairs: the docs test
/// compares this list with the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/signup"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/login/mfa"),
    ("POST", "/api/v1/auth/mfa/totp/setup"),
    ("POST", "/api/v1/auth/mfa/totp/confirm"),
    ("DELETE", "/api/v1/auth/mfa/totp"),
    ("POST", "/api/v1/auth/mfa/recovery-codes"),
    ("POST", "/api/v1/auth/token/refresh"),
    ("POST", "/api/v1/auth/token/verify"),
    ("GET", "/api/v1/auth/token/resume"),
    ("POST", "/api/v1/auth/email/verify"),
    ("POST", "/api/v1/auth/email/verify/resend"),
    ("POST", "/api/v1/auth/email/change"),
    ("GET", "/api/v1/auth/me"),
    ("PATCH", "/api/v1/auth/me"),
    ("DELETE", "/api/v1/auth/me"),
    ("POST", "/api/v1/auth/password/change"),
    ("POST", "/api/v1/auth/password/reset"),
    ("POST", "/api/v1/auth/password/reset/confirm"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout/all"),
    ("GET", "/api/v1/auth/sessions"),
    ("DELETE", "/api/v1/auth/sessions/{id}"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/v1/admin/users"),
    ("POST", "/api/v1/admin/users"),
    ("GET", "/api/v1/admin/users/{id}"),
    ("PATCH", "/api/v1/admin/users/{id}"),
    ("DELETE", "/api/v1/admin/users/{id}"),
    ("POST", "/api/v1/admin/users/{id}/sessions/revoke"),
    ("POST", "/api/v1/admin/users/{id}/mfa/reset"),
    ("GET", "/api/v1/admin/groups"),
    ("POST", "/api/v1/admin/groups"),
    ("GET", "/api/v1/admin/groups/{id}"),
    ("PATCH", "/api/v1/admin/groups/{id}"),
    ("DELETE", "/api/v1/admin/groups/{id}"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{file}"),
    ("GET", "/metrics"),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/auth")
            .service(mail_resource("/signup").route(web::post().to(account::signup)))
            .service(resource("/login").route(web::post().to(tokens::login)))
            .service(resource("/login/mfa").route(web::post().to(mfa::login)))
            .service(resource("/mfa/totp/setup").route(web::post().to(mfa::setup)))
            .service(resource("/mfa/totp/confirm").route(web::post().to(mfa::confirm)))
            .service(resource("/mfa/totp").route(web::delete().to(mfa::disable)))
            .service(resource("/mfa/recovery-codes").route(web::post().to(mfa::regenerate)))
            .service(resource("/token/refresh").route(web::post().to(tokens::refresh)))
            .service(resource("/token/verify").route(web::post().to(tokens::verify)))
            .service(resource("/token/resume").route(web::get().to(tokens::resume)))
            .service(resource("/email/verify").route(web::post().to(account::verify_email)))
            .service(mail_resource("/email/verify/resend").route(web::post().to(account::resend_verification)))
            .service(mail_resource("/email/change").route(web::post().to(account::change_email)))
            .service(
                resource("/me")
                    .route(web::get().to(account::me))
                    .route(web::patch().to(account::update_me))
                    .route(web::delete().to(account::delete_me)),
            )
            .service(resource("/password/change").route(web::post().to(credentials::change_password)))
            .service(mail_resource("/password/reset").route(web::post().to(credentials::request_reset)))
            .service(resource("/password/reset/confirm").route(web::post().to(credentials::confirm_reset)))
            .service(resource("/logout").route(web::post().to(tokens::logout)))
            .service(resource("/logout/all").route(web::post().to(tokens::logout_all)))
            .service(resource("/sessions").route(web::get().to(sessions::list)))
            .service(resource("/sessions/{id}").route(web::delete().to(sessions::revoke))),
    )
    .service(
        web::scope("/api/v1/admin")
            .service(
                resource("/users").route(web::get().to(admin::list_users)).route(web::post().to(admin::create_user)),
            )
            .service(
                resource("/users/{id}")
                    .route(web::get().to(admin::get_user))
                    .route(web::patch().to(admin::update_user))
                    .route(web::delete().to(admin::delete_user)),
            )
            .service(resource("/users/{id}/sessions/revoke").route(web::post().to(admin::revoke_sessions)))
            .service(resource("/users/{id}/mfa/reset").route(web::post().to(admin::reset_mfa)))
            .service(
                resource("/groups").route(web::get().to(admin::list_groups)).route(web::post().to(admin::create_group)),
            )
            .service(
                resource("/groups/{id}")
                    .route(web::get().to(admin::get_group))
                    .route(web::patch().to(admin::update_group))
                    .route(web::delete().to(admin::delete_group)),
            )
            .service(resource("/audit").route(web::get().to(admin::list_audit))),
    )
    .service(resource("/api/openapi.json").route(web::get().to(crate::openapi::openapi_json)))
    .service(resource("/docs").route(web::get().to(crate::openapi::docs)))
    .service(resource("/docs/{file}").route(web::get().to(crate::openapi::docs_asset)))
    .service(resource("/health/live").route(web::get().to(health::live)))
    .service(resource("/health/ready").route(web::get().to(health::ready)))
    .service(resource("/.well-known/jwks.json").route(web::get().to(health::jwks)));
}

/// `/metrics`: on the API port, or alone on its own (`server.metrics_bind`).
pub fn metrics(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics").route(web::get().to(crate::metrics::scrape)));
}

/// Unknown paths.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// Runs `work` after the answer is sent, so that neither the answer nor its
/// timing tells whether an address is known; failures are logged.
pub(crate) fn after_answering(work: impl Future<Output = Result<(), PortError>> + 'static, what: &'static str) {
    actix_web::rt::spawn(async move {
        if let Err(error) = work.await {
            tracing::warn!(error = &error as &dyn std::error::Error, "{what} failed");
        }
    });
}

/// Token responses must never be cached by a browser or a proxy.
pub(crate) fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}
