//! The caller's sessions: one per login, per device.

use actix_web::{web, HttpResponse};
use gatehouse_domain::SessionId;

// The schemas named in the OpenAPI attributes of the handlers below.
use crate::error::ApiError;
use crate::extract::AuthUser;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views::SessionView;

#[utoipa::path(
    get,
    path = "/api/v1/auth/sessions",
    tag = "sessions",
    summary = "The caller's live sessions",
    responses((status = 200, description = "Sessions", body = Vec<SessionView>)),
    security(("bearer" = []))
)]
pub async fn list(state: web::Data<AppState>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let sessions = state.auth.sessions(caller.0).await?;
    let views: Vec<SessionView> =
        sessions.into_iter().map(|(session, current)| SessionView::new(session, current)).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// 204; an id that is not one of the caller's live sessions is 404, never 403.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/sessions/{id}",
    tag = "sessions",
    summary = "Revoke one of the caller's sessions",
    params(("id" = String, Path, description = "The session id (a UUID)")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(ApiError::not_found)?;
    state.auth.revoke_own_session(caller.0, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
