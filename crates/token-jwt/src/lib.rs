//! Access tokens as JWTs, signed with a shared secret (HS256) or with the
//! private keys of a keys file (EdDSA, RS256; see [`keys`]), and the OS
//! random source for opaque tokens.

pub mod keys;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse_domain::ports::{AccessClaims, AccessTokenError, AccessTokens, Random, SignedAccessToken};
use gatehouse_domain::session::AuthMethods;
use gatehouse_domain::{OpaqueToken, PortError, SessionId, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keys::{KeyRing, KeysFile, KeysFileError};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The `token_type` claim of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "access";
/// HS256 keys shorter than this are refused: they can be brute-forced.
pub const MIN_SECRET_BYTES: usize = 32;

/// `nbf` is issued but checked only when present; `jti`, `iat` and `sid`
/// are required, so a token missing one is not a token of ours.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    jti: String,
    iat: i64,
    #[serde(default)]
    nbf: Option<i64>,
    exp: i64,
    iss: String,
    aud: String,
    token_type: String,
    /// How the user authenticated (RFC 8176); tokens from before it say the password.
    #[serde(default)]
    amr: Vec<String>,
}

/// How far in the future an `iat` may be: the clock skew tolerated between replicas.
const IAT_LEEWAY_SECONDS: i64 = 60;

/// The header parameters read before the signature is checked: which key,
/// and whether the token asks for extensions this verifier does not know.
#[derive(Deserialize)]
struct KeyHint {
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

/// The header's `kid`, unless the header is no JSON object or lists
/// critical extensions (RFC 7515 §4.1.11), which this verifier understands none of.
fn key_hint(token: &str) -> Option<Option<String>> {
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    let hint = serde_json::from_slice::<KeyHint>(&header).ok()?;
    hint.crit.is_none().then_some(hint.kid)
}

/// What signs access tokens.
#[derive(Debug, Clone)]
pub enum Signing {
    /// HS256 with a shared secret: whoever can verify can also sign.
    Secret(SecretSlice<u8>),
    /// The keys of a keys file, reread by [`JwtAccessTokens::reload`].
    Keys(KeysFile),
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub signing: Signing,
    pub issuer: String,
    pub audience: String,
    pub ttl: time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtSettingsError {
    #[error("the signing secret must be at least {MIN_SECRET_BYTES} bytes")]
    SecretTooShort,
    #[error("the access token lifetime must be positive")]
    NonPositiveTtl,
    #[error(transparent)]
    KeysFile(#[from] KeysFileError),
}

/// One key that verifies: tokens name it by `kid` (HS256 tokens name none),
/// and its algorithm is the only one accepted with it.
struct Verifier {
    kid: Option<String>,
    decoding: DecodingKey,
    validation: Validation,
}

/// The keys in use: replaced whole when the keys file changes.
struct ActiveKeys {
    header: Header,
    encoding: EncodingKey,
    verifiers: Vec<Verifier>,
    /// The published JWK Set, serialized once.
    jwks: Arc<str>,
}

/// Signs and verifies access tokens, the algorithm pinned by the key.
pub struct JwtAccessTokens {
    active: RwLock<Arc<ActiveKeys>>,
    /// With a keys file: the file, and the contents the active keys came from.
    source: Option<(KeysFile, Mutex<Vec<u8>>)>,
    issuer: String,
    audience: String,
    ttl: time::Duration,
}

impl std::fmt::Debug for JwtAccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAccessTokens")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtAccessTokens {
    pub fn new(settings: JwtSettings) -> Result<Self, JwtSettingsError> {
        if settings.ttl <= time::Duration::ZERO {
            return Err(JwtSettingsError::NonPositiveTtl);
        }
        let validation = |algorithm| validation(&settings.issuer, &settings.audience, algorithm);
        let (active, source) = match &settings.signing {
            Signing::Secret(secret) => {
                let secret = secret.expose_secret();
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(JwtSettingsError::SecretTooShort);
                }
                let verifier = Verifier {
                    kid: None,
                    decoding: DecodingKey::from_secret(secret),
                    validation: validation(Algorithm::HS256),
                };
                let active = ActiveKeys {
                    header: Header::new(Algorithm::HS256),
                    encoding: EncodingKey::from_secret(secret),
                    verifiers: vec![verifier],
                    jwks: r#"{"keys":[]}"#.into(),
                };
                (active, None)
            }
            Signing::Keys(file) => {
                let contents = file.read()?;
                let ring = file.parse(&contents)?;
                (ActiveKeys::of(&ring, validation), Some((file.clone(), Mutex::new(contents))))
            }
        };
        Ok(Self {
            active: RwLock::new(Arc::new(active)),
            source,
            issuer: settings.issuer,
            audience: settings.audience,
            ttl: settings.ttl,
        })
    }

