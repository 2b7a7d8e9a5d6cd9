//! Verification cost: RS256 uncached (signature check every time) vs cached (a hit in the
//! verified-token cache), EdDSA and ES256 uncached, and a workload API key.
//!
//! Keys are generated at start with aws-lc-rs and published through a `jwks_file` in a temp dir.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cordon_identity::{Verifier, ed25519_jwk, hash_api_key};
use cordon_policy::file::{ApiKeySpec, IdentitySection, IssuerSpec};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISS: &str = "https://login.example.com/";

/// PKCS#8 -> the PKCS#1 RSAPrivateKey inside it (what jsonwebtoken's aws-lc RSA signer wants).
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(buf: &[u8]) -> (&[u8], &[u8]) {
        let (len, hdr) = if buf[1] < 0x80 {
            (buf[1] as usize, 2)
        } else {
            let n = (buf[1] & 0x7f) as usize;
            (
                buf[2..2 + n].iter().fold(0usize, |a, b| (a << 8) | *b as usize),
                2 + n,
            )
        };
        (&buf[hdr..hdr + len], &buf[hdr + len..])
    }
    let (outer, _) = tlv(pkcs8);
    let (_, rest) = tlv(outer);
    let (_, rest) = tlv(rest);
    tlv(rest).0.to_vec()
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_pub = rsa.public_key();
    let rsa_jwk = json!({"kty":"RSA","kid":"rsa","alg":"RS256","use":"sig",
        "n": URL_SAFE_NO_PAD.encode(rsa_pub.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(rsa_pub.exponent().big_endian_without_leading_zero())});
    let rsa_enc = EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(rsa.as_der().unwrap().as_ref()));

    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let ed_jwk = ed25519_jwk("ed", ed.public_key().as_ref());
    let ed_enc = EncodingKey::from_ed_der(ed_pkcs8.as_ref());

    let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref()).unwrap();
    let point = ec.public_key().as_ref();
    let ec_jwk = json!({"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256","use":"sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
    let ec_enc = EncodingKey::from_ec_der(ec_pkcs8.as_ref());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(&json!({"keys": [rsa_jwk, ed_jwk, ec_jwk]})).unwrap(),
    )
    .unwrap();
    let section = IdentitySection {
        issuers: vec![IssuerSpec {
            issuer: ISS.into(),
            audiences: vec!["cordon".into()],
            jwks_url: None,
            jwks_file: Some("jwks.json".into()),
            hs256_secret_env: None,
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            subject_claim: "sub".into(),
            residency_claim: "address.country".into(),
            leeway_seconds: 30,
        }],
        api_keys: vec![ApiKeySpec {
            id: "nightly-eval".into(),
            hash: hash_api_key("ck_live_bench_secret"),
            jurisdiction: "EU".parse().unwrap(),
            country: None,
            tier: cordon_types::Tier::NotPersonal,
        }],
        token_cache_seconds: 30,
        ..IdentitySection::default()
    };

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": ISS, "aud": "cordon", "sub": "user-42", "exp": now + 3600,
                        "nbf": now - 10, "address": {"country": "DE"}});
    let rs_tok = sign(Algorithm::RS256, "rsa", &rsa_enc, &claims);
    let ed_tok = sign(Algorithm::EdDSA, "ed", &ed_enc, &claims);
    let ec_tok = sign(Algorithm::ES256, "ec", &ec_enc, &claims);

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let uncached = Verifier::new(&section, dir.path())
        .unwrap()
        .with_token_cache(0, 0);
    let cached = Verifier::new(&section, dir.path()).unwrap();
    for (v, t) in [
        (&uncached, &rs_tok),
        (&uncached, &ed_tok),
        (&uncached, &ec_tok),
        (&cached, &rs_tok),
    ] {
        rt.block_on(v.verify(t, now)).unwrap();
    }

    let mut g = c.benchmark_group("verify");
    g.bench_function("rs256_uncached", |b| {
        b.iter(|| rt.block_on(uncached.verify(black_box(&rs_tok), now)).unwrap())
    });
    g.bench_function("rs256_cached", |b| {
        b.iter(|| rt.block_on(cached.verify(black_box(&rs_tok), now)).unwrap())
    });
    g.bench_function("eddsa_uncached", |b| {
        b.iter(|| rt.block_on(uncached.verify(black_box(&ed_tok), now)).unwrap())
    });
    g.bench_function("es256_uncached", |b| {
        b.iter(|| rt.block_on(uncached.verify(black_box(&ec_tok), now)).unwrap())
    });
    g.bench_function("api_key", |b| {
        b.iter(|| {
            rt.block_on(cached.verify(black_box("ck_live_bench_secret"), now))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
