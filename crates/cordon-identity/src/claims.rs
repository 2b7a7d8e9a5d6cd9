//! Reading a JWT without trusting it: splitting the compact form, decoding header and claims with
//! serde_json, strict typing of `exp`/`nbf` (non-negative integers only: GHSA-h395-gr6q-cpjc), the
//! time and audience checks against a caller-supplied `now`, and dotted claim paths.
//!
//! Nothing here verifies a signature; [`crate::jwt`] does that before any claim is believed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::AuthError;

/// Largest token accepted (bytes). Real ID/access tokens are a few KiB.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A JWT split and decoded, not yet verified.
#[derive(Debug)]
pub(crate) struct UnverifiedJwt {
    /// The header's `alg`, as written.
    pub alg: String,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `exp`, if present (type-checked).
    pub exp: Option<u64>,
    /// `nbf`, if present (type-checked).
    pub nbf: Option<u64>,
}

/// Splits and decodes a compact JWS. Rejects anything that is not exactly three base64url parts,
/// a JSON-object header with a string `alg`, and a JSON-object payload with well-typed `exp`/`nbf`.
pub(crate) fn parse(token: &str) -> Result<UnverifiedJwt, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::malformed(format!(
            "token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::malformed("a JWT has three dot-separated parts"));
    };
    // An empty signature (an `alg: none` token) parses; the algorithm check refuses it.
    if h.is_empty() || p.is_empty() {
        return Err(AuthError::malformed("the JWT header or payload is empty"));
    }
    let header = decode_object(h, "header")?;
    let claims = decode_object(p, "payload")?;
    // The signature is only decoded by the verifier, but reject garbage early and uniformly.
    if URL_SAFE_NO_PAD.decode(s).is_err() {
        return Err(AuthError::malformed("the signature is not base64url"));
    }

    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err(AuthError::malformed("header 'alg' is not a string")),
        None => return Err(AuthError::malformed("header has no 'alg'")),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::malformed("header 'kid' is not a string")),
    };
    if header.contains_key("crit") {
        // RFC 7515 4.1.11: extensions we do not understand must make the token invalid.
        return Err(AuthError::malformed(
            "header lists critical extensions ('crit') this gateway does not implement",
        ));
    }

    let exp = time_claim(&claims, "exp")?;
    let nbf = time_claim(&claims, "nbf")?;
    Ok(UnverifiedJwt {
        alg,
        kid,
        claims,
        exp,
        nbf,
    })
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::malformed(format!("the {what} is not base64url (without padding)")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AuthError::malformed(format!("the {what} is not a JSON object"))),
        Err(_) => Err(AuthError::malformed(format!("the {what} is not valid JSON"))),
    }
}

/// `exp`/`nbf` must be JSON integers >= 0 when present. A string, a float (even `1.0`), a negative
/// number, `null`, or a number too large for u64 is a rejection, never "absent".
pub(crate) fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(AuthError::malformed(format!(
                "claim '{name}' must be a non-negative integer number of seconds"
            ))),
        },
        Some(_) => Err(AuthError::malformed(format!(
            "claim '{name}' must be a number (non-negative integer seconds), not another JSON type"
        ))),
    }
}

/// The token's `iss`. Required.
pub(crate) fn issuer(claims: &Map<String, Value>) -> Result<&str, AuthError> {
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s),
        None => Err(AuthError::missing_claim("iss")),
        Some(_) => Err(AuthError::malformed("claim 'iss' is not a string")),
    }
}

/// `exp` (required) and `nbf` (optional) against `now`, with `leeway` seconds of clock skew.
pub(crate) fn check_times(
    exp: Option<u64>,
    nbf: Option<u64>,
    now: u64,
    leeway: u64,
) -> Result<u64, AuthError> {
    let exp = exp.ok_or_else(|| AuthError::missing_claim("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(AuthError::TokenExpired { exp, now, leeway });
    }
    if let Some(nbf) = nbf
        && now.saturating_add(leeway) < nbf
    {
        return Err(AuthError::TokenNotYetValid { nbf, now, leeway });
    }
    Ok(exp)
}

/// `aud` (required): a string or an array of strings, at least one of which is accepted.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    accepted: &[String],
    issuer: &str,
) -> Result<(), AuthError> {
    let wrong = || AuthError::WrongAudience {
        issuer: issuer.to_string(),
        accepted: accepted.to_vec(),
    };
    match claims.get("aud") {
        None => Err(AuthError::missing_claim("aud")),
        Some(Value::String(a)) => {
            if accepted.iter().any(|x| x == a) {
                Ok(())
            } else {
                Err(wrong())
            }
        }
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                let Value::String(a) = item else {
                    return Err(AuthError::malformed(
                        "claim 'aud' holds a value that is not a string",
                    ));
                };
                found |= accepted.iter().any(|x| x == a);
            }
            if found { Ok(()) } else { Err(wrong()) }
        }
        Some(_) => Err(AuthError::malformed(
            "claim 'aud' must be a string or an array of strings",
        )),
    }
}

