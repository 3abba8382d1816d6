//! Tests of token keys, issuing and verification, including the attacks on them.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac_free::sign_hs256;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, Header};

use super::*;

mod properties;

const HOUR: Duration = Duration::from_secs(3600);

fn tokens_with(keys: Keys) -> Tokens {
    Tokens::new(
        keys,
        "guichet",
        "hackitech",
        HOUR,
        HOUR * 24,
        Duration::from_secs(30),
    )
}

fn ed_tokens() -> Tokens {
    let keys = Keys::from_private_pem(Algorithm::EdDSA, generate_ed25519_pem().as_bytes()).unwrap();
    tokens_with(keys)
}

fn demo() -> Subject<'static> {
    Subject {
        user_id: 1,
        username: "demo",
        role: "student",
    }
}

/// Signs arbitrary claims with the tokens' own key, for forging edge cases.
fn sign(tokens: &Tokens, claims: &serde_json::Value) -> String {
    let mut header = Header::new(tokens.keys.algorithm);
    header.kid = Some(tokens.keys.kid.clone());
    jsonwebtoken::encode(&header, claims, &tokens.keys.encoding).unwrap()
}

fn claims_json(tokens: &Tokens) -> serde_json::Value {
    let (_, claims) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
    serde_json::to_value(claims).unwrap()
}

/// The public key of an Ed25519 JWK as SPKI PEM.
fn ed_public_pem(jwk: &Jwk) -> String {
    let AlgorithmParameters::OctetKeyPair(params) = &jwk.algorithm else {
        panic!("an OKP key")
    };
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend(URL_SAFE_NO_PAD.decode(&params.x).unwrap());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    )
}

#[test]
fn an_issued_access_token_verifies_with_the_inherited_claims() {
    let tokens = ed_tokens();
    let (token, issued) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
    let claims = tokens.verify(&token, TokenType::Access).unwrap();
    assert_eq!(claims, issued);
    assert_eq!(claims.sub, "1");
    assert_eq!(claims.user_id, 1);
    assert_eq!(claims.username, "demo");
    assert_eq!(claims.role, "student");
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.iss, "guichet");
    assert_eq!(claims.aud, "hackitech");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(tokens.keys.kid.as_str()));
}

#[test]
fn every_algorithm_family_round_trips() {
    let hs = tokens_with(Keys::from_secret(&[7u8; 32]).unwrap());
    let (token, _) = hs.issue(&demo(), TokenType::Access, None).unwrap();
    assert!(hs.verify(&token, TokenType::Access).is_ok());
    assert!(
        hs.keys().jwks().keys.is_empty(),
        "a shared secret is never published"
    );
    assert!(Keys::from_secret(b"short").is_err());
}

#[test]
fn alg_none_is_rejected() {
    let tokens = ed_tokens();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims_json(&tokens).to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert_eq!(
            tokens.verify(&token, TokenType::Access),
            Err(TokenError::Invalid)
        );
    }
}

#[test]
fn an_hs256_token_signed_with_the_public_key_is_rejected() {
    let tokens = ed_tokens();
    let jwk = &tokens.keys.jwks().keys[0];
    let public_pem = ed_public_pem(jwk);
    let header = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": tokens.keys.kid}).to_string(),
    );
    let payload = URL_SAFE_NO_PAD.encode(claims_json(&tokens).to_string());
    let signing_input = format!("{header}.{payload}");
    let signature =
        URL_SAFE_NO_PAD.encode(sign_hs256(public_pem.as_bytes(), signing_input.as_bytes()));
    let token = format!("{signing_input}.{signature}");
    assert_eq!(
        tokens.verify(&token, TokenType::Access),
        Err(TokenError::Invalid)
    );
}

#[test]
fn expired_and_not_yet_valid_tokens_are_rejected_beyond_the_leeway() {
    let tokens = ed_tokens();
    let now = unix_now();
    let mut claims = claims_json(&tokens);
    claims["exp"] = (now - 60).into();
    assert_eq!(
        tokens.verify(&sign(&tokens, &claims), TokenType::Access),
        Err(TokenError::Invalid)
    );
    claims["exp"] = (now - 10).into();
    assert!(
        tokens
            .verify(&sign(&tokens, &claims), TokenType::Access)
            .is_ok(),
        "within leeway"
    );
    claims["exp"] = (now + 600).into();
    claims["nbf"] = (now + 120).into();
    assert_eq!(
        tokens.verify(&sign(&tokens, &claims), TokenType::Access),
        Err(TokenError::Invalid)
    );
}

