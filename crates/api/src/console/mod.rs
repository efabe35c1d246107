//! The admin console at `/admin/`: Django admin's place, as server-rendered
//! pages over the same admin use cases as the JSON API, so the permission
//! checks, the validation messages and the audit events are the API's.
//!
//! It signs in through the browser session: the sign-in form sets the cookie
//! transport's cookies, every page reads the access cookie, and every form
//! that changes something carries the session's CSRF token in a hidden
//! `csrf_token` field and must come from the console's own origin. Pages need
//! no script and load nothing from elsewhere (see [`POLICY`]). A page asked
//! for without a live session answers the sign-in form, which leads back to it.

mod audit;
mod form;
mod groups;
mod pages;
mod sign_in;
mod users;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, Resource, ResponseError};
use futures_util::future::{ready, LocalBoxFuture};
use gatehouse_domain::admin::{AdminError, Grants, Permission};
use gatehouse_domain::auth::{AuthenticateError, MeError, Principal};
use gatehouse_domain::{FieldErrors, PortError};
use maud::Markup;

use crate::cookies::{Ambiguous, BrowserCookies};
use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;
use form::Form;
use pages::Notice;

/// What a console page may load: its own stylesheet, nothing else; and its
/// forms post only to the console.
const POLICY: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's stylesheet, built into the binary.
const STYLESHEET: &str = include_str!("console.css");

/// Where the stylesheet is served.
const STYLESHEET_PATH: &str = "/admin/console.css";

/// A console resource: methods it does not route get an HTML 405.
fn page(path: &str) -> Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ConsoleError::page(
            StatusCode::METHOD_NOT_ALLOWED,
            "This page does not take that method.",
        ))
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .service(page("").route(web::get().to(|| async { see_other("/admin/") })))
            .service(page("/").route(web::get().to(home)))
            .service(page("/console.css").route(web::get().to(stylesheet)))
            .service(page("/login").route(web::post().to(sign_in::password)))
            .service(page("/login/mfa").route(web::post().to(sign_in::second_factor)))
            .service(page("/logout").route(web::post().to(sign_in::sign_out)))
            .service(page("/users").route(web::get().to(users::list)))
            .service(page("/users/new").route(web::get().to(users::new_user)).route(web::post().to(users::create)))
            .service(page("/users/{id}").route(web::get().to(users::show)).route(web::post().to(users::update)))
            .service(page("/users/{id}/sessions/revoke").route(web::post().to(users::revoke_sessions)))
            .service(page("/users/{id}/mfa/reset").route(web::post().to(users::reset_mfa)))
            .service(
                page("/users/{id}/delete")
                    .route(web::get().to(users::confirm_deletion))
                    .route(web::post().to(users::delete)),
            )
            .service(page("/groups").route(web::get().to(groups::list)).route(web::post().to(groups::create)))
            .service(page("/groups/{id}").route(web::get().to(groups::show)).route(web::post().to(groups::update)))
            .service(
                page("/groups/{id}/delete")
                    .route(web::get().to(groups::confirm_deletion))
                    .route(web::post().to(groups::delete)),
            )
            .service(page("/audit").route(web::get().to(audit::list)))
            .default_service(web::to(unknown_page)),
    );
}

/// A console page: HTML under the console's policy, never cached. Its
/// referrer policy is `same-origin`, not the service's `no-referrer`: under
/// `no-referrer` a browser posts forms with `Origin: null`, which the origin
/// check must refuse; no address of the console leaves for another site either way.
fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

/// The answer about a `thing` (user, group) that is not there: deleted since
/// the page was loaded, or never there; other failures as they are.
fn or_missing(thing: &'static str) -> impl Fn(AdminError) -> ConsoleError {
    move |error| match error {
        AdminError::NotFound => ConsoleError::page(
            StatusCode::NOT_FOUND,
            &format!("There is no such {thing}. It may have been deleted since the page was loaded."),
        ),
        other => other.into(),
    }
}

/// After a change, the page to show it on: 303, so a reload does not post again.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

/// The start page: the sections the operator may open.
async fn home(operator: Operator) -> Result<HttpResponse, ConsoleError> {
    if !operator.grants.any() {
        return Ok(html(StatusCode::FORBIDDEN, pages::no_permission(&operator)));
    }
    Ok(html(StatusCode::OK, pages::home(&operator)))
}

