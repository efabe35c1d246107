//! The one place where failures become HTTP responses in the contract's shape:
//! `{ "code": …, "errors": { field: [message…] } }`.

use std::collections::BTreeMap;

use actix_web::cookie::Cookie;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use gatehouse_domain::admin::AdminError;
use gatehouse_domain::auth::{
    AuthenticateError, ChangePasswordError, EmailChangeError, LoginError, MailRequestError, MeError, MfaError,
    OwnPasswordError, RefreshError, ResetPasswordError, RevokeSessionError, SignupError, VerifyEmailError,
};
use gatehouse_domain::error::NON_FIELD_ERRORS;
use gatehouse_domain::{FieldErrors, PortError};
use serde::Serialize;

use crate::cookies::BrowserCookies;
use crate::request_id;

/// A failure on its way to the client. Unexpected ones keep their source for
/// the log; the client only ever sees the generic body and the request id.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    errors: BTreeMap<String, Vec<String>>,
    www_authenticate: Option<&'static str>,
    retry_after: Option<u64>,
    /// The methods a 405's resource answers.
    allow: Option<Box<str>>,
    /// Cookies the answer sets: a dead browser session's, expired.
    set_cookies: Option<Box<[Cookie<'static>; 3]>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    errors: &'a BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code, self.status)
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, field: &str, message: &str) -> Self {
        let errors = BTreeMap::from([(field.to_owned(), vec![message.to_owned()])]);
        Self {
            status,
            code,
            errors,
            www_authenticate: None,
            retry_after: None,
            allow: None,
            set_cookies: None,
            source: None,
        }
    }

    fn general(status: StatusCode, code: &'static str, message: &str) -> Self {
        Self::new(status, code, NON_FIELD_ERRORS, message)
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The messages by field, for a page that shows each next to its field.
    pub fn field_errors(&self) -> &BTreeMap<String, Vec<String>> {
        &self.errors
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// A server-side failure goes to the log with its source (never to the
    /// client). A 503 is not one: an outage was logged where it was met, and
    /// an overloaded hash pool is counted in the metrics instead.
    pub(crate) fn log(&self, request_id: Option<&str>) {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            let source = self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static));
            tracing::error!(request_id, code = self.code, error = source, "request failed");
        }
    }

    pub fn validation(errors: FieldErrors) -> Self {
        Self { errors: errors.into_map(), ..Self::general(StatusCode::BAD_REQUEST, "validation_error", "") }
    }

    /// The caller's own current password did not match.
    pub fn wrong_password(field: &str) -> Self {
        Self::validation(FieldErrors::single(field, "The password is incorrect."))
    }

    pub fn invalid_json(message: &str) -> Self {
        Self::general(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn invalid_credentials() -> Self {
        Self::general(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "No active account found with the given credentials.",
        )
    }

    pub fn not_authenticated() -> Self {
        Self {
            www_authenticate: Some("Bearer"),
            ..Self::general(
                StatusCode::UNAUTHORIZED,
                "not_authenticated",
                "Authentication credentials were not provided.",
            )
        }
    }

    /// A bearer token that is not live.
    pub fn bearer_invalid() -> Self {
        Self {
            www_authenticate: Some("Bearer error=\"invalid_token\""),
            ..Self::general(StatusCode::UNAUTHORIZED, "token_invalid", "Token is invalid.")
        }
    }

    pub fn bearer_expired() -> Self {
        Self {
            www_authenticate: Some("Bearer error=\"invalid_token\""),
            ..Self::general(StatusCode::UNAUTHORIZED, "token_expired", "Token has expired.")
        }
    }

    /// A token in a body, checked as a credential (refresh, token/verify).
    pub fn token_invalid(field: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "token_invalid", field, "Token is invalid.")
    }

    pub fn token_expired(field: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "token_expired", field, "Token has expired.")
    }

    pub fn token_reused() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "token_reused",
            "refresh",
            "This refresh token was already used; the session is revoked. Log in again.",
        )
    }

    /// A one-time link token (400, unlike credentials).
    pub fn link_token_invalid() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "token_invalid", "token", "This link is invalid, used or expired.")
    }

    pub fn email_not_verified() -> Self {
        Self::general(StatusCode::FORBIDDEN, "email_not_verified", "Verify your email address before logging in.")
    }

    pub fn account_disabled() -> Self {
        Self::general(StatusCode::FORBIDDEN, "account_disabled", "This account is disabled.")
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::general(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!("Too many failed attempts. Try again in {retry_after} seconds."),
            )
        }
    }

    pub fn csrf_failed() -> Self {
        Self::general(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "CSRF check failed: send the session's X-CSRF-Token from an allowed origin.",
        )
    }

    /// The same answer, clearing the browser session's cookies: the session
    /// they carry is dead, and a browser should stop sending them.
    pub fn clearing_cookies(mut self, cookies: &BrowserCookies) -> Self {
        self.set_cookies = Some(Box::new(cookies.clear()));
        self
    }

    pub fn permission_denied() -> Self {
        Self::general(StatusCode::FORBIDDEN, "permission_denied", "You do not have permission to perform this action.")
    }

    pub fn not_found() -> Self {
        Self::general(StatusCode::NOT_FOUND, "not_found", "Not found.")
    }

    pub fn method_not_allowed(allow: String) -> Self {
        Self {
            allow: Some(allow.into_boxed_str()),
            ..Self::general(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed.")
        }
    }

    /// The contract's answer for a status that a layer below the handlers
    /// chose (a CORS refusal, a framework's own error), with its message.
    pub fn of_status(status: StatusCode, message: &str) -> Self {
        let code = match status.as_u16() {
            401 => "not_authenticated",
            403 => "permission_denied",
            404 => "not_found",
            405 => "method_not_allowed",
            408 => "request_timeout",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            429 => "rate_limited",
            431 => "request_header_too_large",
            503 => "service_unavailable",
            500..=599 => "internal_error",
            _ => "validation_error",
        };
        let message =
            if message.is_empty() { status.canonical_reason().unwrap_or("Request refused.") } else { message };
        Self::general(status, code, message)
    }

    pub fn email_taken() -> Self {
        Self::new(StatusCode::CONFLICT, "email_taken", "email", "A user with this email already exists.")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::general(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn request_timeout() -> Self {
        Self::general(StatusCode::REQUEST_TIMEOUT, "request_timeout", "The request body did not arrive in time.")
    }

    pub fn unsupported_media_type() -> Self {
        Self::general(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        )
    }

    pub fn service_unavailable() -> Self {
        Self::general(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "The service is temporarily unavailable.")
    }

    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::general(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Something went wrong on our side.")
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = request_id::current();
        self.log(request_id.as_deref());
        let body = ErrorBody {
            code: self.code,
            errors: &self.errors,
            request_id: if self.status == StatusCode::INTERNAL_SERVER_ERROR { request_id } else { None },
        };
        let mut response = HttpResponse::build(self.status);
        if let Some(challenge) = self.www_authenticate {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if let Some(allow) = &self.allow {
            response.insert_header((header::ALLOW, &**allow));
        }
        for cookie in self.set_cookies.iter().flat_map(|cookies| cookies.iter()) {
            response.cookie(cookie.clone());
        }
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        response.json(body)
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        Self::validation(errors)
    }
}

impl From<PortError> for ApiError {
    fn from(error: PortError) -> Self {
        match error {
            PortError::Unavailable(_) if error.retry_after().is_some() => {
                // Saturated, not broken: counted in the metrics, not logged per request.
                Self { retry_after: error.retry_after(), ..Self::service_unavailable() }
            }
            PortError::Unavailable(source) => {
                tracing::warn!(error = &*source as &dyn std::error::Error, "a backing service is unavailable");
                Self::service_unavailable()
            }
            PortError::Unexpected(source) => Self::internal(source),
        }
    }
}

impl From<SignupError> for ApiError {
    fn from(error: SignupError) -> Self {
        match error {
            SignupError::EmailTaken => Self::email_taken(),
            SignupError::Port(error) => error.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::InvalidCredentials => Self::invalid_credentials(),
            LoginError::Throttled { retry_after } => Self::rate_limited(retry_after),
            LoginError::EmailNotVerified => Self::email_not_verified(),
            LoginError::AccountDisabled => Self::account_disabled(),
            LoginError::Port(error) => error.into(),
        }
    }
}

impl From<MailRequestError> for ApiError {
    fn from(error: MailRequestError) -> Self {
        match error {
            MailRequestError::Throttled { retry_after } => Self::rate_limited(retry_after),
            MailRequestError::Port(error) => error.into(),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(error: RefreshError) -> Self {
        match error {
            RefreshError::Invalid => Self::token_invalid("refresh"),
            RefreshError::Expired => Self::token_expired("refresh"),
            RefreshError::Reused => Self::token_reused(),
            RefreshError::CsrfFailed => Self::csrf_failed(),
            RefreshError::Port(error) => error.into(),
        }
    }
}

impl ApiError {
    /// An access token sent in a body to be checked (not one that authenticates the call):
    /// its errors name the field.
    pub fn of_presented_token(error: AuthenticateError) -> Self {
        match error {
            AuthenticateError::Invalid => Self::token_invalid("token"),
            AuthenticateError::Expired => Self::token_expired("token"),
            AuthenticateError::Port(error) => error.into(),
        }
    }
}

impl From<AuthenticateError> for ApiError {
    fn from(error: AuthenticateError) -> Self {
        match error {
            AuthenticateError::Invalid => Self::bearer_invalid(),
            AuthenticateError::Expired => Self::bearer_expired(),
            AuthenticateError::Port(error) => error.into(),
        }
    }
}

impl From<VerifyEmailError> for ApiError {
    fn from(error: VerifyEmailError) -> Self {
        match error {
            VerifyEmailError::InvalidToken => Self::link_token_invalid(),
            // The holder of the link owns the new mailbox, so telling them is safe.
            VerifyEmailError::AddressTaken => Self::email_taken(),
            VerifyEmailError::Port(error) => error.into(),
        }
    }
}

impl From<ChangePasswordError> for ApiError {
    fn from(error: ChangePasswordError) -> Self {
        match error {
            ChangePasswordError::WrongPassword => Self::wrong_password("old_password"),
            ChangePasswordError::Invalid(errors) => Self::validation(errors),
            ChangePasswordError::Port(error) => error.into(),
        }
    }
}

impl From<MfaError> for ApiError {
    fn from(error: MfaError) -> Self {
        match error {
            MfaError::WrongPassword => Self::wrong_password("password"),
            MfaError::WrongCode { field } => {
                Self::validation(FieldErrors::single(field, "This code is wrong, or it was used already."))
            }
            MfaError::Refused(message) => Self::validation(FieldErrors::single(NON_FIELD_ERRORS, message)),
            MfaError::TokenInvalid => Self::token_invalid("mfa_token"),
            MfaError::Throttled { retry_after } => Self::rate_limited(retry_after),
            MfaError::Port(error) => error.into(),
        }
    }
}

impl From<OwnPasswordError> for ApiError {
    fn from(error: OwnPasswordError) -> Self {
        match error {
            OwnPasswordError::WrongPassword => Self::wrong_password("password"),
            OwnPasswordError::Port(error) => error.into(),
        }
    }
}

impl From<ResetPasswordError> for ApiError {
    fn from(error: ResetPasswordError) -> Self {
        match error {
            ResetPasswordError::InvalidToken => Self::link_token_invalid(),
            ResetPasswordError::Invalid(errors) => Self::validation(errors),
            ResetPasswordError::Port(error) => error.into(),
        }
    }
}

impl From<EmailChangeError> for ApiError {
    fn from(error: EmailChangeError) -> Self {
        match error {
            EmailChangeError::WrongPassword => Self::wrong_password("password"),
            EmailChangeError::SameAddress => {
                FieldErrors::single("new_email", "This is already your email address.").into()
            }
            EmailChangeError::Port(error) => error.into(),
        }
    }
}

impl From<RevokeSessionError> for ApiError {
    fn from(error: RevokeSessionError) -> Self {
        match error {
            RevokeSessionError::NotFound => Self::not_found(),
            RevokeSessionError::Port(error) => error.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::PermissionDenied => Self::permission_denied(),
            AdminError::Invalid(errors) => Self::validation(errors),
            AdminError::NotFound => Self::not_found(),
            AdminError::Port(error) => error.into(),
        }
    }
}

impl From<MeError> for ApiError {
    fn from(error: MeError) -> Self {
        match error {
            // The account was deleted while its token still looked fine.
            MeError::NotFound => Self::bearer_invalid(),
            MeError::Port(error) => error.into(),
        }
    }
}
