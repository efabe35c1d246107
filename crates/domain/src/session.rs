//! Sessions (one login on one device) and the opaque secrets handed to clients.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;

use crate::audit::AuditEvent;
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
}

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: TokenHash,
    pub expires_at: OffsetDateTime,
}

/// What a refresh-token rotation found, decided atomically by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live; it is now spent and the new one is stored.
    Rotated { user_id: UserId, session_id: SessionId },
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
    fn debug_hides_tokens() {
        let token = OpaqueToken::new("s3cret-value".into());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