    fn active(&self) -> Arc<ActiveKeys> {
        self.active.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The public keys as a JWK Set (empty under HS256), serialized.
    pub fn jwks(&self) -> Arc<str> {
        self.active().jwks.clone()
    }

    /// Rereads the keys file and, when it changed and is valid, switches to
    /// its keys; returns the new signing key's `kid` then. A file that
    /// cannot be used leaves the keys in use as they are.
    pub fn reload(&self) -> Result<Option<String>, KeysFileError> {
        let Some((file, loaded)) = &self.source else { return Ok(None) };
        let contents = file.read()?;
        let mut loaded = loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if *loaded == contents {
            return Ok(None);
        }
        let ring = file.parse(&contents)?;
        let active = ActiveKeys::of(&ring, |algorithm| validation(&self.issuer, &self.audience, algorithm));
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(active);
        *loaded = contents;
        Ok(Some(ring.signing().kid.clone()))
    }
}

/// The checks of every token: the one algorithm of its key, our issuer and
/// audience, and no leeway on `exp` and `nbf` (replicas share a clock well enough).
fn validation(issuer: &str, audience: &str, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation
}

impl ActiveKeys {
    fn of(ring: &KeyRing, validation: impl Fn(Algorithm) -> Validation) -> Self {
        let signing = ring.signing();
        let mut header = Header::new(signing.algorithm.jwt());
        header.kid = Some(signing.kid.clone());
        let verifiers = ring
            .keys()
            .iter()
            .map(|key| Verifier {
                kid: Some(key.kid.clone()),
                decoding: key.decoding.clone(),
                validation: validation(key.algorithm.jwt()),
            })
            .collect();
        Self { header, encoding: signing.encoding.clone(), verifiers, jwks: ring.jwks().to_string().into() }
    }
}

impl AccessTokens for JwtAccessTokens {
    fn issue(&self, claims: AccessClaims, now: OffsetDateTime) -> Result<SignedAccessToken, PortError> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            sub: claims.user_id.to_string(),
            sid: claims.session_id.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat,
            nbf: Some(iat),
            exp: iat + self.ttl.whole_seconds(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            token_type: ACCESS_TOKEN_TYPE.into(),
            amr: claims.amr.claim().iter().map(|m| (*m).to_owned()).collect(),
        };
        let active = self.active();
        let token = jsonwebtoken::encode(&active.header, &claims, &active.encoding).map_err(PortError::unexpected)?;
        Ok(SignedAccessToken {
            token: OpaqueToken::new(token),
            expires_in: u64::try_from(self.ttl.whole_seconds()).unwrap_or_default(),
        })
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, AccessTokenError> {
        let kid = key_hint(token).ok_or(AccessTokenError::Invalid)?;
        let active = self.active();
        let verifier = active.verifiers.iter().find(|v| v.kid == kid).ok_or(AccessTokenError::Invalid)?;
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.decoding, &verifier.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => AccessTokenError::Expired,
                _ => AccessTokenError::Invalid,
            },
        )?;
        let claims = data.claims;
        let issued_in_the_future = claims.iat > OffsetDateTime::now_utc().unix_timestamp() + IAT_LEEWAY_SECONDS;
        if claims.token_type != ACCESS_TOKEN_TYPE || issued_in_the_future {
            return Err(AccessTokenError::Invalid);
        }
        let user_id = claims.sub.parse::<i64>().map(UserId::new).map_err(|_| AccessTokenError::Invalid)?;
        let session_id = SessionId::parse(&claims.sid).ok_or(AccessTokenError::Invalid)?;
        let amr = match claims.amr.as_slice() {
            [] => AuthMethods::Password,
            values => AuthMethods::parse(values.iter().map(String::as_str)).ok_or(AccessTokenError::Invalid)?,
        };
        Ok(AccessClaims { user_id, session_id, amr })
    }
}

