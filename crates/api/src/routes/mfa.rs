//! Two-factor authentication: TOTP setup and confirmation, turning it off,
//! new recovery codes, and the second step of a login.

use actix_web::{web, HttpResponse};
use gatehouse_domain::auth::SecondFactor;
use gatehouse_domain::{FieldErrors, PlainPassword};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use super::no_store;
use super::tokens::logged_in;
// The schemas named in the OpenAPI attributes of the handlers below.
use super::account::PasswordBody;
use crate::body::{Body, BodyRules};
use crate::cookies::Transport;
use crate::error::ApiError;
use crate::extract::{AuthBody, Client};
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views::{RecoveryCodesView, TotpSetupView};

fn password(raw: &SecretString) -> Result<PlainPassword, FieldErrors> {
    PlainPassword::parse(raw.expose_secret()).map_err(|rule| FieldErrors::single("password", rule.to_string()))
}

/// `code` on disable and regenerate: six digits are a TOTP code, anything
/// else a recovery code.
pub(crate) fn either_code(code: &str) -> Result<SecondFactor, FieldErrors> {
    let digits = code.trim();
    let factor = if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        SecondFactor::parse(Some(digits), None)
    } else {
        SecondFactor::parse(None, Some(code))
    };
    factor.map_err(|_| FieldErrors::single("code", "Enter a code from your authenticator app, or a recovery code."))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/totp/setup",
    tag = "mfa",
    summary = "Start a TOTP setup (pending until confirmed)",
    request_body = PasswordBody,
    responses((status = 200, description = "The secret for the authenticator app", body = TotpSetupView), (status = 400, description = "Wrong password, or two-factor authentication is already on", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn setup(
    state: web::Data<AppState>,
    AuthBody(caller, body): AuthBody<PasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let setup = state.auth.totp_setup(caller, &password(&body.password)?).await?;
    Ok(no_store(HttpResponse::Ok().json(TotpSetupView { secret: setup.secret, otpauth_uri: setup.otpauth_uri })))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/totp/confirm",
    tag = "mfa",
    summary = "Confirm the setup with a first code: two-factor authentication is on",
    request_body = CodeBody,
    responses((status = 200, description = "Ten recovery codes, shown this once", body = RecoveryCodesView), (status = 400, description = "A wrong code, or no pending setup", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn confirm(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, body): AuthBody<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let recovery_codes = state.auth.totp_confirm(caller, &body.code, &client.0).await?;
    Ok(no_store(HttpResponse::Ok().json(RecoveryCodesView { recovery_codes })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/auth/mfa/totp",
    tag = "mfa",
    summary = "Turn two-factor authentication off",
    request_body = PasswordCodeBody,
    responses((status = 204, description = "Off"), (status = 400, description = "A wrong password or code, or it is not on", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn disable(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, body): AuthBody<PasswordCodeBody>,
) -> Result<HttpResponse, ApiError> {
    let (password, factor) = (password(&body.password)?, either_code(&body.code)?);
    state.auth.totp_disable(caller, &password, factor, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/recovery-codes",
    tag = "mfa",
    summary = "New recovery codes (the old ones die)",
    request_body = PasswordCodeBody,
    responses((status = 200, description = "Ten recovery codes, shown this once", body = RecoveryCodesView), (status = 400, description = "A wrong password or code, or it is not on", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn regenerate(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, body): AuthBody<PasswordCodeBody>,
) -> Result<HttpResponse, ApiError> {
    let (password, factor) = (password(&body.password)?, either_code(&body.code)?);
    let recovery_codes = state.auth.regenerate_recovery_codes(caller, &password, factor, &client.0).await?;
    Ok(no_store(HttpResponse::Ok().json(RecoveryCodesView { recovery_codes })))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login/mfa",
    tag = "auth",
    summary = "Finish a login with a TOTP code or a recovery code",
    request_body = LoginMfaBody,
    responses((status = 200, description = "Tokens and the user", body = LoginView), (status = 400, description = "A wrong, used or malformed code", body = ErrorResponse), (status = 401, description = "The mfa_token is unknown, expired, used, or killed by five wrong codes", body = ErrorResponse), (status = 429, description = "Ten wrong codes on the account in 15 minutes; see Retry-After", body = ErrorResponse))
)]
pub async fn login(
    state: web::Data<AppState>,
    client: Client,
    Body(body): Body<LoginMfaBody>,
) -> Result<HttpResponse, ApiError> {
    let factor = SecondFactor::parse(body.code.as_deref(), body.recovery_code.as_deref())?;
    let outcome = state.auth.login_mfa(body.mfa_token.expose_secret(), factor, client.0).await?;
    Ok(logged_in(&state, body.transport.unwrap_or_default(), outcome))
}

/// A six-digit code of the authenticator app.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeBody {
    #[schema(pattern = "^[0-9]{6}$")]
    code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordCodeBody {
    #[schema(value_type = String)]
    password: SecretString,
    /// Six digits from the authenticator app, or a recovery code.
    code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginMfaBody {
    /// From the login's first step.
    #[schema(value_type = String)]
    mfa_token: SecretString,
    /// Six digits from the authenticator app; or send `recovery_code`.
    code: Option<String>,
    recovery_code: Option<String>,
    /// `cookie` for a browser session; default `body`.
    transport: Option<Transport>,
}

impl BodyRules for CodeBody {}
impl BodyRules for PasswordCodeBody {}
impl BodyRules for LoginMfaBody {}
