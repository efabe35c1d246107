//! Browser sessions (`"transport": "cookie"`): the three cookies' names,
//! attributes and lifetimes, reading them back, and the Origin rule, as the
//! contract fixes them, in one place.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::header;
use actix_web::HttpRequest;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::config::{CookieSettings, SameSiteAccess};

/// Where the refresh cookie is sent: the refresh endpoint and nothing else.
pub const REFRESH_PATH: &str = "/api/v1/auth/token";

/// The header a cookie-authenticated unsafe request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How a request that issues tokens wants them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `access` and `refresh` in the response body.
    #[default]
    Body,
    /// httpOnly cookies; the body carries only `csrf_token`.
    Cookie,
}

/// The three cookies' settings, from `[cookies]`, and the origins whose
/// pages may make cookie-authenticated unsafe requests (`cors.origins`).
#[derive(Debug, Clone)]
pub struct BrowserCookies {
    secure: bool,
    access_same_site: SameSite,
    domain: Option<String>,
    origins: Vec<String>,
}

/// What a session's cookies carry.
#[derive(Debug)]
pub struct SessionCookies<'a> {
    pub access: &'a str,
    pub access_seconds: i64,
    pub refresh: &'a str,
    pub refresh_seconds: i64,
    pub csrf: &'a str,
}

/// A request that sent one of our cookies more than once: a cookie planted
/// beside ours (another path or domain) must not choose which one counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// The values of the request's cookies called `name`. A malformed pair
/// (another application's cookie on the same host, say) is skipped, not fatal.
fn cookie_values(req: &HttpRequest, name: &str) -> Vec<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| Cookie::parse_encoded(pair.trim()).ok())
        .filter(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
        .collect()
}

/// The one value of a cookie, none when absent or empty.
fn single_cookie(req: &HttpRequest, name: &str) -> Result<Option<String>, Ambiguous> {
    let mut values = cookie_values(req, name);
    match values.len() {
        0 | 1 => Ok(values.pop().filter(|value| !value.is_empty())),
        _ => Err(Ambiguous),
    }
}

impl BrowserCookies {
    pub fn new(settings: &CookieSettings, origins: &[String]) -> Self {
        let access_same_site = match settings.same_site_access {
            SameSiteAccess::Lax => SameSite::Lax,
            SameSiteAccess::Strict => SameSite::Strict,
        };
        let domain = Some(settings.domain.clone()).filter(|d| !d.is_empty());
        Self { secure: settings.secure, access_same_site, domain, origins: origins.to_vec() }
    }

    /// The access token of the request's access cookie.
    pub fn access_token(&self, req: &HttpRequest) -> Result<Option<String>, Ambiguous> {
        single_cookie(req, &self.access_name())
    }

    /// The refresh token of the request's refresh cookie.
    pub fn refresh_token(&self, req: &HttpRequest) -> Result<Option<String>, Ambiguous> {
        single_cookie(req, &self.refresh_name())
    }

    /// The CSRF cookie the browser holds, when it sent exactly one.
    pub fn csrf_cookie(&self, req: &HttpRequest) -> Option<String> {
        single_cookie(req, &self.csrf_name()).ok().flatten()
    }