/// Randomness straight from the operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

/// Bytes in an opaque token: 256 bits.
const TOKEN_BYTES: usize = 32;

impl OsRandom {
    /// A new HS256 secret for development, base64url-encoded.
    pub fn secret() -> String {
        OsRandom.token().expose().to_owned()
    }
}

impl Random for OsRandom {
    fn token(&self) -> OpaqueToken {
        let mut bytes = [0u8; TOKEN_BYTES];
        // Without an OS random source no token can be made safely: better to stop.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes).expect("the OS random source failed");
        OpaqueToken::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn session_id(&self) -> SessionId {
        SessionId::new(uuid::Uuid::new_v4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const SECRET: &[u8] = b"an-hs256-test-secret-of-32-bytes!!";

    fn tokens_with(issuer: &str, audience: &str, secret: &[u8]) -> JwtAccessTokens {
        JwtAccessTokens::new(JwtSettings {
            signing: Signing::Secret(SecretSlice::from(secret.to_vec())),
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: time::Duration::minutes(5),
        })
        .unwrap()
    }

    fn tokens() -> JwtAccessTokens {
        tokens_with("gatehouse", "gatehouse", SECRET)
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            user_id: UserId::new(42),
            session_id: SessionId::new(uuid::Uuid::from_u128(7)),
            amr: AuthMethods::PasswordAndOtp,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn forge(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn standard_claims() -> serde_json::Value {
        let iat = now().unix_timestamp();
        serde_json::json!({
            "sub": "42", "sid": uuid::Uuid::from_u128(7).to_string(), "jti": "j", "iat": iat, "nbf": iat,
            "exp": iat + 300, "iss": "gatehouse", "aud": "gatehouse", "token_type": "access"
        })
    }

    #[test]
    fn signs_and_verifies_a_token() {
        let tokens = tokens();
        let signed = tokens.issue(claims(), now()).unwrap();
        assert_eq!(signed.expires_in, 300);
        assert_eq!(tokens.verify(signed.token.expose()), Ok(claims()));
    }

    #[test]
    fn the_header_names_hs256() {
        let signed = tokens().issue(claims(), now()).unwrap();
        let header = jsonwebtoken::decode_header(signed.token.expose()).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn an_expired_token_is_expired() {
        let signed = tokens().issue(claims(), datetime!(2020-01-01 0:00 UTC)).unwrap();
        assert_eq!(tokens().verify(signed.token.expose()), Err(AccessTokenError::Expired));
    }

    #[test]
    fn a_token_from_the_future_is_invalid() {
        let signed = tokens().issue(claims(), now() + time::Duration::hours(1)).unwrap();
        assert_eq!(tokens().verify(signed.token.expose()), Err(AccessTokenError::Invalid));
    }

    #[test]
    fn wrong_issuer_audience_or_key_is_invalid() {
        let signed = tokens().issue(claims(), now()).unwrap();
        let token = signed.token.expose();
        assert_eq!(tokens_with("other", "gatehouse", SECRET).verify(token), Err(AccessTokenError::Invalid));
        assert_eq!(tokens_with("gatehouse", "other", SECRET).verify(token), Err(AccessTokenError::Invalid));
        let other_key = b"another-hs256-secret-of-32-bytes!!!";
        assert_eq!(tokens_with("gatehouse", "gatehouse", other_key).verify(token), Err(AccessTokenError::Invalid));
    }

    #[test]
    fn a_tampered_token_is_invalid() {
        let signed = tokens().issue(claims(), now()).unwrap();
        let mut parts: Vec<String> = signed.token.expose().split('.').map(str::to_owned).collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.replace("\"sub\":\"42\"", "\"sub\":\"1\""));
        assert_eq!(tokens().verify(&parts.join(".")), Err(AccessTokenError::Invalid));
    }

    #[test]
    fn another_algorithm_or_type_is_invalid() {
        let hs512 = forge(standard_claims(), Algorithm::HS512, SECRET);
        assert_eq!(tokens().verify(&hs512), Err(AccessTokenError::Invalid));
        let mut refresh = standard_claims();
        refresh["token_type"] = "refresh".into();
        assert_eq!(tokens().verify(&forge(refresh, Algorithm::HS256, SECRET)), Err(AccessTokenError::Invalid));
    }

    #[test]
    fn the_none_algorithm_is_invalid() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(standard_claims().to_string());
        assert_eq!(tokens().verify(&format!("{header}.{payload}.")), Err(AccessTokenError::Invalid));
    }

    #[test]
    fn garbage_is_invalid() {
        for garbage in ["", "abc", "a.b.c", "Bearer x", "....", "eyJhbGciOiJIUzI1NiJ9.e30."] {
            assert_eq!(tokens().verify(garbage), Err(AccessTokenError::Invalid), "{garbage}");
        }
    }

    #[test]
    fn a_forged_expired_token_without_nbf_is_expired() {
        let mut claims = standard_claims();
        claims.as_object_mut().unwrap().remove("nbf");
        claims["exp"] = (now().unix_timestamp() - 10).into();
        assert_eq!(tokens().verify(&forge(claims, Algorithm::HS256, SECRET)), Err(AccessTokenError::Expired));
    }

    #[test]
    fn jti_iat_and_sid_are_required() {
        for claim in ["jti", "iat", "sid"] {
            let mut claims = standard_claims();
            claims.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                tokens().verify(&forge(claims, Algorithm::HS256, SECRET)),
                Err(AccessTokenError::Invalid),
                "{claim}"
            );
        }
    }

    #[test]
    fn an_iat_beyond_the_leeway_is_invalid() {
        let mut claims = standard_claims();
        claims["iat"] = (now().unix_timestamp() + 30).into();
        assert!(tokens().verify(&forge(claims.clone(), Algorithm::HS256, SECRET)).is_ok(), "within the leeway");
        claims["iat"] = (now().unix_timestamp() + 600).into();
        assert_eq!(tokens().verify(&forge(claims, Algorithm::HS256, SECRET)), Err(AccessTokenError::Invalid));
    }

    #[test]
    fn a_critical_header_parameter_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","crit":["exp-ext"],"exp-ext":1}"#);
        let payload = URL_SAFE_NO_PAD.encode(standard_claims().to_string());
        let signing_input = format!("{header}.{payload}");
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256)
                .unwrap();
        let token = format!("{signing_input}.{signature}");
        assert_eq!(tokens().verify(&token), Err(AccessTokenError::Invalid));
        let plain = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let signing_input = format!("{plain}.{payload}");
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256)
                .unwrap();
        assert!(tokens().verify(&format!("{signing_input}.{signature}")).is_ok(), "the same token without crit");
    }

