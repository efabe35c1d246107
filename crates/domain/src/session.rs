//! Sessions (one login on one device) and the opaque secrets handed to clients.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;

use crate::audit::AuditEvent;
use crate::password::PasswordHash;
use crate::ports::ThrottleKey;
use crate::user::UserId;

/// A session's public identifier (a UUID), carried in access tokens as `sid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(uuid::Uuid);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl SessionId {
    pub const fn new(id: uuid::Uuid) -> Self {
        Self(id)
    }

    pub const fn get(self) -> uuid::Uuid {
        self.0
    }

    pub fn parse(raw: &str) -> Option<Self> {
        uuid::Uuid::parse_str(raw).ok().map(Self)
    }
}

/// Who is calling, as far as the transport can tell; recorded with sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept; the rest is noise.
pub const MAX_USER_AGENT_CHARS: usize = 256;

impl ClientInfo {
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect());
        Self { ip, user_agent }
    }
}

/// A random secret given to a client once (refresh token, link token).
/// Only its hash is ever stored.
#[derive(Clone)]
pub struct OpaqueToken(SecretString);

impl OpaqueToken {
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.expose())
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken([REDACTED])")
    }
}

/// The server's HMAC key, the same on every replica: it derives what a
/// replica must recompute rather than store, such as the successor of a
/// refresh token (so every replay within the grace window gets the one
/// successor the first rotation stored).
#[derive(Clone)]
pub struct ServerKey(SecretSlice<u8>);

impl ServerKey {
    pub fn new(key: &[u8]) -> Self {
        Self(SecretSlice::from(key.to_vec()))
    }

    /// A key derived from another secret (the HS256 signing secret when no
    /// server key is configured): distinct from it, as shared as it is.
    pub fn derived_from(secret: &[u8]) -> Self {
        Self::new(Self::new(secret).derive("server key", &[]).as_bytes())
    }

    /// HMAC-SHA256 of `input` under the key, separated by `purpose`, hex-encoded.
    fn derive(&self, purpose: &str, input: &[u8]) -> String {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret()).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(input);
        format!("{:x}", mac.finalize().into_bytes())
    }

    /// The refresh token that follows `presented` when it is rotated.
    pub fn successor(&self, presented: &str) -> OpaqueToken {
        OpaqueToken::new(self.derive("refresh successor", presented.as_bytes()))
    }

    /// A browser session's CSRF token: bound to the session, so a token
    /// planted from another session (or made up) never matches.
    pub fn csrf_token(&self, session: SessionId) -> String {
        self.derive("csrf", session.0.as_bytes())
    }

    /// Whether `presented` is `session`'s CSRF token, compared in constant time.
    pub fn csrf_matches(&self, session: SessionId, presented: &str) -> bool {
        let expected = self.csrf_token(session);
        expected.len() == presented.len()
            && expected.bytes().zip(presented.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey([REDACTED])")
    }
}

/// SHA-256 of an opaque token, hex-encoded: what the store keeps and looks up.
/// A fast hash is enough because the tokens carry 256 bits of entropy.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(format!("{:x}", Sha256::digest(token.as_bytes())))
    }

    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", self.0.get(..8).unwrap_or_default())
    }
}

/// A session about to be stored, with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub client: ClientInfo,
    pub created_at: OffsetDateTime,
    pub refresh: NewRefreshToken,
    /// Recorded in the same transaction as the session (a login's trail entry).
    pub event: Option<AuditEvent>,
    /// A login's throttle keys, settled in the same transaction.
    pub throttle: SettledThrottle,
    /// A login's upgraded password hash (from an imported or outdated one),
    /// stored in the same transaction.
    pub rehash: Option<Rehash>,
    /// How the user proved who they are; every access token of the session says it.
    pub amr: AuthMethods,
}

/// How a session's user authenticated: the `amr` claim (RFC 8176) of its
/// access tokens, kept with the session so that a refresh says the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMethods {
    #[default]
    Password,
    /// The password, then a TOTP code.
    PasswordAndOtp,
    /// The password, then a recovery code.
    PasswordAndRecoveryCode,
}

impl AuthMethods {
    /// The claim's values.
    pub fn claim(self) -> &'static [&'static str] {
        match self {
            Self::Password => &["pwd"],
            Self::PasswordAndOtp => &["pwd", "otp"],
            Self::PasswordAndRecoveryCode => &["pwd", "mfa"],
        }
    }

    /// The claim's values joined by spaces, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::PasswordAndOtp => "pwd otp",
            Self::PasswordAndRecoveryCode => "pwd mfa",
        }
    }

    /// The methods of a claim or of [`Self::as_str`]; `None` for anything else.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let values: Vec<&str> = values.into_iter().collect();
        [Self::Password, Self::PasswordAndOtp, Self::PasswordAndRecoveryCode]
            .into_iter()
            .find(|methods| methods.claim() == values.as_slice())
    }
}

/// Replaces the stored hash `from` with `to`; a hash that is no longer
/// `from` (the password changed meanwhile) stays as it is.
#[derive(Debug, Clone)]
pub struct Rehash {
    pub from: PasswordHash,
    pub to: PasswordHash,
}

/// What a successful login does to its throttle keys: its address's count
/// is cleared, and the attempt counted under its IP is given back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettledThrottle {
    pub clear: Option<ThrottleKey>,
    pub release: Vec<ThrottleKey>,
}

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: TokenHash,
    pub expires_at: OffsetDateTime,
}

/// What a refresh-token rotation found, decided atomically by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live and is now spent, its successor stored; or it was
    /// spent within the grace window, and its successor is already stored.
    Rotated { user_id: UserId, session_id: SessionId, amr: AuthMethods },
    /// No such token.
    Unknown,
    /// The token is past its expiry.
    Expired,
    /// The session is revoked or its user disabled.
    SessionDead,
    /// The token was already spent: the store has revoked the whole session.
    Reused { user_id: UserId, session_id: SessionId },
}

/// A live session as its owner sees it in the list of their devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// The state of a session as an access-token check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Not revoked, not expired, and its user is active.
    Live { user_id: UserId },
    /// Unknown, revoked, expired, or its user disabled.
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(TokenHash::of("abc").as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn user_agent_is_truncated() {
        let client = ClientInfo::new(None, Some(&"a".repeat(1000)));
        assert_eq!(client.user_agent.unwrap().len(), MAX_USER_AGENT_CHARS);
    }

    #[test]
    fn a_csrf_token_belongs_to_its_session_and_key() {
        let (key, other_key) = (ServerKey::new(b"a server key of at least 32 bytes!!"), ServerKey::new(b"another key"));
        let (session, other) = (SessionId::new(uuid::Uuid::from_u128(1)), SessionId::new(uuid::Uuid::from_u128(2)));
        let token = key.csrf_token(session);
        assert_eq!(token.len(), 64, "256 bits, hex");
        assert!(key.csrf_matches(session, &token));
        assert!(!key.csrf_matches(other, &token), "another session's token");
        assert!(!other_key.csrf_matches(session, &token), "another key's token");
        assert!(!key.csrf_matches(session, &token[..63]) && !key.csrf_matches(session, ""));
        assert_ne!(token, key.successor(&session.to_string()).expose(), "purposes are separated");
    }

    #[test]
    fn debug_hides_tokens() {
        let token = OpaqueToken::new("s3cret-value".into());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
