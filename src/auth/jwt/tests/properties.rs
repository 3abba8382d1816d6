//! Properties on input no one chose: verification never panics, never accepts what it did not
//! issue, and what it accepts can always be sent upstream.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::auth::identity::set_upstream_headers;

fn hs_tokens() -> Tokens {
    tokens_with(Keys::from_secret(&[7u8; 32]).unwrap())
}

/// Any text, control characters included (`any::<String>()` leaves them out).
fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        any::<char>(),
        prop::char::range('\0', '\u{1f}'),
        prop::char::range('\u{7f}', '\u{9f}'),
    ];
    prop::collection::vec(c, 0..16).prop_map(String::from_iter)
}

/// Text shaped like a token: three or so segments of base64url and a few odd characters.
fn token_like() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_=+/%. -]{0,24}", 0..5).prop_map(|s| s.join("."))
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, char),
    Remove(usize, usize),
    Truncate(usize),
}

fn a_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(
            "ABCXYZabcxyz0189-_.=+/ ".chars().collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), a_char()).prop_map(|(at, c)| Mutation::Replace(at, c)),
        (any::<usize>(), a_char()).prop_map(|(at, c)| Mutation::Insert(at, c)),
        (any::<usize>(), 1..8usize).prop_map(|(at, n)| Mutation::Remove(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    prop::collection::vec(one, 1..4)
}

fn mutate(token: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    for mutation in mutations {
        let len = chars.len().max(1);
        match *mutation {
            Mutation::Replace(at, c) if !chars.is_empty() => chars[at % len] = c,
            Mutation::Replace(..) => {}
            Mutation::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
            Mutation::Remove(at, n) => {
                let start = at % len;
                let end = (start + n).min(chars.len());
                chars.drain(start.min(end)..end);
            }
            Mutation::Truncate(at) => chars.truncate(at % len),
        }
    }
    chars.into_iter().collect()
}

/// JSON values small enough to read in a failure, with the strings that matter here.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec!["HS256", "hs256", "EdDSA", "none", "JWT", "b64", "exp"])
            .prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn header_parameters() -> impl Strategy<Value = Vec<(&'static str, Value)>> {
    let name = prop::sample::select(vec![
        "alg", "kid", "typ", "crit", "b64", "cty", "jku", "x5u", "zip", "enc",
    ]);
    prop::collection::vec((name, json_value()), 0..5)
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_never_verifies(
        text in prop_oneof![text(), token_like()]
    ) {
        let tokens = hs_tokens();
        prop_assert!(tokens.verify(&text, TokenType::Access).is_err());
        prop_assert!(tokens.verify(&text, TokenType::Refresh).is_err());
        prop_assert!(tokens.verify_access(&text).is_err());
    }

    #[test]
    fn a_mutated_token_is_refused_or_still_says_exactly_what_was_issued(
        mutations in mutations(),
    ) {
        let tokens = hs_tokens();
        let (token, issued) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
        let mutated = mutate(&token, &mutations);
        if let Ok(claims) = tokens.verify(&mutated, TokenType::Access) {
            prop_assert_eq!(claims, issued, "{}", mutated);
        }
    }

    #[test]
    fn any_signed_header_with_crit_or_b64_is_refused(parameters in header_parameters()) {
        let tokens = hs_tokens();
        let mut header = plain_header(&tokens);
        for (name, value) in &parameters {
            header[*name] = value.clone();
        }
        let token = sign_with_header(&tokens, &header.to_string(), &claims_json(&tokens));
        let verified = tokens.verify(&token, TokenType::Access);
        if header.get("crit").is_some() || header.get("b64").is_some() {
            prop_assert_eq!(&verified, &Err(TokenError::Invalid), "{}", header);
        }
        if verified.is_ok() {
            prop_assert_eq!(&header["alg"], &json!("HS256"));
            prop_assert_eq!(&header["kid"], &json!("hs256"));
        }
    }

    #[test]
    fn signed_claims_are_refused_or_fit_the_identity_headers(
        username in text(),
        role in prop_oneof![text(), Just("student".to_string())],
    ) {
        let tokens = hs_tokens();
        let mut claims = claims_json(&tokens);
        claims["username"] = username.clone().into();
        claims["role"] = role.clone().into();
        let verified = tokens.verify_access(&sign(&tokens, &claims));
        let fit = !username.chars().chain(role.chars()).any(char::is_control);
        prop_assert_eq!(verified.is_ok(), fit);
        if let Ok(identity) = verified {
            let mut headers = http::HeaderMap::new();
            prop_assert!(set_upstream_headers(&mut headers, &identity, false).is_ok());
        }
    }
}

proptest! {
    // Ed25519 is slow unoptimised, and the parsers before the signature check are shared.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_mutated_eddsa_token_is_refused_or_unchanged(mutations in mutations()) {
        let tokens = ed_tokens();
        let (token, issued) = tokens.issue(&demo(), TokenType::Access, None).unwrap();
        let mutated = mutate(&token, &mutations);
        if let Ok(claims) = tokens.verify(&mutated, TokenType::Access) {
            prop_assert_eq!(claims, issued, "{}", mutated);
        }
    }
}