#[test]
fn a_remembered_access_token_serves_only_its_verifier_and_only_until_it_expires() {
    let tokens = ed_tokens();
    let (token, issued) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
    let first = tokens.verify_access(&token).unwrap();
    let again = tokens.verify_access(&token).unwrap();
    assert_eq!(first, again);
    assert_eq!(first.username.as_deref(), Some(issued.username.as_str()));
    // Another verifier (another key) refuses the token a first one remembered.
    let other = ed_tokens();
    assert_eq!(other.verify_access(&token), Err(TokenError::Invalid));
    // Refused tokens are never remembered, and a refresh token is not an access token.
    let (refresh, _) = tokens
        .issue(&demo(), TokenType::Refresh, Some("f"))
        .unwrap();
    assert_eq!(tokens.verify_access(&refresh), Err(TokenError::WrongType));
    assert_eq!(tokens.verify_access(&refresh), Err(TokenError::WrongType));
    // An entry is not used past the token's expiry and the leeway.
    let leeway = 30;
    let current = |v| v == tokens.verifier;
    assert!(super::super::verified::get(&token, issued.exp + leeway, current).is_some());
    assert!(super::super::verified::get(&token, issued.exp + leeway + 1, current).is_none());
}

#[test]
fn wrong_issuer_or_audience_is_rejected() {
    let tokens = ed_tokens();
    for (claim, value) in [("iss", "someone-else"), ("aud", "another-app")] {
        let mut claims = claims_json(&tokens);
        claims[claim] = value.into();
        assert_eq!(
            tokens.verify(&sign(&tokens, &claims), TokenType::Access),
            Err(TokenError::Invalid),
            "{claim}"
        );
    }
}

#[test]
fn a_refresh_token_is_not_an_access_token() {
    let tokens = ed_tokens();
    let (refresh, _) = tokens
        .issue(&demo(), TokenType::Refresh, Some("family-1"))
        .unwrap();
    assert_eq!(
        tokens.verify(&refresh, TokenType::Access),
        Err(TokenError::WrongType)
    );
    let claims = tokens.verify(&refresh, TokenType::Refresh).unwrap();
    assert_eq!(claims.family.as_deref(), Some("family-1"));
}

#[test]
fn a_tampered_payload_is_rejected() {
    let tokens = ed_tokens();
    let (token, _) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_json(&tokens);
    claims["role"] = "admin".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        tokens.verify(&forged, TokenType::Access),
        Err(TokenError::Invalid)
    );
}

#[test]
fn an_unknown_kid_is_rejected_and_rotated_keys_are_accepted() {
    let old = ed_tokens();
    let (old_token, _) = old.issue(&demo(), TokenType::Access, None).unwrap();
    let mut keys =
        Keys::from_private_pem(Algorithm::EdDSA, generate_ed25519_pem().as_bytes()).unwrap();
    let new = tokens_with(
        Keys::from_private_pem(Algorithm::EdDSA, generate_ed25519_pem().as_bytes()).unwrap(),
    );
    assert_eq!(
        new.verify(&old_token, TokenType::Access),
        Err(TokenError::Invalid)
    );

    let old_public = ed_public_pem(&old.keys.jwks().keys[0]);
    let kid = keys.accept_public_pem(old_public.as_bytes()).unwrap();
    assert_eq!(kid, old.keys.kid);
    assert_eq!(keys.jwks().keys.len(), 2);
    let rotated = tokens_with(keys);
    assert!(rotated.verify(&old_token, TokenType::Access).is_ok());
}

#[test]
fn a_token_without_kid_is_checked_against_the_current_signing_key_only() {
    let old = ed_tokens();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = None;
    let no_kid = jsonwebtoken::encode(&header, &claims_json(&old), &old.keys.encoding).unwrap();
    assert_eq!(
        old.verify(&no_kid, TokenType::Access).unwrap().username,
        "demo"
    );
    // After a rotation the old key is known by its `kid` only: without one, the new key is
    // the one tried, and the old signature does not match it.
    let mut keys =
        Keys::from_private_pem(Algorithm::EdDSA, generate_ed25519_pem().as_bytes()).unwrap();
    keys.accept_public_pem(ed_public_pem(&old.keys.jwks().keys[0]).as_bytes())
        .unwrap();
    let rotated = tokens_with(keys);
    assert_eq!(
        rotated.verify(&no_kid, TokenType::Access),
        Err(TokenError::Invalid)
    );
    // The algorithm is still the configured one, `kid` or not.
    let hs = tokens_with(Keys::from_secret(&[7; 32]).unwrap());
    let mut header = Header::new(Algorithm::HS384);
    header.kid = None;
    let other_alg = jsonwebtoken::encode(
        &header,
        &claims_json(&hs),
        &EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    assert_eq!(
        hs.verify(&other_alg, TokenType::Access),
        Err(TokenError::Invalid)
    );
}

/// A token whose JOSE header is exactly `header` (text, so repeated names can be written),
/// validly signed with the tokens' own key.
fn sign_with_header(tokens: &Tokens, header: &str, claims: &serde_json::Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &tokens.keys.encoding,
        tokens.keys.algorithm,
    )
    .unwrap();
    format!("{input}.{signature}")
}

