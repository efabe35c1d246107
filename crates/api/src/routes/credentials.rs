//! Changing and resetting the password.

use actix_web::{web, HttpResponse};
use gatehouse_domain::error::NON_FIELD_ERRORS;
use gatehouse_domain::{Email, FieldErrors, PlainPassword};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::account::EmailBody;
use super::after_answering;
// The schemas named in the OpenAPI attributes of the handlers below.
use crate::body::{Body, BodyRules};
use crate::error::ApiError;
use crate::extract::{AuthBody, Client};
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/change",
    tag = "me",
    summary = "Change the password (other sessions end)",
    request_body = PasswordChangeBody,
    responses((status = 200, description = "Changed", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn change_password(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, body): AuthBody<PasswordChangeBody>,
) -> Result<HttpResponse, ApiError> {
    let old_password = PlainPassword::parse(body.old_password.expose_secret())
        .map_err(|rule| FieldErrors::single("old_password", rule.to_string()))?;
    let new_password = body.new_password.expose_secret();
    state.auth.change_password(caller, &old_password, new_password, &client.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "detail": "Your password was changed; your other sessions were logged out." })))
}

/// Always the same 202, known address or not; the work happens after the answer.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password/reset",
    tag = "auth",
    summary = "Mail a reset link (same answer for any address)",
    request_body = EmailBody,
    responses((status = 202, description = "Accepted", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 429, description = "Too many mail-sending requests from this client IP (limits.mail_requests_per_ip)", body = ErrorResponse))
)]
pub async fn request_reset(
    state: web::Data<AppState>,
    Body(EmailBody { email }): Body<EmailBody>,
) -> Result<HttpResponse, ApiError> {
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
    responses((status = 200, description = "Reset", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse))
)]
pub async fn confirm_reset(
    state: web::Data<AppState>,
    client: Client,
    Body(body): Body<ResetConfirmBody>,
) -> Result<HttpResponse, ApiError> {
    let (token, new_password) = (body.token.expose_secret(), body.new_password.expose_secret());
    state.auth.confirm_password_reset(token, new_password, &client.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "detail": "Your password was reset; log in with the new one." })))
}

/// `new_password2`, when sent, must repeat `new_password`.
fn check_repeated(new_password: &SecretString, again: Option<&SecretString>, errors: &mut FieldErrors) {
    if again.is_some_and(|again| again.expose_secret() != new_password.expose_secret()) {
        errors.add(NON_FIELD_ERRORS, "Passwords do not match.");
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChangeBody {
    #[schema(value_type = String)]
    old_password: SecretString,
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    new_password: SecretString,
    /// Must equal `new_password` when sent.
    #[schema(value_type = Option<String>)]
    new_password2: Option<SecretString>,
}

impl BodyRules for PasswordChangeBody {
    fn check(&self, errors: &mut FieldErrors) {
        check_repeated(&self.new_password, self.new_password2.as_ref(), errors);
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetConfirmBody {
    #[schema(value_type = String)]
    token: SecretString,
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    new_password: SecretString,
    /// Must equal `new_password` when sent.
    #[schema(value_type = Option<String>)]
    new_password2: Option<SecretString>,
}

impl BodyRules for ResetConfirmBody {
    fn check(&self, errors: &mut FieldErrors) {
        check_repeated(&self.new_password, self.new_password2.as_ref(), errors);
    }
}