    /// The CSRF token the page sent in its header (empty when none).
    pub fn csrf_header(req: &HttpRequest) -> &str {
        req.headers().get(CSRF_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default()
    }

    /// Whether the request's `Origin`, when it has one, may make a
    /// cookie-authenticated unsafe request: the service's own origin or a
    /// configured one. `null` (sandboxed frames, some redirects) never may.
    pub fn origin_allowed(&self, req: &HttpRequest) -> bool {
        Self::origin_is(req, |origin| self.origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)))
    }

    /// The Origin rule with no other origin allowed: the console's forms
    /// are posted from its own pages only.
    pub fn same_origin(req: &HttpRequest) -> bool {
        Self::origin_is(req, |_| false)
    }

    /// No `Origin`, the request's own, or one that `other` admits.
    fn origin_is(req: &HttpRequest, other: impl Fn(&str) -> bool) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        let info = req.connection_info();
        let own = format!("{}://{}", info.scheme(), info.host());
        origin.eq_ignore_ascii_case(&own) || other(origin)
    }

    /// `__Host-` needs a secure, host-only cookie on `/`; `__Secure-` only a
    /// secure one; without `secure` there is no prefix.
    fn name(&self, base: &str, host_only_path: bool) -> String {
        match (self.secure, host_only_path && self.domain.is_none()) {
            (false, _) => base.to_owned(),
            (true, true) => format!("__Host-{base}"),
            (true, false) => format!("__Secure-{base}"),
        }
    }

    pub fn access_name(&self) -> String {
        self.name("gh_access", true)
    }

    pub fn refresh_name(&self) -> String {
        self.name("gh_refresh", false)
    }

    pub fn csrf_name(&self) -> String {
        self.name("gh_csrf", true)
    }

    /// The console's sign-in form has no session to bind a CSRF token to:
    /// the form's token is also in this cookie, which only this origin sets.
    pub fn sign_in_name(&self) -> String {
        self.name("gh_signin", true)
    }

    /// The sign-in form's token the browser holds, if any.
    pub fn sign_in_token(&self, req: &HttpRequest) -> Option<String> {
        single_cookie(req, &self.sign_in_name()).ok().flatten()
    }

    /// The cookie that holds a new sign-in form token, for an hour.
    pub fn sign_in_cookie(&self, token: &str) -> Cookie<'static> {
        let mut cookie = self.cookie(self.sign_in_name(), token.to_owned(), "/", 3600);
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Strict);
        cookie
    }

    fn cookie(&self, name: String, value: String, path: &'static str, seconds: i64) -> Cookie<'static> {
        let mut cookie =
            Cookie::build(name, value).path(path).secure(self.secure).max_age(time::Duration::seconds(seconds));
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        cookie.finish()
    }

    /// The access, refresh and CSRF cookies of a session just opened or refreshed.
    pub fn issue(&self, session: &SessionCookies<'_>) -> [Cookie<'static>; 3] {
        let mut access = self.cookie(self.access_name(), session.access.to_owned(), "/", session.access_seconds);
        access.set_http_only(true);
        access.set_same_site(self.access_same_site);
        let mut refresh =
            self.cookie(self.refresh_name(), session.refresh.to_owned(), REFRESH_PATH, session.refresh_seconds);
        refresh.set_http_only(true);
        refresh.set_same_site(SameSite::Strict);
        // Read by the page's scripts, to send back in the CSRF header.
        let mut csrf = self.cookie(self.csrf_name(), session.csrf.to_owned(), "/", session.refresh_seconds);
        csrf.set_same_site(SameSite::Strict);
        [access, refresh, csrf]
    }

    /// The same three cookies, expired: logout, or a dead session.
    pub fn clear(&self) -> [Cookie<'static>; 3] {
        self.issue(&SessionCookies { access: "", access_seconds: 0, refresh: "", refresh_seconds: 0, csrf: "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(secure: bool, same_site_access: SameSiteAccess, domain: &str) -> BrowserCookies {
        BrowserCookies::new(&CookieSettings { secure, same_site_access, domain: domain.to_owned() }, &[])
    }

    fn issued(cookies: &BrowserCookies) -> Vec<String> {
        let session =
            SessionCookies { access: "a.jwt", access_seconds: 300, refresh: "r", refresh_seconds: 86400, csrf: "c" };
        cookies.issue(&session).iter().map(ToString::to_string).collect()
    }

    fn attributes(cookie: &str) -> Vec<&str> {
        let mut parts: Vec<&str> = cookie.split("; ").collect();
        parts.sort_unstable();
        parts
    }

    #[test]
    fn secure_cookies_carry_the_contracts_names_and_attributes() {
        let [access, refresh, csrf] = <[String; 3]>::try_from(issued(&cookies(true, SameSiteAccess::Lax, ""))).unwrap();
        assert_eq!(
            attributes(&access),
            ["HttpOnly", "Max-Age=300", "Path=/", "SameSite=Lax", "Secure", "__Host-gh_access=a.jwt"]
        );
        assert_eq!(
            attributes(&refresh),
            [
                "HttpOnly",
                "Max-Age=86400",
                "Path=/api/v1/auth/token",
                "SameSite=Strict",
                "Secure",
                "__Secure-gh_refresh=r"
            ]
        );
        assert_eq!(attributes(&csrf), ["Max-Age=86400", "Path=/", "SameSite=Strict", "Secure", "__Host-gh_csrf=c"]);
    }

    #[test]
    fn a_domain_drops_the_host_prefix_and_insecure_cookies_have_none() {
        let shared = issued(&cookies(true, SameSiteAccess::Strict, "example.com"));
        assert!(shared[0].starts_with("__Secure-gh_access=") && shared[0].contains("Domain=example.com"));
        assert!(shared[0].contains("SameSite=Strict"));
        assert!(shared[2].starts_with("__Secure-gh_csrf="));
        let plain = issued(&cookies(false, SameSiteAccess::Lax, ""));
        assert!(plain[0].starts_with("gh_access=") && !plain[0].contains("Secure"));
        assert!(plain[1].starts_with("gh_refresh=") && plain[2].starts_with("gh_csrf="));
    }

    fn request(cookie_headers: &[&str], origin: Option<&str>) -> HttpRequest {
        let mut request = actix_web::test::TestRequest::default().insert_header((header::HOST, "auth.example"));
        for value in cookie_headers {
            request = request.append_header((header::COOKIE, *value));
        }
        if let Some(origin) = origin {
            request = request.insert_header((header::ORIGIN, origin));
        }
        request.to_http_request()
    }

    #[test]
    fn cookies_are_read_back_by_name_once_and_malformed_pairs_are_skipped() {
        let cookies = cookies(true, SameSiteAccess::Lax, "");
        let read = |headers: &[&str]| cookies.access_token(&request(headers, None));
        assert_eq!(read(&["__Host-gh_access=a.jwt"]), Ok(Some("a.jwt".to_owned())));
        assert_eq!(read(&["junk; other=1;; =x; __Host-gh_access=a.jwt"]), Ok(Some("a.jwt".to_owned())));
        assert_eq!(read(&["gh_access=a.jwt"]), Ok(None), "an unprefixed cookie is not ours when secure");
        assert_eq!(read(&["__Host-gh_access="]), Ok(None), "empty");
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&["__Host-gh_access=a; __Host-gh_access=b"]), Err(Ambiguous));
        assert_eq!(read(&["__Host-gh_access=a", "__Host-gh_access=b"]), Err(Ambiguous), "across headers");
        assert_eq!(cookies.refresh_token(&request(&["__Secure-gh_refresh=r"], None)), Ok(Some("r".to_owned())));
    }

    #[test]
    fn the_origin_rule_admits_the_own_origin_and_configured_ones_only() {
        let settings = CookieSettings { secure: true, same_site_access: SameSiteAccess::Lax, domain: String::new() };
        let cookies = BrowserCookies::new(&settings, &["https://app.example".to_owned()]);
        let allowed = |origin: Option<&str>| cookies.origin_allowed(&request(&[], origin));
        assert!(allowed(None), "no Origin: not a cross-origin browser request");
        assert!(allowed(Some("http://auth.example")), "its own");
        assert!(allowed(Some("https://app.example")) && allowed(Some("HTTPS://APP.EXAMPLE")));
        assert!(!allowed(Some("https://evil.example")));
        assert!(!allowed(Some("https://app.example.evil")));
        assert!(!allowed(Some("null")));
    }

    #[test]
    fn clearing_expires_all_three_where_they_were_set() {
        let cleared: Vec<String> =
            cookies(true, SameSiteAccess::Lax, "").clear().iter().map(ToString::to_string).collect();
        assert!(cleared[0].starts_with("__Host-gh_access=;") && cleared[0].contains("Path=/;"));
        assert!(cleared[1].contains("Path=/api/v1/auth/token"));
        assert!(cleared.iter().all(|c| c.contains("Max-Age=0")), "{cleared:?}");
    }
}
