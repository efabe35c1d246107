//! Signup, email verification, and the caller's own account.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use gatehouse_domain::auth::{RawSignup, SignupRequest};
use gatehouse_domain::error::collect;
use gatehouse_domain::user::{ProfilePatch, RawProfilePatch};
use gatehouse_domain::{Email, FieldErrors, PlainPassword};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::tokens::hand_over;
use super::{after_answering, no_store};
// The schemas named in the OpenAPI attributes of the handlers below.
use crate::body::{Body, BodyRules};
use crate::cookies::Transport;
use crate::error::ApiError;
use crate::extract::{AccessToken, AuthBody, Client};
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views::{LoginView, SignupView, UserView, VerifiedView};

#[utoipa::path(
    post,
    path = "/api/v1/auth/signup",
    tag = "auth",
    summary = "Create an account (known addresses get the same answer)",
    request_body = SignupBody,
    responses((status = 201, description = "Created; with tokens and user when verification is not required", body = SignupView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 409, description = "Address taken (only when verification is not required)", body = ErrorResponse), (status = 415, description = "Not JSON", body = ErrorResponse), (status = 429, description = "Too many mail-sending requests from this client IP (limits.mail_requests_per_ip)", body = ErrorResponse))
)]
pub async fn signup(
    state: web::Data<AppState>,
    client: Client,
    Body(body): Body<SignupBody>,
) -> Result<HttpResponse, ApiError> {
    let SignupBody { email, password, password2, first_name, last_name, tc, transport } = body;
    let request = SignupRequest::parse(RawSignup {
        email: &email,
        password: password.expose_secret(),
        password2: password2.as_ref().map(ExposeSecret::expose_secret),
        first_name: first_name.as_deref(),
        last_name: last_name.as_deref(),
        tc,
    })?;
    let outcome = state.auth.signup(request, client.0).await?;
    let mut response = HttpResponse::build(StatusCode::CREATED);
    let login = outcome.login.map(|login| LoginView {
        tokens: hand_over(&state, transport.unwrap_or_default(), &login.tokens, &mut response),
        user: login.user.into(),
    });
    let logged_in = login.is_some();
    let response = response.json(SignupView { email: outcome.email.into_inner(), is_verified: false, login });
    Ok(if logged_in { no_store(response) } else { response })
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/email/verify",
    tag = "auth",
    summary = "Spend an emailed link: confirms a signup or an email change",
    request_body = TokenBody,
    responses((status = 200, description = "Verified", body = VerifiedView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 409, description = "The new address was taken meanwhile", body = ErrorResponse))
)]
pub async fn verify_email(
    state: web::Data<AppState>,
    client: Client,
    Body(TokenBody { token }): Body<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    let user = state.auth.verify_email(token.expose_secret(), &client.0).await?;
    Ok(HttpResponse::Ok().json(VerifiedView { user: user.into() }))
}

