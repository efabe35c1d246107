//! The cookies of a browser session (`"transport": "cookie"`): their names,
//! attributes and lifetimes, as the contract fixes them, in one place.

use actix_web::cookie::{time, Cookie, SameSite};

use crate::config::{CookieSettings, SameSiteAccess};

/// Where the refresh cookie is sent: the refresh endpoint and nothing else.
pub const REFRESH_PATH: &str = "/api/v1/auth/token";

/// The header a cookie-authenticated unsafe request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The three cookies' settings, from `[cookies]`.
#[derive(Debug, Clone)]
pub struct BrowserCookies {
    secure: bool,
    access_same_site: SameSite,
    domain: Option<String>,
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

impl BrowserCookies {
    pub fn new(settings: &CookieSettings) -> Self {
        let access_same_site = match settings.same_site_access {
            SameSiteAccess::Lax => SameSite::Lax,
            SameSiteAccess::Strict => SameSite::Strict,
        };
        let domain = Some(settings.domain.clone()).filter(|d| !d.is_empty());
        Self { secure: settings.secure, access_same_site, domain }
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
        BrowserCookies::new(&CookieSettings { secure, same_site_access, domain: domain.to_owned() })
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

    #[test]
    fn clearing_expires_all_three_where_they_were_set() {
        let cleared: Vec<String> =
            cookies(true, SameSiteAccess::Lax, "").clear().iter().map(ToString::to_string).collect();
        assert!(cleared[0].starts_with("__Host-gh_access=;") && cleared[0].contains("Path=/;"));
        assert!(cleared[1].contains("Path=/api/v1/auth/token"));
        assert!(cleared.iter().all(|c| c.contains("Max-Age=0")), "{cleared:?}");
    }
}
