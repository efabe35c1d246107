//! The signing keys of EdDSA and RS256: a JWK Set of private keys in a file.
//! The first key signs; every key verifies and is published. The file is
//! the one place keys live, so that every replica reading it agrees, and the
//! operator's commands (`gatehouse keys …`) edit it atomically.
//!
//! Beyond the JWK members, each key keeps `created` and, once another key
//! took its place, `retired` (Unix seconds): `prune` goes by the latter.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// The algorithm of a key pair in the keys file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// Ed25519 signatures: small keys, fast checks; the one to pick.
    EdDSA,
    /// RSA PKCS#1 v1.5 with SHA-256, for verifiers that know nothing else.
    RS256,
}

impl KeyAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::RS256 => Algorithm::RS256,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::EdDSA, Self::RS256].into_iter().find(|alg| alg.name() == name)
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// RSA keys shorter than this are refused (NIST's floor since 2015).
pub const MIN_RSA_BITS: usize = 2048;
/// The size of the RSA keys this service makes.
const NEW_RSA_BITS: usize = 2048;

/// An Ed25519 seed as PKCS#8 DER, the form the JWT library signs with:
/// this fixed prefix (RFC 8410 §7), then the 32 bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// One key of the file, ready to sign and verify.
#[derive(Clone)]
pub struct SigningKey {
    /// The RFC 7638 thumbprint of the public key (SHA-256, base64url).
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    pub created: Option<OffsetDateTime>,
    /// When another key took over signing from this one.
    pub retired: Option<OffsetDateTime>,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// The JWK of the public part, as published.
    pub(crate) public: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Every key of a valid keys file, the signing one first.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// The key new tokens are signed with.
    pub fn signing(&self) -> &SigningKey {
        &self.keys[0]
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The JWK Set of the public parts, as `/.well-known/jwks.json` serves it.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(|key| key.public.clone()).collect::<Vec<_>>() })
    }
}

/// A keys file that cannot be used, in one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("keys file {path}: {problem}")]
pub struct KeysFileError {
    pub path: String,
    pub problem: String,
    missing: bool,
}

impl KeysFileError {
    /// True when there is no file at all (development then makes one).
    pub fn is_missing(&self) -> bool {
        self.missing
    }
}

/// The file of private keys, and the algorithm new keys get.
#[derive(Debug, Clone)]
pub struct KeysFile {
    path: PathBuf,
    algorithm: KeyAlgorithm,
}

#[derive(Serialize, Deserialize)]
struct StoredSet {
    keys: Vec<Map<String, Value>>,
}

impl KeysFile {
    pub fn new(path: impl Into<PathBuf>, algorithm: KeyAlgorithm) -> Self {
        Self { path: path.into(), algorithm }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The algorithm new keys are made for.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn error(&self, problem: impl Into<String>) -> KeysFileError {
        KeysFileError { path: self.path.display().to_string(), problem: problem.into(), missing: false }
    }

    /// The file as it is on disk, to tell a change cheaply.
    pub fn read(&self) -> Result<Vec<u8>, KeysFileError> {
        std::fs::read(&self.path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => KeysFileError { missing: true, ..self.error("does not exist") },
            _ => self.error(format!("cannot be read: {error}")),
        })
    }

    /// Checks every key of `bytes` (the file's contents).
    pub fn parse(&self, bytes: &[u8]) -> Result<KeyRing, KeysFileError> {
        self.ring(&self.entries(bytes)?)
    }

    pub fn load(&self) -> Result<KeyRing, KeysFileError> {
        self.parse(&self.read()?)
    }

    fn entries(&self, bytes: &[u8]) -> Result<Vec<Map<String, Value>>, KeysFileError> {
        let set: StoredSet = serde_json::from_slice(bytes)
            .map_err(|error| self.error(format!("is not a JWK Set ({{\"keys\": [...]}}): {error}")))?;
        Ok(set.keys)
    }

