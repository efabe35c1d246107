//! Login, token refresh and verification, logout.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use gatehouse_domain::auth::{LoginError, LoginOutcome, LoginRequest, LoginStep, RefreshError, TokenPair};
use gatehouse_domain::FieldErrors;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::no_store;
// The schemas named in the OpenAPI attributes of the handlers below.
use super::account::TokenBody;
use crate::body::{Body, BodyRules};
use crate::cookies::{Ambiguous, BrowserCookies, SessionCookies, Transport};
use crate::error::ApiError;
use crate::extract::{AuthUser, Client};
use crate::metrics::METRICS;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views::{LoginAnswerView, LoginView, MfaRequiredView, TokensView};

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    summary = "Log in",
    request_body = LoginBody,
    responses((status = 200, description = "Tokens and the user; for an account with two-factor authentication, `mfa_required` and the `mfa_token` of `login/mfa` instead", body = LoginAnswerView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 401, description = "Unknown email or wrong password", body = ErrorResponse), (status = 403, description = "Not verified, or disabled", body = ErrorResponse), (status = 429, description = "Too many failures; see Retry-After", body = ErrorResponse))
)]
pub async fn login(
    state: web::Data<AppState>,
    client: Client,
    Body(body): Body<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let request = LoginRequest::parse(&body.email, body.password.expose_secret())?;
    let outcome = state.auth.login(request, client.0).await;
    METRICS.login(outcome.as_ref().map_or_else(LoginError::reason, |_| "success"));
    let outcome = match outcome? {
        LoginStep::Done(outcome) => outcome,
        LoginStep::MfaRequired { mfa_token, expires_in } => {
            let view = MfaRequiredView { mfa_required: true, mfa_token: mfa_token.expose().to_owned(), expires_in };
            return Ok(no_store(HttpResponse::Ok().json(LoginAnswerView::MfaRequired(view))));
        }
    };
    Ok(logged_in(&state, body.transport.unwrap_or_default(), *outcome))
}

/// The answer of a finished login: the pair as `transport` asks, and the user.
pub(super) fn logged_in(state: &AppState, transport: Transport, outcome: LoginOutcome) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    let tokens = hand_over(state, transport, &outcome.tokens, &mut response);
    no_store(response.json(LoginView { tokens, user: outcome.user.into() }))
}

/// Gives a new pair to the client as its request asked: in the body, or in
/// the browser session's cookies with only the CSRF token in the body.
pub(crate) fn hand_over(
    state: &AppState,
    transport: Transport,
    pair: &TokenPair,
    response: &mut HttpResponseBuilder,
) -> TokensView {
    match transport {
        Transport::Body => TokensView::bearer(pair),
        Transport::Cookie => {
            let csrf = state.auth.csrf_token(pair.session_id);
            let cookies = state.browser.issue(&SessionCookies {
                access: pair.access.expose(),
                access_seconds: i64::try_from(pair.expires_in).unwrap_or(i64::MAX),
                refresh: pair.refresh.expose(),
                refresh_seconds: state.auth.policy().refresh_ttl.whole_seconds(),
                csrf: &csrf,
            });
            for cookie in cookies {
                response.cookie(cookie);
            }
            TokensView::cookie(pair, csrf)
        }
    }
}

/// With a `refresh` field, the body transport's refresh (answered as
/// `transport` asks); without one, the browser's: the refresh cookie, the
/// Origin rule and the CSRF token of the cookie's session, answered in cookies.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token/refresh",
    tag = "auth",
    summary = "Spend a refresh token for a new pair",
    request_body = RefreshBody,
    params(("X-CSRF-Token" = Option<String>, Header, description = "Without `refresh` in the body: the CSRF token of the refresh cookie's session")),
    responses((status = 200, description = "A new pair", body = TokensView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 401, description = "token_invalid, token_expired or token_reused (a refresh cookie's failure clears the cookies)", body = ErrorResponse), (status = 403, description = "csrf_failed: a refresh by cookie without its session's X-CSRF-Token, or from an origin that is not allowed", body = ErrorResponse))
)]
pub async fn refresh(
    state: web::Data<AppState>,
    client: Client,
    req: HttpRequest,
    Body(body): Body<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let (presented, csrf, transport) = match body.refresh {
        Some(token) => (token.expose_secret().to_owned(), None, body.transport.unwrap_or_default()),
        None => {
            let cookie = state.browser.refresh_token(&req).map_err(|Ambiguous| ApiError::token_invalid("refresh"))?;
            let Some(cookie) = cookie else {
                return Err(FieldErrors::single("refresh", "This field is required.").into());
            };
            if !state.browser.origin_allowed(&req) {
                return Err(ApiError::csrf_failed());
            }
            (cookie, Some(BrowserCookies::csrf_header(&req)), Transport::Cookie)
        }
    };
    let from_cookie = csrf.is_some();
    let pair = state.auth.refresh(&presented, csrf, &client.0).await;
    METRICS.refresh(pair.as_ref().map_or_else(RefreshError::reason, |_| "rotated"));
    let pair = pair.map_err(|error| {
        let dead = !matches!(error, RefreshError::CsrfFailed | RefreshError::Port(_));
        let answer = ApiError::from(error);
        if from_cookie && dead {
            answer.clearing_cookies(&state.browser)
        } else {
            answer
        }
    })?;
    let mut response = HttpResponse::Ok();
    let tokens = hand_over(&state, transport, &pair, &mut response);
    Ok(no_store(response.json(tokens)))
}

