//! Extractors that carry who is calling: a handler that takes [`AuthUser`]
//! cannot be reached without a live session.

use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use gatehouse_domain::auth::{AuthenticateError, Principal};
use gatehouse_domain::ClientInfo;
use ipnet::IpNet;

use serde::de::DeserializeOwned;

use crate::body::{Body, BodyRules};
use crate::cookies::{Ambiguous, BrowserCookies};
use crate::error::ApiError;
use crate::state::AppState;

/// The caller behind a live access token.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Principal);

/// The token of an `Authorization: Bearer <token>` header, if there is one.
/// Read as bytes: a token that is not ASCII is still `Bearer <something>`,
/// so it fails as a token (`token_invalid`), not as a missing header.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes().trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = (&value[..space], value[space..].trim_ascii());
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then(|| String::from_utf8_lossy(token).into_owned())
}

/// Safe methods change nothing, so a cookie alone may authenticate them.
fn is_safe(req: &HttpRequest) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    /// By bearer token, or by access cookie; then an unsafe request by
    /// cookie needs an allowed `Origin` and its session's CSRF token, checked
    /// once the session is known (the token is bound to it).
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = presented_access(req, state.as_ref().map(|state| state.get_ref()));
        // Only a cookie on an unsafe request has these to check; bearer calls skip them.
        let csrf = match (&presented, &state) {
            (Ok(token), Some(state)) if token.from_cookie && !is_safe(req) => {
                Some((state.browser.origin_allowed(req), BrowserCookies::csrf_header(req).to_owned()))
            }
            _ => None,
        };
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state is missing"))?;
            let token = presented?;
            let principal = state.auth.authenticate(&token.token).await.map_err(|e| token.refused(e, &state))?;
            if let Some((origin_allowed, csrf)) = csrf {
                if !origin_allowed || !state.auth.csrf_matches(principal.session_id, &csrf) {
                    return Err(ApiError::csrf_failed());
                }
            }
            Ok(AuthUser(principal))
        })
    }
}

/// The request's access token: the `Authorization` header's when there is
/// one (it always wins, and a header that is not `Bearer` is no credential),
/// else the access cookie's.
fn presented_access(req: &HttpRequest, state: Option<&AppState>) -> Result<AccessToken, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        let token = bearer_token(req).ok_or_else(ApiError::not_authenticated)?;
        return Ok(AccessToken { token, from_cookie: false });
    }
    let cookie = state.map_or(Ok(None), |state| state.browser.access_token(req));
    match cookie {
        Ok(Some(token)) => Ok(AccessToken { token, from_cookie: true }),
        Ok(None) => Err(ApiError::not_authenticated()),
        Err(Ambiguous) => Err(ApiError::bearer_invalid()),
    }
}

/// The caller, then a body read into `T`: the body is read only once the
/// session is known to be live, so a dead session is a 401 whatever the body
/// holds (extractors side by side would race, and the first error would win).
#[derive(Debug)]
pub struct AuthBody<T>(pub Principal, pub T);

impl<T: DeserializeOwned + BodyRules + 'static> FromRequest for AuthBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = AuthUser::from_request(req, payload);
        let body = Body::<T>::from_request(req, payload);
        Box::pin(async move {
            let AuthUser(principal) = caller.await?;
            Ok(AuthBody(principal, body.await?.0))
        })
    }
}

/// The access token of the request, not yet checked, for handlers that
/// check it together with what they read (`GET /me`). Only safe methods take
/// it: a cookie is no credential for an unsafe one without the CSRF checks
/// of [`AuthUser`].
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub from_cookie: bool,
}

impl AccessToken {
    /// The answer to a token that is not live; a dead session's cookies are
    /// cleared (an expired access cookie is not: its refresh cookie may live).
    pub fn refused(&self, error: AuthenticateError, state: &AppState) -> ApiError {
        let dead = matches!(error, AuthenticateError::Invalid);
        let answer = ApiError::from(error);
        if self.from_cookie && dead {
            answer.clearing_cookies(&state.browser)
        } else {
            answer
        }
    }
}

impl FromRequest for AccessToken {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>();
        let token = presented_access(req, state.map(|s| s.get_ref()));
        ready(match token {
            Ok(token) if token.from_cookie && !is_safe(req) => Err(ApiError::csrf_failed()),
            other => other,
        })
    }
}

/// The client as the transport sees it: its address and user agent.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

/// The reverse proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    fn trust(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }

    /// The TCP peer, unless it is a trusted proxy: then the right-most
    /// forwarded address that is not itself one (the left-most if all are).
    /// A header from anyone else, an empty one, or one with an entry that
    /// is not an IP address is ignored.
    fn client_ip(&self, peer: IpAddr, req: &HttpRequest) -> IpAddr {
        if !self.trust(&peer) {
            return peer;
        }
        let Some(forwarded) = forwarded_for(req) else { return peer };
        forwarded.iter().rev().find(|ip| !self.trust(ip)).or(forwarded.first()).copied().unwrap_or(peer)
    }
}

