//! Settings: `config/default.toml` (built in), then the file named by
//! `GATEHOUSE_CONFIG`, then `GATEHOUSE__SECTION__KEY` variables, then the
//! contract's fixed variable names. A bad value stops start-up with one line
//! naming the variable.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;

/// The built-in defaults, so the binary needs no file beside it.
const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// The contract's fixed variable names and the settings they set.
const FIXED_VARIABLES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("GATEHOUSE_BIND", "server.bind"),
    ("GATEHOUSE_MAILER", "mail.mailer"),
    ("GATEHOUSE_MAIL_FROM", "mail.from"),
    ("GATEHOUSE_FRONTEND_URL", "links.frontend_url"),
    ("GATEHOUSE_REQUIRE_VERIFIED_EMAIL", "auth.require_verified_email"),
    ("GATEHOUSE_JWT_SECRET", "jwt.secret"),
    ("GATEHOUSE_LOGIN_IP_LIMIT", "auth.login_ip_limit"),
    ("GATEHOUSE_CORS_ORIGINS", "cors.origins"),
    ("GATEHOUSE_TRUSTED_PROXIES", "server.trusted_proxies"),
    ("GATEHOUSE_ENV", "env"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub env: Env,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub mail: MailSettings,
    pub links: LinkSettings,
    pub auth: AuthSettings,
    pub jwt: JwtSettings,
    pub mfa: MfaSettings,
    pub hashing: HashingSettings,
    pub cors: CorsSettings,
    pub limits: LimitSettings,
    pub cookies: CookieSettings,
    pub log: LogSettings,
}