/// Where a console page sends a browser whose access cookie has expired (or
/// gone: its lifetime is the token's) while its CSRF cookie lives: under the
/// refresh cookie's path, it spends that cookie and goes back, so the console
/// keeps its session without a script. A navigation cannot send
/// `X-CSRF-Token`; what stands for it is the browser's own: both cookies it
/// needs are SameSite=Strict, the CSRF cookie must be the refresh session's,
/// and `Sec-Fetch-Site` must say this origin started it (or the address was typed).
#[utoipa::path(
    get,
    path = "/api/v1/auth/token/resume",
    tag = "auth",
    summary = "The admin console's way back into its browser session (a navigation, not an API call)",
    params(("next" = Option<String>, Query, description = "The console page to return to (`/admin/…`); anything else is `/admin/`")),
    responses((status = 303, description = "Back to `next`: with a new pair in the cookies; or, when the session cannot go on, with the three cookies cleared, where the console asks to sign in; or, for a navigation another site started, with nothing changed"))
)]
pub async fn resume(state: web::Data<AppState>, client: Client, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let mut response = HttpResponse::SeeOther();
    response.insert_header((header::LOCATION, crate::console::page_to_resume(req.query_string())));
    if !started_here(&req) {
        return Ok(no_store(response.finish()));
    }
    let refresh = match (state.browser.refresh_token(&req), state.browser.csrf_cookie(&req)) {
        (Ok(Some(refresh)), Some(csrf)) => Some(state.auth.refresh(&refresh, Some(&csrf), &client.0).await),
        _ => None,
    };
    METRICS.refresh(
        refresh.as_ref().map_or("not_attempted", |r| r.as_ref().map_or_else(RefreshError::reason, |_| "rotated")),
    );
    match refresh {
        Some(Ok(pair)) => {
            hand_over(&state, Transport::Cookie, &pair, &mut response);
        }
        // Not the session's fault: it may go on once the database is back.
        Some(Err(RefreshError::Port(error))) => return Err(error.into()),
        // No session to go on with: the console asks to sign in, and does not come back here.
        _ => {
            for cookie in state.browser.clear() {
                response.cookie(cookie);
            }
        }
    }
    Ok(no_store(response.finish()))
}

/// Whether this origin started the navigation, or it was typed in; a client
/// that sends no `Sec-Fetch-Site` is no browser whose cookies another site could use.
fn started_here(req: &HttpRequest) -> bool {
    matches!(req.headers().get("sec-fetch-site").map(|v| v.as_bytes()), None | Some(b"same-origin" | b"none"))
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
    Ok(logged_out(&state))
}

/// 204, clearing a browser session's cookies however the caller authenticated.
fn logged_out(state: &AppState) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    for cookie in state.browser.clear() {
        response.cookie(cookie);
    }
    response.finish()
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
    Ok(logged_out(&state))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    email: String,
    /// At most 1024 bytes, or 400 before any hashing.
    #[schema(value_type = String, max_length = 1024)]
    password: SecretString,
    /// `cookie` for a browser session; default `body`.
    transport: Option<Transport>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    /// Absent: the refresh cookie of a browser session.
    #[schema(value_type = Option<String>)]
    refresh: Option<SecretString>,
    /// How to answer a `refresh` from the body; a refresh by cookie answers in cookies.
    transport: Option<Transport>,
}

impl BodyRules for LoginBody {}

impl BodyRules for RefreshBody {
    /// A browser refreshing by cookie has nothing to send.
    const MAY_BE_ABSENT: bool = true;

    fn check(&self, errors: &mut FieldErrors) {
        if self.refresh.as_ref().is_some_and(|token| token.expose_secret().trim().is_empty()) {
            errors.add("refresh", "This field may not be blank.");
        }
    }
}