/// Every address of the request's `X-Forwarded-For` headers, in order; none
/// when there is no address or an entry is not one.
fn forwarded_for(req: &HttpRequest) -> Option<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for value in req.headers().get_all("x-forwarded-for") {
        for entry in value.to_str().ok()?.split(',') {
            addresses.push(entry.trim().parse::<IpAddr>().ok()?);
        }
    }
    (!addresses.is_empty()).then_some(addresses)
}

impl FromRequest for Client {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let proxies = req.app_data::<web::Data<TrustedProxies>>();
        let ip = req.peer_addr().map(|addr| match proxies {
            Some(proxies) => proxies.client_ip(addr.ip(), req),
            None => addr.ip(),
        });
        let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
        ready(Ok(Client(ClientInfo::new(ip.map(|ip| ip.to_string()), user_agent))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn token(value: &str) -> Option<String> {
        bearer_token(&TestRequest::default().insert_header((header::AUTHORIZATION, value)).to_http_request())
    }

    fn client_ip(proxies: &[&str], peer: &str, forwarded: &[&str]) -> String {
        let proxies = TrustedProxies(proxies.iter().map(|p| p.parse().unwrap()).collect());
        let mut request = TestRequest::default();
        for value in forwarded {
            request = request.append_header(("x-forwarded-for", *value));
        }
        proxies.client_ip(peer.parse().unwrap(), &request.to_http_request()).to_string()
    }

    #[test]
    fn the_client_ip_is_read_through_trusted_proxies_only() {
        let proxies = ["10.0.0.0/8", "192.0.2.1/32"];
        assert_eq!(client_ip(&proxies, "203.0.113.5", &["198.51.100.7"]), "203.0.113.5", "an untrusted peer");
        assert_eq!(client_ip(&proxies, "10.0.0.2", &["198.51.100.7"]), "198.51.100.7");
        assert_eq!(
            client_ip(&proxies, "10.0.0.2", &["6.6.6.6, 198.51.100.7, 10.1.1.1"]),
            "198.51.100.7",
            "right-most untrusted"
        );
        assert_eq!(client_ip(&proxies, "10.0.0.2", &["6.6.6.6", "198.51.100.7"]), "198.51.100.7", "headers in order");
        assert_eq!(client_ip(&proxies, "10.0.0.2", &["10.3.3.3, 192.0.2.1"]), "10.3.3.3", "all trusted: the left-most");
        assert_eq!(client_ip(&proxies, "10.0.0.2", &[""]), "10.0.0.2", "an empty header");
        assert_eq!(client_ip(&proxies, "10.0.0.2", &["198.51.100.7, unknown"]), "10.0.0.2", "an entry that is no IP");
        assert_eq!(client_ip(&proxies, "10.0.0.2", &["198.51.100.7:443"]), "10.0.0.2", "a port is no IP");
        assert_eq!(client_ip(&proxies, "10.0.0.2", &[]), "10.0.0.2", "no header");
        assert_eq!(client_ip(&["2001:db8::/32"], "2001:db8::1", &["2001:db8:ffff::1, 2a00::9"]), "2a00::9");
    }

    #[test]
    fn reads_bearer_tokens_only() {
        assert_eq!(token("Bearer abc.def").as_deref(), Some("abc.def"));
        assert_eq!(token("bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(token("Token abc"), None);
        assert_eq!(bearer_token(&TestRequest::default().to_http_request()), None);
        let non_ascii = header::HeaderValue::from_bytes(b"Bearer caf\xc3\xa9.\xff").unwrap();
        let request = TestRequest::default().insert_header((header::AUTHORIZATION, non_ascii)).to_http_request();
        assert!(bearer_token(&request).is_some_and(|token| token.starts_with("caf")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any header value a client can send gets an answer, and a token
            /// only when it is `Bearer <something>`, whatever its bytes.
            #[test]
            fn any_authorization_header_is_a_token_only_after_bearer(
                scheme in prop_oneof![Just("Bearer ".to_owned()), Just("bearer ".to_owned()), "[ -~]{0,10}"],
                rest in proptest::collection::vec(any::<u8>(), 0..80)
            ) {
                let mut bytes = scheme.clone().into_bytes();
                bytes.extend(&rest);
                let Ok(value) = header::HeaderValue::from_bytes(&bytes) else { return Ok(()) };
                let request = TestRequest::default().insert_header((header::AUTHORIZATION, value)).to_http_request();
                if let Some(token) = bearer_token(&request) {
                    let sent = bytes.trim_ascii();
                    prop_assert!(sent.len() > 7 && sent[..7].eq_ignore_ascii_case(b"bearer "));
                    prop_assert!(!token.is_empty() && !token.starts_with(' '));
                }
            }
        }
    }
}
