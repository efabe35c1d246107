//! The second-factor port: RFC 6238 codes by totp-rs, secrets from the OS
//! CSPRNG, sealed at rest with XChaCha20-Poly1305 under a key derived from
//! `mfa.encryption_key`. A sealed secret names its user in the AEAD's
//! associated data, so a row copied onto another account does not open.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use gatehouse_domain::mfa::{NewTotpSecret, SealedSecret, TotpFactor};
use gatehouse_domain::{Email, PortError, UserId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use totp_rs::{Algorithm, Secret, TOTP};

/// RFC 6238 as the contract fixes it.
const DIGITS: usize = 6;
const STEP_SECONDS: i64 = 30;
/// 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;
const NONCE_BYTES: usize = 24;
/// The sealed form's version, so that a later key or cipher can be told apart.
const SEALED_PREFIX: &str = "v1.";
/// The issuer authenticator apps show beside the account.
const ISSUER: &str = "Gatehouse";

/// The encryption key is this many bytes of configured text at least.
pub const MIN_KEY_BYTES: usize = 32;

/// TOTP with its sealing key.
pub struct Totp {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Totp(…)")
    }
}

impl Totp {
    /// `key` is the configured secret text (at least [`MIN_KEY_BYTES`]); the
    /// cipher's key is its SHA-256, so any long random string will do.
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!("must be at least {MIN_KEY_BYTES} bytes"));
        }
        let derived = Sha256::new().chain_update(b"gatehouse totp secrets\0").chain_update(key).finalize();
        Ok(Self { cipher: XChaCha20Poly1305::new(&derived) })
    }

    fn seal(&self, user: UserId, secret: &[u8]) -> Result<SealedSecret, PortError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(PortError::unexpected)?;
        let aad = associated_data(user);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: secret, aad: &aad })
            .map_err(|_| PortError::unexpected("cannot seal the TOTP secret"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        Ok(SealedSecret::new(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))))
    }

    fn open(&self, user: UserId, sealed: &SealedSecret) -> Result<Vec<u8>, PortError> {
        let unreadable = || PortError::unexpected("a stored TOTP secret does not open with this key and user");
        let encoded = sealed.as_str().strip_prefix(SEALED_PREFIX).ok_or_else(unreadable)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| unreadable())?;
        if bytes.len() <= NONCE_BYTES {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| unreadable())?;
        let aad = associated_data(user);
        self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: &aad }).map_err(|_| unreadable())
    }
}

fn associated_data(user: UserId) -> Vec<u8> {
    format!("gatehouse totp secret of user {user}").into_bytes()
}

fn rfc6238(secret: Vec<u8>) -> Result<TOTP, PortError> {
    // The skew is ours to apply (each step's code compared apart, to know which matched).
    TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP_SECONDS.unsigned_abs(), secret).map_err(PortError::unexpected)
}

/// `otpauth://totp/Gatehouse:ada@example.com?secret=…&issuer=Gatehouse&…`.
fn otpauth_uri(account: &Email, base32: &str) -> String {
    #[allow(clippy::expect_used)]
    let mut uri = url::Url::parse("otpauth://totp/").expect("a constant URL parses");
    uri.set_path(&format!("{ISSUER}:{}", account.as_ref()));
    uri.query_pairs_mut()
        .append_pair("secret", base32)
        .append_pair("issuer", ISSUER)
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", &DIGITS.to_string())
        .append_pair("period", &STEP_SECONDS.to_string());
    uri.to_string()
}

impl TotpFactor for Totp {
    fn new_secret(&self, user: UserId, account: &Email) -> Result<NewTotpSecret, PortError> {
        let mut secret = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(PortError::unexpected)?;
        let base32 = Secret::Raw(secret.clone()).to_encoded().to_string();
        let sealed = self.seal(user, &secret)?;
        Ok(NewTotpSecret { otpauth_uri: otpauth_uri(account, &base32), base32, sealed })
    }

