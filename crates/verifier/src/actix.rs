//! actix-web extractors: a handler that takes [`Authenticated`] runs only
//! for a request with a valid `Authorization: Bearer` access token;
//! [`StrictlyAuthenticated`] also asks Gatehouse that the token is still
//! live. The [`Verifier`] is found in the app data, as itself or as
//! `web::Data<Verifier>`. Refusals answer in Gatehouse's error shape: 401
//! `not_authenticated`, `token_invalid` or `token_expired`, and 503
//! `service_unavailable` when nothing can be checked.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};

use crate::{Claims, Verifier, VerifyError};

/// The claims of a request's access token, checked with the published keys.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

/// The claims of a request's access token, checked with the published keys
/// and by Gatehouse (so a revoked session is refused at once).
#[derive(Debug, Clone)]
pub struct StrictlyAuthenticated(pub Claims);

impl Deref for Authenticated {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl Deref for StrictlyAuthenticated {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

/// A refusal, as an HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub VerifyError);

impl ResponseError for Refused {
    fn status_code(&self) -> StatusCode {
        match self.0 {
            VerifyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (code, message) = match &self.0 {
            VerifyError::Missing => ("not_authenticated", "Authentication credentials were not provided."),
            VerifyError::Expired => ("token_expired", "Token has expired."),
            VerifyError::Invalid(_) | VerifyError::Revoked => ("token_invalid", "Token is invalid."),
            VerifyError::Unavailable(_) => ("service_unavailable", "Tokens cannot be checked now."),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self.0 {
            VerifyError::Missing => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            VerifyError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
        }
        response.json(serde_json::json!({ "code": code, "errors": { "non_field_errors": [message] } }))
    }
}

/// The request's verifier and bearer token.
fn verifier_and_token(req: &HttpRequest) -> Result<(Verifier, String), Refused> {
    let verifier = req
        .app_data::<Verifier>()
        .cloned()
        .or_else(|| req.app_data::<web::Data<Verifier>>().map(|data| data.get_ref().clone()))
        .ok_or_else(|| Refused(VerifyError::Unavailable("no Verifier in the app data".into())))?;
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(Refused(VerifyError::Missing))?;
    Ok((verifier, token.to_owned()))
}

/// An extractor: the request's verifier and bearer token, then `$check`.
macro_rules! extractor {
    ($extractor:ident, $check:ident) => {
        impl FromRequest for $extractor {
            type Error = Refused;
            type Future = Pin<Box<dyn Future<Output = Result<Self, Refused>>>>;

            fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
                let found = verifier_and_token(req);
                Box::pin(async move {
                    let (verifier, token) = found?;
                    verifier.$check(&token).await.map($extractor).map_err(Refused)
                })
            }
        }
    };
}

extractor!(Authenticated, verify);
extractor!(StrictlyAuthenticated, verify_strict);