    fn ring(&self, entries: &[Map<String, Value>]) -> Result<KeyRing, KeysFileError> {
        if entries.is_empty() {
            return Err(self.error("holds no key"));
        }
        let keys = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                parse_key(entry, self.algorithm).map_err(|problem| self.error(format!("key {}: {problem}", index + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (index, key) in keys.iter().enumerate() {
            if keys[..index].iter().any(|earlier| earlier.kid == key.kid) {
                return Err(self.error(format!("key {}: the same key as an earlier one ({})", index + 1, key.kid)));
            }
        }
        Ok(KeyRing { keys })
    }

    /// Makes the file with one new key, which signs.
    pub fn create(&self, now: OffsetDateTime) -> Result<KeyRing, KeysFileError> {
        let entries = vec![self.generate(now)?];
        self.save(&entries)?;
        self.ring(&entries)
    }

    /// Appends a new key: published at once, not yet signing. Without a
    /// file, makes one whose only key signs. Returns the new key.
    pub fn add(&self, now: OffsetDateTime) -> Result<SigningKey, KeysFileError> {
        let mut entries = self.existing_entries()?;
        entries.push(self.generate(now)?);
        let ring = self.ring(&entries)?;
        self.save(&entries)?;
        Ok(ring.keys[entries.len() - 1].clone())
    }

    /// Moves the newest key to the front, so that it signs (adding one
    /// first when the newest already signs). Returns the signing key.
    pub fn rotate(&self, now: OffsetDateTime) -> Result<SigningKey, KeysFileError> {
        let mut entries = self.existing_entries()?;
        let ring = if entries.is_empty() { None } else { Some(self.ring(&entries)?) };
        let newest = ring.as_ref().and_then(|ring| {
            let newest = (0..ring.keys.len()).max_by_key(|&i| (ring.keys[i].created, i))?;
            (newest != 0).then_some(newest)
        });
        let newest = match newest {
            Some(index) => index,
            None => {
                entries.push(self.generate(now)?);
                entries.len() - 1
            }
        };
        let mut promoted = entries.remove(newest);
        promoted.remove("retired");
        if let Some(previous) = entries.first_mut() {
            previous.insert("retired".into(), now.unix_timestamp().into());
        }
        entries.insert(0, promoted);
        let ring = self.ring(&entries)?;
        self.save(&entries)?;
        Ok(ring.keys[0].clone())
    }

    /// Removes the keys that stopped signing at least `older_than` ago
    /// (never the signing key). Returns the removed keys.
    pub fn prune(&self, older_than: time::Duration, now: OffsetDateTime) -> Result<Vec<SigningKey>, KeysFileError> {
        let entries = self.entries(&self.read()?)?;
        let ring = self.ring(&entries)?;
        let expired = |key: &SigningKey| key.retired.is_some_and(|retired| retired <= now - older_than);
        let (kept, removed): (Vec<_>, Vec<_>) =
            entries.into_iter().zip(&ring.keys).enumerate().partition(|(index, (_, key))| *index == 0 || !expired(key));
        if !removed.is_empty() {
            self.save(&kept.into_iter().map(|(_, (entry, _))| entry).collect::<Vec<_>>())?;
        }
        Ok(removed.into_iter().map(|(_, (_, key))| key.clone()).collect())
    }

    /// The stored keys, none when there is no file yet.
    fn existing_entries(&self) -> Result<Vec<Map<String, Value>>, KeysFileError> {
        match self.read() {
            Ok(bytes) => self.entries(&bytes),
            Err(error) if error.is_missing() => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// A new private key of the configured algorithm, as stored.
    fn generate(&self, now: OffsetDateTime) -> Result<Map<String, Value>, KeysFileError> {
        let entry = match self.algorithm {
            KeyAlgorithm::EdDSA => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|error| self.error(format!("no OS randomness: {error}")))?;
                json!({ "kty": "OKP", "crv": "Ed25519", "d": URL_SAFE_NO_PAD.encode(seed) })
            }
            KeyAlgorithm::RS256 => {
                let key = RsaPrivateKey::new(&mut rand_core::OsRng, NEW_RSA_BITS)
                    .map_err(|error| self.error(format!("cannot make an RSA key: {error}")))?;
                let (Some(dp), Some(dq), Some(qi)) = (key.dp(), key.dq(), key.crt_coefficient()) else {
                    return Err(self.error("cannot make an RSA key: no CRT values"));
                };
                let b64 = |n: &BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
                json!({
                    "kty": "RSA", "n": b64(key.n()), "e": b64(key.e()), "d": b64(key.d()),
                    "p": b64(&key.primes()[0]), "q": b64(&key.primes()[1]), "dp": b64(dp), "dq": b64(dq), "qi": b64(&qi),
                })
            }
        };
        let mut entry = object(entry);
        let key = parse_key(&entry, self.algorithm).map_err(|problem| self.error(problem))?;
        entry.extend(object(key.public));
        entry.insert("created".into(), now.unix_timestamp().into());
        Ok(entry)
    }

    /// Writes the file whole: a file beside it, owner-only, flushed, then
    /// renamed over it, so that a reader sees the old keys or the new ones.
    fn save(&self, entries: &[Map<String, Value>]) -> Result<(), KeysFileError> {
        use std::io::Write;
        let failed = |error: std::io::Error| self.error(format!("cannot be written: {error}"));
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let mut text = serde_json::to_string_pretty(&StoredSet { keys: entries.to_vec() })
            .map_err(|error| self.error(format!("cannot be written: {error}")))?;
        text.push('\n');
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&temporary).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(error) = written.and_then(|()| std::fs::rename(&temporary, &self.path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(failed(error));
        }
        Ok(())
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(members) => members,
        _ => Map::new(),
    }
}

/// Reads one stored key; the problem, in words, when it cannot sign.
fn parse_key(entry: &Map<String, Value>, configured: KeyAlgorithm) -> Result<SigningKey, String> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name).ok_or_else(|| format!("has no `{name}`"))?;
        URL_SAFE_NO_PAD.decode(value).map_err(|_| format!("`{name}` is not base64url"))
    };
    let kty = text("kty").ok_or("has no `kty`")?;
    let algorithm = match text("alg") {
        None => configured,
        Some(name) => KeyAlgorithm::parse(name).ok_or_else(|| format!("`alg` {name} is neither EdDSA nor RS256"))?,
    };
    if entry.get("d").is_none() {
        return Err("holds a public key only (no `d`): the keys file holds private keys".into());
    }
    let encoding = match (algorithm, kty, text("crv")) {
        (KeyAlgorithm::EdDSA, "OKP", Some("Ed25519")) => {
            let seed = bytes("d")?;
            if seed.len() != 32 {
                return Err("`d` is not an Ed25519 private key (32 bytes)".into());
            }
            EncodingKey::from_ed_der(&[ED25519_PKCS8_PREFIX.as_slice(), &seed].concat())
        }
        (KeyAlgorithm::RS256, "RSA", _) => {
            let number = |name: &str| bytes(name).map(|b| BigUint::from_bytes_be(&b));
            let primes = match (entry.get("p"), entry.get("q")) {
                (Some(_), Some(_)) => vec![number("p")?, number("q")?],
                _ => Vec::new(),
            };
            let key = RsaPrivateKey::from_components(number("n")?, number("e")?, number("d")?, primes)
                .map_err(|error| format!("is not a valid RSA private key ({error})"))?;
            let bits = key.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(format!("is an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"));
            }
            let der = key.to_pkcs1_der().map_err(|error| format!("is not a usable RSA key ({error})"))?;
            EncodingKey::from_rsa_der(der.as_bytes())
        }
        (_, kty, crv) => {
            let kind = crv.map_or_else(|| kty.to_owned(), |crv| format!("{kty} {crv}"));
            return Err(format!("is a {kind} key, which cannot sign {algorithm}"));
        }
    };
    let public =
        Jwk::from_encoding_key(&encoding, algorithm.jwt()).map_err(|error| format!("is not usable ({error})"))?;
    let kid = public.thumbprint(ThumbprintHash::SHA256).map_err(|error| format!("has no thumbprint ({error})"))?;
    let (decoding, mut published) = match &public.algorithm {
        AlgorithmParameters::OctetKeyPair(ed) => {
            if text("x").is_some_and(|x| x != ed.x) {
                return Err("its public part (`x`) is not its private part's".into());
            }
            (DecodingKey::from_ed_components(&ed.x), json!({ "kty": "OKP", "crv": "Ed25519", "x": ed.x }))
        }
        AlgorithmParameters::RSA(rsa) => {
            (DecodingKey::from_rsa_components(&rsa.n, &rsa.e), json!({ "kty": "RSA", "n": rsa.n, "e": rsa.e }))
        }
        _ => return Err("is not an EdDSA or RS256 key".into()),
    };
    let decoding = decoding.map_err(|error| format!("has an unusable public part ({error})"))?;
    if text("kid").is_some_and(|stored| stored != kid) {
        return Err(format!("its `kid` is not its RFC 7638 thumbprint ({kid})"));
    }
    if let Value::Object(fields) = &mut published {
        fields.insert("kid".into(), kid.clone().into());
        fields.insert("alg".into(), algorithm.name().into());
        fields.insert("use".into(), "sig".into());
    }
    let instant = |name: &str| {
        entry.get(name).and_then(Value::as_i64).and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
    };
    Ok(SigningKey {
        kid,
        algorithm,
        created: instant("created"),
        retired: instant("retired"),
        encoding,
        decoding,
        public: published,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn temp_path() -> PathBuf {
        std::env::temp_dir().join("gatehouse-keys-tests").join(format!("{}.json", uuid::Uuid::new_v4()))
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
    }

    fn problem(file: &KeysFile, contents: &Value) -> String {
        let error = file.parse(contents.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().starts_with(&format!("keys file {}: ", file.path().display())), "{error}");
        error.problem
    }

    /// The keys file of a fresh EdDSA ring, as stored.
    fn eddsa_entry() -> Map<String, Value> {
        KeysFile::new(temp_path(), KeyAlgorithm::EdDSA).generate(now()).unwrap()
    }

    #[test]
    fn a_new_file_holds_one_signing_key_readable_by_its_owner_only() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        let ring = file.create(now()).unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.signing().algorithm, KeyAlgorithm::EdDSA);
        assert!(ring.signing().created.is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(file.load().unwrap().signing().kid, ring.signing().kid);
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint_and_the_published_key_has_no_private_part() {
        let ring = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA).create(now()).unwrap();
        let public = &ring.jwks()["keys"][0];
        let x = public["x"].as_str().unwrap();
        // RFC 7638 §3: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()));
        assert_eq!(ring.signing().kid, thumbprint);
        let mut members: Vec<&str> = public.as_object().unwrap().keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(public["alg"], "EdDSA");
        assert_eq!(public["use"], "sig");
    }

    #[test]
    fn add_publishes_rotate_signs_and_prune_removes_retired_keys() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        let first = file.create(now() - time::Duration::hours(1)).unwrap().signing().kid.clone();
        let added = file.add(now()).unwrap();
        let ring = file.load().unwrap();
        assert_eq!(ring.signing().kid, first, "an added key does not sign yet");
        assert_eq!(ring.keys()[1].kid, added.kid);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2, "but it is published");

        let signing = file.rotate(now()).unwrap();
        assert_eq!(signing.kid, added.kid);
        let ring = file.load().unwrap();
        assert_eq!(ring.signing().kid, added.kid);
        assert_eq!(ring.keys()[1].kid, first);
        assert_eq!(ring.keys()[1].retired, Some(now()));
        assert_eq!(ring.signing().retired, None);

        assert!(file.prune(time::Duration::hours(1), now()).unwrap().is_empty(), "retired only just now");
        let removed = file.prune(time::Duration::ZERO, now()).unwrap();
        assert_eq!(removed.iter().map(|k| &k.kid).collect::<Vec<_>>(), [&first]);
        let ring = file.load().unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert!(
            file.prune(time::Duration::ZERO, now() + time::Duration::days(9)).unwrap().is_empty(),
            "never the signer"
        );
    }

    #[test]
    fn rotate_adds_a_key_when_the_newest_already_signs() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        let first = file.create(now()).unwrap().signing().kid.clone();
        let signing = file.rotate(now()).unwrap();
        assert_ne!(signing.kid, first);
        let ring = file.load().unwrap();
        assert_eq!(ring.keys().iter().map(|k| k.kid.clone()).collect::<Vec<_>>(), [signing.kid, first]);
    }

    #[test]
    fn add_and_rotate_make_a_missing_file_but_prune_and_load_refuse_it() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        assert!(file.load().unwrap_err().is_missing());
        assert!(file.prune(time::Duration::ZERO, now()).unwrap_err().is_missing());
        let added = file.add(now()).unwrap();
        assert_eq!(file.load().unwrap().signing().kid, added.kid);
        let other = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        let signing = other.rotate(now()).unwrap();
        assert_eq!(other.load().unwrap().keys().len(), 1);
        assert_eq!(other.load().unwrap().signing().kid, signing.kid);
    }

    #[test]
    fn keys_of_another_algorithm_keep_verifying() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        file.create(now()).unwrap();
        let rs256 = KeysFile::new(file.path(), KeyAlgorithm::RS256);
        let added = rs256.rotate(now()).unwrap();
        assert_eq!(added.algorithm, KeyAlgorithm::RS256);
        let ring = file.load().unwrap();
        let algorithms: Vec<_> = ring.keys().iter().map(|k| k.algorithm).collect();
        assert_eq!(algorithms, [KeyAlgorithm::RS256, KeyAlgorithm::EdDSA]);
        let published = &ring.jwks()["keys"][0];
        assert_eq!(published["kty"], "RSA");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(published.get(private).is_none(), "{private} published");
        }
    }

    #[test]
    fn unusable_files_are_refused_with_the_problem() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::EdDSA);
        assert!(file.parse(b"not json").unwrap_err().problem.contains("is not a JWK Set"));
        assert_eq!(problem(&file, &json!({ "keys": [] })), "holds no key");
        let mut public_only = eddsa_entry();
        public_only.remove("d");
        assert!(problem(&file, &json!({ "keys": [public_only] })).contains("public key only"));
        let mut wrong_x = eddsa_entry();
        wrong_x.insert("x".into(), eddsa_entry()["x"].clone());
        assert!(problem(&file, &json!({ "keys": [wrong_x] })).contains("(`x`)"));
        let mut wrong_kid = eddsa_entry();
        wrong_kid.insert("kid".into(), "mine".into());
        assert!(problem(&file, &json!({ "keys": [wrong_kid] })).contains("thumbprint"));
        let mut labelled_rsa = eddsa_entry();
        labelled_rsa.insert("alg".into(), "RS256".into());
        assert_eq!(
            problem(&file, &json!({ "keys": [labelled_rsa] })),
            "key 1: is a OKP Ed25519 key, which cannot sign RS256"
        );
        let secret = json!({ "kty": "oct", "k": "c2VjcmV0", "d": "x" });
        assert_eq!(problem(&file, &json!({ "keys": [secret] })), "key 1: is a oct key, which cannot sign EdDSA");
        let entry = eddsa_entry();
        assert!(problem(&file, &json!({ "keys": [entry.clone(), entry] })).contains("key 2: the same key"));
        let hs = json!({ "kty": "OKP", "crv": "Ed25519", "d": "AA", "alg": "HS256" });
        assert!(problem(&file, &json!({ "keys": [hs] })).contains("neither EdDSA nor RS256"));
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_refused() {
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let b64 = |n: &BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
        let entry = json!({ "kty": "RSA", "alg": "RS256", "n": b64(key.n()), "e": b64(key.e()), "d": b64(key.d()) });
        let file = KeysFile::new(temp_path(), KeyAlgorithm::RS256);
        assert_eq!(
            problem(&file, &json!({ "keys": [entry] })),
            "key 1: is an RSA key of 1024 bits; at least 2048 are required"
        );
    }

    #[test]
    fn an_rsa_key_without_its_primes_is_still_read() {
        let file = KeysFile::new(temp_path(), KeyAlgorithm::RS256);
        let mut entry = file.generate(now()).unwrap();
        let kid = entry["kid"].clone();
        for member in ["p", "q", "dp", "dq", "qi"] {
            entry.remove(member);
        }
        let ring = file.parse(json!({ "keys": [entry] }).to_string().as_bytes()).unwrap();
        assert_eq!(ring.signing().kid, kid.as_str().unwrap());
    }
}