    fn matching_step(
        &self,
        user: UserId,
        sealed: &SealedSecret,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, PortError> {
        let totp = rfc6238(self.open(user, sealed)?)?;
        let current = now.unix_timestamp().div_euclid(STEP_SECONDS);
        let mut matched = None;
        // Every candidate is computed and compared, matched or not.
        for step in [current - 1, current, current + 1] {
            let at = u64::try_from(step * STEP_SECONDS).unwrap_or_default();
            let expected = totp.generate(at);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                matched = Some(step);
            }
        }
        Ok(matched)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn totp() -> Totp {
        Totp::new(b"a test key of at least thirty-two bytes").unwrap()
    }

    /// RFC 6238, appendix B: the SHA-1 seed "12345678901234567890" and its
    /// eight-digit codes, of which a six-digit code is the last six.
    #[test]
    fn rfc_6238_test_vectors() {
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let totp = rfc6238(b"12345678901234567890".to_vec()).unwrap();
        for (at, eight_digits) in vectors {
            assert_eq!(totp.generate(at), eight_digits[2..], "at {at}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_one_either_side_only() {
        let totp = totp();
        let user = UserId::new(7);
        let secret = totp.new_secret(user, &Email::parse("ada@example.com").unwrap()).unwrap();
        let raw = Secret::Encoded(secret.base32.clone()).to_bytes().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_015).unwrap();
        let step = 1_800_000_015 / 30;
        let code_at = |s: i64| rfc6238(raw.clone()).unwrap().generate(u64::try_from(s * 30).unwrap());
        for (offset, expected) in [(-2, None), (-1, Some(step - 1)), (0, Some(step)), (1, Some(step + 1)), (2, None)] {
            let found = totp.matching_step(user, &secret.sealed, &code_at(step + offset), now).unwrap();
            assert_eq!(found, expected, "a code {offset} steps away");
        }
        assert_eq!(totp.matching_step(user, &secret.sealed, "12345", now).unwrap(), None);
        assert_eq!(totp.matching_step(user, &secret.sealed, "abcdef", now).unwrap(), None);
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_user_and_key() {
        let totp = totp();
        let secret = totp.new_secret(UserId::new(7), &Email::parse("ada@example.com").unwrap()).unwrap();
        assert!(secret.sealed.as_str().starts_with("v1."));
        assert!(!secret.sealed.as_str().contains(&secret.base32), "the stored form is not the secret");
        let now = OffsetDateTime::now_utc();
        assert!(totp.matching_step(UserId::new(8), &secret.sealed, "000000", now).is_err(), "another user");
        let other_key = Totp::new(b"another key of at least thirty-two bytes").unwrap();
        assert!(other_key.matching_step(UserId::new(7), &secret.sealed, "000000", now).is_err(), "another key");
        assert!(totp.matching_step(UserId::new(7), &SealedSecret::new("v1.garbage"), "000000", now).is_err());
    }

    #[test]
    fn the_otpauth_uri_is_what_authenticator_apps_read() {
        let secret = totp().new_secret(UserId::new(7), &Email::parse("ada+mfa@example.com").unwrap()).unwrap();
        assert_eq!(secret.base32.len(), 32, "160 bits in base32");
        let uri = url::Url::parse(&secret.otpauth_uri).unwrap();
        assert_eq!((uri.scheme(), uri.host_str()), ("otpauth", Some("totp")));
        assert_eq!(uri.path(), "/Gatehouse:ada+mfa@example.com");
        let query: std::collections::HashMap<_, _> = uri.query_pairs().into_owned().collect();
        assert_eq!(query["secret"], secret.base32);
        assert_eq!(
            (query["issuer"].as_str(), query["digits"].as_str(), query["period"].as_str()),
            ("Gatehouse", "6", "30")
        );
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(Totp::new(b"short").is_err());
    }
}
