//! Liveness and readiness for orchestrators, and the public signing keys.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use serde_json::json;

// The schemas named in the OpenAPI attributes of the handlers below.
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    summary = "The process runs",
    responses((status = 200, description = "Alive", body = StatusResponse))
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 503 names the failing check; the body also carries the contract's error shape.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    summary = "The database answers",
    responses((status = 200, description = "Ready", body = ReadinessResponse), (status = 503, description = "Not ready: the database does not answer", body = ReadinessResponse))
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.health.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ok", "checks": { "database": "ok" } })),
        Err(error) => {
            tracing::warn!(error = &error as &dyn std::error::Error, "readiness check failed");
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(json!({
                "status": "unavailable",
                "checks": { "database": "unavailable" },
                "code": "service_unavailable",
                "errors": { "database": ["The database does not answer."] },
            }))
        }
    }
}

/// Public keys for verifying access tokens elsewhere: the keys file's under
/// EdDSA and RS256, none under HS256 (a shared secret is never published).
/// Verifiers may cache the set for five minutes, which is why a new key is
/// published (`gatehouse keys add`) well before it signs.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "operations",
    summary = "Public signing keys (empty under HS256)",
    responses((
        status = 200,
        description = "A JWK Set: every key that verifies, the signing one first. Cacheable for 300 s.",
        body = JwksResponse,
        headers(("Cache-Control" = String, description = "public, max-age=300"))
    ))
)]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(state.tokens.jwks().to_string())
}
