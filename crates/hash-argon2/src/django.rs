//! Django's password hash formats, as `gatehouse import-django` keeps them:
//! `pbkdf2_sha256`, `pbkdf2_sha1`, `argon2`, `bcrypt_sha256`, `bcrypt`, and
//! the unusable `!…`. Each is checked on the hashing threads like our own
//! hashes, and a match always asks for a rehash to argon2id.
//!
//! A hash string comes from another system's database, so its costs are
//! bounded before any work: an absurd iteration count or memory cost is a
//! malformed hash, refused without burning the CPU or memory it names.

use argon2::password_hash::phc::PasswordHash as PhcHash;
use argon2::Params;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gatehouse_domain::PortError;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// PBKDF2 iterations accepted: Django 5.2 writes 1,000,000 and older versions
/// fewer (600,000 in 4.2, 260,000 in 3.2); a few times today's is the cap.
pub const MAX_PBKDF2_ITERATIONS: u32 = 4_000_000;
/// bcrypt's cost is a power of two; Django writes 12.
pub const MAX_BCRYPT_COST: u32 = 14;
/// Argon2 memory cost accepted, in KiB (Django's default is 102,400).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// Argon2 passes and lanes accepted (Django's defaults are t=2, p=8).
pub const MAX_ARGON2_ITERATIONS: u32 = 16;
pub const MAX_ARGON2_LANES: u32 = 64;

/// Django's longest hash is about 120 bytes.
pub const MAX_HASH_LENGTH: usize = 512;

/// A Django hash string, parsed and within the caps.
#[derive(Debug)]
pub enum DjangoHash<'a> {
    Pbkdf2 {
        digest: Pbkdf2Digest,
        iterations: u32,
        salt: &'a str,
        expected: Vec<u8>,
    },
    /// The PHC string that follows `argon2`, with its parsed parameters.
    Argon2 {
        phc: Box<PhcHash>,
        params: Params,
    },
    /// `$2b$…`; with `sha256_first`, the password is first reduced to the hex
    /// of its SHA-256 (Django's `bcrypt_sha256`, free of bcrypt's 72-byte limit).
    Bcrypt {
        sha256_first: bool,
        hash: &'a str,
    },
    /// `set_unusable_password()`: no password matches, ever.
    Unusable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf2Digest {
    Sha256,
    Sha1,
}

/// Why a stored string is not a hash Gatehouse can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedHash(String);

fn malformed(why: impl Into<String>) -> MalformedHash {
    MalformedHash(why.into())
}

/// Whether `stored` is in one of Django's formats rather than our own PHC
/// string (which starts with `$`).
pub fn is_django(stored: &str) -> bool {
    !stored.starts_with('$')
}

impl<'a> DjangoHash<'a> {
    /// Parses a Django hash string and checks it against the caps.
    pub fn parse(stored: &'a str) -> Result<Self, MalformedHash> {
        if stored.len() > MAX_HASH_LENGTH || stored.chars().any(char::is_control) {
            return Err(malformed(format!("over {MAX_HASH_LENGTH} bytes or holds a control character")));
        }
        if stored.starts_with('!') {
            return Ok(Self::Unusable);
        }
        let Some((algorithm, rest)) = stored.split_once('$') else {
            return Err(malformed("no algorithm prefix"));
        };
        match algorithm {
            "pbkdf2_sha256" => Self::pbkdf2(Pbkdf2Digest::Sha256, rest),
            "pbkdf2_sha1" => Self::pbkdf2(Pbkdf2Digest::Sha1, rest),
            "argon2" => Self::argon2(rest),
            "bcrypt_sha256" => Self::bcrypt(true, rest),
            "bcrypt" => Self::bcrypt(false, rest),
            other => Err(malformed(format!("unsupported hasher {:?}", truncated(other)))),
        }
    }

