//! Trust Gatehouse's access tokens in another service, without a secret.
//!
//! A [`Verifier`] fetches Gatehouse's public keys (`/.well-known/jwks.json`),
//! keeps them, and checks each token locally: the key its `kid` names, that
//! key's own algorithm (never the one the token's header claims), `iss`,
//! `aud`, `exp`, `nbf` (with a small leeway for clock skew) and
//! `token_type`. An unknown `kid` refetches the keys, at most once per
//! [`VerifierConfig::refetch_interval`]; keys older than
//! [`VerifierConfig::refresh_interval`] are refreshed as tokens come. When
//! the key endpoint is down or answers garbage, the last good keys stay;
//! with none at all, every token is refused.
//!
//! A local check cannot see a session revoked since the token was issued
//! (tokens live 5 minutes by default). Routes that must see that at once
//! use [`Verifier::verify_strict`], which also asks Gatehouse
//! (`POST /api/v1/auth/token/verify`), remembering each answer briefly.
//!
//! The signature is checked by ed25519-dalek or rsa with a key parsed once
//! per fetch (see `jws`); the claims are checked here.
//!
//! With the `actix` feature, `actix::Authenticated` and
//! `actix::StrictlyAuthenticated` extract the verified claims in handlers.

#[cfg(feature = "actix")]
pub mod actix;
mod jws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jws::{JwkSet, PublicKey};
use serde::{Deserialize, Serialize};

/// The `token_type` of access tokens; refresh tokens are never JWTs.
const ACCESS_TOKEN_TYPE: &str = "access";
/// Strict answers remembered at most this many; beyond, expired ones go.
const STRICT_CACHE_LIMIT: usize = 10_000;

/// Where Gatehouse is and what its tokens must say.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Gatehouse's base URL, such as `http://gatehouse:8080`.
    pub gatehouse_url: String,
    /// The `iss` tokens must carry (Gatehouse's `jwt.issuer`).
    pub issuer: String,
    /// The `aud` tokens must carry (Gatehouse's `jwt.audience`).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Keys older than this are fetched again (Gatehouse lets them be cached 300 s).
    pub refresh_interval: Duration,
    /// An unknown `kid` fetches the keys again at most this often, so
    /// tokens with made-up `kid`s cannot make this service hammer Gatehouse.
    pub refetch_interval: Duration,
    /// How long a strict answer is remembered.
    pub strict_cache: Duration,
    /// How long a request to Gatehouse may take.
    pub timeout: Duration,
}

