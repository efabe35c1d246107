//! Login, token refresh and verification, logout.

use actix_web::{web, HttpResponse};
use gatehouse_domain::auth::{LoginError, LoginRequest, RefreshError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::no_store;
// The schemas named in the OpenAPI attributes of the handlers below.
use super::account::TokenBody;
use crate::body::{Body, BodyRules};
use crate::error::ApiError;
use crate::extract::{AuthUser, Client};
use crate::metrics::METRICS;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views::{LoginView, TokensView};

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    summary = "Log in",
    request_body = LoginBody,
    responses((status = 200, description = "Tokens and the user", body = LoginView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 401, description = "Unknown email or wrong password", body = ErrorResponse), (status = 403, description = "Not verified, or disabled", body = ErrorResponse), (status = 429, description = "Too many failures; see Retry-After", body = ErrorResponse))
)]
pub async fn login(
    state: web::Data<AppState>,
    client: Client,
    Body(body): Body<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let request = LoginRequest::parse(&body.email, body.password.expose_secret())?;
    let outcome = state.auth.login(request, client.0).await;
    METRICS.login(outcome.as_ref().map_or_else(LoginError::reason, |_| "success"));
    let outcome = outcome?;
    Ok(no_store(HttpResponse::Ok().json(LoginView::from(outcome))))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/token/refresh",
    tag = "auth",
    summary = "Spend a refresh token for a new pair",
    request_body = RefreshBody,
    responses((status = 200, description = "A new pair", body = TokensView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 401, description = "token_invalid, token_expired or token_reused", body = ErrorResponse))
)]
pub async fn refresh(
    state: web::Data<AppState>,
    client: Client,
    Body(body): Body<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let pair = state.auth.refresh(body.refresh.expose_secret(), &client.0).await;
    METRICS.refresh(pair.as_ref().map_or_else(RefreshError::reason, |_| "rotated"));
    let pair = pair?;
    Ok(no_store(HttpResponse::Ok().json(TokensView::from(pair))))
}

/// 200 `{}` for a live access token; the reason otherwise.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token/verify",
    tag = "auth",
    summary = "Check an access token",
    request_body = TokenBody,
    responses((status = 200, description = "Live", body = EmptyResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 401, description = "The token is not live: token_invalid or token_expired", body = ErrorResponse))
)]
pub async fn verify(state: web::Data<AppState>, Body(body): Body<TokenBody>) -> Result<HttpResponse, ApiError> {
    state.auth.authenticate(body.token.expose_secret()).await.map_err(ApiError::of_presented_token)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "sessions",
    summary = "Revoke the calling session",
    responses((status = 204, description = "Logged out")),
    security(("bearer" = []))
)]
pub async fn logout(state: web::Data<AppState>, client: Client, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    state.auth.logout(caller.0, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout/all",
    tag = "sessions",
    summary = "Revoke every session of the caller",
    responses((status = 204, description = "Logged out everywhere")),
    security(("bearer" = []))
)]
pub async fn logout_all(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
) -> Result<HttpResponse, ApiError> {
    state.auth.logout_all(caller.0.user_id, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    email: String,
    /// At most 1024 bytes, or 400 before any hashing.
    #[schema(value_type = String, max_length = 1024)]
    password: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    #[schema(value_type = String)]
    refresh: SecretString,
}

impl BodyRules for LoginBody {}
impl BodyRules for RefreshBody {}
