//! `make bench`'s measure of the verifier: verifications per second on one
//! core through `Verifier::verify` (header, key lookup, signature, claims),
//! against the signature check alone with the signature libraries' own
//! `verify` (ed25519-dalek's `verify_strict`, as the verifier uses) on a key
//! prepared once, for EdDSA and RS256.
//! Prints one line per algorithm; the argument is seconds per measurement.

// A measuring tool: a failed step is a broken setup, reported by its panic.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse_verifier::{Verifier, VerifierConfig};
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::signature::Verifier as _;

/// Checks per call of a measured closure.
const BATCH: u64 = 100;

/// Runs `batch` (BATCH checks) for about `seconds`; checks per second.
fn rate(seconds: f64, mut batch: impl FnMut()) -> f64 {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        batch();
        done += BATCH;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// A token of Gatehouse's shape signed with `key`, and the set that publishes it.
fn signed(key: &EncodingKey, algorithm: Algorithm) -> (String, JwkSet) {
    let mut jwk = Jwk::from_encoding_key(key, algorithm).expect("a public key");
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).expect("a thumbprint");
    jwk.common.key_id = Some(kid.clone());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let claims = serde_json::json!({
        "sub": "42", "sid": "0190f1d2-7a6b-7c3d-8e9f-0a1b2c3d4e5f", "jti": "3f2a9c1e0b7d4e6f8a5b2c9d0e1f3a4b",
        "iat": now, "nbf": now, "exp": now + 3600, "iss": "gatehouse", "aud": "gatehouse", "token_type": "access",
    });
    let mut header = Header::new(algorithm);
    header.kid = Some(kid);
    (jsonwebtoken::encode(&header, &claims, key).expect("signed"), JwkSet { keys: vec![jwk] })
}

fn signing_input_and_signature(token: &str) -> (&[u8], Vec<u8>) {
    let (input, signature) = token.rsplit_once('.').expect("a JWT");
    (input.as_bytes(), URL_SAFE_NO_PAD.decode(signature).expect("base64url"))
}

fn report(name: &str, seconds: f64, verifier: &Verifier, token: &str, mut check: impl FnMut()) {
    // A server awaits `verify` inside a task it is already running: here, a
    // hundred awaits per entry into the runtime, as `rate` counts them.
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let mut verify = || {
        runtime.block_on(async {
            for _ in 0..BATCH {
                verifier.verify(token).await.expect("the token verifies");
            }
        });
    };
    let mut raw = || {
        for _ in 0..BATCH {
            check();
        }
    };
    // Interleaved twice, so that a drift of the machine's speed hits both.
    let (mut through_verifier, mut alone) = (0.0, 0.0);
    for _ in 0..2 {
        alone += rate(seconds / 2.0, &mut raw);
        through_verifier += rate(seconds / 2.0, &mut verify);
    }
    let (through_verifier, alone) = (through_verifier / 2.0, alone / 2.0);
    println!(
        "{name}: verifier {through_verifier:.0} per second per core, signature check alone {alone:.0}, ratio {:.3}",
        through_verifier / alone
    );
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let config = VerifierConfig::new("http://127.0.0.1:1");

    // Ed25519: PKCS#8 of a fixed seed (RFC 8410 prefix, then the 32 bytes).
    let prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let seed = [7u8; 32];
    let key = EncodingKey::from_ed_der(&[prefix.as_slice(), &seed].concat());
    let (token, set) = signed(&key, Algorithm::EdDSA);
    let verifier =
        Verifier::with_keys(config.clone(), &serde_json::to_string(&set).expect("JSON")).expect("a verifier");
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let (input, signature) = signing_input_and_signature(&token);
    let signature = ed25519_dalek::Signature::from_slice(&signature).expect("an Ed25519 signature");
    report("EdDSA", seconds, &verifier, &token, || public.verify_strict(input, &signature).expect("valid"));

    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("an RSA key");
    let der = private.to_pkcs1_der().expect("PKCS#1");
    let (token, set) = signed(&EncodingKey::from_rsa_der(der.as_bytes()), Algorithm::RS256);
    let verifier = Verifier::with_keys(config, &serde_json::to_string(&set).expect("JSON")).expect("a verifier");
    let public = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(private.to_public_key());
    let (input, signature) = signing_input_and_signature(&token);
    let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).expect("an RSA signature");
    report("RS256", seconds, &verifier, &token, || public.verify(input, &signature).expect("valid"));
}
