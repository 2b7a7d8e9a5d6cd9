//! Whole-binary identity tests: the real `cordon` binary started as `cordon serve` with a policy
//! written here, an in-test JWKS server, keys generated at test time, and requests over real HTTP.
//!
//! Each test starts its own gateway (own temp dir, own port) and its own JWKS server, so the tests
//! can run in parallel threads.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cordon_audit::{Outcome, Payload, Record};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The JWKS issuer (RS256, ES256, EdDSA; residency nested at `address.country`).
const ISS: &str = "https://idp.test/";
/// The HS256 issuer (shared secret from `CORDON_TEST_HS_SECRET`; residency at `country`).
const HS_ISS: &str = "https://hs.idp.test/";
const AUD: &str = "cordon";
const HS_SECRET: &str = "hs-secret-for-tests-4c8e1f0a9b7d2e6c3a5f";
/// The workload key `batch` (EU, tier 3).
const API_KEY: &str = "ck-batch-secret-9d2f7a61e03b4c58";
const UNKNOWN_API_KEY: &str = "ck-not-configured-5e81c0b7aa42";

/// Raw subject ids: distinctive so that a leak into a log or an audit file is found.
const SUB_DE: &str = "raw-subject-de-7c1e90";
const SUB_US: &str = "raw-subject-us-42b9d3";
const SUB_HS: &str = "raw-subject-hs-a51f07";
const SUB_BAD: &str = "raw-subject-bad-3e6d18";
const SUB_ZZ: &str = "raw-subject-zz-b02c44";

const EU_REGION: &str = "aws:eu-central-1";
const US_REGION: &str = "aws:us-east-1";

/// How long the gateway may take to start.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a condition that depends on the JWKS refresh rate limit may take to become true: more
/// than `cordon_identity::DEFAULT_REFRESH_INTERVAL` (the running binary uses the default).
const REFRESH_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------------------------

/// A signing key and its public JWK.
struct Key {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    /// RSA only: the public key as X.509 SubjectPublicKeyInfo DER.
    public_der: Vec<u8>,
}

/// Reads one DER TLV; returns (tag, content, rest).
fn tlv(buf: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = buf[0];
    let (len, hdr) = if buf[1] < 0x80 {
        (buf[1] as usize, 2)
    } else {
        let n = (buf[1] & 0x7f) as usize;
        (
            buf[2..2 + n].iter().fold(0usize, |a, b| (a << 8) | *b as usize),
            2 + n,
        )
    };
    (tag, &buf[hdr..hdr + len], &buf[hdr + len..])
}

/// PKCS#8 -> the PKCS#1 RSAPrivateKey inside it (jsonwebtoken's aws-lc signer wants PKCS#1 DER).
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (_, outer, _) = tlv(pkcs8);
    let (_, _version, rest) = tlv(outer);
    let (_, _alg, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "expected an OCTET STRING");
    key.to_vec()
}

impl Key {
    fn rsa(kid: &str) -> Key {
        let kp = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = kp.as_der().unwrap();
        let public = kp.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        Key {
            alg: Algorithm::RS256,
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(pkcs8.as_ref())),
            jwk: json!({"kty":"RSA","kid":kid,"use":"sig","alg":"RS256",
                        "n":URL_SAFE_NO_PAD.encode(n),"e":URL_SAFE_NO_PAD.encode(e)}),
            public_der: public.as_der().unwrap().as_ref().to_vec(),
        }
    }

    fn ec(kid: &str) -> Key {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = kp.public_key().as_ref();
        assert_eq!(point.len(), 65);
        Key {
            alg: Algorithm::ES256,
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty":"EC","crv":"P-256","kid":kid,"use":"sig","alg":"ES256",
                        "x":URL_SAFE_NO_PAD.encode(&point[1..33]),"y":URL_SAFE_NO_PAD.encode(&point[33..])}),
            public_der: Vec::new(),
        }
    }

    fn ed(kid: &str) -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: cordon_identity::ed25519_jwk(kid, kp.public_key().as_ref()),
            public_der: Vec::new(),
        }
    }

    /// Signs `claims` with this key, its kid in the header.
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs `claims` with this key but names `kid` in the header.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        install_crypto();
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }
}