impl VerifierConfig {
    /// The defaults for a Gatehouse at `gatehouse_url` with its default
    /// issuer and audience (`gatehouse`).
    pub fn new(gatehouse_url: impl Into<String>) -> Self {
        Self {
            gatehouse_url: gatehouse_url.into().trim_end_matches('/').to_owned(),
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            leeway: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(300),
            refetch_interval: Duration::from_secs(10),
            strict_cache: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The claims of a verified access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id, as a string.
    pub sub: String,
    /// The session (one login on one device).
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    pub iss: String,
    pub aud: String,
    pub token_type: String,
    /// How the user authenticated (`pwd`, `otp`, …), when Gatehouse says.
    #[serde(default)]
    pub amr: Vec<String>,
}

impl Claims {
    /// The user's id as Gatehouse numbers it.
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid: {0}")]
    Invalid(&'static str),
    /// Strict mode: Gatehouse says the token is no longer good (session
    /// revoked, user disabled, …).
    #[error("the token was revoked")]
    Revoked,
    /// No key to check with (the key endpoint never answered), or, in
    /// strict mode, no answer from Gatehouse: nothing is accepted.
    #[error("cannot verify tokens now: {0}")]
    Unavailable(String),
}

/// A verifier that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot make the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("not a JWK Set: {0}")]
    Jwks(#[from] serde_json::Error),
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<PublicKey>>,
    fetched_at: Option<Instant>,
}

struct Inner {
    config: VerifierConfig,
    http: reqwest::Client,
    keys: RwLock<Arc<Keys>>,
    /// When the keys were last asked for; held while asking, so that
    /// concurrent misses make one request.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    strict: Mutex<HashMap<String, (Instant, bool)>>,
}

/// Checks Gatehouse access tokens; cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("gatehouse_url", &self.inner.config.gatehouse_url).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with no keys yet: the first token fetches them.
    pub fn new(config: VerifierConfig) -> Result<Self, SetupError> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                keys: RwLock::default(),
                last_fetch: tokio::sync::Mutex::new(None),
                last_error: Mutex::default(),
                strict: Mutex::default(),
            }),
        })
    }

    /// A verifier that starts with the keys of `jwks` (a JWK Set shipped
    /// with the service, or a benchmark's) and follows Gatehouse's from there.
    pub fn with_keys(config: VerifierConfig, jwks: &str) -> Result<Self, SetupError> {
        let verifier = Self::new(config)?;
        let set: JwkSet = serde_json::from_str(jwks)?;
        verifier.replace_keys(set);
        Ok(verifier)
    }

    fn replace_keys(&self, set: JwkSet) {
        let by_kid = set.usable().into_iter().map(|(kid, key)| (kid, Arc::new(key))).collect();
        *self.inner.keys.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Keys { by_kid, fetched_at: Some(Instant::now()) });
    }

    /// The last failure to fetch the keys, until a fetch succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The `kid`s of the keys held now.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().by_kid.keys().cloned().collect()
    }

    fn keys(&self) -> Arc<Keys> {
        self.inner.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Fetches the keys now. On failure the keys held stay, and the error
    /// is kept for [`Verifier::last_error`].
    pub async fn refresh(&self) -> Result<(), String> {
        let mut last_fetch = self.inner.last_fetch.lock().await;
        *last_fetch = Some(Instant::now());
        self.fetch().await
    }

    async fn fetch(&self) -> Result<(), String> {
        let result = self.fetch_keys().await;
        let mut last_error = self.inner.last_error.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(set) => {
                self.replace_keys(set);
                *last_error = None;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch Gatehouse's keys; keeping the last good ones");
                *last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<JwkSet, String> {
        let url = format!("{}/.well-known/jwks.json", self.inner.config.gatehouse_url);
        let response = self.inner.http.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: status {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not a JWK Set: {e}"))
    }

    /// The key named `kid`: from the keys held, or, when unknown (a
    /// rotation this verifier has not seen), from a fetch, at most once per
    /// refetch interval. Keys past their refresh interval are refreshed in
    /// the background while the held ones keep serving.
    async fn key(&self, kid: &str) -> Result<Arc<PublicKey>, VerifyError> {
        let keys = self.keys();
        if let Some(key) = keys.by_kid.get(kid) {
            if keys.fetched_at.is_some_and(|at| at.elapsed() >= self.inner.config.refresh_interval) {
                self.refresh_in_background();
            }
            return Ok(key.clone());
        }
        {
            let mut last_fetch = self.inner.last_fetch.lock().await;
            let recently = last_fetch.is_some_and(|at| at.elapsed() < self.inner.config.refetch_interval);
            // Another caller may have fetched while this one waited.
            if !recently && !self.keys().by_kid.contains_key(kid) {
                *last_fetch = Some(Instant::now());
                let _ = self.fetch().await;
            }
        }
        let keys = self.keys();
        match keys.by_kid.get(kid) {
            Some(key) => Ok(key.clone()),
            None if keys.by_kid.is_empty() => {
                Err(VerifyError::Unavailable(self.last_error().unwrap_or_else(|| "no key has been published".into())))
            }
            None => Err(VerifyError::Invalid("unknown kid")),
        }
    }

    fn refresh_in_background(&self) {
        let verifier = self.clone();
        tokio::spawn(async move {
            let Ok(mut last_fetch) = verifier.inner.last_fetch.try_lock() else { return };
            if last_fetch.is_some_and(|at| at.elapsed() < verifier.inner.config.refetch_interval) {
                return;
            }
            *last_fetch = Some(Instant::now());
            let _ = verifier.fetch().await;
        });
    }

    /// Checks a token locally, with the published keys.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let parts = jws::parts(token).map_err(VerifyError::Invalid)?;
        let kid = parts.kid.clone().ok_or(VerifyError::Invalid("no kid"))?;
        let key = self.key(&kid).await?;
        let payload = parts.verified_payload(&key).map_err(VerifyError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| VerifyError::Invalid("malformed claims"))?;
        self.check(&claims)?;
        Ok(claims)
    }

    /// The checks of the claims, once the signature holds.
    fn check(&self, claims: &Claims) -> Result<(), VerifyError> {
        let config = &self.inner.config;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
        let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
        if claims.iss != config.issuer {
            return Err(VerifyError::Invalid("wrong issuer"));
        }
        if claims.aud != config.audience {
            return Err(VerifyError::Invalid("wrong audience"));
        }
        if claims.token_type != ACCESS_TOKEN_TYPE {
            return Err(VerifyError::Invalid("not an access token"));
        }
        if now >= claims.exp.saturating_add(leeway) {
            return Err(VerifyError::Expired);
        }
        if claims.nbf.unwrap_or(claims.iat).max(claims.iat) > now.saturating_add(leeway) {
            return Err(VerifyError::Invalid("not yet valid"));
        }
        Ok(())
    }

    /// Checks a token locally, then asks Gatehouse whether it is still live
    /// (its session not revoked, its user still active). Each answer is
    /// remembered for [`VerifierConfig::strict_cache`].
    pub async fn verify_strict(&self, token: &str) -> Result<Claims, VerifyError> {
        let claims = self.verify(token).await?;
        let cached = self.strict_answer(&claims.jti);
        let live = match cached {
            Some(live) => live,
            None => {
                let live = self.ask_gatehouse(token).await?;
                self.remember(&claims.jti, live);
                live
            }
        };
        if live {
            Ok(claims)
        } else {
            Err(VerifyError::Revoked)
        }
    }

    fn strict_answer(&self, jti: &str) -> Option<bool> {
        let strict = self.inner.strict.lock().unwrap_or_else(PoisonError::into_inner);
        strict.get(jti).filter(|(at, _)| at.elapsed() < self.inner.config.strict_cache).map(|(_, live)| *live)
    }

    fn remember(&self, jti: &str, live: bool) {
        let mut strict = self.inner.strict.lock().unwrap_or_else(PoisonError::into_inner);
        if strict.len() >= STRICT_CACHE_LIMIT {
            let ttl = self.inner.config.strict_cache;
            strict.retain(|_, (at, _)| at.elapsed() < ttl);
            if strict.len() >= STRICT_CACHE_LIMIT {
                strict.clear();
            }
        }
        strict.insert(jti.to_owned(), (Instant::now(), live));
    }

    async fn ask_gatehouse(&self, token: &str) -> Result<bool, VerifyError> {
        let url = format!("{}/api/v1/auth/token/verify", self.inner.config.gatehouse_url);
        let unavailable = |problem: String| VerifyError::Unavailable(format!("{url}: {problem}"));
        let response = self
            .inner
            .http
            .post(&url)
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 => Ok(true),
            401 => Ok(false),
            status => Err(unavailable(format!("status {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Nothing listens on port 1: every fetch fails at once.
    fn unreachable() -> Verifier {
        Verifier::new(VerifierConfig::new("http://127.0.0.1:1/")).unwrap()
    }

    #[test]
    fn the_defaults_match_gatehouse() {
        let config = VerifierConfig::new("http://gatehouse:8080/");
        assert_eq!(config.gatehouse_url, "http://gatehouse:8080");
        assert_eq!((config.issuer.as_str(), config.audience.as_str()), ("gatehouse", "gatehouse"));
        assert_eq!(config.refetch_interval, Duration::from_secs(10));
        assert_eq!(config.refresh_interval, Duration::from_secs(300));
    }

    #[tokio::test]
    async fn garbage_is_refused_without_asking_anyone() {
        let verifier = unreachable();
        for garbage in ["", "abc", "a.b.c", "e30.e30.", "....", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(matches!(verifier.verify(garbage).await, Err(VerifyError::Invalid(_))), "{garbage}");
        }
        let long = format!("{}.e30.AA", "e".repeat(9000));
        assert_eq!(verifier.verify(&long).await, Err(VerifyError::Invalid("too long")));
        assert!(verifier.last_error().is_none(), "no fetch was made");
    }

    #[tokio::test]
    async fn a_token_without_kid_is_refused() {
        // {"alg":"EdDSA"} . {} . (no signature)
        let token = "eyJhbGciOiJFZERTQSJ9.e30.AA";
        assert_eq!(unreachable().verify(token).await, Err(VerifyError::Invalid("no kid")));
    }

    #[tokio::test]
    async fn without_any_key_every_token_is_refused_and_the_error_kept() {
        let verifier = unreachable();
        // {"alg":"EdDSA","kid":"k"} . {} . (no signature)
        let token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsifQ.e30.AA";
        assert!(matches!(verifier.verify(token).await, Err(VerifyError::Unavailable(_))));
        assert!(verifier.last_error().unwrap().contains("127.0.0.1:1"));
        // Within the refetch interval, no second request is made.
        assert!(matches!(verifier.verify(token).await, Err(VerifyError::Unavailable(_))));
    }

    /// The header's `alg` must be the key's: `none`, or HS256 with the
    /// public key as its secret, fail before any claim is read.
    #[tokio::test]
    async fn only_the_keys_own_algorithm_is_accepted() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let public = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let x = URL_SAFE_NO_PAD.encode(public.as_bytes());
        let set = serde_json::json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k", "alg": "EdDSA" },
            { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "mislabelled", "alg": "HS256" },
            { "kty": "oct", "k": "c2VjcmV0", "kid": "secret" },
        ] });
        let verifier = Verifier::with_keys(VerifierConfig::new("http://127.0.0.1:1"), &set.to_string()).unwrap();
        assert_eq!(verifier.key_ids(), ["k"], "only the usable key is kept");
        for alg in ["none", "HS256", "RS256", "EdDSA "] {
            let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": alg, "kid": "k" }).to_string());
            let token = format!("{header}.e30.AA");
            assert_eq!(verifier.verify(&token).await, Err(VerifyError::Invalid("not the key's algorithm")), "{alg}");
        }
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k"}"#);
        let bad = format!("{header}.e30.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert_eq!(verifier.verify(&bad).await, Err(VerifyError::Invalid("bad signature")));
        let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k","crit":["x"]}"#);
        assert!(verifier.verify(&format!("{crit}.e30.AA")).await.is_err());
    }

    #[test]
    fn the_user_id_is_the_numeric_subject() {
        let claims = Claims {
            sub: "42".into(),
            sid: "s".into(),
            jti: "j".into(),
            iat: 0,
            exp: 0,
            nbf: None,
            iss: "gatehouse".into(),
            aud: "gatehouse".into(),
            token_type: "access".into(),
            amr: Vec::new(),
        };
        assert_eq!(claims.user_id(), Some(42));
        assert_eq!(Claims { sub: "x".into(), ..claims }.user_id(), None);
    }
}
