//! Test-only helpers: keys generated at test time with aws-lc-rs, their JWKs, token signing with
//! jsonwebtoken's `EncodingKey`, hand-built tokens for the malformed cases, and issuer specs.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cordon_policy::file::{IdentitySection, IssuerSpec};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISS: &str = "https://login.example.com/";
pub const AUD: &str = "cordon";
pub const NOW: u64 = 1_800_000_000;

/// A signing key and its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// RSA only: the public key as X.509 DER (SubjectPublicKeyInfo).
    pub public_der: Vec<u8>,
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

pub fn rsa_key(kid: &str) -> TestKey {
    let kp = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = kp.as_der().unwrap();
    let public = kp.public_key();
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    let public_der = public.as_der().unwrap().as_ref().to_vec();
    TestKey {
        alg: Algorithm::RS256,
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(pkcs8.as_ref())),
        jwk: json!({"kty":"RSA","kid":kid,"use":"sig","alg":"RS256",
                    "n":URL_SAFE_NO_PAD.encode(n),"e":URL_SAFE_NO_PAD.encode(e)}),
        public_der,
    }
}

pub fn ec_key(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = kp.public_key().as_ref();
    assert_eq!(point.len(), 65);
    TestKey {
        alg: Algorithm::ES256,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty":"EC","crv":"P-256","kid":kid,"use":"sig","alg":"ES256",
                    "x":URL_SAFE_NO_PAD.encode(&point[1..33]),"y":URL_SAFE_NO_PAD.encode(&point[33..])}),
        public_der: Vec::new(),
    }
}

pub fn ed_key(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    TestKey {
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: crate::ed25519_jwk(kid, kp.public_key().as_ref()),
        public_der: Vec::new(),
    }
}

/// Standard valid claims at [`NOW`], residency nested at `address.country`.
pub fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "user-42",
        "exp": NOW + 600, "nbf": NOW - 10, "iat": NOW - 10,
        "address": {"country": "DE"}
    })
}

pub fn sign(key: &TestKey, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

pub fn sign_without_kid(key: &TestKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(key.alg), claims, &key.encoding).unwrap()
}

pub fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

pub fn write_jwks(dir: &Path, name: &str, keys: &[&TestKey]) {
    std::fs::write(dir.join(name), serde_json::to_vec(&jwks(keys)).unwrap()).unwrap();
}

pub fn issuer(algs: &[&str]) -> IssuerSpec {
    IssuerSpec {
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        jwks_url: None,
        jwks_file: Some("jwks.json".into()),
        hs256_secret_env: None,
        algorithms: algs.iter().map(|a| a.to_string()).collect(),
        subject_claim: "sub".into(),
        residency_claim: "address.country".into(),
        leeway_seconds: 30,
    }
}

pub fn section(issuers: Vec<IssuerSpec>) -> IdentitySection {
    IdentitySection {
        issuers,
        ..IdentitySection::default()
    }
}
