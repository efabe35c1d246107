//! Signing keys over HTTP: EdDSA and RS256 tokens carry their key's `kid`,
//! the JWK Set publishes the public parts, `gatehouse keys` rotates them
//! under a running service, forged tokens are refused, and a keys file that
//! cannot be used stops start-up with one line naming it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse_api::{Application, Settings};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, database_url, run_cli_with, spawn_app_with, Backend, Options, TestApp, FRONTEND, JWT_SECRET, PASSWORD,
};

/// A keys file path of its own for one test (the file does not exist yet).
pub(crate) fn keys_path() -> PathBuf {
    std::env::temp_dir().join("gatehouse-api-tests").join(format!("keys-{}.json", uuid::Uuid::new_v4()))
}

pub(crate) fn key_settings(algorithm: &str, keys_file: &Path) -> Vec<(String, String)> {
    vec![
        ("GATEHOUSE__JWT__ALGORITHM".into(), algorithm.into()),
        ("GATEHOUSE__JWT__KEYS_FILE".into(), keys_file.display().to_string()),
    ]
}

pub(crate) async fn app_signing_with(backend: Backend, algorithm: &str, keys_file: &Path) -> TestApp {
    let extra = key_settings(algorithm, keys_file);
    spawn_app_with(backend, Options { require_verified_email: Some(false), extra, ..Options::default() }).await
}

/// Signs up and returns a fresh access token.
pub(crate) async fn access_token(app: &TestApp, email: &str) -> String {
    let body: Value = app.signup(email).await.json().await.unwrap();
    body["access"].as_str().unwrap().to_owned()
}

pub(crate) async fn login_token(app: &TestApp, email: &str) -> String {
    let body: Value = app.login(email, PASSWORD).await.json().await.unwrap();
    body["access"].as_str().unwrap().to_owned()
}

/// The header (0) or the claims (1) of a JWT.
pub(crate) fn part(token: &str, index: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(index).unwrap()).unwrap()).unwrap()
}

pub(crate) fn header_of(token: &str) -> Value {
    part(token, 0)
}

pub(crate) async fn jwks(app: &TestApp) -> Value {
    app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap()
}

pub(crate) fn kids(set: &Value) -> Vec<String> {
    set["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect()
}

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.get_auth("/api/v1/auth/me", token).await.status().as_u16()
}

