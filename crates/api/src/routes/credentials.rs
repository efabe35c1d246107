//! Changing and resetting the password.

use actix_web::{web, HttpResponse};
use gatehouse_domain::error::NON_FIELD_ERRORS;
use gatehouse_domain::{Email, FieldErrors, PlainPassword};
use serde_json::json;

use super::after_answering;
// The schemas named in the OpenAPI attributes of the handlers below.
use crate::body::{Fields, JsonBody};
use crate::error::ApiError;
use crate::extract::{AuthUser, Client};
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;

/// `new_password` and the optional `new_password2`, which must match when sent.
fn new_password(fields: &mut Fields) -> String {
    let new_password = fields.required_str("new_password");
    let confirmation = fields.optional_str("new_password2");
    if confirmation.is_some_and(|c| c != new_password) {
        fields.error(NON_FIELD_ERRORS, "Passwords do not match.");
    }
    new_password
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/change",
    tag = "me",
    summary = "Change the password (other sessions end)",
    request_body = PasswordChangeBody,
    responses((status = 200, description = "Changed", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 401, description = "Not authenticated, or the token is not live", body = ErrorResponse), (status = 503, description = "The database is unavailable", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn change_password(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let old_password = fields.required_str("old_password");
    let new_password = new_password(&mut fields);
    fields.finish()?;
    let old_password =
        PlainPassword::parse(&old_password).map_err(|rule| FieldErrors::single("old_password", rule.to_string()))?;
    state.auth.change_password(caller.0, &old_password, &new_password, &client.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "detail": "Your password was changed; your other sessions were logged out." })))
}

/// Always the same 202, known address or not; the work happens after the answer.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password/reset",
    tag = "auth",
    summary = "Mail a reset link (same answer for any address)",
    request_body = EmailBody,
    responses((status = 202, description = "Accepted", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 503, description = "The database is unavailable", body = ErrorResponse))
)]
pub async fn request_reset(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let email = fields.required_str("email");
    fields.finish()?;
    let email = Email::parse(&email).map_err(|e| FieldErrors::single("email", e.to_string()))?;
    let auth = state.auth.clone();
    after_answering(async move { auth.request_password_reset(&email).await }, "issuing a reset link");
    Ok(HttpResponse::Accepted().json(json!({
        "detail": "If this address belongs to an account, a link to reset its password is on its way."
    })))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/reset/confirm",
    tag = "auth",
    summary = "Set a new password with a reset link (every session ends)",
    request_body = ResetConfirmBody,
    responses((status = 200, description = "Reset", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 503, description = "The database is unavailable", body = ErrorResponse))
)]
pub async fn confirm_reset(
    state: web::Data<AppState>,
    client: Client,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let token = fields.required_str("token");
    let new_password = new_password(&mut fields);
    fields.finish()?;
    state.auth.confirm_password_reset(&token, &new_password, &client.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "detail": "Your password was reset; log in with the new one." })))
}
