//! Liveness and readiness for orchestrators, and the public signing keys.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 503 names the failing check; the body also carries the contract's error shape.
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
pub async fn jwks() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "keys": [] }))
}