/// Runs `gatehouse keys …` against the test's keys file.
pub(crate) fn keys_command(keys_file: &Path, algorithm: &str, args: &[&str]) -> String {
    let env: Vec<(&str, String)> = vec![
        ("GATEHOUSE__JWT__ALGORITHM", algorithm.into()),
        ("GATEHOUSE__JWT__KEYS_FILE", keys_file.display().to_string()),
    ];
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    let output = run_cli_with("sqlite://unused.db", &all, "", &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gatehouse keys {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Waits (at most the contract's 10 s) until the published set satisfies `done`.
pub(crate) async fn published_within_10_s(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let set = jwks(app).await;
        if done(&set) {
            return set;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the service did not follow the keys file: {set}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The claims of an access token, as Gatehouse signs them.
pub(crate) fn claims(issuer: &str, audience: &str, token_type: &str, issued: i64, lifetime: i64) -> Value {
    json!({
        "sub": "1", "sid": uuid::Uuid::new_v4().to_string(), "jti": "j", "iat": issued, "nbf": issued,
        "exp": issued + lifetime, "iss": issuer, "aud": audience, "token_type": token_type,
    })
}

/// Signs `claims` with the signing key of an EdDSA keys file, as the service would.
pub(crate) fn sign_with_file_key(keys_file: &Path, claims: &Value) -> String {
    let file: Value = serde_json::from_slice(&std::fs::read(keys_file).unwrap()).unwrap();
    let key = &file["keys"][0];
    let seed = URL_SAFE_NO_PAD.decode(key["d"].as_str().unwrap()).unwrap();
    // PKCS#8 of an Ed25519 seed: the RFC 8410 prefix, then the 32 bytes.
    let prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key["kid"].as_str().unwrap().to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&[prefix.as_slice(), &seed].concat())).unwrap()
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_hs256_the_published_set_is_empty_and_cacheable() {
    let app = app_signing_with(Backend::Sqlite, "HS256", &keys_path()).await;
    let response = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "keys": [] }));
    let token = access_token(&app, "hs@example.com").await;
    assert_eq!(header_of(&token)["alg"], "HS256");
}

async fn tokens_verify_against_the_published_key(backend: Backend, algorithm: &str) {
    let keys_file = keys_path();
    let app = app_signing_with(backend, algorithm, &keys_file).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "development made the keys file, owner-only");
    }
    let response = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let set: Value = response.json().await.unwrap();
    let key = &set["keys"][0];
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    assert_eq!(key["alg"], algorithm);
    assert_eq!(key["use"], "sig");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(key.get(private).is_none(), "{private} is published: {key}");
    }

    let token = access_token(&app, "keys@example.com").await;
    let header = header_of(&token);
    assert_eq!(header["alg"], algorithm);
    assert_eq!(header["kid"], key["kid"]);
    // Anyone holding the published set can check the token, with no secret.
    let set: JwkSet = serde_json::from_value(set.clone()).unwrap();
    let jwk = set.find(header["kid"].as_str().unwrap()).unwrap();
    let alg = if algorithm == "EdDSA" { Algorithm::EdDSA } else { Algorithm::RS256 };
    let mut validation = Validation::new(alg);
    validation.set_audience(&["gatehouse"]);
    validation.set_issuer(&["gatehouse"]);
    let verified = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap();
    assert_eq!(verified.claims["token_type"], "access");
    assert_eq!(me_status(&app, &token).await, 200);
    let verify = app.post("/api/v1/auth/token/verify", &json!({ "token": token })).await;
    assert_eq!(verify.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_verify_against_the_published_key_on_sqlite() {
    tokens_verify_against_the_published_key(Backend::Sqlite, "EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_verify_against_the_published_key_on_postgres() {
    tokens_verify_against_the_published_key(Backend::Postgres, "EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verify_against_the_published_key() {
    tokens_verify_against_the_published_key(Backend::Sqlite, "RS256").await;
}

/// The careful rotation under a running service: add, rotate, prune.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_add_rotate_and_prune_reach_the_running_service() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Postgres, "EdDSA", &keys_file).await;
    let first = kids(&jwks(&app).await)[0].clone();
    let old_token = access_token(&app, "rotate@example.com").await;
    assert_eq!(header_of(&old_token)["kid"], first.as_str());

    let added = keys_command(&keys_file, "EdDSA", &["add"]);
    assert!(added.contains("not yet signing"), "{added}");
    let set = published_within_10_s(&app, |set| kids(set).len() == 2).await;
    let second = kids(&set)[1].clone();
    assert!(added.contains(&second), "{added}");
    let before_rotation = login_token(&app, "rotate@example.com").await;
    assert_eq!(header_of(&before_rotation)["kid"], first.as_str(), "an added key is published, not signing");

    keys_command(&keys_file, "EdDSA", &["rotate"]);
    published_within_10_s(&app, |set| kids(set) == [second.clone(), first.clone()]).await;
    let new_token = login_token(&app, "rotate@example.com").await;
    assert_eq!(header_of(&new_token)["kid"], second.as_str());
    assert_eq!(me_status(&app, &old_token).await, 200, "tokens of the old key verify until they expire");
    assert_eq!(me_status(&app, &new_token).await, 200);

    let listed = keys_command(&keys_file, "EdDSA", &["list"]);
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows[0].starts_with(&second) && rows[0].contains("EdDSA") && rows[0].ends_with("yes"), "{listed}");
    assert!(rows[1].starts_with(&first) && rows[1].ends_with("no"), "{listed}");

    let kept = keys_command(&keys_file, "EdDSA", &["prune", "--older-than", "3600"]);
    assert!(!kept.contains(&first), "retired just now: kept ({kept})");
    let pruned = keys_command(&keys_file, "EdDSA", &["prune", "--older-than", "0"]);
    assert!(pruned.contains(&first), "{pruned}");
    published_within_10_s(&app, |set| kids(set) == [second.clone()]).await;
    let refused = app.get_auth("/api/v1/auth/me", &old_token).await;
    assert_error(refused, 401, "token_invalid").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "rewrites keep the file owner-only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_algorithm_logs_nobody_out() {
    let keys_file = keys_path();
    let eddsa = app_signing_with(Backend::Sqlite, "EdDSA", &keys_file).await;
    let eddsa_token = access_token(&eddsa, "switch@example.com").await;
    // The operator moves to RS256: rotate makes an RS256 key and signs with it.
    keys_command(&keys_file, "RS256", &["rotate"]);
    let rs256 = spawn_app_with(
        Backend::Sqlite,
        Options {
            require_verified_email: Some(false),
            database_url: Some(eddsa.database_url.clone()),
            extra: key_settings("RS256", &keys_file),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(me_status(&rs256, &eddsa_token).await, 200, "the EdDSA key still verifies");
    let rs256_token = login_token(&rs256, "switch@example.com").await;
    assert_eq!(header_of(&rs256_token)["alg"], "RS256");
    let set = jwks(&rs256).await;
    let algorithms: Vec<&str> = set["keys"].as_array().unwrap().iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert_eq!(algorithms, ["RS256", "EdDSA"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_tokens_are_refused() {
    let keys_file = keys_path();
    let app = app_signing_with(Backend::Sqlite, "EdDSA", &keys_file).await;
    let genuine = access_token(&app, "forger@example.com").await;
    let set = jwks(&app).await;
    let forged = forgeries(&keys_file, &genuine, &set);
    for (what, token) in forged {
        let response = app.get_auth("/api/v1/auth/me", &token).await;
        assert_eq!(response.status(), 401, "{what}");
        let verify = app.post("/api/v1/auth/token/verify", &json!({ "token": token })).await;
        assert_eq!(verify.status(), 401, "{what}");
    }
    let expired = sign_with_file_key(&keys_file, &claims("gatehouse", "gatehouse", "access", now() - 600, 300));
    assert_error(app.get_auth("/api/v1/auth/me", &expired).await, 401, "token_expired").await;
    assert_eq!(me_status(&app, &genuine).await, 200);
}

/// Tokens no verifier may accept, each with what is wrong with it: made
/// from a genuine token of an EdDSA service, its published `set` and its
/// keys file (for tokens signed with the real key but wrong claims).
pub(crate) fn forgeries(keys_file: &Path, genuine: &str, set: &Value) -> Vec<(&'static str, String)> {
    let key = &set["keys"][0];
    let kid = key["kid"].as_str().unwrap();
    let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    let payload = part(genuine, 1);
    let hmac = |secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &payload, &EncodingKey::from_secret(secret)).unwrap()
    };
    let unsigned = |header: Value| {
        format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), genuine.split('.').nth(1).unwrap())
    };
    let resigned = |header: Value| {
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let encoded = URL_SAFE_NO_PAD.encode(header.to_string());
        parts[0] = &encoded;
        parts.join(".")
    };
    let issued = now();
    vec![
        ("HS256 with the public key as its secret", hmac(&x)),
        ("HS256 with the published set as its secret", hmac(set.to_string().as_bytes())),
        ("alg none", unsigned(json!({ "alg": "none", "kid": kid }))),
        ("no kid", resigned(json!({ "alg": "EdDSA" }))),
        ("an unknown kid", resigned(json!({ "alg": "EdDSA", "kid": "unknown" }))),
        ("another issuer", sign_with_file_key(keys_file, &claims("other", "gatehouse", "access", issued, 300))),
        ("another audience", sign_with_file_key(keys_file, &claims("gatehouse", "other", "access", issued, 300))),
        (
            "a refresh token type",
            sign_with_file_key(keys_file, &claims("gatehouse", "gatehouse", "refresh", issued, 300)),
        ),
    ]
}

/// Start-up of a service with these settings: the one-line error.
async fn startup_error(extra: Vec<(String, String)>) -> String {
    let mut vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", database_url(Backend::Sqlite).await),
        ("GATEHOUSE_BIND", "127.0.0.1:0".into()),
        ("GATEHOUSE_MAILER", "smtp://127.0.0.1:2525".into()),
        ("GATEHOUSE_FRONTEND_URL", FRONTEND.into()),
        ("GATEHOUSE_JWT_SECRET", JWT_SECRET.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(extra);
    let settings = Settings::load_from(vars).expect("the settings themselves are valid");
    let error = Application::build(settings).await.expect_err("start-up must stop").to_string();
    assert!(!error.contains('\n'), "one line: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_file_that_cannot_be_used_stops_start_up_naming_it() {
    let write = |contents: &str| {
        let path = keys_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    };
    let missing = keys_path();
    let mut production = key_settings("EdDSA", &missing);
    production.push(("GATEHOUSE_ENV".into(), "production".into()));
    production.push(("GATEHOUSE__MFA__ENCRYPTION_KEY".into(), "a production key of at least 32 bytes".into()));
    let error = startup_error(production).await;
    assert!(error.contains(&missing.display().to_string()) && error.contains("does not exist"), "{error}");
    assert!(!missing.exists(), "production makes no key");

    let directory = keys_path();
    std::fs::create_dir_all(&directory).unwrap();
    let error = startup_error(key_settings("EdDSA", &directory)).await;
    assert!(error.contains(&directory.display().to_string()) && error.contains("cannot be read"), "{error}");

    let not_json = write("not json");
    let error = startup_error(key_settings("EdDSA", &not_json)).await;
    assert!(error.contains(&not_json.display().to_string()) && error.contains("not a JWK Set"), "{error}");

    // A real key's public part only, as a JWKS would hand it out.
    let full = keys_path();
    keys_command(&full, "EdDSA", &["add"]);
    let mut set: Value = serde_json::from_slice(&std::fs::read(&full).unwrap()).unwrap();
    set["keys"][0].as_object_mut().unwrap().remove("d");
    let public_only = write(&set.to_string());
    let error = startup_error(key_settings("EdDSA", &public_only)).await;
    assert!(error.contains(&public_only.display().to_string()) && error.contains("public key only"), "{error}");

    // An Ed25519 key that names no algorithm, under RS256.
    let mut set: Value = serde_json::from_slice(&std::fs::read(&full).unwrap()).unwrap();
    set["keys"][0].as_object_mut().unwrap().remove("alg");
    let wrong_type = write(&set.to_string());
    let error = startup_error(key_settings("RS256", &wrong_type)).await;
    assert!(error.contains("cannot sign RS256"), "{error}");

    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let b64 = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
    let small = json!({ "keys": [{ "kty": "RSA", "alg": "RS256", "n": b64(small.n()), "e": b64(small.e()), "d": b64(small.d()) }] });
    let small = write(&small.to_string());
    let error = startup_error(key_settings("RS256", &small)).await;
    assert!(error.contains(&small.display().to_string()) && error.contains("1024 bits"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_keys_file_problem_on_one_line() {
    let path = keys_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"keys\": 1}").unwrap();
    let env: Vec<(&str, String)> = vec![
        ("GATEHOUSE__JWT__ALGORITHM", "EdDSA".into()),
        ("GATEHOUSE__JWT__KEYS_FILE", path.display().to_string()),
        ("GATEHOUSE_BIND", "127.0.0.1:0".into()),
    ];
    let url = database_url(Backend::Sqlite).await;
    let output = run_cli_with(&url, &["serve"], "", &env);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|line| line.starts_with("gatehouse:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&path.display().to_string()) && lines[0].contains("not a JWK Set"), "{stderr}");

    let hs256 = run_cli_with(&url, &["keys", "list"], "", &[]);
    assert!(!hs256.status.success());
    assert!(String::from_utf8_lossy(&hs256.stderr).contains("jwt.algorithm is HS256"));
}
