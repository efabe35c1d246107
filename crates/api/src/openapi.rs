//! The OpenAPI 3 document, generated from the handlers' annotations, the
//! request types they read and the response types, served at
//! `/api/openapi.json` and explored at `/docs` (Swagger UI, its assets built
//! into the binary, so the page works offline). The shapes below exist only
//! for the document: the answers that are built as plain JSON.

#![allow(dead_code, missing_debug_implementations)]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use actix_web::http::header::{ContentType, CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::Config;

use crate::error::ApiError;

pub use crate::routes::admin::{AuditEventView, AuditPageView, GroupView, PageView};
pub use crate::views::{
    LoginAnswerView, LoginView, MfaRequiredView, ProfileView, RecoveryCodesView, SessionView, SignupView, TokensView,
    TotpSetupView, UserView, VerifiedView,
};

/// Every non-2xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    /// Machine-readable and stable, e.g. `validation_error`, `token_invalid`.
    code: String,
    /// Messages per request field (dotted for nested ones) or `non_field_errors`.
    errors: BTreeMap<String, Vec<String>>,
    /// Only on 500 `internal_error`: the id the logs carry too.
    request_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DetailResponse {
    detail: String,
}

/// `{}`.
#[derive(Serialize, ToSchema)]
pub struct EmptyResponse {}

#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    status: String,
}

/// 503 adds `code` and `errors` in the error shape, and names the failing check.
#[derive(Serialize, ToSchema)]
pub struct ReadinessResponse {
    status: String,
    checks: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct JwksResponse {
    keys: Vec<PublicJwk>,
}

/// A public key (RFC 7517): `crv` and `x` for Ed25519 (`kty` OKP), `n` and
/// `e` for RSA. `kid` is its RFC 7638 thumbprint, which tokens name in
/// their header; `alg` is the only algorithm it verifies.
#[derive(Serialize, ToSchema)]
pub struct PublicJwk {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: Option<String>,
    x: Option<String>,
    n: Option<String>,
    e: Option<String>,
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    key_use: String,
}

/// The two ways to authenticate: a bearer token, or a browser session's
/// access cookie (with the CSRF header on unsafe methods). Every secured
/// operation takes either.
struct Authentication;

impl Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement};
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        let cookie = ApiKey::Cookie(ApiKeyValue::with_description("__Host-gh_access", COOKIE_TRANSPORT));
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme("cookie", SecurityScheme::ApiKey(cookie));
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.patch, &mut item.put, &mut item.delete];
            for security in operations.into_iter().flatten().filter_map(|operation| operation.security.as_mut()) {
                security.push(SecurityRequirement::new("cookie", Vec::<String>::new()));
            }
        }
    }
}

const COOKIE_TRANSPORT: &str = "A browser session, opened by `\"transport\": \"cookie\"` on signup, login or \
refresh: the access JWT in `__Host-gh_access` (HttpOnly, SameSite=Lax, Path=/), the refresh token in \
`__Secure-gh_refresh` (HttpOnly, SameSite=Strict, Path=/api/v1/auth/token), the CSRF token in `__Host-gh_csrf` \
(readable by scripts, SameSite=Strict, Path=/) and in the body as `csrf_token`. With `cookies.secure = false` the \
names have no prefix; with `cookies.domain` set, `__Secure-` replaces `__Host-`. Used only when there is no \
`Authorization` header. An unsafe request (not GET, HEAD or OPTIONS) must send `X-CSRF-Token` equal to the \
session's CSRF token and, when it has an `Origin`, come from this service's origin or one of `cors.origins`; \
otherwise 403 `csrf_failed`. A 401 caused by a dead session clears the cookies, as logout does.";