    fn pbkdf2(digest: Pbkdf2Digest, rest: &'a str) -> Result<Self, MalformedHash> {
        let fields: Vec<&str> = rest.split('$').collect();
        let [iterations, salt, encoded] = fields[..] else {
            return Err(malformed("a PBKDF2 hash has four fields"));
        };
        let iterations: u32 =
            iterations.parse().map_err(|_| malformed("the PBKDF2 iteration count is not a number"))?;
        if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
            return Err(malformed(format!("{iterations} PBKDF2 iterations is outside 1..={MAX_PBKDF2_ITERATIONS}")));
        }
        if salt.is_empty() {
            return Err(malformed("the PBKDF2 salt is empty"));
        }
        let expected = STANDARD.decode(encoded).map_err(|_| malformed("the PBKDF2 output is not base64"))?;
        let length = match digest {
            Pbkdf2Digest::Sha256 => 32,
            Pbkdf2Digest::Sha1 => 20,
        };
        if expected.len() != length {
            return Err(malformed(format!("the PBKDF2 output is {} bytes, not {length}", expected.len())));
        }
        Ok(Self::Pbkdf2 { digest, iterations, salt, expected })
    }

    fn argon2(rest: &'a str) -> Result<Self, MalformedHash> {
        let phc = PhcHash::new(&format!("${rest}")).map_err(|e| malformed(format!("not an argon2 PHC string: {e}")))?;
        if phc.salt.is_none() || phc.hash.is_none() {
            return Err(malformed("the argon2 hash has no salt or output"));
        }
        let params = Params::try_from(&phc).map_err(|e| malformed(format!("bad argon2 parameters: {e}")))?;
        if params.m_cost() > MAX_ARGON2_MEMORY_KIB
            || params.t_cost() > MAX_ARGON2_ITERATIONS
            || params.p_cost() > MAX_ARGON2_LANES
        {
            return Err(malformed(format!(
                "argon2 costs m={},t={},p={} exceed the caps m={MAX_ARGON2_MEMORY_KIB},t={MAX_ARGON2_ITERATIONS},p={MAX_ARGON2_LANES}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            )));
        }
        Ok(Self::Argon2 { phc: Box::new(phc), params })
    }

    fn bcrypt(sha256_first: bool, rest: &'a str) -> Result<Self, MalformedHash> {
        // Django writes `bcrypt$` followed by the library's own `$2b$12$…`.
        let parts: bcrypt::HashParts = rest.parse()?;
        if parts.get_cost() > MAX_BCRYPT_COST {
            return Err(malformed(format!("bcrypt cost {} exceeds {MAX_BCRYPT_COST}", parts.get_cost())));
        }
        Ok(Self::Bcrypt { sha256_first, hash: rest })
    }

    /// Whether `password` is the one this hash was made from; outputs
    /// compare in constant time. `argon2` runs an Argon2 check with the
    /// given parameters (the caller owns the working memory).
    pub fn matches(
        &self,
        password: &[u8],
        argon2: impl FnOnce(&[u8], &PhcHash, Params) -> Result<bool, PortError>,
    ) -> Result<bool, PortError> {
        match self {
            Self::Unusable => Ok(false),
            Self::Pbkdf2 { digest, iterations, salt, expected } => {
                let mut computed = vec![0u8; expected.len()];
                match digest {
                    Pbkdf2Digest::Sha256 => {
                        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt.as_bytes(), *iterations, &mut computed);
                    }
                    Pbkdf2Digest::Sha1 => {
                        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt.as_bytes(), *iterations, &mut computed);
                    }
                }
                Ok(bool::from(computed.ct_eq(expected)))
            }
            Self::Argon2 { phc, params } => argon2(password, phc, params.clone()),
            Self::Bcrypt { sha256_first, hash } => {
                let digest;
                let input = if *sha256_first {
                    digest = hex(&Sha256::digest(password));
                    digest.as_bytes()
                } else {
                    password
                };
                bcrypt::verify(input, hash).map_err(PortError::unexpected)
            }
        }
    }
}

impl From<bcrypt::BcryptError> for MalformedHash {
    fn from(error: bcrypt::BcryptError) -> Self {
        malformed(format!("not a bcrypt hash: {error}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// At most 32 characters of an unknown prefix, for a message.
fn truncated(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(stored: &str) -> String {
        DjangoHash::parse(stored).expect_err(stored).to_string()
    }

    #[test]
    fn malformed_strings_are_refused_before_any_work() {
        assert!(refused("pbkdf2_sha256$1000$salt").contains("four fields"));
        assert!(refused("pbkdf2_sha256$lots$salt$AAAA").contains("not a number"));
        assert!(refused("pbkdf2_sha256$0$salt$AAAA").contains("outside"));
        assert!(refused("pbkdf2_sha256$999999999$salt$AAAA").contains("outside"));
        assert!(refused("pbkdf2_sha256$1000$salt$not base64!").contains("base64"));
        assert!(refused("pbkdf2_sha1$1000$salt$AAAA").contains("not 20"));
        assert!(refused("md5$salt$0123").contains("unsupported hasher"));
        assert!(refused("plaintext").contains("prefix"));
        assert!(refused("argon2$argon2id$v=19$m=4194304,t=2,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").contains("caps"));
        assert!(refused("argon2$argon2id$v=19$m=102400,t=200,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").contains("caps"));
        assert!(refused("argon2$argon2id$v=19$m=102400").contains("argon2"));
        assert!(refused("bcrypt$$2b$31$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui").contains("cost"));
        assert!(refused("bcrypt_sha256$$2b$12$tooshort").contains("bcrypt"));
    }

    #[test]
    fn the_unusable_password_is_recognised() {
        assert!(matches!(DjangoHash::parse("!x5vQqNYp0XR2u6fXj2Hq6d1hX2h9KZQ8g0yJ5HfB"), Ok(DjangoHash::Unusable)));
        assert!(matches!(DjangoHash::parse("!"), Ok(DjangoHash::Unusable)));
    }

    #[test]
    fn our_own_hashes_are_not_djangos() {
        assert!(!is_django("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
        assert!(is_django("pbkdf2_sha256$1000000$salt$hash"));
    }
}