fn plain_header(tokens: &Tokens) -> serde_json::Value {
    serde_json::json!({"alg": tokens.keys.algorithm, "typ": "JWT", "kid": tokens.keys.kid})
}

#[test]
fn crit_and_b64_header_parameters_are_refused() {
    let tokens = ed_tokens();
    let claims = claims_json(&tokens);
    let honest = sign_with_header(&tokens, &plain_header(&tokens).to_string(), &claims);
    assert!(
        tokens.verify(&honest, TokenType::Access).is_ok(),
        "the control case"
    );
    for extra in [
        serde_json::json!({"crit": ["exp"], "exp": 1}),
        serde_json::json!({"crit": []}),
        serde_json::json!({"crit": null}),
        serde_json::json!({"b64": false}),
        serde_json::json!({"b64": false, "crit": ["b64"]}),
        serde_json::json!({"b64": true}),
    ] {
        let mut header = plain_header(&tokens);
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        let token = sign_with_header(&tokens, &header.to_string(), &claims);
        assert_eq!(
            tokens.verify(&token, TokenType::Access),
            Err(TokenError::Invalid),
            "{header}"
        );
        assert_eq!(
            tokens.verify_access(&token),
            Err(TokenError::Invalid),
            "{header}"
        );
    }
}

#[test]
fn repeated_header_parameters_are_refused() {
    let tokens = ed_tokens();
    let claims = claims_json(&tokens);
    let kid = &tokens.keys.kid;
    for header in [
        format!(r#"{{"alg":"EdDSA","kid":"{kid}","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"HS256","alg":"EdDSA","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["x"],"crit":null}}"#),
    ] {
        let token = sign_with_header(&tokens, &header, &claims);
        assert_eq!(
            tokens.verify(&token, TokenType::Access),
            Err(TokenError::Invalid),
            "{header}"
        );
    }
    let once = format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#);
    assert!(tokens
        .verify(
            &sign_with_header(&tokens, &once, &claims),
            TokenType::Access
        )
        .is_ok());
}

#[test]
fn signed_claims_no_identity_header_can_carry_are_refused() {
    let tokens = ed_tokens();
    for (claim, value) in [
        ("username", "demo\r\nX-User-Role: admin"),
        ("username", "demo\0"),
        ("username", "de\tmo"),
        ("username", "de\u{7f}mo"),
        ("username", "de\u{85}mo"),
        ("role", "student\n"),
    ] {
        let mut claims = claims_json(&tokens);
        claims[claim] = value.into();
        let access = sign(&tokens, &claims);
        assert_eq!(
            tokens.verify(&access, TokenType::Access),
            Err(TokenError::Invalid),
            "{claim}: {value:?}"
        );
        assert_eq!(tokens.verify_access(&access), Err(TokenError::Invalid));
        claims["token_type"] = "refresh".into();
        claims["family"] = "f".into();
        assert_eq!(
            tokens.verify(&sign(&tokens, &claims), TokenType::Refresh),
            Err(TokenError::Invalid),
            "{claim}: {value:?}"
        );
    }
    let mut claims = claims_json(&tokens);
    claims["username"] = "zoë".into();
    assert!(tokens
        .verify(&sign(&tokens, &claims), TokenType::Access)
        .is_ok());
}

#[test]
fn a_token_needs_exactly_three_segments() {
    let tokens = ed_tokens();
    let (token, _) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
    for bad in [
        format!("{token}."),
        format!("{token}.x"),
        format!("x.{token}"),
        token.rsplit_once('.').unwrap().0.to_string(),
    ] {
        assert_eq!(
            tokens.verify(&bad, TokenType::Access),
            Err(TokenError::Invalid),
            "{bad}"
        );
    }
}

/// HMAC-SHA256 written out, so the attack test does not depend on the library under test.
mod hmac_free {
    use sha2::{Digest, Sha256};

    pub fn sign_hs256(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner_hash = Sha256::new()
            .chain_update(&inner)
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(&outer)
            .chain_update(inner_hash)
            .finalize()
            .to_vec()
    }
}
