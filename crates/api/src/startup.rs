//! Start-up wiring: settings in, a bound server out. `main` only reads the
//! settings and runs what this builds; tests build it on port 0.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_http::{error::DispatchError, HttpService};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{middleware, web, App, HttpServer};
use gatehouse_domain::admin::{AdminPorts, AdminService};
use gatehouse_domain::auth::Ports;
use gatehouse_domain::import::ImportStore;
use gatehouse_domain::mail::Links;
use gatehouse_domain::mfa::MfaStore;
use gatehouse_domain::outbox::{DeliveryPolicy, MailDelivery};
use gatehouse_domain::ports::{
    AccountStore, AdminStore, AdminWrites, AuditLog, Clock, Outbox, PasswordHasher, SessionStore, Store, StoreHealth,
    Throttle,
};
use gatehouse_domain::{AuthPolicy, AuthService, ServerKey};
use gatehouse_hash_argon2::{Argon2Hasher, HashParams};
use gatehouse_mail_smtp::{LettreMailer, MailerConfigError};
use gatehouse_store_postgres::PostgresPools;
use gatehouse_store_sqlite::SqlitePool;
use gatehouse_token_jwt::keys::{KeysFile, KeysFileError};
use gatehouse_token_jwt::{JwtAccessTokens, JwtSettings, OsRandom, Signing};
use gatehouse_totp::Totp;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::BodyLimit;
use crate::config::{Env, Settings};
use crate::cookies::BrowserCookies;
use crate::extract::TrustedProxies;
use crate::request_id::RequestAwareHasher;
use crate::state::AppState;
use crate::wire::ContractIo;
use crate::{console, request_id, routes};

/// Why the service could not start, in one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database (DATABASE_URL): {0}")]
    Database(String),
    #[error("invalid {variable}: {problem}")]
    Setting { variable: &'static str, problem: String },
    #[error("cannot use the secret file {path}: {source}")]
    SecretFile { path: String, source: std::io::Error },
    #[error("cannot use the {0}")]
    KeysFile(#[from] KeysFileError),
    #[error("the keys file {path} does not exist, and GATEHOUSE_ENV=production makes none: create it with `gatehouse keys add`")]
    KeysFileMissing { path: String },
    #[error("cannot listen on {address} (GATEHOUSE_BIND): {source}")]
    Bind { address: String, source: std::io::Error },
}

/// Wall-clock time, cut to microseconds so both stores keep exactly what they are given.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap_or(now)
    }
}

/// The persistence ports, all served by one store.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Stores {
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub throttle: Arc<dyn Throttle>,
    pub admin: Arc<dyn AdminStore>,
    pub admin_writes: Arc<dyn AdminWrites>,
    pub audit: Arc<dyn AuditLog>,
    pub outbox: Arc<dyn Outbox>,
    pub health: Arc<dyn StoreHealth>,
    pub import: Arc<dyn ImportStore>,
    pub mfa: Arc<dyn MfaStore>,
    pub pool: PoolGauge,
}

/// The connection pool of whichever store runs, for metrics.
#[derive(Clone, Debug)]
pub enum PoolGauge {
    Postgres(PostgresPools),
    Sqlite(SqlitePool),
}

/// Connections open, idle, and allowed.
#[derive(Clone, Copy, Debug)]
pub struct PoolStats {
    pub size: i64,
    pub idle: i64,
    pub max: i64,
}

impl PoolGauge {
    /// Statements sent to the database so far, BEGIN and COMMIT included.
    pub fn statements_sent(&self) -> u64 {
        match self {
            Self::Postgres(store) => store.statements_sent(),
            Self::Sqlite(store) => store.statements_sent(),
        }
    }

    /// Gives the calling request worker connections of its own (see
    /// `PostgresPools::connect_per_thread`); SQLite needs nothing.
    pub fn bind_current_thread(&self) {
        if let Self::Postgres(store) = self {
            store.bind_current_thread();
        }
    }