/// Looks up a claim by path. Dots separate nesting levels (`address.country`), but a key that
/// itself contains dots (namespaced claims such as `https://example.com/country`) is found too: at
/// each level the longest remaining path is tried as a literal key first.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    // Try splitting at each dot, longest prefix first.
    let mut cut = path.len();
    while let Some(i) = path[..cut].rfind('.') {
        let (head, rest) = (&path[..i], &path[i + 1..]);
        if let Some(Value::Object(inner)) = claims.get(head)
            && let Some(v) = lookup(inner, rest)
        {
            return Some(v);
        }
        cut = i;
    }
    None
}

/// A claim that must be a non-empty string.
pub(crate) fn string_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    match lookup(claims, path) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn token(h: Value, p: Value) -> String {
        format!("{}.{}.{}", b64(&h), b64(&p), URL_SAFE_NO_PAD.encode(b"sig"))
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parses_header_and_claims() {
        let t = token(json!({"alg":"RS256","kid":"k1"}), json!({"exp": 10, "nbf": 5}));
        let p = parse(&t).unwrap();
        assert_eq!(p.alg, "RS256");
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!((p.exp, p.nbf), (Some(10), Some(5)));
    }

    #[test]
    fn rejects_structural_garbage() {
        for bad in [
            "a.b",
            "a.b.c.d",
            "..",
            "e30..c2ln",
            "!!!.e30.c2ln",
            "e30.!!!.c2ln",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.reason(), cordon_types::ReasonCode::MalformedToken, "{bad}");
        }
        // header not an object, alg missing, kid a number, crit present
        for h in [
            json!([1]),
            json!({"typ":"JWT"}),
            json!({"alg":"RS256","kid":5}),
            json!({"alg":"RS256","crit":["b64"]}),
        ] {
            let e = parse(&token(h, json!({}))).unwrap_err();
            assert_eq!(e.reason(), cordon_types::ReasonCode::MalformedToken);
        }
        let e = parse(&format!(
            "{}.{}.x",
            b64(&json!({"alg":"RS256"})),
            URL_SAFE_NO_PAD.encode(b"not json")
        ))
        .unwrap_err();
        assert_eq!(e.reason(), cordon_types::ReasonCode::MalformedToken);
    }

    #[test]
    fn wrong_typed_times_are_rejections() {
        for p in [
            json!({"exp": "9999999999"}),
            json!({"exp": -1}),
            json!({"exp": 1.5}),
            json!({"exp": 10.0}),
            json!({"exp": null}),
            json!({"exp": 1e30}),
            json!({"nbf": 1.5}),
            json!({"nbf": "0"}),
            json!({"nbf": true}),
        ] {
            let e = parse(&token(json!({"alg":"RS256"}), p.clone())).unwrap_err();
            assert_eq!(e.reason(), cordon_types::ReasonCode::MalformedToken, "{p}");
        }
    }

    #[test]
    fn time_checks_respect_leeway() {
        assert_eq!(check_times(Some(100), None, 100, 0), Ok(100));
        assert_eq!(check_times(Some(100), None, 130, 30), Ok(100));
        assert!(matches!(
            check_times(Some(100), None, 131, 30),
            Err(AuthError::TokenExpired { .. })
        ));
        assert!(matches!(
            check_times(None, None, 1, 0),
            Err(AuthError::MissingClaim { .. })
        ));
        assert!(matches!(
            check_times(Some(u64::MAX), Some(50), 10, 30),
            Err(AuthError::TokenNotYetValid { .. })
        ));
        assert_eq!(check_times(Some(u64::MAX), Some(40), 10, 30), Ok(u64::MAX));
    }

    #[test]
    fn audience_string_or_array() {
        let acc = vec!["cordon".to_string()];
        assert!(check_audience(&obj(json!({"aud":"cordon"})), &acc, "i").is_ok());
        assert!(check_audience(&obj(json!({"aud":["x","cordon"]})), &acc, "i").is_ok());
        assert!(matches!(
            check_audience(&obj(json!({"aud":"x"})), &acc, "i"),
            Err(AuthError::WrongAudience { .. })
        ));
        assert!(matches!(
            check_audience(&obj(json!({"aud":[]})), &acc, "i"),
            Err(AuthError::WrongAudience { .. })
        ));
        assert!(matches!(
            check_audience(&obj(json!({})), &acc, "i"),
            Err(AuthError::MissingClaim { .. })
        ));
        assert!(matches!(
            check_audience(&obj(json!({"aud":5})), &acc, "i"),
            Err(AuthError::MalformedToken { .. })
        ));
    }

    #[test]
    fn dotted_paths_and_literal_dotted_keys() {
        let c = obj(json!({
            "address": {"country": "DE", "geo": {"j": "EU"}},
            "https://example.com/country": "FR",
            "n": 5
        }));
        assert_eq!(string_at(&c, "address.country"), Some("DE"));
        assert_eq!(string_at(&c, "address.geo.j"), Some("EU"));
        assert_eq!(string_at(&c, "https://example.com/country"), Some("FR"));
        assert_eq!(string_at(&c, "address.missing"), None);
        assert_eq!(string_at(&c, "n"), None);
        assert_eq!(string_at(&c, "address"), None);
    }
}