/// An address under `/admin/` that is no page: the sign-in form without a
/// session, like every other page; a 404 page with one.
async fn unknown_page(_signed_in: Operator) -> Result<HttpResponse, ConsoleError> {
    Err(ConsoleError::page(StatusCode::NOT_FOUND, "There is no such page in the console."))
}

/// Who is at the console: a live browser session, and what it may do now.
#[derive(Debug)]
pub(crate) struct Operator {
    principal: Principal,
    grants: Grants,
    email: String,
    /// The session's CSRF token, for the hidden field of every form.
    csrf: String,
}

impl Operator {
    fn may(&self, permission: Permission) -> bool {
        self.grants.allows(permission)
    }

    /// Fails with the 403 page unless the operator holds the permission.
    fn require(&self, permission: Permission) -> Result<(), ConsoleError> {
        if self.may(permission) {
            Ok(())
        } else {
            Err(AdminError::PermissionDenied.into())
        }
    }
}

impl FromRequest for Operator {
    type Error = ConsoleError;
    type Future = LocalBoxFuture<'static, Result<Self, ConsoleError>>;

    /// By the access cookie only: the console is a browser's, and a bearer
    /// header is no console session.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let Some(state) = state else {
            return Box::pin(ready(Err(ApiError::internal("application state is missing").into())));
        };
        let (held, next) = (state.browser.sign_in_token(req), return_address(req));
        let resume_to = format!(
            "{RESUME_PATH}?{}",
            url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &next).finish()
        );
        // A dead session's cookies are cleared; an expired one's are not (its refresh cookie may live).
        let sign_in = move |state: &AppState, notice, dead: bool| {
            let answer = sign_in::SignInAnswer::new(held, &state.browser, next, notice);
            ConsoleError::SignIn(Box::new(if dead { answer.clearing(&state.browser) } else { answer }))
        };
        let token = match state.browser.access_token(req) {
            Ok(Some(token)) => token,
            // The access cookie lives as long as its token; the CSRF cookie as long as the session.
            Ok(None) if state.browser.csrf_cookie(req).is_some() => {
                return Box::pin(ready(Err(ConsoleError::Resume(resume_to))));
            }
            Ok(None) => {
                let signed_out = Form::parse(req.query_string().as_bytes()).text("done") == Some("signed_out");
                return Box::pin(ready(Err(sign_in(&state, signed_out.then_some(Notice::SignedOut), false))));
            }
            Err(Ambiguous) => return Box::pin(ready(Err(sign_in(&state, None, false)))),
        };
        Box::pin(async move {
            let principal = match state.auth.authenticate(&token).await {
                Ok(principal) => principal,
                Err(AuthenticateError::Expired) => return Err(ConsoleError::Resume(resume_to)),
                Err(AuthenticateError::Invalid) => return Err(sign_in(&state, Some(Notice::SessionEnded), true)),
                Err(AuthenticateError::Port(error)) => return Err(error.into()),
            };
            let grants = state.admin.grants(principal).await?;
            let me = match state.auth.me(principal.user_id).await {
                Ok(me) => me,
                // Deleted while its session still looked fine.
                Err(MeError::NotFound) => return Err(sign_in(&state, Some(Notice::SessionEnded), true)),
                Err(MeError::Port(error)) => return Err(error.into()),
            };
            let csrf = state.auth.csrf_token(principal.session_id);
            Ok(Operator { principal, grants, email: me.email.as_ref().to_owned(), csrf })
        })
    }
}

/// Where the console sends a browser whose access cookie has expired or gone
/// while its session's CSRF cookie lives: it comes back to the same page with
/// a new pair, or, its cookies cleared, to the sign-in form.
const RESUME_PATH: &str = "/api/v1/auth/token/resume";

/// The console page `next` of a resume's query string names; the start page otherwise.
pub(crate) fn page_to_resume(query_string: &str) -> String {
    sign_in::safe_next(Form::parse(query_string.as_bytes()).text("next"))
}

