//! Signing in to the console (a password, then a code when two-factor
//! authentication is on) and out. A signed-in console holds the browser
//! session of the cookie transport, the same as any browser frontend.
//!
//! Before there is a session, the sign-in forms carry a token that is also in
//! a cookie of the console's own (double submit), and must come from its
//! origin: another site cannot sign a browser in to an account of its choosing.

use actix_web::cookie::Cookie;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use gatehouse_domain::auth::{LoginError, LoginRequest, LoginStep, TokenPair};
use uuid::Uuid;

use super::form::Form;
use super::pages::{self, Notice, Problems, SignInForm, NO_PROBLEMS};
use super::{form_checks, html, ConsoleError, ConsoleForm};
use crate::cookies::{BrowserCookies, Transport};
use crate::error::ApiError;
use crate::extract::Client;
use crate::metrics::METRICS;
use crate::routes::mfa::either_code;
use crate::routes::tokens::hand_over;
use crate::state::AppState;

/// Where the console starts.
const HOME: &str = "/admin/";

/// The sign-in form as an answer, with its token: the one the browser holds,
/// or a new one in a new cookie.
#[derive(Debug)]
pub(crate) struct SignInAnswer {
    status: StatusCode,
    next: String,
    notice: Option<Notice>,
    email: String,
    problems: Problems,
    /// Set after too many failures.
    retry_after: Option<u64>,
    csrf: String,
    /// The browser sent `csrf` in its sign-in cookie (it was not made now).
    held: bool,
    /// The new token's cookie, and a dead session's cookies, expired.
    cookies: Vec<Cookie<'static>>,
}

impl SignInAnswer {
    /// `held`: the token of the browser's sign-in cookie, if it has one.
    pub fn new(held: Option<String>, browser: &BrowserCookies, next: String, notice: Option<Notice>) -> Self {
        let was_held = held.is_some();
        let (csrf, cookies) = match held {
            Some(token) => (token, Vec::new()),
            None => {
                // 122 bits from the OS's generator.
                let token = Uuid::new_v4().simple().to_string();
                let cookie = browser.sign_in_cookie(&token);
                (token, vec![cookie])
            }
        };
        Self {
            status: StatusCode::OK,
            next,
            notice,
            email: String::new(),
            problems: Problems::new(),
            retry_after: None,
            csrf,
            held: was_held,
            cookies,
        }
    }

    /// The same form for a dead session, whose cookies the browser should drop.
    pub fn clearing(mut self, browser: &BrowserCookies) -> Self {
        self.cookies.extend(browser.clear());
        self
    }

    /// Whether a posted form carries the token of this browser's cookie.
    fn token_matches(&self, presented: Option<&str>) -> bool {
        self.held && presented.is_some_and(|token| constant_time_eq(token.as_bytes(), self.csrf.as_bytes()))
    }

    /// The form again, with what went wrong.
    fn failed(mut self, error: &ApiError) -> Self {
        self.status = error.status_code();
        self.problems = error.field_errors().clone();
        self.retry_after = error.retry_after();
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn respond(&self) -> HttpResponse {
        let form = SignInForm {
            next: &self.next,
            notice: self.notice,
            email: &self.email,
            problems: Some(&self.problems),
            csrf: &self.csrf,
        };
        let mut response = html(self.status, pages::sign_in(&form));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        for cookie in &self.cookies {
            if let Ok(value) = header::HeaderValue::from_str(&cookie.to_string()) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// A page of the console to go to after signing in; anything else is the start page.
pub(super) fn safe_next(raw: Option<&str>) -> String {
    match raw {
        Some(path)
            if path.starts_with(HOME)
                && !path.contains("//")
                && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            path.to_owned()
        }
        _ => HOME.to_owned(),
    }
}

/// A posted sign-in form: its fields, and the answer to give when it fails,
/// already refused (403) when the form is not the console's own.
fn posted(req: &HttpRequest, state: &AppState, body: &[u8]) -> (Form, SignInAnswer) {
    let form = Form::parse(body);
    let held = state.browser.sign_in_token(req);
    let mut answer = SignInAnswer::new(held, &state.browser, safe_next(form.text("next")), None);
    if form_checks(req).is_err() || !answer.token_matches(form.text("csrf_token")) {
        answer.status = StatusCode::FORBIDDEN;
        answer.notice = Some(Notice::FormExpired);
    }
    (form, answer)
}

/// The first step: email and password.
pub(super) async fn password(
    state: web::Data<AppState>,
    client: Client,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (form, mut answer) = posted(&req, &state, &body);
    if answer.status == StatusCode::FORBIDDEN {
        return answer.respond();
    }
    answer.email = form.text("email").unwrap_or_default().to_owned();
    let request = match LoginRequest::parse(&answer.email, form.text("password").unwrap_or_default()) {
        Ok(request) => request,
        Err(errors) => return answer.failed(&errors.into()).respond(),
    };
    let outcome = state.auth.login(request, client.0).await;
    METRICS.login(outcome.as_ref().map_or_else(LoginError::reason, |_| "success"));
    match outcome {
        Ok(LoginStep::Done(outcome)) => signed_in(&state, &outcome.tokens, &answer.next),
        Ok(LoginStep::MfaRequired { mfa_token, .. }) => {
            html(StatusCode::OK, pages::second_factor(mfa_token.expose(), &answer.next, &answer.csrf, &NO_PROBLEMS))
        }
        Err(error) => answer.failed(&error.into()).respond(),
    }
}

/// The second step: a code of the authenticator app, or a recovery code.
pub(super) async fn second_factor(
    state: web::Data<AppState>,
    client: Client,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (form, answer) = posted(&req, &state, &body);
    if answer.status == StatusCode::FORBIDDEN {
        return answer.respond();
    }
    let mfa_token = form.text("mfa_token").unwrap_or_default();
    let again = |error: ApiError| {
        let page = pages::second_factor(mfa_token, &answer.next, &answer.csrf, error.field_errors());
        let mut response = html(error.status_code(), page);
        if let Some(seconds) = error.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    };
    let factor = match either_code(form.text("code").unwrap_or_default()) {
        Ok(factor) => factor,
        Err(errors) => return again(errors.into()),
    };
    match state.auth.login_mfa(mfa_token, factor, client.0).await {
        Ok(outcome) => signed_in(&state, &outcome.tokens, &answer.next),
        Err(error) => {
            let error = ApiError::from(error);
            // A dead mfa_token (expired, used, or killed by wrong codes) starts over.
            if error.status_code() == StatusCode::UNAUTHORIZED {
                answer.failed(&error).respond()
            } else {
                again(error)
            }
        }
    }
}

/// The browser session's cookies, and on to the page that was asked for.
fn signed_in(state: &AppState, pair: &TokenPair, next: &str) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    hand_over(state, Transport::Cookie, pair, &mut response);
    response.insert_header((header::LOCATION, next)).finish()
}

/// Ends the console's session, as `logout` does, and clears its cookies.
pub(super) async fn sign_out(
    state: web::Data<AppState>,
    client: Client,
    ConsoleForm(operator, _): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    state.auth.logout(operator.principal, &client.0).await?;
    let mut response = HttpResponse::SeeOther();
    for cookie in state.browser.clear() {
        response.cookie(cookie);
    }
    Ok(response.insert_header((header::LOCATION, "/admin/?done=signed_out")).finish())
}
