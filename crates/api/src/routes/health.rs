//! Liveness and readiness for orchestrators, and the public signing keys.

use actix_web::http::StatusCode;
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

/// Public keys for verifying access tokens elsewhere. HS256 (the only
/// algorithm so far) is symmetric, so the set is empty.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "operations",
    summary = "Public signing keys (empty under HS256)",
    responses((status = 200, description = "A JWK set", body = JwksResponse))
)]
pub async fn jwks() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "keys": [] }))
}
