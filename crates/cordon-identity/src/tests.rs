//! End-to-end tests of [`crate::Verifier`]: every refusal asserts its specific reason code; JWKS over
//! HTTP (an in-test axum server) with key rotation and a failing server; the token cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cordon_policy::file::ApiKeySpec;
use cordon_types::{ReasonCode, Tier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::testkit::*;
use crate::{AuthError, Caller, ConfigError, Identity, Residency, Verifier, hash_api_key};

fn file_verifier(keys: &[&TestKey], algs: &[&str]) -> (Verifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_jwks(dir.path(), "jwks.json", keys);
    let v = Verifier::new(&section(vec![issuer(algs)]), dir.path()).unwrap();
    (v, dir)
}

async fn reason(v: &Verifier, token: &str) -> ReasonCode {
    match v.verify(token, NOW).await {
        Ok(id) => panic!("accepted: {id:?}"),
        Err(e) => {
            assert!(
                !e.to_string().contains("user-42"),
                "message leaks the subject: {e}"
            );
            assert!(
                token.trim().is_empty() || !e.to_string().contains(token),
                "message leaks the token: {e}"
            );
            e.reason()
        }
    }
}

fn assert_user(id: &Identity) {
    assert_eq!(id.caller, Caller::User { issuer: ISS.into() });
    assert_eq!(id.subject, "user-42");
    assert_eq!(id.residency, Residency::Claim("DE".into()));
    assert_eq!(id.residency_source, "address.country");
    assert_eq!(id.tier, Tier::Personal);
    assert_eq!(id.expires_at, Some(NOW + 600));
}

#[tokio::test]
async fn valid_rs256_token_is_accepted() {
    let k = rsa_key("rsa-1");
    let (v, _d) = file_verifier(&[&k], &["RS256"]);
    let id = v.verify(&sign(&k, &claims()), NOW).await.unwrap();
    assert_user(&id);
    assert!(
        !format!("{id:?}").contains("user-42"),
        "Debug must redact the subject"
    );
}

#[tokio::test]
async fn valid_es256_token_is_accepted() {
    let k = ec_key("ec-1");
    let (v, _d) = file_verifier(&[&k], &["ES256"]);
    assert_user(&v.verify(&sign(&k, &claims()), NOW).await.unwrap());
}

#[tokio::test]
async fn valid_eddsa_token_is_accepted() {
    let k = ed_key("ed-1");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    assert_user(&v.verify(&sign(&k, &claims()), NOW).await.unwrap());
}

#[tokio::test]
async fn all_key_types_from_one_set_and_tokens_without_kid() {
    let (r, e, d) = (rsa_key("r"), ec_key("e"), ed_key("d"));
    let (v, _d) = file_verifier(&[&r, &e, &d], &["RS256", "ES256", "EdDSA"]);
    for k in [&r, &e, &d] {
        assert_user(&v.verify(&sign(k, &claims()), NOW).await.unwrap());
        // Without a kid: exactly one key of the token's type exists, so it is used.
        let mut c = claims();
        c["jti"] = json!(format!("nokid-{}", k.kid));
        assert_user(&v.verify(&sign_without_kid(k, &c), NOW).await.unwrap());
    }
    // Two Ed25519 keys and no kid: ambiguous, refused.
    let (d2, _) = (ed_key("d2"), ());
    let (v2, _d2) = file_verifier(&[&d, &d2], &["EdDSA"]);
    assert_eq!(
        reason(&v2, &sign_without_kid(&d, &claims())).await,
        ReasonCode::UnknownKey
    );
}

#[tokio::test]
async fn hs256_token_is_accepted_when_configured() {
    let secret = "0123456789abcdef0123456789abcdef-test-secret";
    let env = "CORDON_IDENTITY_TEST_HS256_OK";
    // SAFETY: a variable name used only by this test; nothing else reads or writes it.
    unsafe { std::env::set_var(env, secret) };
    let mut spec = issuer(&["HS256"]);
    spec.jwks_file = None;
    spec.hs256_secret_env = Some(env.into());
    let v = Verifier::new(&section(vec![spec]), std::path::Path::new("/")).unwrap();
    let tok = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_user(&v.verify(&tok, NOW).await.unwrap());
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    assert_eq!(reason(&v, &wrong).await, ReasonCode::BadSignature);
}

#[tokio::test]
async fn expired_token_is_refused() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    let mut c = claims();
    c["exp"] = json!(NOW - 31); // leeway is 30 s
    assert_eq!(reason(&v, &sign(&k, &c)).await, ReasonCode::TokenExpired);
    c["exp"] = json!(NOW - 30); // within leeway
    assert!(v.verify(&sign(&k, &c), NOW).await.is_ok());
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    let mut c = claims();
    c["nbf"] = json!(NOW + 31);
    assert_eq!(reason(&v, &sign(&k, &c)).await, ReasonCode::TokenNotYetValid);
}