    #[test]
    fn short_secrets_are_refused() {
        let settings = JwtSettings {
            signing: Signing::Secret(SecretSlice::from(b"short".to_vec())),
            issuer: "i".into(),
            audience: "a".into(),
            ttl: time::Duration::minutes(5),
        };
        assert!(matches!(JwtAccessTokens::new(settings), Err(JwtSettingsError::SecretTooShort)));
    }

    #[test]
    fn random_tokens_carry_256_bits() {
        let token = OsRandom.token();
        assert_eq!(URL_SAFE_NO_PAD.decode(token.expose()).unwrap().len(), 32);
        assert_ne!(token.expose(), OsRandom.token().expose());
        assert_ne!(OsRandom.session_id(), OsRandom.session_id());
    }

    mod signing_keys {
        use super::*;
        use crate::keys::KeyAlgorithm;

        fn keys_file(algorithm: KeyAlgorithm) -> KeysFile {
            let path = std::env::temp_dir().join("gatehouse-keys-tests").join(format!("{}.json", uuid::Uuid::new_v4()));
            let file = KeysFile::new(path, algorithm);
            file.create(now()).unwrap();
            file
        }

        fn tokens_of(file: &KeysFile) -> JwtAccessTokens {
            JwtAccessTokens::new(JwtSettings {
                signing: Signing::Keys(file.clone()),
                issuer: "gatehouse".into(),
                audience: "gatehouse".into(),
                ttl: time::Duration::minutes(5),
            })
            .unwrap()
        }