/// Answers that follow from what an operation is, declared here once: a
/// bearer token can be missing or dead (401); a JSON body can be malformed,
/// late, too large or not JSON (400, 408, 413, 415); everything under
/// `/api/v1` reads the database (503). Answers a handler declares itself win.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build();
            ResponseBuilder::new().description(description).content("application/json", content).build().into()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (false, &mut item.get),
                (true, &mut item.post),
                (true, &mut item.patch),
                (true, &mut item.put),
                (true, &mut item.delete),
            ];
            for (unsafe_method, operation) in operations.into_iter().filter_map(|(u, o)| o.as_mut().map(|o| (u, o))) {
                let mut answers = Vec::new();
                if operation.security.is_some() {
                    answers.push(("401", "Not authenticated, or the token is not live"));
                }
                if operation.security.is_some() && unsafe_method {
                    csrf_rule(operation);
                }
                if operation.request_body.is_some() {
                    answers.extend([
                        ("400", "Invalid input"),
                        ("408", "The body did not arrive in time (server.body_timeout_seconds)"),
                        ("413", "The body is larger than server.body_limit_bytes"),
                        ("415", "The body is not JSON"),
                    ]);
                }
                if path.starts_with("/api/v1/") {
                    answers
                        .push(("503", "The database is unavailable; or, where a password is hashed, the hash waited past hashing.queue_deadline_ms or the queue is full, with Retry-After"));
                }
                for (status, description) in answers {
                    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description));
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Authentication and user accounts over JSON.\n\n\
Choices the contract leaves open: token errors name the body field they come from (`refresh`, `token`) and bearer \
errors use `non_field_errors` with `WWW-Authenticate: Bearer error=\"invalid_token\"`; unknown body fields are \
ignored; a body without Content-Type is 415 unless empty (then `invalid_json`); resend, reset and email change \
answer 202 with a `detail`; a spent refresh token presented again within 10 s rotates again (tabs refreshing \
together), later it revokes the session; a wrong current password is a 400 naming `old_password` or `password`; \
an email-change link whose address was taken meanwhile is 409; the last superuser and unknown groups are 400; \
granting beyond one's permissions is 403; the user list caps `page_size` at 100.\n\n\
Browser sessions: `\"transport\": \"cookie\"` on signup, login and refresh puts the tokens in httpOnly cookies \
(see the `cookie` security scheme) and only `csrf_token` in the body; unsafe calls authenticated by cookie send \
it as `X-CSRF-Token`. A refresh without a `refresh` field uses the refresh cookie and may send no body at all; an \
absent `transport` means `body`; a cookie sent twice is `token_invalid`.\n\n\
Signing keys: under `jwt.algorithm` EdDSA or RS256 every access token's header names its key by `kid` (the RFC \
7638 thumbprint) and is checked with that key's own algorithm only; the public keys are at \
`/.well-known/jwks.json` (cacheable 300 s), an HS256 service publishes none and its tokens carry no `kid`. A \
token of a key removed from the keys file, without `kid` or with an unknown one is `token_invalid`.\n\n\
Two-factor authentication: `mfa/totp/setup` (with the password) answers a secret and its `otpauth://` URI; \
`mfa/totp/confirm` with a first code turns it on and answers ten recovery codes, shown once. A login of such an \
account answers `mfa_required`, an `mfa_token` (300 s) and no session; `login/mfa` with the token and `code` (six \
digits, RFC 6238: SHA-1, 30 s, one step either side) or `recovery_code` finishes it, in either transport. A code is \
accepted once per account, a recovery code once ever (case, spaces and dashes ignored); a wrong one is a 400 on \
its field, the fifth kills the token (then 401), ten per account in 15 minutes give 429. `code` on disable and \
regenerate takes either kind. Access tokens carry `amr`: `[\"pwd\"]`, `[\"pwd\", \"otp\"]` or \
`[\"pwd\", \"mfa\"]`, kept across refreshes.\n\n\
The admin console at `/admin/` is HTML for browsers, outside this document: server-rendered pages over the same \
admin use cases, signed in with the cookie transport, every changing form carrying the session's CSRF token in a \
hidden `csrf_token` field."
    ),
    paths(
        crate::routes::account::signup,
        crate::routes::tokens::login,
        crate::routes::mfa::login,
        crate::routes::mfa::setup,
        crate::routes::mfa::confirm,
        crate::routes::mfa::disable,
        crate::routes::mfa::regenerate,
        crate::routes::tokens::refresh,
        crate::routes::tokens::verify,
        crate::routes::tokens::resume,
        crate::routes::account::verify_email,
        crate::routes::account::resend_verification,
        crate::routes::credentials::request_reset,
        crate::routes::credentials::confirm_reset,
        crate::routes::account::me,
        crate::routes::account::update_me,
        crate::routes::account::delete_me,
        crate::routes::credentials::change_password,
        crate::routes::account::change_email,
        crate::routes::tokens::logout,
        crate::routes::tokens::logout_all,
        crate::routes::sessions::list,
        crate::routes::sessions::revoke,
        crate::routes::admin::list_users,
        crate::routes::admin::create_user,
        crate::routes::admin::get_user,
        crate::routes::admin::update_user,
        crate::routes::admin::delete_user,
        crate::routes::admin::revoke_sessions,
        crate::routes::admin::reset_mfa,
        crate::routes::admin::list_groups,
        crate::routes::admin::create_group,
        crate::routes::admin::get_group,
        crate::routes::admin::update_group,
        crate::routes::admin::delete_group,
        crate::routes::admin::list_audit,
        crate::routes::health::live,
        crate::routes::health::ready,
        crate::routes::health::jwks,
        openapi_json,
        docs,
        docs_asset,
        crate::metrics::scrape,
    ),
    tags(
        (name = "auth", description = "Sign up, verify the address, log in, refresh and reset the password"),
        (name = "me", description = "The caller's own account"),
        (name = "mfa", description = "Two-factor authentication: TOTP (RFC 6238) with recovery codes"),
        (name = "sessions", description = "The caller's sessions: list, revoke, log out"),
        (name = "admin", description = "Users, groups and the audit trail, under the caller's permissions"),
        (name = "operations", description = "Health, keys, metrics and this document"),
    ),
    modifiers(&CommonAnswers, &Authentication)
)]
pub struct ApiDoc;