#[tokio::test]
async fn wrong_audience_is_refused_and_arrays_work() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(reason(&v, &sign(&k, &c)).await, ReasonCode::WrongAudience);
    c["aud"] = json!(["someone-else", "other"]);
    assert_eq!(reason(&v, &sign(&k, &c)).await, ReasonCode::WrongAudience);
    c["aud"] = json!(["someone-else", AUD]);
    assert!(v.verify(&sign(&k, &c), NOW).await.is_ok());
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com/");
    assert_eq!(reason(&v, &sign(&k, &c)).await, ReasonCode::WrongIssuer);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let k = rsa_key("k");
    let (v, _d) = file_verifier(&[&k], &["RS256", "ES256", "EdDSA"]);
    for alg in ["none", "None", "NONE"] {
        let hp = format!(
            "{}.{}",
            b64json(&json!({"alg": alg, "typ": "JWT"})),
            b64json(&claims())
        );
        assert_eq!(
            reason(&v, &format!("{hp}.")).await,
            ReasonCode::UnsupportedAlgorithm,
            "{alg}"
        );
        assert_eq!(
            reason(&v, &format!("{hp}.c2ln")).await,
            ReasonCode::UnsupportedAlgorithm,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn hs_rs_confusion_is_refused() {
    let k = rsa_key("rsa-1");
    let (v, _d) = file_verifier(&[&k], &["RS256"]);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &k.public_der)
    );
    for secret in [k.public_der.as_slice(), pem.as_bytes()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        let tok = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(reason(&v, &tok).await, ReasonCode::UnsupportedAlgorithm);
    }
    // RS key, header claims another listed algorithm: the key type does not fit.
    let (v2, _d2) = file_verifier(&[&k], &["RS256", "ES256"]);
    let good = sign(&k, &claims());
    let rest = good.split_once('.').unwrap().1;
    let forged = format!("{}.{rest}", b64json(&json!({"alg":"ES256","kid":"rsa-1"})));
    assert_eq!(reason(&v2, &forged).await, ReasonCode::UnsupportedAlgorithm);
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_fails_even_where_hs256_is_allowed() {
    let k = rsa_key("rsa-1");
    let env = "CORDON_IDENTITY_TEST_HS256_MIXED";
    // SAFETY: a variable name used only by this test.
    unsafe { std::env::set_var(env, "the-real-shared-secret-of-32-bytes-or-more") };
    let dir = tempfile::tempdir().unwrap();
    write_jwks(dir.path(), "jwks.json", &[&k]);
    let mut spec = issuer(&["RS256", "HS256"]);
    spec.hs256_secret_env = Some(env.into());
    let v = Verifier::new(&section(vec![spec]), dir.path()).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let tok = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&k.public_der)).unwrap();
    assert_eq!(reason(&v, &tok).await, ReasonCode::BadSignature);
    assert!(v.verify(&sign(&k, &claims()), NOW).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let (a, b) = (ed_key("a"), ed_key("b"));
    let (v, _d) = file_verifier(&[&a], &["EdDSA"]);
    assert_eq!(reason(&v, &sign(&b, &claims())).await, ReasonCode::UnknownKey);
}

#[tokio::test]
async fn jwks_file_rotation_is_picked_up_on_unknown_kid() {
    let (a, b) = (ed_key("a"), ed_key("b"));
    let (v, d) = file_verifier(&[&a], &["EdDSA"]);
    let v = v.with_refresh_interval(Duration::ZERO);
    write_jwks(d.path(), "jwks.json", &[&a, &b]);
    assert_user(&v.verify(&sign(&b, &claims()), NOW).await.unwrap());
    // Key A is removed from the file: the change is noticed without an unknown kid, and a
    // (not cached) token of A is refused.
    write_jwks(d.path(), "jwks.json", &[&b]);
    let mut c = claims();
    c["jti"] = json!("after-removal");
    assert_eq!(reason(&v, &sign(&a, &c)).await, ReasonCode::UnknownKey);
    assert!(v.verify(&sign(&b, &c), NOW).await.is_ok());
}