        fn header_of(token: &str) -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
        }

        fn sign_with(header: serde_json::Value, key: &[u8]) -> String {
            let signing_input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(standard_claims().to_string())
            );
            let signature =
                jsonwebtoken::crypto::sign(signing_input.as_bytes(), &EncodingKey::from_secret(key), Algorithm::HS256)
                    .unwrap();
            format!("{signing_input}.{signature}")
        }

        #[test]
        fn each_algorithm_signs_with_its_kid_and_verifies() {
            for (algorithm, name) in [(KeyAlgorithm::EdDSA, "EdDSA"), (KeyAlgorithm::RS256, "RS256")] {
                let file = keys_file(algorithm);
                let tokens = tokens_of(&file);
                let token = tokens.issue(claims(), now()).unwrap().token;
                let header = header_of(token.expose());
                assert_eq!(header["alg"], name);
                assert_eq!(header["kid"], file.load().unwrap().signing().kid.as_str());
                assert_eq!(tokens.verify(token.expose()), Ok(claims()));
                let jwks: serde_json::Value = serde_json::from_str(&tokens.jwks()).unwrap();
                assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
            }
        }

        #[test]
        fn no_kid_an_unknown_kid_none_or_the_public_key_as_an_hmac_secret_is_invalid() {
            let file = keys_file(KeyAlgorithm::EdDSA);
            let tokens = tokens_of(&file);
            let jwks = tokens.jwks();
            let public: serde_json::Value = serde_json::from_str(&jwks).unwrap();
            let kid = public["keys"][0]["kid"].as_str().unwrap().to_owned();
            let x = URL_SAFE_NO_PAD.decode(public["keys"][0]["x"].as_str().unwrap()).unwrap();
            for secret in [x.as_slice(), jwks.as_bytes(), public["keys"][0].to_string().as_bytes()] {
                let confused = sign_with(serde_json::json!({ "alg": "HS256", "kid": kid }), secret);
                assert_eq!(tokens.verify(&confused), Err(AccessTokenError::Invalid));
            }
            let payload = URL_SAFE_NO_PAD.encode(standard_claims().to_string());
            let none = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": "none", "kid": kid }).to_string());
            assert_eq!(tokens.verify(&format!("{none}.{payload}.")), Err(AccessTokenError::Invalid));

            let token = tokens.issue(claims(), now()).unwrap().token;
            let mut parts: Vec<String> = token.expose().split('.').map(str::to_owned).collect();
            for header in [serde_json::json!({ "alg": "EdDSA" }), serde_json::json!({ "alg": "EdDSA", "kid": "other" })]
            {
                parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
                assert_eq!(tokens.verify(&parts.join(".")), Err(AccessTokenError::Invalid), "{header}");
            }
            let hs256 = super::tokens().issue(claims(), now()).unwrap().token;
            assert_eq!(tokens.verify(hs256.expose()), Err(AccessTokenError::Invalid), "an HS256 token names no kid");
        }

        #[test]
        fn a_rotation_is_picked_up_and_old_tokens_keep_verifying() {
            let file = keys_file(KeyAlgorithm::EdDSA);
            let tokens = tokens_of(&file);
            let old = tokens.issue(claims(), now()).unwrap().token;
            assert_eq!(tokens.reload().unwrap(), None, "nothing changed");
            file.add(now()).unwrap();
            file.rotate(now()).unwrap();
            let signing = file.load().unwrap().signing().kid.clone();
            assert_eq!(tokens.reload().unwrap(), Some(signing.clone()));
            let new = tokens.issue(claims(), now()).unwrap().token;
            assert_eq!(header_of(new.expose())["kid"], signing.as_str());
            assert_eq!(tokens.verify(old.expose()), Ok(claims()));
            assert_eq!(tokens.verify(new.expose()), Ok(claims()));

            file.prune(time::Duration::ZERO, now()).unwrap();
            tokens.reload().unwrap();
            assert_eq!(tokens.verify(old.expose()), Err(AccessTokenError::Invalid), "its key is gone");
        }

        #[test]
        fn a_broken_file_leaves_the_keys_in_use() {
            let file = keys_file(KeyAlgorithm::EdDSA);
            let tokens = tokens_of(&file);
            let token = tokens.issue(claims(), now()).unwrap().token;
            std::fs::write(file.path(), "{ not json").unwrap();
            assert!(tokens.reload().is_err());
            assert_eq!(tokens.verify(token.expose()), Ok(claims()));
            std::fs::remove_file(file.path()).unwrap();
            assert!(tokens.reload().unwrap_err().is_missing());
            assert_eq!(tokens.verify(tokens.issue(claims(), now()).unwrap().token.expose()), Ok(claims()));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A JWT-shaped string: three base64url parts whose first two are
        /// JSON objects of random members, signed or not.
        fn shaped() -> impl Strategy<Value = String> {
            let member = (
                "[a-z]{1,5}",
                prop_oneof![
                    Just(serde_json::Value::Null),
                    any::<i64>().prop_map(serde_json::Value::from),
                    "\\PC{0,8}".prop_map(serde_json::Value::from),
                ],
            );
            let object = proptest::collection::btree_map(member.0, member.1, 0..6)
                .prop_map(|m| serde_json::to_string(&m).unwrap());
            (object.clone(), object, "[A-Za-z0-9_-]{0,44}")
                .prop_map(|(h, p, s)| format!("{}.{}.{s}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p)))
        }

        proptest! {
            /// Nothing but a token we signed is accepted, whatever is presented.
            #[test]
            fn no_presented_text_verifies_unless_we_signed_it(token in prop_oneof!["\\PC{0,200}", "[A-Za-z0-9._-]{0,200}", shaped()]) {
                prop_assert!(tokens().verify(&token).is_err());
            }

            /// A signed token with any one character changed is refused.
            #[test]
            fn any_change_to_a_signed_token_is_refused(index in any::<proptest::sample::Index>(), with in "[A-Za-z0-9_.-]") {
                let token = tokens().issue(claims(), now()).unwrap();
                let mut text = token.token.expose().to_owned().into_bytes();
                let at = index.index(text.len());
                let replacement = with.as_bytes()[0];
                prop_assume!(text[at] != replacement);
                text[at] = replacement;
                let changed = String::from_utf8(text).unwrap();
                prop_assert!(tokens().verify(&changed).is_err(), "{}", changed);
            }
        }
    }
}