/// A secured unsafe operation called with the access cookie: the CSRF header,
/// and its 403 (beside a 403 the operation declares itself).
fn csrf_rule(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
    const CSRF_FAILED: &str = "csrf_failed: authenticated by cookie without the session's X-CSRF-Token, or from an \
origin that is not allowed";
    let header = ParameterBuilder::new()
        .name("X-CSRF-Token")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some("With the access cookie: the session's CSRF token (`csrf_token`)"))
        .schema(Some(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String)))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(header.into());
    match operation.responses.responses.get_mut("403") {
        Some(RefOr::T(declared)) => declared.description = format!("{}; or {CSRF_FAILED}", declared.description),
        Some(RefOr::Ref(_)) => {}
        None => {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build();
            let answer = ResponseBuilder::new().description(CSRF_FAILED).content("application/json", content).build();
            operation.responses.responses.insert("403".to_owned(), answer.into());
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type(ContentType::json()).body(DOCUMENT.as_str())
}

/// The explorer's settings: the document above, requests tried from the page.
static EXPLORER: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(Config::new(["/api/openapi.json"]).try_it_out_enabled(true).persist_authorization(false))
});

/// The explorer's own assets are all it loads; it calls this service only.
const EXPLORER_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

/// The document in an API explorer (Swagger UI), served from the binary.
#[utoipa::path(get, path = "/docs", tag = "operations", responses((status = 200, description = "HTML")))]
pub async fn docs() -> Result<HttpResponse, ApiError> {
    explorer_file("index.html")
}

/// The explorer's scripts, styles and icons.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "operations",
    params(("file" = String, Path, description = "An asset of the explorer, e.g. `swagger-ui-bundle.js`")),
    responses((status = 200, description = "The asset"), (status = 404, description = "No such asset", body = ErrorResponse))
)]
pub async fn docs_asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    explorer_file(&file)
}

fn explorer_file(name: &str) -> Result<HttpResponse, ApiError> {
    let file = match utoipa_swagger_ui::serve(name, Arc::clone(&EXPLORER)) {
        Ok(Some(file)) => file,
        Ok(None) => return Err(ApiError::not_found()),
        Err(error) => return Err(ApiError::internal(error.to_string())),
    };
    let mut response = HttpResponse::Ok();
    response.content_type(file.content_type).insert_header((CONTENT_SECURITY_POLICY, EXPLORER_POLICY));
    if name == "index.html" {
        // The page sits at /docs, where its relative links would point one level up.
        let page = String::from_utf8_lossy(&file.bytes)
            .replace("\"./", "\"")
            .replace("href=\"", "href=\"/docs/")
            .replace("src=\"", "src=\"/docs/")
            .replace("<title>Swagger UI</title>", "<title>Gatehouse API</title>");
        Ok(response.body(page))
    } else {
        Ok(response.insert_header((CACHE_CONTROL, "public, max-age=86400")).body(file.bytes.into_owned()))
    }
}
