//! Login, token refresh and verification, logout.

use actix_web::{web, HttpResponse};
use gatehouse_domain::auth::{AuthenticateError, LoginRequest};
use serde_json::json;

use super::no_store;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::extract::{AuthUser, Client};
use crate::state::AppState;
use crate::views::{LoginView, TokensView};

pub async fn login(state: web::Data<AppState>, client: Client, body: JsonBody) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let email = fields.required_str("email");
    let password = fields.required_str("password");
    fields.finish()?;
    let request = LoginRequest::parse(&email, &password)?;
    let outcome = state.auth.login(request, client.0).await?;
    Ok(no_store(HttpResponse::Ok().json(LoginView::from(outcome))))
}

pub async fn refresh(state: web::Data<AppState>, client: Client, body: JsonBody) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let token = fields.required_str("refresh");
    fields.finish()?;
    let pair = state.auth.refresh(&token, &client.0).await?;
    Ok(no_store(HttpResponse::Ok().json(TokensView::from(pair))))
}

/// 200 `{}` for a live access token; the reason otherwise.
pub async fn verify(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let token = fields.required_str("token");
    fields.finish()?;
    match state.auth.authenticate(&token).await {
        Ok(_) => Ok(HttpResponse::Ok().json(json!({}))),
        Err(AuthenticateError::Invalid) => Err(ApiError::token_invalid("token")),
        Err(AuthenticateError::Expired) => Err(ApiError::token_expired("token")),
        Err(AuthenticateError::Port(error)) => Err(error.into()),
    }
}

pub async fn logout(state: web::Data<AppState>, client: Client, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    state.auth.logout(caller.0, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn logout_all(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
) -> Result<HttpResponse, ApiError> {
    state.auth.logout_all(caller.0.user_id, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}