#[tokio::test]
async fn a_cached_token_does_not_outlive_its_key_after_a_refresh() {
    let (a, b) = (ed_key("a"), ed_key("b"));
    let dir = tempfile::tempdir().unwrap();
    write_jwks(dir.path(), "jwks.json", &[&a]);
    let mut s = section(vec![issuer(&["EdDSA"])]);
    s.token_cache_seconds = 30;
    let v = Verifier::new(&s, dir.path())
        .unwrap()
        .with_refresh_interval(Duration::ZERO);
    let old = sign(&a, &claims());
    assert_user(&v.verify(&old, NOW).await.unwrap());
    assert_user(&v.verify(&old, NOW + 1).await.unwrap()); // from the cache

    // The issuer rotates: key A is gone, key B is new. The first token of B refreshes the set...
    write_jwks(dir.path(), "jwks.json", &[&b]);
    assert_user(&v.verify(&sign(&b, &claims()), NOW + 2).await.unwrap());
    // ...and the cached verification of A's token no longer counts.
    assert_eq!(
        v.verify(&old, NOW + 3).await.unwrap_err().reason(),
        ReasonCode::UnknownKey
    );
}

#[tokio::test]
async fn tampered_payload_is_a_bad_signature() {
    let k = rsa_key("k");
    let (v, _d) = file_verifier(&[&k], &["RS256"]);
    let tok = sign(&k, &claims());
    let parts: Vec<&str> = tok.split('.').collect();
    let mut c = claims();
    c["address"]["country"] = json!("US");
    let forged = format!("{}.{}.{}", parts[0], b64json(&c), parts[2]);
    assert_eq!(reason(&v, &forged).await, ReasonCode::BadSignature);
    // A flipped signature byte too.
    let mut sig = parts[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap());
    assert_eq!(reason(&v, &forged).await, ReasonCode::BadSignature);
}

#[tokio::test]
async fn missing_claims_are_refused() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    for claim in ["sub", "exp", "aud", "iss"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            reason(&v, &sign(&k, &c)).await,
            ReasonCode::MissingClaim,
            "{claim}"
        );
    }
    let mut c = claims();
    c["sub"] = json!(42);
    assert_eq!(reason(&v, &sign(&k, &c)).await, ReasonCode::MissingClaim);
}

#[tokio::test]
async fn missing_residency_is_refused() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    for residency in [
        json!({}),
        json!({"country": 49}),
        json!({"country": ""}),
        json!("DE"),
    ] {
        let mut c = claims();
        c["address"] = residency.clone();
        assert_eq!(
            reason(&v, &sign(&k, &c)).await,
            ReasonCode::MissingResidency,
            "{residency}"
        );
    }
}

#[tokio::test]
async fn wrongly_typed_exp_and_nbf_are_malformed() {
    // GHSA-h395-gr6q-cpjc: a wrong-typed exp/nbf must never count as absent.
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    let cases: [(&str, Value); 6] = [
        ("exp", json!("9999999999")),
        ("exp", json!(-1)),
        ("exp", json!(9999999999.5)),
        ("nbf", json!(1.5)),
        ("nbf", json!((NOW + 10_000) as f64)),
        ("nbf", json!("0")),
    ];
    for (name, value) in cases {
        let mut c = claims();
        c[name] = value.clone();
        assert_eq!(
            reason(&v, &sign(&k, &c)).await,
            ReasonCode::MalformedToken,
            "{name}={value}"
        );
    }
}

#[tokio::test]
async fn structural_garbage_is_malformed() {
    let k = ed_key("k");
    let (v, _d) = file_verifier(&[&k], &["EdDSA"]);
    for t in [
        "a.b.c",
        "!!.??.xx",
        &format!("{}.{}.sig", b64json(&json!({"alg":"EdDSA"})), "bm90IGpzb24"),
    ] {
        assert_eq!(reason(&v, t).await, ReasonCode::MalformedToken, "{t}");
    }
}