/// Browser sessions: the cookies of `"transport": "cookie"`.
#[derive(Debug, Clone, Deserialize)]
pub struct CookieSettings {
    /// Secure cookies, with the `__Host-`/`__Secure-` name prefixes.
    pub secure: bool,
    /// `lax` or `strict`, the access cookie's SameSite.
    pub same_site_access: SameSiteAccess,
    /// Empty for host-only cookies; a domain shares them with its subdomains.
    pub domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteAccess {
    Lax,
    Strict,
}

/// The limits on the endpoints that send mail.
#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub window_seconds: i64,
    pub mail_per_address: u32,
    pub mail_requests_per_ip: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    pub body_limit_bytes: usize,
    pub body_timeout_seconds: u64,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    /// `Strict-Transport-Security` max-age when served over HTTPS; 0 sends none.
    pub hsts_max_age_seconds: u64,
    /// Where `/metrics` is served instead of the API port; empty keeps it there.
    pub metrics_bind: String,
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MailSettings {
    pub mailer: String,
    pub from: String,
    pub poll_interval_ms: u64,
    pub lease_seconds: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinkSettings {
    pub frontend_url: String,
    pub verify_email_path: String,
    pub reset_password_path: String,
    pub login_path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub require_verified_email: bool,
    pub access_ttl_seconds: i64,
    pub refresh_ttl_seconds: i64,
    pub verification_ttl_seconds: i64,
    pub reset_ttl_seconds: i64,
    pub refresh_grace_seconds: i64,
    pub login_ip_limit: u32,
    /// Failed logins on one address per 15 minutes before 429 (at least 1).
    pub login_address_limit: u32,
    /// The HMAC key every replica shares; empty derives it from the JWT secret.
    pub server_key: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JwtSettings {
    pub algorithm: JwtAlgorithm,
    pub secret: SecretString,
    pub secret_file: String,
    /// The JWK Set of private keys under EdDSA and RS256.
    pub keys_file: String,
    pub issuer: String,
    pub audience: String,
}

/// Two-factor login.
#[derive(Debug, Clone, Deserialize)]
pub struct MfaSettings {
    /// Seals TOTP secrets at rest (at least 32 bytes); the same on every replica.
    pub encryption_key: SecretString,
    /// Where development keeps a generated key when none is set.
    pub encryption_key_file: String,
    /// How long a login waits for its second factor.
    pub token_ttl_seconds: i64,
}

/// How access tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    EdDSA,
    RS256,
}

impl JwtAlgorithm {
    /// The algorithm of the keys file; none under HS256, which has no keys file.
    pub fn key_algorithm(self) -> Option<gatehouse_token_jwt::keys::KeyAlgorithm> {
        use gatehouse_token_jwt::keys::KeyAlgorithm;
        match self {
            Self::HS256 => None,
            Self::EdDSA => Some(KeyAlgorithm::EdDSA),
            Self::RS256 => Some(KeyAlgorithm::RS256),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HashingSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub concurrency: usize,
    /// Hashing threads that keep a core's worth each under any load; absent:
    /// one on a machine of two cores or more, none on one core.
    pub min_share: Option<usize>,
    pub queue_limit: usize,
    /// A hash that waited this long for a thread (from the request's
    /// arrival, less the hasher's finish allowance) is refused (503); 0 waits for ever.
    pub queue_deadline_ms: u64,
    pub oversized_memory_kib: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CorsSettings {
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

/// One bad setting, named by the variable that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        Self { variable: variable_for(key), problem: problem.into() }
    }

    /// A problem of a variable (or file) outside the config file's keys.
    fn named(variable: &str, problem: impl Into<String>) -> Self {
        Self { variable: variable.to_owned(), problem: problem.into() }
    }
}

/// The variable an operator would set to change `key`.
fn variable_for(key: &str) -> String {
    FIXED_VARIABLES
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(var, _)| (*var).to_owned())
        .unwrap_or_else(|| format!("GATEHOUSE__{}", key.replace('.', "__").to_uppercase()))
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let mut vars = std::env::vars().collect();
        read_dotenv(Path::new(".env"), &mut vars)?;
        Self::load_from(vars)
    }

    /// Reads the settings with `vars` standing in for the environment (tests).
    pub fn load_from(mut vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        if !vars.contains_key("DATABASE_URL") {
            if let Some(url) = django_database_url(&vars)? {
                vars.insert("DATABASE_URL".into(), url);
            }
        }
        let lookup = |name: &str| vars.get(name).cloned();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = lookup("GATEHOUSE_CONFIG") {
            builder = builder.add_source(File::with_name(&path).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("GATEHOUSE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("cors.origins")
                .with_list_parse_key("server.trusted_proxies")
                .try_parsing(true)
                .source(Some(vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())),
        );
        for (variable, key) in FIXED_VARIABLES {
            if let Some(value) = lookup(variable) {
                let value = if *key == "cors.origins" || *key == "server.trusted_proxies" {
                    config::Value::from(split_list(&value))
                } else {
                    config::Value::from(value)
                };
                builder = builder.set_override(*key, value).map_err(|e| ConfigError::new(key, e.to_string()))?;
            }
        }
        let config = builder.build().map_err(|e| from_config_error(&e))?;
        let settings: Settings = config.try_deserialize().map_err(|e| from_config_error(&e))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn bind_address(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.to_socket_addrs().ok().and_then(|mut addrs| addrs.next()).ok_or_else(|| {
            ConfigError::new("server.bind", format!("{:?} is not an address like 127.0.0.1:8080", self.server.bind))
        })
    }

    /// The separate address of `/metrics`, when one is set.
    pub fn metrics_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let bind = &self.server.metrics_bind;
        if bind.is_empty() {
            return Ok(None);
        }
        let address = bind.to_socket_addrs().ok().and_then(|mut addrs| addrs.next());
        address.map(Some).ok_or_else(|| {
            ConfigError::new("server.metrics_bind", format!("{bind:?} is not an address like 127.0.0.1:9090"))
        })
    }

    /// The trusted proxies' networks; a bare address is a network of one.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        let parse = |raw: &String| {
            raw.parse::<ipnet::IpNet>().or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(
                |_| ConfigError::new("server.trusted_proxies", format!("{raw:?} is not a network like 10.0.0.0/8")),
            )
        };
        self.server.trusted_proxies.iter().map(parse).collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.bind_address()?;
        self.metrics_address()?;
        self.trusted_proxies()?;
        let url = &self.database.url;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite://")) {
            return Err(ConfigError::new("database.url", "expected postgres://… or sqlite://PATH"));
        }
        let mailer = &self.mail.mailer;
        if !(mailer.starts_with("smtp://") || mailer.starts_with("smtps://") || mailer.starts_with("file://")) {
            return Err(ConfigError::new(
                "mail.mailer",
                "expected smtp://host:port, smtps://user:pass@host:port or file://DIR",
            ));
        }
        let domain = &self.cookies.domain;
        if domain.starts_with('.') || domain.contains(['/', ':', ' ', ';', ',']) {
            return Err(ConfigError::new("cookies.domain", "expected a bare domain like example.com, or empty"));
        }
        let frontend = &self.links.frontend_url;
        if !(frontend.starts_with("http://") || frontend.starts_with("https://")) || frontend.contains(['?', '#', ' '])
        {
            return Err(ConfigError::new("links.frontend_url", "expected an http:// or https:// base URL"));
        }
        for origin in &self.cors.origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(ConfigError::new(
                    "cors.origins",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        positive("auth.access_ttl_seconds", self.auth.access_ttl_seconds)?;
        positive("auth.refresh_ttl_seconds", self.auth.refresh_ttl_seconds)?;
        positive("auth.verification_ttl_seconds", self.auth.verification_ttl_seconds)?;
        positive("auth.reset_ttl_seconds", self.auth.reset_ttl_seconds)?;
        positive("auth.login_address_limit", i64::from(self.auth.login_address_limit))?;
        if self.auth.refresh_grace_seconds < 0 {
            return Err(ConfigError::new("auth.refresh_grace_seconds", "must not be negative"));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::new("server.body_limit_bytes", "must be positive"));
        }
        if self.mail.lease_seconds <= 0 {
            return Err(ConfigError::new("mail.lease_seconds", "must be positive"));
        }
        if self.mfa.token_ttl_seconds <= 0 {
            return Err(ConfigError::new("mfa.token_ttl_seconds", "must be positive"));
        }
        if self.limits.window_seconds <= 0 {
            return Err(ConfigError::new("limits.window_seconds", "must be positive"));
        }
        if self.server.body_timeout_seconds == 0 {
            return Err(ConfigError::new("server.body_timeout_seconds", "must be positive"));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::new("database.pool_size", "must be positive"));
        }
        let secret_len = secrecy::ExposeSecret::expose_secret(&self.jwt.secret).len();
        if secret_len > 0 && secret_len < gatehouse_token_jwt::MIN_SECRET_BYTES {
            return Err(ConfigError::new(
                "jwt.secret",
                format!("must be at least {} bytes", gatehouse_token_jwt::MIN_SECRET_BYTES),
            ));
        }
        let mfa_key_len = secrecy::ExposeSecret::expose_secret(&self.mfa.encryption_key).len();
        if mfa_key_len > 0 && mfa_key_len < gatehouse_totp::MIN_KEY_BYTES {
            return Err(ConfigError::new(
                "mfa.encryption_key",
                format!("must be at least {} bytes", gatehouse_totp::MIN_KEY_BYTES),
            ));
        }
        let server_key_len = secrecy::ExposeSecret::expose_secret(&self.auth.server_key).len();
        if server_key_len > 0 && server_key_len < gatehouse_token_jwt::MIN_SECRET_BYTES {
            return Err(ConfigError::new(
                "auth.server_key",
                format!("must be at least {} bytes", gatehouse_token_jwt::MIN_SECRET_BYTES),
            ));
        }
        if self.env == Env::Production {
            self.refuse_unsafe_defaults()?;
        }
        Ok(())
    }

    /// Production must not run on settings meant for a laptop.
    fn refuse_unsafe_defaults(&self) -> Result<(), ConfigError> {
        if self.jwt.algorithm == JwtAlgorithm::HS256
            && secrecy::ExposeSecret::expose_secret(&self.jwt.secret).is_empty()
        {
            return Err(ConfigError::new(
                "jwt.secret",
                "is required when GATEHOUSE_ENV=production (at least 32 random bytes)",
            ));
        }
        if secrecy::ExposeSecret::expose_secret(&self.mfa.encryption_key).is_empty() {
            return Err(ConfigError::new(
                "mfa.encryption_key",
                "is required when GATEHOUSE_ENV=production (at least 32 random bytes, the same on every replica): \
                 it seals the TOTP secrets",
            ));
        }
        if !self.cookies.secure {
            return Err(ConfigError::new(
                "cookies.secure",
                "must be true in production: browser session cookies go over HTTPS only",
            ));
        }
        if self.mail.mailer.starts_with("file://") {
            return Err(ConfigError::new(
                "mail.mailer",
                "file:// only writes mail to disk; set an smtp:// or smtps:// server in production",
            ));
        }
        if self.links.frontend_url.contains("://localhost") || self.links.frontend_url.contains("://127.0.0.1") {
            return Err(ConfigError::new(
                "links.frontend_url",
                "points at localhost; set the public frontend URL in production",
            ));
        }
        Ok(())
    }
}

/// Fills `vars` with the variables of a `.env` file, as Django projects keep
/// one; what the environment already holds wins. No file is no error.
pub fn read_dotenv(path: &Path, vars: &mut HashMap<String, String>) -> Result<(), ConfigError> {
    let unreadable = |e: dotenvy::Error| ConfigError::named(".env", format!("cannot be read: {e}"));
    let entries = match dotenvy::from_path_iter(path) {
        Ok(entries) => entries,
        Err(error) if error.not_found() => return Ok(()),
        Err(error) => return Err(unreadable(error)),
    };
    for entry in entries {
        let (name, value) = entry.map_err(unreadable)?;
        vars.entry(name).or_insert(value);
    }
    Ok(())
}

/// The PostgreSQL URL of a Django project's `DB_NAME`, `DB_USER`,
/// `DB_PASSWORD`, `DB_HOST` (default localhost) and `DB_PORT` (default 5432),
/// when `DB_NAME` is set; user and password are percent-encoded.
fn django_database_url(vars: &HashMap<String, String>) -> Result<Option<String>, ConfigError> {
    let Some(name) = vars.get("DB_NAME").filter(|name| !name.is_empty()) else { return Ok(None) };
    let var = |key: &str| vars.get(key).map(String::as_str).filter(|value| !value.is_empty());
    let port = match var("DB_PORT") {
        None => 5432,
        Some(port) => port.parse::<u16>().map_err(|_| ConfigError::named("DB_PORT", "must be a port number"))?,
    };
    let host = var("DB_HOST").unwrap_or("localhost");
    let mut url = url::Url::parse("postgres://localhost").map_err(|e| ConfigError::named("DB_HOST", e.to_string()))?;
    url.set_host(Some(host)).map_err(|e| ConfigError::named("DB_HOST", format!("is not a host name: {e}")))?;
    let _ = url.set_port(Some(port));
    if let Some(user) = var("DB_USER") {
        let _ = url.set_username(user);
    }
    if let Some(password) = var("DB_PASSWORD") {
        let _ = url.set_password(Some(password));
    }
    url.path_segments_mut().map_err(|()| ConfigError::named("DB_NAME", "cannot be a database name"))?.push(name);
    Ok(Some(url.into()))
}

fn positive(key: &str, value: i64) -> Result<(), ConfigError> {
    if value > 0 {
        Ok(())
    } else {
        Err(ConfigError::new(key, "must be positive"))
    }
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Turns the config crate's message into one line naming the variable.
fn from_config_error(error: &config::ConfigError) -> ConfigError {
    let message = error.to_string();
    let key = message.split("for key `").nth(1).and_then(|rest| rest.split('`').next()).map(str::to_owned);
    match key {
        Some(key) => ConfigError::new(&key, message.split(" for key").next().unwrap_or(&message)),
        None => ConfigError { variable: "GATEHOUSE_CONFIG".into(), problem: message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn any_key_can_be_set_as_gatehouse_section_key() {
        let settings =
            load(&[("GATEHOUSE__HASHING__MEMORY_KIB", "4096"), ("GATEHOUSE__AUTH__ACCESS_TTL_SECONDS", "60")]).unwrap();
        assert_eq!(settings.hashing.memory_kib, 4096);
        assert_eq!(settings.auth.access_ttl_seconds, 60);
        let error = load(&[("GATEHOUSE__HASHING__MEMORY_KIB", "lots")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE__HASHING__MEMORY_KIB");
    }

    #[test]
    fn django_db_variables_make_the_postgres_url_unless_database_url_is_set() {
        let settings = load(&[("DB_NAME", "shop")]).unwrap();
        assert_eq!(settings.database.url, "postgres://localhost:5432/shop");
        let settings = load(&[
            ("DB_NAME", "shop"),
            ("DB_USER", "django"),
            ("DB_PASSWORD", "p@ss:w/rd"),
            ("DB_HOST", "db.internal"),
            ("DB_PORT", "6543"),
        ])
        .unwrap();
        assert_eq!(settings.database.url, "postgres://django:p%40ss%3Aw%2Frd@db.internal:6543/shop");
        let settings = load(&[("DB_NAME", "shop"), ("DATABASE_URL", "sqlite://x.db")]).unwrap();
        assert_eq!(settings.database.url, "sqlite://x.db", "DATABASE_URL wins");
        assert_eq!(load(&[("DB_NAME", "shop"), ("DB_PORT", "five")]).unwrap_err().variable, "DB_PORT");
        assert_eq!(load(&[("DB_USER", "django")]).unwrap().database.url, "sqlite://data/gatehouse.db");
    }

    #[test]
    fn a_dotenv_file_fills_in_what_the_environment_lacks() {
        let dir = std::env::temp_dir().join(format!("gatehouse-dotenv-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "# a tutorial's .env\nDB_NAME=shop\nDB_USER=django\nDB_HOST=\"from-file\"\nexport DEBUG=True\n",
        )
        .unwrap();
        let mut vars: HashMap<String, String> = [("DB_HOST".to_owned(), "from-env".to_owned())].into();
        read_dotenv(&path, &mut vars).unwrap();
        assert_eq!(vars["DB_NAME"], "shop");
        assert_eq!(vars["DB_HOST"], "from-env", "the environment wins");
        assert_eq!(vars["DEBUG"], "True");
        let settings = Settings::load_from(vars).unwrap();
        assert_eq!(settings.database.url, "postgres://django@from-env:5432/shop");

        let mut untouched = HashMap::new();
        read_dotenv(&dir.join("missing.env"), &mut untouched).unwrap();
        assert!(untouched.is_empty(), "no file is no error");
        std::fs::write(&path, "NOT VALID LINE ===\n'unterminated").unwrap();
        assert_eq!(read_dotenv(&path, &mut untouched).unwrap_err().variable, ".env");
    }

    #[test]
    fn defaults_match_the_contract() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.database.url, "sqlite://data/gatehouse.db");
        assert_eq!(settings.server.bind, "127.0.0.1:8080");
        assert_eq!(settings.mail.mailer, "file://data/mail");
        assert_eq!(settings.mail.from, "Gatehouse <no-reply@localhost>");
        assert_eq!(settings.links.frontend_url, "http://localhost:3000");
        assert!(settings.auth.require_verified_email);
        assert_eq!(settings.auth.login_ip_limit, 100);
        assert_eq!(settings.cors.origins, ["http://localhost:3000", "http://127.0.0.1:3000"]);
        assert_eq!(settings.env, Env::Development);
        assert_eq!(settings.server.body_limit_bytes, 65536);
        assert_eq!(
            (settings.hashing.memory_kib, settings.hashing.iterations, settings.hashing.parallelism),
            (19456, 2, 1)
        );
    }

    #[test]
    fn fixed_variables_override_the_defaults() {
        let settings = load(&[
            ("DATABASE_URL", "postgres://u@db/gatehouse"),
            ("GATEHOUSE_BIND", "0.0.0.0:9000"),
            ("GATEHOUSE_REQUIRE_VERIFIED_EMAIL", "false"),
            ("GATEHOUSE_LOGIN_IP_LIMIT", "0"),
            ("GATEHOUSE_CORS_ORIGINS", "https://a.example.com, https://b.example.com"),
        ])
        .unwrap();
        assert_eq!(settings.database.url, "postgres://u@db/gatehouse");
        assert_eq!(settings.server.bind, "0.0.0.0:9000");
        assert!(!settings.auth.require_verified_email);
        assert_eq!(settings.auth.login_ip_limit, 0);
        assert_eq!(settings.cors.origins, ["https://a.example.com", "https://b.example.com"]);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let error = load(&[("GATEHOUSE_BIND", "nowhere")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_BIND");
        let error = load(&[("GATEHOUSE_REQUIRE_VERIFIED_EMAIL", "perhaps")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_REQUIRE_VERIFIED_EMAIL");
        let error = load(&[("GATEHOUSE_LOGIN_IP_LIMIT", "-3")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_LOGIN_IP_LIMIT");
        let error = load(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
        let error = load(&[("GATEHOUSE_JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_JWT_SECRET");
        let error = load(&[("GATEHOUSE_ENV", "staging")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_ENV");
        assert!(error.to_string().starts_with("invalid GATEHOUSE_ENV: "));
    }

    #[test]
    fn production_refuses_unsafe_defaults() {
        let error = load(&[("GATEHOUSE_ENV", "production")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_JWT_SECRET");
        let secret = "0123456789abcdef0123456789abcdef";
        let error = load(&[("GATEHOUSE_ENV", "production"), ("GATEHOUSE_JWT_SECRET", secret)]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE__MFA__ENCRYPTION_KEY");
        let mfa = ("GATEHOUSE__MFA__ENCRYPTION_KEY", "another secret of at least 32 bytes");
        let error = load(&[("GATEHOUSE_ENV", "production"), ("GATEHOUSE_JWT_SECRET", secret), mfa]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE_MAILER");
        let ok = load(&[
            ("GATEHOUSE_ENV", "production"),
            ("GATEHOUSE_JWT_SECRET", secret),
            mfa,
            ("GATEHOUSE_MAILER", "smtps://u:p@mail.example.com:465"),
            ("GATEHOUSE_FRONTEND_URL", "https://app.example.com"),
        ]);
        assert!(ok.is_ok());
        let short = load(&[("GATEHOUSE__MFA__ENCRYPTION_KEY", "short")]).unwrap_err();
        assert_eq!(short.variable, "GATEHOUSE__MFA__ENCRYPTION_KEY");
        let insecure_cookies = load(&[
            ("GATEHOUSE_ENV", "production"),
            ("GATEHOUSE_JWT_SECRET", secret),
            mfa,
            ("GATEHOUSE__COOKIES__SECURE", "false"),
        ])
        .unwrap_err();
        assert_eq!(insecure_cookies.variable, "GATEHOUSE__COOKIES__SECURE");
    }

    #[test]
    fn cookie_settings_are_checked() {
        let settings = load(&[]).unwrap();
        assert!(settings.cookies.secure && settings.cookies.domain.is_empty());
        assert_eq!(settings.cookies.same_site_access, SameSiteAccess::Lax);
        assert!(load(&[("GATEHOUSE__COOKIES__SAME_SITE_ACCESS", "none")]).is_err());
        let error = load(&[("GATEHOUSE__COOKIES__DOMAIN", "https://example.com")]).unwrap_err();
        assert_eq!(error.variable, "GATEHOUSE__COOKIES__DOMAIN");
        assert!(load(&[("GATEHOUSE__COOKIES__DOMAIN", "example.com")]).is_ok());
    }
}