/// The page to come back to after signing in: the one asked for, or for a
/// form's action the page it was posted from.
fn return_address(req: &HttpRequest) -> String {
    let path = req.path();
    if req.method() == actix_web::http::Method::GET {
        return match req.query_string() {
            "" => path.to_owned(),
            query => format!("{path}?{query}"),
        };
    }
    let page = ["/sessions/revoke", "/mfa/reset", "/delete"].iter().find_map(|action| path.strip_suffix(action));
    page.unwrap_or(path).to_owned()
}

/// A console form, posted by a signed-in operator from the console's own
/// origin with the session's CSRF token. The body is read only once the
/// session is known to be live.
#[derive(Debug)]
pub(crate) struct ConsoleForm(Operator, Form);

/// Longer forms than the console's are not its own.
const FORM_LIMIT: usize = 64 * 1024;

impl FromRequest for ConsoleForm {
    type Error = ConsoleError;
    type Future = LocalBoxFuture<'static, Result<Self, ConsoleError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let operator = Operator::from_request(req, payload);
        let checks = form_checks(req);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let operator = operator.await?;
            checks?;
            let body =
                body.await.map_err(|_| ConsoleError::page(StatusCode::BAD_REQUEST, "The form could not be read."))?;
            if body.len() > FORM_LIMIT {
                return Err(ConsoleError::page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The form is longer than any of the console's.",
                ));
            }
            let form = Form::parse(&body);
            let state = state.ok_or_else(|| ApiError::internal("application state is missing"))?;
            let token = form.text("csrf_token").unwrap_or_default();
            if !state.auth.csrf_matches(operator.principal.session_id, token) {
                return Err(ConsoleError::csrf_failed());
            }
            Ok(ConsoleForm(operator, form))
        })
    }
}

/// What every console form must be before its body is read: a form, of
/// a size a console form has, from the console's own origin.
fn form_checks(req: &HttpRequest) -> Result<(), ConsoleError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()).unwrap_or_default();
    if !content_type.starts_with(b"application/x-www-form-urlencoded") {
        return Err(ConsoleError::page(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Send this form from the console's pages."));
    }
    if !BrowserCookies::same_origin(req) {
        return Err(ConsoleError::csrf_failed());
    }
    Ok(())
}

/// What a console request ends in when it does not end in its page.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// No live session: the sign-in form, leading back to the page asked for.
    SignIn(Box<sign_in::SignInAnswer>),
    /// An expired access cookie: on to [`RESUME_PATH`], which leads back here.
    Resume(String),
    /// A page that says what went wrong, with the status that says it too.
    Page { status: StatusCode, messages: Vec<String>, retry_after: Option<u64>, request_id: Option<String> },
}

impl ConsoleError {
    fn page(status: StatusCode, message: &str) -> Self {
        Self::Page { status, messages: vec![message.to_owned()], retry_after: None, request_id: None }
    }

    fn csrf_failed() -> Self {
        Self::page(
            StatusCode::FORBIDDEN,
            "This form has expired or was sent from another site. Go back, reload the page and try again.",
        )
    }
}

impl From<ApiError> for ConsoleError {
    /// The API's answer as a page: its status and its messages.
    fn from(error: ApiError) -> Self {
        let request_id = error.status_code().is_server_error().then(request_id::current).flatten();
        error.log(request_id.as_deref());
        let messages = error.field_errors().values().flatten().cloned().collect();
        Self::Page { status: error.status_code(), messages, retry_after: error.retry_after(), request_id }
    }
}

impl From<AdminError> for ConsoleError {
    fn from(error: AdminError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<PortError> for ConsoleError {
    fn from(error: PortError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<FieldErrors> for ConsoleError {
    fn from(errors: FieldErrors) -> Self {
        ApiError::from(errors).into()
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn(_) => f.write_str("sign-in required"),
            Self::Resume(_) => f.write_str("session to resume"),
            Self::Page { status, .. } => write!(f, "console page {status}"),
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn(answer) => answer.status(),
            Self::Resume(_) => StatusCode::SEE_OTHER,
            Self::Page { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn(answer) => answer.respond(),
            Self::Resume(location) => see_other(location),
            Self::Page { status, messages, retry_after, request_id } => {
                let mut response = html(*status, pages::problem(*status, messages, request_id.as_deref()));
                if let Some(seconds) = retry_after {
                    if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                }
                response
            }
        }
    }
}