#[tokio::test]
async fn api_keys_through_the_verifier() {
    let mut s = section(vec![]);
    s.api_keys = vec![ApiKeySpec {
        id: "nightly-eval".into(),
        hash: hash_api_key("ck_live_abcdef"),
        jurisdiction: "EU".parse().unwrap(),
        country: None,
        tier: Tier::NotPersonal,
    }];
    let v = Verifier::new(&s, std::path::Path::new("/")).unwrap();
    let id = v.verify("ck_live_abcdef", NOW).await.unwrap();
    assert_eq!(
        id.caller,
        Caller::Workload {
            key_id: "nightly-eval".into()
        }
    );
    assert_eq!(id.subject, "apikey:nightly-eval");
    assert_eq!(
        id.residency,
        Residency::Fixed {
            jurisdiction: "EU".parse().unwrap(),
            country: None
        }
    );
    assert_eq!(id.residency_source, "api_key:nightly-eval");
    assert_eq!(id.tier, Tier::NotPersonal);
    assert_eq!(id.expires_at, None);
    assert_eq!(reason(&v, "ck_live_wrong").await, ReasonCode::UnknownApiKey);
    assert_eq!(reason(&v, "").await, ReasonCode::MissingCredentials);
    assert_eq!(reason(&v, "   ").await, ReasonCode::MissingCredentials);
}

#[tokio::test]
async fn token_cache_returns_the_same_identity_and_never_outlives_exp() {
    let k = rsa_key("k");
    let dir = tempfile::tempdir().unwrap();
    write_jwks(dir.path(), "jwks.json", &[&k]);
    let mut spec = issuer(&["RS256"]);
    spec.leeway_seconds = 0;
    let mut s = section(vec![spec]);
    s.token_cache_seconds = 30;
    let v = Verifier::new(&s, dir.path()).unwrap();

    let mut c = claims();
    c["exp"] = json!(NOW + 10);
    let tok = sign(&k, &c);
    let first = v.verify(&tok, NOW).await.unwrap();
    assert!(
        v.cached(&crate::cache::key(&tok), NOW + 1).is_some(),
        "verified token is cached"
    );
    let second = v.verify(&tok, NOW + 1).await.unwrap();
    assert_eq!(first, second);
    // Past exp, the cache does not answer and the full check refuses.
    assert_eq!(
        v.verify(&tok, NOW + 11).await.unwrap_err().reason(),
        ReasonCode::TokenExpired
    );
    assert!(v.cached(&crate::cache::key(&tok), NOW + 10).is_none());

    // With the cache off nothing is stored.
    let v = Verifier::new(&s, dir.path()).unwrap().with_token_cache(0, 10);
    v.verify(&tok, NOW).await.unwrap();
    assert!(v.cached(&crate::cache::key(&tok), NOW).is_none());
}

#[test]
fn config_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let k = ed_key("k");
    write_jwks(dir.path(), "jwks.json", &[&k]);
    let build = |spec| Verifier::new(&section(vec![spec]), dir.path()).map(|_| ());

    let e = build(issuer(&["RS512"])).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownAlgorithm { .. }), "{e}");
    assert!(matches!(
        build(issuer(&["none"])).unwrap_err(),
        ConfigError::UnknownAlgorithm { .. }
    ));
    let mut s = issuer(&["EdDSA"]);
    s.jwks_file = None;
    assert!(matches!(build(s).unwrap_err(), ConfigError::NoKeySource { .. }));
    assert!(matches!(
        build(issuer(&["EdDSA", "HS256"])).unwrap_err(),
        ConfigError::Hs256WithoutSecretEnv { .. }
    ));
    let mut s = issuer(&["HS256"]);
    s.hs256_secret_env = Some("CORDON_IDENTITY_TEST_SURELY_UNSET".into());
    assert!(matches!(
        build(s).unwrap_err(),
        ConfigError::Hs256SecretUnset { .. }
    ));
    let mut s = issuer(&["EdDSA"]);
    s.jwks_file = Some("missing.json".into());
    assert!(matches!(build(s).unwrap_err(), ConfigError::JwksFile { .. }));
    let mut s = issuer(&["EdDSA"]);
    s.jwks_file = None;
    s.jwks_url = Some("ftp://example.com/jwks".into());
    assert!(matches!(build(s).unwrap_err(), ConfigError::JwksUrl { .. }));
    let mut s = issuer(&["EdDSA"]);
    s.audiences.clear();
    assert!(matches!(build(s).unwrap_err(), ConfigError::NoAudiences { .. }));

    let mut sec = section(vec![]);
    sec.api_keys = vec![ApiKeySpec {
        id: "k".into(),
        hash: "sha256:1234".into(),
        jurisdiction: "EU".parse().unwrap(),
        country: None,
        tier: Tier::Personal,
    }];
    let e = Verifier::new(&sec, dir.path()).map(|_| ()).unwrap_err();
    assert!(matches!(e, ConfigError::ApiKeyHash { .. }), "{e}");
    assert!(build(issuer(&["EdDSA"])).is_ok());
}

