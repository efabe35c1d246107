//! The signature of a token, checked with the key its `kid` names.
//!
//! The signature libraries (ed25519-dalek, rsa) do the cryptography; this
//! module only takes a compact JWS apart and holds each published key ready
//! to use. A general JWT library would rebuild the public key from its bytes
//! on every check, which costs an Ed25519 check a quarter of its speed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::signature::Verifier as _;
use serde::Deserialize;

/// Tokens longer than this are refused before any decoding (Gatehouse's
/// are well under 1 KiB).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// RSA keys shorter than this are not trusted.
const MIN_RSA_BITS: usize = 2048;

/// A published key, parsed once, with the one algorithm it verifies.
pub(crate) enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<sha2::Sha256>>),
}

/// The members of a JWK this verifier reads.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    n: Option<String>,
    e: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
}

/// A JWK Set; its keys are read one by one, so one odd key spoils none of the others.
#[derive(Deserialize)]
pub(crate) struct JwkSet {
    keys: Vec<serde_json::Value>,
}

impl JwkSet {
    /// Every key of the set this verifier can use, with its `kid`. Keys
    /// without `kid`, of other types or algorithms, or RSA keys under 2048
    /// bits are left out.
    pub(crate) fn usable(self) -> Vec<(String, PublicKey)> {
        self.keys
            .into_iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
            .filter_map(|jwk| Some((jwk.kid.clone()?, PublicKey::of(&jwk)?)))
            .collect()
    }
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

impl PublicKey {
    fn of(jwk: &Jwk) -> Option<Self> {
        match (jwk.kty.as_str(), jwk.crv.as_deref(), jwk.alg.as_deref()) {
            ("OKP", Some("Ed25519"), None | Some("EdDSA")) => {
                let x: [u8; 32] = base64url(jwk.x.as_deref()?)?.try_into().ok()?;
                ed25519_dalek::VerifyingKey::from_bytes(&x).ok().map(Self::Ed25519)
            }
            ("RSA", _, None | Some("RS256")) => {
                let n = rsa::BigUint::from_bytes_be(&base64url(jwk.n.as_deref()?)?);
                let e = rsa::BigUint::from_bytes_be(&base64url(jwk.e.as_deref()?)?);
                let key = rsa::RsaPublicKey::new(n, e).ok()?;
                (rsa::traits::PublicKeyParts::n(&key).bits() >= MIN_RSA_BITS)
                    .then(|| Self::Rs256(Box::new(rsa::pkcs1v15::VerifyingKey::new(key))))
            }
            _ => None,
        }
    }

    /// The JWS `alg` this key verifies, and no other.
    fn algorithm(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "EdDSA",
            Self::Rs256(_) => "RS256",
        }
    }
}

/// The header members read before the signature is checked.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11): this verifier knows none.
    crit: Option<serde::de::IgnoredAny>,
}

/// A compact JWS taken apart: its header's `alg` and `kid`, the signed
/// part, the signature and the payload (not yet trusted).
pub(crate) struct Parts<'a> {
    alg: String,
    pub(crate) kid: Option<String>,
    signed: &'a [u8],
    signature: Vec<u8>,
    payload: Vec<u8>,
}

/// Splits `token`, or says why it is no JWS.
pub(crate) fn parts(token: &str) -> Result<Parts<'_>, &'static str> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("too long");
    }
    let (signed, signature) = token.rsplit_once('.').ok_or("not a JWT")?;
    let (header, payload) = signed.split_once('.').ok_or("not a JWT")?;
    let header: Header = base64url(header).and_then(|json| serde_json::from_slice(&json).ok()).ok_or("not a JWT")?;
    if header.crit.is_some() {
        return Err("critical header extensions");
    }
    Ok(Parts {
        alg: header.alg,
        kid: header.kid,
        signed: signed.as_bytes(),
        signature: base64url(signature).ok_or("not a JWT")?,
        payload: base64url(payload).ok_or("not a JWT")?,
    })
}

impl Parts<'_> {
    /// The payload, once `key` checked the signature with its own algorithm.
    pub(crate) fn verified_payload(self, key: &PublicKey) -> Result<Vec<u8>, &'static str> {
        if self.alg != key.algorithm() {
            return Err("not the key's algorithm");
        }
        let valid = match key {
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(&self.signature)
                .is_ok_and(|signature| key.verify_strict(self.signed, &signature).is_ok()),
            PublicKey::Rs256(key) => rsa::pkcs1v15::Signature::try_from(self.signature.as_slice())
                .is_ok_and(|signature| key.verify(self.signed, &signature).is_ok()),
        };
        if valid {
            Ok(self.payload)
        } else {
            Err("bad signature")
        }
    }
}