/// The JWKS issuer's three keys.
struct Keys {
    rsa: Key,
    ec: Key,
    ed: Key,
}

impl Keys {
    fn generate() -> Keys {
        Keys {
            rsa: Key::rsa("rsa-1"),
            ec: Key::ec("ec-1"),
            ed: Key::ed("ed-1"),
        }
    }

    fn jwks(&self) -> Value {
        jwks(&[&self.rsa, &self.ec, &self.ed])
    }
}

fn jwks(keys: &[&Key]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims of the JWKS issuer, residency nested at `address.country`. A fresh `jti` makes
/// every token distinct (so the gateway's verified-token cache never answers for it).
fn claims(sub: &str, country: &str) -> Value {
    static N: AtomicUsize = AtomicUsize::new(0);
    let t = now();
    json!({
        "iss": ISS, "aud": AUD, "sub": sub,
        "iat": t - 10, "nbf": t - 10, "exp": t + 600,
        "jti": format!("jti-{}", N.fetch_add(1, Ordering::Relaxed)),
        "address": {"country": country},
    })
}

/// A valid HS256 token of the second issuer (residency at `country`).
fn hs_token(sub: &str, country: &str, secret: &str) -> String {
    install_crypto();
    let t = now();
    let c = json!({"iss": HS_ISS, "aud": AUD, "sub": sub, "iat": t, "nbf": t, "exp": t + 600, "country": country});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

// ---------------------------------------------------------------------------------------------
// The in-test JWKS server
// ---------------------------------------------------------------------------------------------

/// What the JWKS server answers: a key set, or HTTP 500.
#[derive(Clone)]
enum JwksAnswer {
    Keys(Value),
    Fail,
}

#[derive(Clone)]
struct JwksState {
    answer: Arc<Mutex<JwksAnswer>>,
    hits: Arc<AtomicUsize>,
}

/// An HTTP server on 127.0.0.1:0 serving `/jwks.json`, on its own thread and runtime (so a test may
/// block while the gateway fetches from it).
struct JwksServer {
    addr: SocketAddr,
    state: JwksState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    fn start(initial: Value) -> JwksServer {
        let state = JwksState {
            answer: Arc::new(Mutex::new(JwksAnswer::Keys(initial))),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/jwks.json", axum::routing::get(serve_jwks))
                    .with_state(app_state);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        JwksServer {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn set(&self, answer: JwksAnswer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(
    axum::extract::State(s): axum::extract::State<JwksState>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let answer = s.answer.lock().unwrap().clone();
    s.hits.fetch_add(1, Ordering::SeqCst);
    match answer {
        JwksAnswer::Keys(v) => (axum::http::StatusCode::OK, axum::Json(v)),
        JwksAnswer::Fail => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": "down"})),
        ),
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------------------------

/// The test policy: the JWKS issuer, the HS256 issuer, the `batch` API key, and `chat-small` on two
/// echo endpoints, one in the EU and one in the US.
fn policy_yaml(jwks_url: &str) -> String {
    let hash = cordon_identity::hash_api_key(API_KEY);
    format!(
        r#"gateway: {{ id: t, development: true }}
identity:
  issuers:
    - issuer: "{ISS}"
      audiences: [{AUD}]
      jwks_url: "{jwks_url}"
      algorithms: [RS256, ES256, EdDSA]
      subject_claim: sub
      residency_claim: address.country
    - issuer: "{HS_ISS}"
      audiences: [{AUD}]
      algorithms: [HS256]
      hs256_secret_env: CORDON_TEST_HS_SECRET
      residency_claim: country
  api_keys:
    - {{ id: batch, hash: "{hash}", jurisdiction: EU, tier: 3 }}
transfers: []
models:
  chat-small:
    endpoints:
      - {{ id: eu, provider: echo, regions: [{EU_REGION}], priority: 1 }}
      - {{ id: us, provider: echo, regions: [{US_REGION}], priority: 1 }}
audit: {{ root: audit }}
"#
    )
}

/// A `cordon serve` child process; killed on drop.
struct Gateway {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Gateway {
    /// Writes the policy, starts the binary, and waits (up to [`START_DEADLINE`]) for its
    /// `cordon listening on http://ADDR` line. The child's stderr goes to `stderr.log`.
    fn start(policy: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cordon.yaml");
        std::fs::write(&config, policy).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cordon"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("CORDON_TEST_HS_SECRET", HS_SECRET)
            // Everything the gateway logs at debug is checked for secrets by one test.
            .env("CORDON_LOG", "debug")
            .env_remove("CORDON_GATEWAY_REGION")
            .env_remove("CORDON_MASTER_KEY")
            .env_remove("CORDON_CONFIG")
            .env_remove("CORDON_DATA_DIR")
            .env_remove("CORDON_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn cordon");

        // Read stdout on a thread: send the address once, then keep draining.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("cordon listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(START_DEADLINE) {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("cordon serve did not report its address ({e}); stderr:\n{log}");
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Gateway {
            child,
            url: format!("http://{addr}"),
            dir,
            client,
        }
    }

    async fn metrics(&self) -> String {
        let resp = self.client.get(format!("{}/metrics", self.url)).send().await;
        resp.unwrap().text().await.unwrap()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("cordon.yaml")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr_log(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("stderr.log")).unwrap()
    }

    /// Stops the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `POST /v1/chat/completions` for `chat-small` with an optional bearer credential.
    async fn chat(&self, bearer: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        let mut req = self
            .client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&json!({"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}));
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request to the gateway");
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let decision_id = header("x-cordon-decision-id");
        let region = header("x-cordon-processing-region");
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            decision_id,
            region,
            body,
            text,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer of the gateway.
#[derive(Debug)]
struct Answer {
    status: u16,
    decision_id: Option<String>,
    region: Option<String>,
    body: Value,
    text: String,
}

impl Answer {
    /// Asserts a successful answer with a decision id; returns the processing region header.
    fn assert_served(&self, what: &str) -> String {
        assert_eq!(self.status, 200, "{what}: {}", self.text);
        assert!(
            self.decision_id.as_deref().is_some_and(|d| !d.is_empty()),
            "{what}: no x-cordon-decision-id"
        );
        self.region
            .clone()
            .unwrap_or_else(|| panic!("{what}: no x-cordon-processing-region"))
    }

    /// Asserts an error answer (status, `error.type`, `error.code`) whose `error.decision_id`
    /// equals the `x-cordon-decision-id` header; returns the decision id.
    fn assert_error(&self, what: &str, status: u16, ty: &str, code: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        let e = &self.body["error"];
        assert_eq!(e["type"], ty, "{what}: {}", self.text);
        assert_eq!(e["code"], code, "{what}: {}", self.text);
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no message: {}",
            self.text
        );
        let id = e["decision_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error.decision_id: {}", self.text));
        assert_eq!(
            self.decision_id.as_deref(),
            Some(id),
            "{what}: x-cordon-decision-id differs from error.decision_id"
        );
        id.to_string()
    }
}

/// The JWKS server (serving `keys`) and a gateway trusting it.
fn start(keys: &Keys) -> (JwksServer, Gateway) {
    let jwks = JwksServer::start(keys.jwks());
    let gw = Gateway::start(&policy_yaml(&jwks.url()));
    (jwks, gw)
}

// ---------------------------------------------------------------------------------------------
// The table of refused credentials
// ---------------------------------------------------------------------------------------------

/// One credential the gateway must refuse with `code`.
struct BadCase {
    label: &'static str,
    bearer: Option<String>,
    code: &'static str,
}

fn bad_cases(keys: &Keys) -> Vec<BadCase> {
    let t = now();
    let valid = || claims(SUB_BAD, "DE");
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = valid();
        f(c.as_object_mut().unwrap());
        c
    };
    let case = |label, bearer: Option<String>, code| BadCase { label, bearer, code };

    // `alg: none`: a hand-built header, valid claims, an empty signature.
    let alg_none = format!(
        "{}.{}.",
        b64json(&json!({"alg": "none", "typ": "JWT"})),
        b64json(&valid())
    );
    // HS256 "signed" with the issuer's RSA public key as the HMAC secret (key confusion).
    install_crypto();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(keys.rsa.kid.clone());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &valid(),
        &EncodingKey::from_secret(&keys.rsa.public_der),
    )
    .unwrap();
    // A valid token whose payload is swapped for another after signing.
    let signed = keys.rsa.sign(&valid());
    let parts: Vec<&str> = signed.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64json(&with(&|c| {
            c.insert("sub".into(), json!("raw-subject-admin-0000"));
        })),
        parts[2]
    );

    vec![
        case(
            "expired",
            Some(keys.rsa.sign(&with(&|c| {
                c.insert("nbf".into(), json!(t - 7200));
                c.insert("exp".into(), json!(t - 3600));
            }))),
            "token_expired",
        ),
        case(
            "nbf in the future",
            Some(keys.ec.sign(&with(&|c| {
                c.insert("nbf".into(), json!(t + 3600));
                c.insert("exp".into(), json!(t + 7200));
            }))),
            "token_not_yet_valid",
        ),
        case(
            "wrong audience",
            Some(keys.ed.sign(&with(&|c| {
                c.insert("aud".into(), json!("someone-else"));
            }))),
            "wrong_audience",
        ),
        case(
            "wrong issuer",
            Some(keys.rsa.sign(&with(&|c| {
                c.insert("iss".into(), json!("https://evil.test/"));
            }))),
            "wrong_issuer",
        ),
        case("alg none", Some(alg_none), "unsupported_algorithm"),
        case(
            "HS256 with the RSA public key as secret",
            Some(confused),
            "unsupported_algorithm",
        ),
        case(
            "unknown kid",
            Some(keys.ec.sign_as("no-such-kid", &valid())),
            "unknown_key",
        ),
        case("tampered payload", Some(tampered), "bad_signature"),
        case(
            "HS256 with the wrong secret",
            Some(hs_token(SUB_BAD, "DE", "a-different-secret-of-enough-length-000")),
            "bad_signature",
        ),
        case(
            "no sub",
            Some(keys.ed.sign(&with(&|c| {
                c.remove("sub");
            }))),
            "missing_claim",
        ),
        case(
            "no residency",
            Some(keys.ed.sign(&with(&|c| {
                c.remove("address");
            }))),
            "missing_residency",
        ),
        case(
            "residency ZZ",
            Some(keys.ed.sign(&claims(SUB_ZZ, "ZZ"))),
            "unknown_residency",
        ),
        case(
            "string exp",
            Some(keys.rsa.sign(&with(&|c| {
                c.insert("exp".into(), json!((t + 600).to_string()));
            }))),
            "malformed_token",
        ),
        case("no Authorization", None, "missing_credentials"),
        case(
            "unknown API key",
            Some(UNKNOWN_API_KEY.to_string()),
            "unknown_api_key",
        ),
    ]
}

/// Sends every bad case and asserts its 401 answer. Returns (case, decision id, answer text).
async fn run_bad_cases(gw: &Gateway, keys: &Keys) -> Vec<(BadCase, String, String)> {
    let mut out = Vec::new();
    for c in bad_cases(keys) {
        let a = gw.chat(c.bearer.as_deref(), &[]).await;
        let id = a.assert_error(c.label, 401, "authentication_error", c.code);
        assert!(
            a.region.is_none(),
            "{}: a refusal has no processing region",
            c.label
        );
        out.push((c, id, a.text));
    }
    out
}

/// Every valid credential kind; returns the bearer strings used and the answer texts.
async fn run_valid_requests(gw: &Gateway, keys: &Keys) -> (Vec<String>, Vec<String>) {
    let mut bearers = Vec::new();
    let mut texts = Vec::new();
    for key in [&keys.rsa, &keys.ec, &keys.ed] {
        let token = key.sign(&claims(SUB_DE, "DE"));
        let a = gw.chat(Some(&token), &[]).await;
        let what = format!("{:?} DE", key.alg);
        assert_eq!(a.assert_served(&what), EU_REGION, "{what}");
        bearers.push(token);
        texts.push(a.text);
    }
    let us = keys.ec.sign(&claims(SUB_US, "US"));
    let a = gw.chat(Some(&us), &[]).await;
    assert_eq!(a.assert_served("ES256 US"), US_REGION);
    bearers.push(us);
    texts.push(a.text);

    let hs = hs_token(SUB_HS, "DE", HS_SECRET);
    let a = gw.chat(Some(&hs), &[]).await;
    assert_eq!(a.assert_served("HS256 DE"), EU_REGION);
    bearers.push(hs);
    texts.push(a.text);

    // Tier 3 may be served anywhere the policy allows: only the answer itself is asserted.
    let a = gw.chat(Some(API_KEY), &[]).await;
    a.assert_served("API key (tier 3)");
    bearers.push(API_KEY.to_string());
    texts.push(a.text);
    (bearers, texts)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_tokens_of_each_algorithm_are_served() {
    let keys = Keys::generate();
    let (_jwks, gw) = start(&keys);
    run_valid_requests(&gw, &keys).await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let keys = Keys::generate();
    let (_jwks, gw) = start(&keys);
    let answers = run_bad_cases(&gw, &keys).await;
    // Every refusal has its own decision.
    let mut ids: Vec<&str> = answers.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), answers.len(), "decision ids are unique");
}

#[tokio::test]
async fn auth_failures_are_audited_without_payload_or_subject() {
    let keys = Keys::generate();
    let (_jwks, gw) = start(&keys);
    let answers = run_bad_cases(&gw, &keys).await;

    // The gateway declares no region of its own, so records with no verified subject go to
    // `<audit root>/_unauthenticated` (crates/cordon-gateway/src/audit_set.rs).
    let store = gw.data_dir().join("audit").join("_unauthenticated");
    let records = cordon_audit::read_records(&store).expect("read the _unauthenticated store");
    let decisions: Vec<_> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Decision(d) => Some(d),
            Record::Completion(_) => None,
        })
        .collect();
    assert_eq!(
        decisions.len(),
        answers.len(),
        "one decision record per refused request, and nothing else"
    );
    assert_eq!(
        records.len(),
        decisions.len(),
        "no completion record for a refusal"
    );
    for (case, id, _) in &answers {
        let rec = decisions
            .iter()
            .find(|d| d.decision_id.to_string() == *id)
            .unwrap_or_else(|| panic!("{}: no record with decision id {id}", case.label));
        assert_eq!(rec.outcome, Outcome::Refused, "{}", case.label);
        assert_eq!(rec.reason.as_deref(), Some(case.code), "{}", case.label);
        assert_eq!(
            rec.subject, None,
            "{}: an unauthenticated record has no subject",
            case.label
        );
        assert_eq!(rec.payload, Payload::None, "{}: no payload", case.label);
        assert_eq!(rec.operation, "chat", "{}", case.label);
        assert_eq!(rec.gateway_id, "t", "{}", case.label);
        assert!(rec.model_endpoint.is_none(), "{}", case.label);
        assert!(rec.processing_regions.is_empty(), "{}", case.label);
        if case.code == "unknown_residency" {
            // The token verified (the caller is known) but the subject was never bound to a
            // jurisdiction: still no subject, pseudonymized or not.
            assert!(
                matches!(&rec.caller, Some(cordon_audit::CallerRecord::User { issuer }) if issuer == ISS),
                "unknown_residency records the verified caller: {:?}",
                rec.caller
            );
            assert_eq!(rec.data_subject_jurisdiction, None);
        }
    }

    let out = Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(["audit", "verify", "--config"])
        .arg(gw.config())
        .arg("--data-dir")
        .arg(gw.data_dir())
        .env_remove("CORDON_CONFIG")
        .env_remove("CORDON_DATA_DIR")
        .env("CORDON_TEST_HS_SECRET", HS_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cordon audit verify failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn jwks_rotation_without_restart() {
    let key_a = Key::ed("a");
    let key_b = Key::ed("b");
    let key_c = Key::ed("c");
    let idp = JwksServer::start(jwks(&[&key_a]));
    let gw = Gateway::start(&policy_yaml(&idp.url()));

    let token_a = key_a.sign(&claims(SUB_DE, "DE"));
    assert_eq!(
        gw.chat(Some(&token_a), &[]).await.assert_served("key a"),
        EU_REGION
    );

    // Rotate: the issuer now publishes only key b. A token of b names an unknown kid, which makes
    // the gateway refresh the set, at most once per refresh interval (10 s by default): poll.
    idp.set(JwksAnswer::Keys(jwks(&[&key_b])));
    let token_b = key_b.sign(&claims(SUB_DE, "DE"));
    let deadline = Instant::now() + REFRESH_DEADLINE;
    loop {
        let a = gw.chat(Some(&token_b), &[]).await;
        if a.status == 200 {
            assert_eq!(a.assert_served("key b after rotation"), EU_REGION);
            break;
        }
        a.assert_error(
            "key b before the refresh",
            401,
            "authentication_error",
            "unknown_key",
        );
        assert!(
            Instant::now() < deadline,
            "key b was not accepted within {REFRESH_DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    // The b-only set is loaded: a token of key a (a fresh one, so the verified-token cache cannot
    // answer for it) now names an unknown key.
    let fresh_a = key_a.sign(&claims(SUB_DE, "DE"));
    gw.chat(Some(&fresh_a), &[]).await.assert_error(
        "key a after rotation",
        401,
        "authentication_error",
        "unknown_key",
    );

    // The IdP fails: a refresh that gets HTTP 500 keeps the last good set. Provoke a refresh with
    // an unknown kid until the server has been asked (after the rate limit), then use b again.
    idp.set(JwksAnswer::Fail);
    let hits = idp.hits();
    let token_c = key_c.sign(&claims(SUB_DE, "DE"));
    let deadline = Instant::now() + REFRESH_DEADLINE;
    while idp.hits() == hits {
        gw.chat(Some(&token_c), &[])
            .await
            .assert_error("key c", 401, "authentication_error", "unknown_key");
        assert!(
            Instant::now() < deadline,
            "the gateway did not refetch the JWKS within {REFRESH_DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let fresh_b = key_b.sign(&claims(SUB_US, "US"));
    assert_eq!(
        gw.chat(Some(&fresh_b), &[])
            .await
            .assert_served("key b after a failed refresh"),
        US_REGION
    );
    assert_eq!(
        gw.chat(Some(&token_b), &[]).await.assert_served("token b again"),
        EU_REGION
    );
}

#[tokio::test]
async fn a_policy_reload_keeps_the_last_good_keys_while_the_idp_is_down() {
    let key_a = Key::ed("a");
    let idp = JwksServer::start(jwks(&[&key_a]));
    let gw = Gateway::start(&policy_yaml(&idp.url()));
    let token_a = key_a.sign(&claims(SUB_DE, "DE"));
    gw.chat(Some(&token_a), &[]).await.assert_served("key a");

    // The identity provider goes down, then the policy changes (a new reason to reload).
    idp.set(JwksAnswer::Fail);
    let changed = policy_yaml(&idp.url()).replace(
        "audit: { root: audit }",
        "  chat-large:\n    endpoints:\n      - { id: eu, provider: echo, regions: [aws:eu-central-1] }\naudit: { root: audit }",
    );
    assert_ne!(changed, policy_yaml(&idp.url()));
    std::fs::write(gw.config(), changed).unwrap();
    let deadline = Instant::now() + REFRESH_DEADLINE;
    loop {
        let metrics = gw.metrics().await;
        if metrics.contains("cordon_policy_reloads_total{result=\"ok\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed policy was not reloaded: {metrics}"
        );
        tokio::time::sleep(POLL).await;
    }
    // The reloaded verifier kept the last good key set: a fresh token of key a (not answered
    // from the verified-token cache, which a reload empties) is still served.
    let fresh_a = key_a.sign(&claims(SUB_US, "US"));
    assert_eq!(
        gw.chat(Some(&fresh_a), &[])
            .await
            .assert_served("key a after the reload"),
        US_REGION
    );
}

#[tokio::test]
async fn tier_header_may_only_be_stricter() {
    let keys = Keys::generate();
    let (_jwks, gw) = start(&keys);

    // The workload key is tier 3; declaring tier 1 keeps its EU subject's data at home.
    let a = gw.chat(Some(API_KEY), &[("x-cordon-tier", "1")]).await;
    assert_eq!(a.assert_served("API key declared tier 1"), EU_REGION);

    // A user is tier 1: declaring the same tier is fine, a looser one is refused.
    let user = keys.ed.sign(&claims(SUB_DE, "DE"));
    let a = gw.chat(Some(&user), &[("x-cordon-tier", "1")]).await;
    assert_eq!(a.assert_served("user declared tier 1"), EU_REGION);
    gw.chat(Some(&user), &[("x-cordon-tier", "3")])
        .await
        .assert_error(
            "user declared tier 3",
            403,
            "residency_violation",
            "looser_tier_requested",
        );
    gw.chat(Some(&user), &[("x-cordon-tier", "7")])
        .await
        .assert_error("tier 7", 400, "invalid_request_error", "invalid_request");
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_errors() {
    let keys = Keys::generate();
    let (_jwks, mut gw) = start(&keys);
    let (mut secrets, mut texts) = run_valid_requests(&gw, &keys).await;
    for (case, _, text) in run_bad_cases(&gw, &keys).await {
        secrets.extend(case.bearer);
        texts.push(text);
    }
    gw.stop();

    secrets.extend(
        [
            API_KEY,
            UNKNOWN_API_KEY,
            HS_SECRET,
            SUB_DE,
            SUB_US,
            SUB_HS,
            SUB_BAD,
            SUB_ZZ,
            "raw-subject-admin-0000",
        ]
        .map(str::to_string),
    );
    // A token's signature part alone is as good as a leak of the token.
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|s| s.rsplit_once('.').map(|(_, sig)| sig.to_string()))
        .filter(|sig| sig.len() >= 16)
        .collect();
    secrets.extend(signatures);

    let log = gw.stderr_log();
    assert!(
        contains(&log, "JWKS loaded"),
        "the captured log should hold the gateway's log lines"
    );
    let audit_files = files_under(&gw.data_dir().join("audit"));
    assert!(!audit_files.is_empty(), "the audit stores were written");
    let audit: Vec<(PathBuf, Vec<u8>)> = audit_files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    for s in &secrets {
        assert!(
            !contains(&log, s),
            "the log contains a secret or raw subject id: {s}"
        );
        for (p, bytes) in &audit {
            assert!(
                !contains(bytes, s),
                "{} contains a secret or raw subject id: {s}",
                p.display()
            );
        }
        for t in &texts {
            assert!(!t.contains(s.as_str()), "an answer contains a secret: {s}\n{t}");
        }
    }
}