#[test]
fn verifier_is_send_sync_and_verify_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Verifier>();
    send_sync::<AuthError>();
    let v = Verifier::new(&section(vec![]), std::path::Path::new("/")).unwrap();
    send(&v.verify("x", 0));
    send(&v.prefetch());
}

// ---- JWKS over HTTP -------------------------------------------------------------------------

/// A JWKS server: answers with `body` or, when `fail` is set, HTTP 500; counts requests.
#[derive(Clone, Default)]
struct JwksServer {
    body: Arc<Mutex<Value>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(initial: Value) -> (JwksServer, String) {
        use axum::http::StatusCode;
        let s = JwksServer::default();
        *s.body.lock().unwrap() = initial;
        let st = s.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let st = st.clone();
                async move {
                    st.hits.fetch_add(1, Ordering::SeqCst);
                    if st.fail.load(Ordering::SeqCst) {
                        Err(StatusCode::INTERNAL_SERVER_ERROR)
                    } else {
                        Ok(axum::Json(st.body.lock().unwrap().clone()))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (s, format!("http://{addr}/jwks.json"))
    }
    fn set(&self, v: Value) {
        *self.body.lock().unwrap() = v;
    }
}

fn url_verifier(url: &str, interval: Duration) -> Verifier {
    let mut spec = issuer(&["RS256", "EdDSA"]);
    spec.jwks_file = None;
    spec.jwks_url = Some(url.into());
    Verifier::new(&section(vec![spec]), std::path::Path::new("/"))
        .unwrap()
        .with_refresh_interval(interval)
}

/// Retries `verify` until it succeeds or the deadline passes (waiting on a condition, not a nap).
async fn verify_eventually(v: &Verifier, token: &str) -> Result<Identity, AuthError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match v.verify(token, NOW).await {
            Ok(id) => return Ok(id),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn jwks_over_http_with_rotation_and_a_failing_server() {
    let (a, b, c) = (rsa_key("key-a"), ed_key("key-b"), ed_key("key-c"));
    let (server, url) = JwksServer::start(jwks(&[&a])).await;
    let v = url_verifier(&url, Duration::from_millis(100));
    v.prefetch().await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_user(&v.verify(&sign(&a, &claims()), NOW).await.unwrap());

    // Rotate: the server now publishes only key B. A token of B (new kid) verifies after the
    // rate-limited refresh.
    server.set(jwks(&[&b]));
    let tok_b = sign(&b, &claims());
    assert_user(&verify_eventually(&v, &tok_b).await.unwrap());
    // Key A is gone from the set: a fresh token of A (not in the cache) is refused.
    let mut ca = claims();
    ca["jti"] = json!("fresh");
    let fresh_a = sign(&a, &ca);
    assert_eq!(reason(&v, &fresh_a).await, ReasonCode::UnknownKey);

    // The server fails: the last good key set keeps working, and an unknown kid stays unknown.
    server.fail.store(true, Ordering::SeqCst);
    let hits_before = server.hits.load(Ordering::SeqCst);
    let tok_c = sign(&c, &claims());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.hits.load(Ordering::SeqCst) == hits_before {
        assert_eq!(reason(&v, &tok_c).await, ReasonCode::UnknownKey);
        assert!(
            Instant::now() < deadline,
            "no refresh was attempted against the failing server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut cb = claims();
    cb["jti"] = json!("after-failure");
    assert_user(&v.verify(&sign(&b, &cb), NOW).await.unwrap());

    // The server recovers with key C: picked up on the next allowed refresh.
    server.set(jwks(&[&b, &c]));
    server.fail.store(false, Ordering::SeqCst);
    assert_user(&verify_eventually(&v, &tok_c).await.unwrap());
}

#[tokio::test]
async fn a_key_withdrawn_from_the_jwks_stops_verifying_without_an_unknown_kid() {
    let (a, b) = (ed_key("a"), ed_key("b"));
    let (server, url) = JwksServer::start(jwks(&[&a, &b])).await;
    let v = url_verifier(&url, Duration::ZERO).with_jwks_max_age(Duration::from_millis(50));
    v.prefetch().await;
    assert_user(&v.verify(&sign(&a, &claims()), NOW).await.unwrap());
    // The identity provider withdraws key A (say, it leaked). Tokens still name kid "a", which is
    // known, so no unknown-kid refresh would ever happen: the set's age triggers one.
    server.set(jwks(&[&b]));
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let mut c = claims();
        c["jti"] = json!(format!("fresh-{n}")); // never in the token cache
        match v.verify(&sign(&a, &c), NOW).await {
            Err(e) => {
                assert_eq!(e.reason(), ReasonCode::UnknownKey, "{e}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "key A still verifies"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_user(&v.verify(&sign(&b, &claims()), NOW).await.unwrap());
}

#[tokio::test]
async fn an_unchanged_jwks_keeps_cached_tokens() {
    let a = ed_key("a");
    let (server, url) = JwksServer::start(jwks(&[&a])).await;
    let v = url_verifier(&url, Duration::ZERO).with_jwks_max_age(Duration::from_millis(10));
    v.prefetch().await;
    let tok = sign(&a, &claims());
    assert_user(&v.verify(&tok, NOW).await.unwrap());
    let before = v.issuers[ISS].keys.current();
    // Let the set age and a background re-fetch of the same document happen.
    let hits = server.hits.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        if server.hits.load(Ordering::SeqCst) > hits {
            break;
        }
        assert!(Instant::now() < deadline, "no background re-fetch");
        let mut c = claims();
        c["jti"] = json!(format!("miss-{n}")); // a cache miss: verification looks at the set
        let _ = v.verify(&sign(&a, &c), NOW).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while v.issuers[ISS]
        .keys
        .is_stale(Duration::from_secs(3600), Duration::ZERO)
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = v.issuers[ISS].keys.current();
    assert!(Arc::ptr_eq(&before, &after), "same document, same key set");
}

#[tokio::test]
async fn unknown_kid_refreshes_are_rate_limited() {
    let (a, b) = (ed_key("a"), ed_key("b"));
    let (server, url) = JwksServer::start(jwks(&[&a])).await;
    let v = url_verifier(&url, Duration::from_secs(3600));
    // No prefetch: the first use loads the keys.
    assert!(v.verify(&sign(&a, &claims()), NOW).await.is_ok());
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    server.set(jwks(&[&a, &b]));
    for i in 0..5 {
        let mut c = claims();
        c["jti"] = json!(i);
        assert_eq!(reason(&v, &sign(&b, &c)).await, ReasonCode::UnknownKey);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "one refresh per interval at most"
    );
}

#[tokio::test]
async fn failed_prefetch_is_not_fatal() {
    let a = ed_key("a");
    let (server, url) = JwksServer::start(jwks(&[&a])).await;
    server.fail.store(true, Ordering::SeqCst);
    let v = url_verifier(&url, Duration::from_secs(3600));
    v.prefetch().await;
    server.fail.store(false, Ordering::SeqCst);
    // Never loaded: retried on first use after at most MIN_RETRY, despite the long interval.
    assert_user(&verify_eventually(&v, &sign(&a, &claims())).await.unwrap());
}

#[test]
fn subjects_are_scoped_by_who_vouches_for_them() {
    let user = |iss: &str| Caller::User { issuer: iss.into() };
    let a = user("https://idp-a").subject_key("alice");
    assert_ne!(a, user("https://idp-b").subject_key("alice"));
    assert_eq!(a, user("https://idp-a").subject_key("alice"));
    // A JWT whose sub looks like an API key's subject is not that workload.
    let key = Caller::Workload {
        key_id: "nightly".into(),
    };
    assert_ne!(
        user("i").subject_key("apikey:nightly"),
        key.subject_key("apikey:nightly")
    );
    assert_ne!(user("").subject_key("w"), key.subject_key("w"));
}