    pub fn usage(&self) -> PoolStats {
        let wide = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (size, idle, max) = match self {
            Self::Postgres(store) => store.pool_usage(),
            Self::Sqlite(store) => store.pool_usage(),
        };
        PoolStats { size: wide(size), idle: wide(idle), max: wide(max) }
    }
}

impl Stores {
    fn of<S: Store>(store: S, pool: PoolGauge) -> Self {
        let store = Arc::new(store);
        Self {
            accounts: store.clone(),
            sessions: store.clone(),
            throttle: store.clone(),
            admin: store.clone(),
            admin_writes: store.clone(),
            audit: store.clone(),
            outbox: store.clone(),
            health: store.clone(),
            import: store.clone(),
            mfa: store,
            pool,
        }
    }

    /// Opens the store named by the URL and applies pending migrations.
    pub async fn open(settings: &Settings) -> Result<Self, StartupError> {
        let url = &settings.database.url;
        let database = |e: &dyn std::fmt::Display| StartupError::Database(e.to_string());
        if url.starts_with("sqlite://") {
            let store = SqlitePool::open(url, settings.database.pool_size).map_err(|e| database(&e))?;
            store.connections().migrate().await.map_err(|e| database(&e))?;
            let gauge = PoolGauge::Sqlite(store.connections().clone());
            Ok(Self::of(store, gauge))
        } else {
            PostgresPools::migrate(url).await.map_err(|e| database(&e))?;
            let pool_size = usize::try_from(settings.database.pool_size).unwrap_or(16);
            let store = PostgresPools::connect_per_thread(url, pool_size, request_workers(settings))
                .map_err(|e| database(&e))?;
            let gauge = PoolGauge::Postgres(store.connections().clone());
            Ok(Self::of(store, gauge))
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The HTTP worker threads: configured, or one per core.
fn request_workers(settings: &Settings) -> usize {
    if settings.server.workers == 0 {
        cores()
    } else {
        settings.server.workers
    }
}

/// The HS256 key: configured, or (development only) generated once and kept in a file.
fn jwt_secret(settings: &Settings) -> Result<SecretSlice<u8>, StartupError> {
    configured_or_kept(&settings.jwt.secret, &settings.jwt.secret_file, "JWT secret")
}

/// The key that seals TOTP secrets at rest, the same way.
fn mfa_key(settings: &Settings) -> Result<SecretSlice<u8>, StartupError> {
    configured_or_kept(&settings.mfa.encryption_key, &settings.mfa.encryption_key_file, "MFA encryption key")
}

/// A secret as configured or, when empty (production refuses that at
/// start-up), the one kept in `file`, generated there the first time.
fn configured_or_kept(
    configured: &SecretString,
    file: &str,
    what: &'static str,
) -> Result<SecretSlice<u8>, StartupError> {
    let configured = configured.expose_secret();
    if !configured.is_empty() {
        return Ok(SecretSlice::from(configured.as_bytes().to_vec()));
    }
    let path = Path::new(file);
    let file_error = |source| StartupError::SecretFile { path: path.display().to_string(), source };
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if existing.len() >= gatehouse_token_jwt::MIN_SECRET_BYTES {
            return Ok(SecretSlice::from(existing.as_bytes().to_vec()));
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(file_error)?;
    }
    let secret = OsRandom::secret();
    write_private(path, &secret).map_err(file_error)?;
    tracing::info!(path = %path.display(), "generated a development {what}");
    Ok(SecretSlice::from(secret.into_bytes()))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// What signs access tokens: the HS256 secret, or the keys file, made with
/// one key when missing in development (production refuses to start).
fn signing(settings: &Settings) -> Result<Signing, StartupError> {
    let Some(algorithm) = settings.jwt.algorithm.key_algorithm() else {
        return Ok(Signing::Secret(jwt_secret(settings)?));
    };
    let file = KeysFile::new(&settings.jwt.keys_file, algorithm);
    match file.read() {
        Ok(_) => {}
        Err(missing) if missing.is_missing() && settings.env == Env::Development => {
            let ring = file.create(OffsetDateTime::now_utc())?;
            let kid = &ring.signing().kid;
            tracing::info!(path = %file.path().display(), kid, "made a development signing key");
        }
        Err(missing) if missing.is_missing() => return Err(StartupError::KeysFileMissing { path: missing.path }),
        Err(error) => return Err(error.into()),
    }
    Ok(Signing::Keys(file))
}

/// The HMAC key of refresh-token successors, which every replica must share:
/// configured, or derived from the HS256 secret (configured, or generated
/// in development).
fn server_key(settings: &Settings, signing: &Signing) -> Result<ServerKey, StartupError> {
    match (settings.auth.server_key.expose_secret(), signing) {
        ("", Signing::Secret(secret)) => Ok(ServerKey::derived_from(secret.expose_secret())),
        ("", Signing::Keys(_)) if settings.env == Env::Production && settings.jwt.secret.expose_secret().is_empty() => {
            Err(StartupError::Setting {
                variable: "GATEHOUSE__AUTH__SERVER_KEY",
                problem: "is required when GATEHOUSE_ENV=production under EdDSA or RS256 (at least 32 random bytes, \
                          the same on every replica)"
                    .into(),
            })
        }
        ("", Signing::Keys(_)) => Ok(ServerKey::derived_from(jwt_secret(settings)?.expose_secret())),
        (configured, _) => Ok(ServerKey::new(configured.as_bytes())),
    }
}

/// The use cases, and the adapters the server also reaches directly.
#[allow(missing_debug_implementations)]
pub struct Services {
    pub auth: AuthService,
    pub admin: AdminService,
    /// The hash pool, for its queue length.
    pub hasher: Arc<Argon2Hasher>,
    /// The signing keys, for the JWK Set and for following the keys file.
    pub tokens: Arc<JwtAccessTokens>,
}

/// The use cases over their adapters: accounts, and administration.
pub fn services(settings: &Settings, stores: &Stores) -> Result<Services, StartupError> {
    let hashing = &settings.hashing;
    let concurrency = if hashing.concurrency == 0 { cores() } else { hashing.concurrency };
    let params =
        HashParams { memory_kib: hashing.memory_kib, iterations: hashing.iterations, parallelism: hashing.parallelism };
    let min_share = hashing.min_share.unwrap_or(usize::from(cores() >= 2)).min(concurrency);
    let hasher = Argon2Hasher::reserving(params, concurrency, hashing.queue_limit, min_share)
        .map_err(|e| StartupError::Setting { variable: "GATEHOUSE__HASHING__*", problem: e.to_string() })?;
    hasher.limit_oversized_memory(hashing.oversized_memory_kib);
    hasher.set_queue_deadline(std::time::Duration::from_millis(hashing.queue_deadline_ms));
    let signing = signing(settings)?;
    let server_key = server_key(settings, &signing)?;
    let tokens = JwtAccessTokens::new(JwtSettings {
        signing,
        issuer: settings.jwt.issuer.clone(),
        audience: settings.jwt.audience.clone(),
        ttl: time::Duration::seconds(settings.auth.access_ttl_seconds),
    })
    .map_err(|e| match e {
        gatehouse_token_jwt::JwtSettingsError::KeysFile(error) => StartupError::KeysFile(error),
        other => StartupError::Setting { variable: "GATEHOUSE_JWT_SECRET", problem: other.to_string() },
    })?;
    let tokens = Arc::new(tokens);
    let totp = Totp::new(mfa_key(settings)?.expose_secret())
        .map_err(|problem| StartupError::Setting { variable: "GATEHOUSE__MFA__ENCRYPTION_KEY", problem })?;
    let argon2 = Arc::new(hasher);
    let hasher: Arc<dyn PasswordHasher> = Arc::new(RequestAwareHasher(argon2.clone()));
    let ports = Ports {
        accounts: stores.accounts.clone(),
        sessions: stores.sessions.clone(),
        throttle: stores.throttle.clone(),
        audit: stores.audit.clone(),
        hasher: hasher.clone(),
        tokens: tokens.clone(),
        random: Arc::new(OsRandom),
        clock: Arc::new(SystemClock),
        server_key,
        mfa: stores.mfa.clone(),
        totp: Arc::new(totp),
    };
    let admin_ports = AdminPorts {
        store: stores.admin.clone(),
        writes: stores.admin_writes.clone(),
        accounts: stores.accounts.clone(),
        sessions: stores.sessions.clone(),
        audit: stores.audit.clone(),
        hasher,
        random: Arc::new(OsRandom),
        clock: Arc::new(SystemClock),
        mfa: stores.mfa.clone(),
    };
    let links = &settings.links;
    let links = Links {
        verify_email_path: links.verify_email_path.clone(),
        reset_password_path: links.reset_password_path.clone(),
        login_path: links.login_path.clone(),
        ..Links::new(&links.frontend_url)
    };
    let policy = AuthPolicy {
        require_verified_email: settings.auth.require_verified_email,
        verification_ttl: time::Duration::seconds(settings.auth.verification_ttl_seconds),
        reset_ttl: time::Duration::seconds(settings.auth.reset_ttl_seconds),
        refresh_ttl: time::Duration::seconds(settings.auth.refresh_ttl_seconds),
        refresh_grace: time::Duration::seconds(settings.auth.refresh_grace_seconds),
        throttle_window: time::Duration::minutes(15),
        max_failures_per_email: i64::from(settings.auth.login_address_limit),
        max_failures_per_ip: i64::from(settings.auth.login_ip_limit),
        mail_window: time::Duration::seconds(settings.limits.window_seconds),
        max_mails_per_address: i64::from(settings.limits.mail_per_address),
        max_mail_requests_per_ip: i64::from(settings.limits.mail_requests_per_ip),
        mfa_token_ttl: time::Duration::seconds(settings.mfa.token_ttl_seconds),
    };
    let admin = AdminService::new(admin_ports, links.clone(), policy.verification_ttl);
    Ok(Services { auth: AuthService::new(ports, links, policy), admin, hasher: argon2, tokens })
}

fn mailer(settings: &Settings) -> Result<LettreMailer, StartupError> {
    LettreMailer::from_url(&settings.mail.mailer, &settings.mail.from).map_err(|e| match e {
        MailerConfigError::From(_) => StartupError::Setting { variable: "GATEHOUSE_MAIL_FROM", problem: e.to_string() },
        _ => StartupError::Setting { variable: "GATEHOUSE_MAILER", problem: e.to_string() },
    })
}

/// The outbox worker: delivers due mail until told to stop, finishing the
/// send in progress first.
struct MailWorker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MailWorker {
    fn start(delivery: MailDelivery, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let busy = match delivery.deliver_due().await {
                    Ok(report) => report.sent + report.failed > 0,
                    Err(error) => {
                        tracing::warn!(error = &error as &dyn std::error::Error, "the outbox could not be read");
                        false
                    }
                };
                if busy {
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => break,
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// How often the keys file is reread: every replica follows a `gatehouse
/// keys` command within the 10 s the contract allows.
const KEYS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Rereads the keys file until aborted. A file that cannot be used is
/// reported once and the keys in use stay, so a bad edit signs nobody out.
fn watch_keys(tokens: Arc<JwtAccessTokens>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(KEYS_RELOAD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match tokens.reload() {
                Ok(changed) => {
                    if let Some(kid) = changed {
                        tracing::info!(kid, "signing keys reloaded");
                    }
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::error!(%error, "the keys file cannot be used; the keys in use stay");
                    }
                    failing = true;
                }
            }
        }
    })
}

/// Browsers may call from the configured origins only, credentials included;
/// other origins get no CORS headers (and their preflights are refused).
fn cors(origins: &[String]) -> Cors {
    let cors = origins.iter().fold(Cors::default(), |cors, origin| cors.allowed_origin(origin));
    cors.allowed_methods(["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static(crate::cookies::CSRF_HEADER),
        ])
        .expose_headers([request_id::HEADER, header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .supports_credentials()
        .block_on_origin_mismatch(false)
        .max_age(3600)
}

/// Set on every response unless a handler chose otherwise: responses carry
/// personal data and tokens, so nothing is cached, sniffed, framed, or let
/// load anything (a JSON answer is no page). Behind HTTPS, browsers are told
/// to keep to it.
fn security_headers(hsts_max_age_seconds: u64) -> middleware::DefaultHeaders {
    let headers = middleware::DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"));
    match hsts_max_age_seconds {
        0 => headers,
        seconds => headers.add((header::STRICT_TRANSPORT_SECURITY, format!("max-age={seconds}; includeSubDomains"))),
    }
}

/// The machine's name, for telling the workers that hold mail leases apart.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|name| name.trim().to_owned()).unwrap_or_else(|_| "gatehouse".into())
}

/// `/metrics` alone on its own address, served by one worker.
fn metrics_server(address: SocketAddr, state: web::Data<AppState>) -> Result<(u16, Server), StartupError> {
    let bind_error = |source| StartupError::Bind { address: address.to_string(), source };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).configure(routes::metrics).default_service(web::to(routes::not_found))
    })
    .workers(1)
    .listen(listener)
    .map_err(bind_error)?
    .run();
    Ok((port, server))
}

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on its own address, when configured so.
    metrics: Option<(u16, Server)>,
    worker: MailWorker,
    /// Follows the keys file, under EdDSA and RS256.
    key_watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Migrates the database, wires the adapters, starts the outbox worker and
    /// binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let address = settings
            .bind_address()
            .map_err(|e| StartupError::Setting { variable: "GATEHOUSE_BIND", problem: e.problem })?;
        let stores = Stores::open(&settings).await?;
        let Services { auth, admin, hasher, tokens, .. } = services(&settings, &stores)?;
        let key_watcher = settings.jwt.algorithm.key_algorithm().map(|_| watch_keys(tokens.clone()));
        let mailer = mailer(&settings)?;
        tracing::info!(mail = mailer.describe(), "mail transport ready");
        let delivery = MailDelivery::new(
            stores.outbox.clone(),
            Arc::new(mailer),
            Arc::new(SystemClock),
            DeliveryPolicy { lease: time::Duration::seconds(settings.mail.lease_seconds), ..DeliveryPolicy::default() },
            format!("{}/{}", hostname(), uuid::Uuid::new_v4().simple()),
        );
        let worker = MailWorker::start(delivery, Duration::from_millis(settings.mail.poll_interval_ms.max(10)));

        let listener =
            TcpListener::bind(address).map_err(|source| StartupError::Bind { address: address.to_string(), source })?;
        let port =
            listener.local_addr().map_err(|source| StartupError::Bind { address: address.to_string(), source })?.port();
        let state = web::Data::new(AppState {
            auth,
            admin,
            health: stores.health.clone(),
            outbox: stores.outbox.clone(),
            hash_queue: hasher,
            tokens,
            pool: stores.pool.clone(),
            browser: BrowserCookies::new(&settings.cookies, &settings.cors.origins),
        });
        let limit = web::Data::new(BodyLimit {
            bytes: settings.server.body_limit_bytes,
            time: Duration::from_secs(settings.server.body_timeout_seconds),
        });
        let proxies = settings
            .trusted_proxies()
            .map_err(|e| StartupError::Setting { variable: "GATEHOUSE_TRUSTED_PROXIES", problem: e.problem })?;
        let proxies = web::Data::new(TrustedProxies(proxies));
        let workers = request_workers(&settings);
        let origins = settings.cors.origins.clone();
        let hsts = settings.server.hsts_max_age_seconds;
        let pool = stores.pool.clone();
        let metrics_address = settings
            .metrics_address()
            .map_err(|e| StartupError::Setting { variable: "GATEHOUSE__SERVER__METRICS_BIND", problem: e.problem })?;
        let public_metrics = metrics_address.is_none();
        let metrics = match metrics_address {
            Some(address) => Some(metrics_server(address, state.clone())?),
            None => None,
        };
        let builder = actix_web::dev::Server::build();
        let shutdown = builder.graceful_shutdown_signal();
        let server = builder
            .workers(workers)
            .shutdown_timeout(settings.server.shutdown_timeout_seconds)
            .listen("gatehouse", listener, move || {
                // The factory runs once on each worker thread.
                pool.bind_current_thread();
                let app = App::new()
                    .app_data(state.clone())
                    .app_data(limit.clone())
                    .app_data(proxies.clone())
                    .wrap(cors(&origins))
                    .wrap(security_headers(hsts))
                    .wrap(middleware::from_fn(routes::contract_shape))
                    .wrap(middleware::from_fn(request_id::middleware))
                    .configure(routes::configure)
                    .configure(console::configure)
                    .configure(|cfg| {
                        if public_metrics {
                            routes::metrics(cfg)
                        }
                    })
                    .default_service(web::to(routes::not_found));
                let shutdown = shutdown.clone();
                let http = HttpService::build()
                    .on_connect_ext(|io: &ContractIo, connection: &mut actix_web::dev::Extensions| {
                        connection.insert(io.hang_up());
                    })
                    .keep_alive(Duration::from_secs(5))
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(address)
                    .graceful_shutdown_signal(move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    })
                    .h1(map_config(
                        app.into_factory().map_err(|error: actix_web::Error| error.error_response()),
                        |_| AppConfig::default(),
                    ));
                // The server's own error answers in the contract's shape (see `wire`).
                fn_service(|stream: actix_web::rt::net::TcpStream| async move {
                    let peer = stream.peer_addr().ok();
                    // Small request/response exchanges: no Nagle delay waiting on the peer's ACK.
                    stream.set_nodelay(true)?;
                    Ok::<_, std::io::Error>((ContractIo::new(stream), peer))
                })
                .map_err(DispatchError::Io)
                .and_then(http)
            })
            .map_err(|source| StartupError::Bind { address: address.to_string(), source })?
            .run();
        Ok(Self { port, server, metrics, worker, key_watcher })
    }

    /// The port of `/metrics` when it has its own address.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT (in-flight requests finish), then stops the outbox worker.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = match self.metrics {
            Some((_, metrics)) => futures_util::future::try_join(self.server, metrics).await.map(|_| ()),
            None => self.server.await,
        };
        self.worker.stop().await;
        if let Some(watcher) = self.key_watcher {
            watcher.abort();
        }
        served
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_unset_secret_is_generated_once_into_a_private_file_and_kept() {
        let file = std::env::temp_dir().join(format!("gatehouse-key-{}", uuid::Uuid::new_v4())).join("mfa-key");
        let path = file.display().to_string();
        let made = configured_or_kept(&SecretString::from(""), &path, "test key").unwrap();
        assert!(made.expose_secret().len() >= gatehouse_totp::MIN_KEY_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let kept = configured_or_kept(&SecretString::from(""), &path, "test key").unwrap();
        assert_eq!(kept.expose_secret(), made.expose_secret(), "the next start reads the same key");
        let configured = configured_or_kept(&SecretString::from("configured"), &path, "test key").unwrap();
        assert_eq!(configured.expose_secret(), b"configured");
    }
}