/// Always the same 202, known address or not. The work happens after the
/// answer, so its duration cannot tell either.
#[utoipa::path(
    post,
    path = "/api/v1/auth/email/verify/resend",
    tag = "auth",
    summary = "Mail a new verification link (same answer for any address)",
    request_body = EmailBody,
    responses((status = 202, description = "Accepted", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 429, description = "Too many mail-sending requests from this client IP (limits.mail_requests_per_ip)", body = ErrorResponse))
)]
pub async fn resend_verification(
    state: web::Data<AppState>,
    Body(EmailBody { email }): Body<EmailBody>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&email).map_err(|e| FieldErrors::single("email", e.to_string()))?;
    let auth = state.auth.clone();
    after_answering(async move { auth.resend_verification(&email).await }, "resending a verification mail");
    Ok(HttpResponse::Accepted().json(json!({
        "detail": "If this address belongs to an account awaiting verification, a new link is on its way."
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "me",
    summary = "The caller",
    responses((status = 200, description = "The user", body = UserView)),
    security(("bearer" = []))
)]
pub async fn me(state: web::Data<AppState>, access: AccessToken) -> Result<HttpResponse, ApiError> {
    let user = state.auth.current_user(&access.token).await.map_err(|error| access.refused(error, &state))?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/auth/me",
    tag = "me",
    summary = "Edit names and profile",
    request_body = ProfilePatchBody,
    responses((status = 200, description = "The user", body = UserView), (status = 400, description = "Invalid input", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn update_me(
    state: web::Data<AppState>,
    AuthBody(caller, body): AuthBody<ProfilePatchBody>,
) -> Result<HttpResponse, ApiError> {
    let ProfilePatchBody { first_name, last_name, profile } = body;
    let patch = parse_profile(first_name.as_deref(), last_name.as_deref(), profile)?;
    let user = state.auth.update_me(caller.user_id, patch).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// 204 once the account and everything it held are gone.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/me",
    tag = "me",
    summary = "Delete the caller's account",
    request_body = PasswordBody,
    responses((status = 204, description = "Deleted"), (status = 400, description = "Invalid input", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn delete_me(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, PasswordBody { password }): AuthBody<PasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let password = PlainPassword::parse(password.expose_secret())
        .map_err(|rule| FieldErrors::single("password", rule.to_string()))?;
    state.auth.delete_me(caller, &password, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// 202: the address changes when the link mailed to it is used.
#[utoipa::path(
    post,
    path = "/api/v1/auth/email/change",
    tag = "me",
    summary = "Start an email change (a link goes to the new address)",
    request_body = EmailChangeBody,
    responses((status = 202, description = "Accepted", body = DetailResponse), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 429, description = "Too many mail-sending requests from this client IP (limits.mail_requests_per_ip)", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn change_email(
    state: web::Data<AppState>,
    AuthBody(caller, EmailChangeBody { new_email, password }): AuthBody<EmailChangeBody>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let new_email = collect(&mut errors, "new_email", Email::parse(&new_email));
    let password = collect(&mut errors, "password", PlainPassword::parse(password.expose_secret()));
    let (Some(new_email), Some(password)) = errors.finish((new_email, password))? else {
        return Err(ApiError::internal("parsed fields missing"));
    };
    state.auth.request_email_change(caller, new_email, &password).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "detail": "A confirmation link was sent to the new address; the change takes effect when it is used."
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignupBody {
    #[schema(format = IdnEmail, max_length = 254)]
    email: String,
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    password: SecretString,
    /// Must equal `password` when sent.
    #[schema(value_type = Option<String>)]
    password2: Option<SecretString>,
    #[schema(max_length = 150)]
    first_name: Option<String>,
    #[schema(max_length = 150)]
    last_name: Option<String>,
    /// Terms accepted; `false` is refused.
    tc: Option<bool>,
    /// How a signup that logs in at once hands over its tokens; default `body`.
    transport: Option<Transport>,
}

/// A one-time token from a mailed link.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenBody {
    #[schema(value_type = String)]
    pub token: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailBody {
    #[schema(format = IdnEmail, max_length = 254)]
    pub email: String,
}

/// The caller's current password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordBody {
    #[schema(value_type = String)]
    pub password: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailChangeBody {
    #[schema(format = IdnEmail, max_length = 254)]
    new_email: String,
    #[schema(value_type = String)]
    password: SecretString,
}

/// Other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfilePatchBody {
    #[schema(max_length = 150)]
    first_name: Option<String>,
    #[schema(max_length = 150)]
    last_name: Option<String>,
    profile: Option<ProfileFields>,
}

/// Names and profile fields under the profile rules, errors under dotted keys:
/// the user's own patch and an administrator's read them alike.
pub(crate) fn parse_profile(
    first_name: Option<&str>,
    last_name: Option<&str>,
    profile: Option<ProfileFields>,
) -> Result<ProfilePatch, FieldErrors> {
    let ProfileFields { phone, gender, bio } = profile.unwrap_or_default();
    ProfilePatch::parse(RawProfilePatch {
        first_name,
        last_name,
        phone: phone.as_ref().map(Option::as_deref),
        gender: gender.as_ref().map(Option::as_deref),
        bio: bio.as_deref(),
    })
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ProfileFields {
    /// E.164 (`+` and 8 to 15 digits), or null to clear it.
    #[schema(nullable, pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub(crate) phone: Option<Option<String>>,
    /// At most 32 characters, or null to clear it.
    #[schema(nullable, max_length = 32)]
    pub(crate) gender: Option<Option<String>>,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub(crate) bio: Option<String>,
}

impl BodyRules for SignupBody {}
impl BodyRules for TokenBody {}
impl BodyRules for EmailBody {}
impl BodyRules for PasswordBody {}
impl BodyRules for EmailChangeBody {}
impl BodyRules for ProfilePatchBody {}
impl BodyRules for ProfileFields {}
