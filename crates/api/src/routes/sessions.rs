//! The caller's sessions: one per login, per device.

use actix_web::{web, HttpResponse};
use gatehouse_domain::auth::RevokeSessionError;
use gatehouse_domain::SessionId;

use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::state::AppState;
use crate::views::SessionView;

pub async fn list(state: web::Data<AppState>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let sessions = state.auth.sessions(caller.0).await?;
    let views: Vec<SessionView> =
        sessions.into_iter().map(|(session, current)| SessionView::new(session, current)).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// 204; an id that is not one of the caller's live sessions is 404, never 403.
pub async fn revoke(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(ApiError::not_found)?;
    match state.auth.revoke_own_session(caller.0, id).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(RevokeSessionError::NotFound) => Err(ApiError::not_found()),
        Err(RevokeSessionError::Port(error)) => Err(error.into()),
    }
}
