use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::*;

const SECRET: &[u8] = b"django-insecure-0123456789abcdef0123456789abcdef";

fn window_open() -> LegacyTokens {
    LegacyTokens::new(SECRET, unix_now() + 3600, 30)
}

fn mint(claims: &Value, header: &Header, secret: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims(token_type: &str, user_id: Value) -> Value {
    let now = unix_now();
    json!({"token_type": token_type, "exp": now + 300, "iat": now, "jti": "e2d981b9", "user_id": user_id})
}

#[test]
fn access_and_refresh_tokens_verify_by_type_with_either_form_of_user_id() {
    let legacy = window_open();
    let header = Header::new(Algorithm::HS256);
    for user_id in [json!(42), json!("42")] {
        let access = mint(&claims("access", user_id.clone()), &header, SECRET);
        assert_eq!(
            legacy.verify(&access, TokenType::Access).unwrap().user_id,
            42
        );
        assert_eq!(
            legacy.verify(&access, TokenType::Refresh).unwrap_err(),
            TokenError::WrongType
        );
        let refresh = mint(&claims("refresh", user_id), &header, SECRET);
        assert_eq!(
            legacy.verify(&refresh, TokenType::Refresh).unwrap().jti,
            "e2d981b9"
        );
    }
    let not_a_number = mint(&claims("access", json!("ada")), &header, SECRET);
    assert!(legacy.verify(&not_a_number, TokenType::Access).is_err());
}

#[test]
fn other_secrets_kids_algorithms_and_expired_tokens_are_refused() {
    let legacy = window_open();
    let header = Header::new(Algorithm::HS256);
    let other_secret = mint(
        &claims("access", json!(1)),
        &header,
        b"another-secret-another-secret-another",
    );
    let mut with_kid = Header::new(Algorithm::HS256);
    with_kid.kid = Some("hs256".to_string());
    let kid = mint(&claims("access", json!(1)), &with_kid, SECRET);
    let hs384 = mint(
        &claims("access", json!(1)),
        &Header::new(Algorithm::HS384),
        SECRET,
    );
    let mut old = claims("access", json!(1));
    old["exp"] = json!(unix_now() - 60);
    let expired = mint(&old, &header, SECRET);
    let good = mint(&claims("access", json!(1)), &header, SECRET);
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_payload = URL_SAFE_NO_PAD.encode(claims("access", json!(2)).to_string());
    let tampered = format!("{head}.{forged_payload}.{signature}");
    for token in [other_secret, kid, hs384, expired, tampered] {
        assert_eq!(
            legacy.verify(&token, TokenType::Access).unwrap_err(),
            TokenError::Invalid,
            "{token}"
        );
    }
    assert!(legacy.verify(&good, TokenType::Access).is_ok());
}

#[test]
fn the_closed_window_refuses_everything_and_bounds_what_is_remembered() {
    let header = Header::new(Algorithm::HS256);
    let access = mint(&claims("access", json!(1)), &header, SECRET);
    let closed = LegacyTokens::new(SECRET, unix_now(), 30);
    assert_eq!(
        closed.verify(&access, TokenType::Access).unwrap_err(),
        TokenError::Invalid
    );
    let closing = LegacyTokens::new(SECRET, unix_now() + 10, 30);
    let verified = closing.verify(&access, TokenType::Access).unwrap();
    assert_eq!(
        closing.remember_until(&verified),
        closing.accept_until() - 1
    );
    let open = window_open();
    assert_eq!(open.remember_until(&verified), verified.exp + 30);
    // A mark that the token was used outlasts every second the token is still accepted.
    let marked = open.still_accepted(&verified).as_secs();
    assert!((330..=331).contains(&marked), "{marked}");
    assert!(closing.still_accepted(&verified).as_secs() <= 11);
}
