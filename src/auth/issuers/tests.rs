use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::*;

const ISSUER: &str = "https://sso.example/realms/hackitech";

struct ProviderKey {
    encoding: EncodingKey,
    jwk: Value,
}

fn provider_key(algorithm: Algorithm, kid: &str) -> ProviderKey {
    let pem = match algorithm {
        Algorithm::ES256 => {
            let group =
                openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
            let key = openssl::ec::EcKey::generate(&group).unwrap();
            openssl::pkey::PKey::from_ec_key(key)
                .unwrap()
                .private_key_to_pem_pkcs8()
                .unwrap()
        }
        _ => openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    };
    let encoding = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    ProviderKey {
        encoding,
        jwk: serde_json::to_value(jwk).unwrap(),
    }
}

fn issuer(keys: &[&ProviderKey]) -> TrustedIssuer {
    let document = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let rules = IssuerRules {
        issuer: ISSUER.to_string(),
        audience: "hackitech-api".to_string(),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        claims: ClaimPaths {
            user_id: "sub".to_string(),
            username: Some("preferred_username".to_string()),
            role: Some("realm_access.roles".to_string()),
        },
        roles: vec![
            ("teacher".to_string(), "instructor".to_string()),
            ("learner".to_string(), "student".to_string()),
        ],
        hierarchy: ["student", "instructor", "admin"]
            .map(String::from)
            .to_vec(),
        leeway: 5,
    };
    let jwks = Jwks::from_document(Bytes::from(document.to_string())).unwrap();
    TrustedIssuer::new(rules, jwks)
}

fn claims(roles: &[&str]) -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER, "aud": "hackitech-api", "sub": "f81d4fae-7dec", "exp": now + 300,
        "iat": now, "preferred_username": "ada", "realm_access": {"roles": roles},
    })
}

fn mint(key: &ProviderKey, algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_give_the_mapped_identity() {
    let rsa = provider_key(Algorithm::RS256, "rsa-1");
    let ec = provider_key(Algorithm::ES256, "ec-1");
    let trusted = issuer(&[&rsa, &ec]);
    let both = claims(&["learner", "teacher", "offline_access"]);
    for token in [
        mint(&rsa, Algorithm::RS256, Some("rsa-1"), &both),
        mint(&ec, Algorithm::ES256, Some("ec-1"), &both),
    ] {
        let vouched = trusted.verify(&token).await.unwrap();
        let identity = vouched.identity;
        assert_eq!(identity.user_id.as_deref(), Some("f81d4fae-7dec"));
        assert_eq!(identity.username.as_deref(), Some("ada"));
        assert_eq!(
            identity.role.as_deref(),
            Some("instructor"),
            "the highest mapped role"
        );
        assert_eq!(identity.issuer.as_deref(), Some(ISSUER));
        assert_eq!(vouched.until, both["exp"].as_u64().unwrap() + 5);
    }
    let unmapped = mint(
        &rsa,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&["offline_access"]),
    );
    assert_eq!(trusted.verify(&unmapped).await.unwrap().identity.role, None);
    let no_kid = mint(&ec, Algorithm::ES256, None, &claims(&["learner"]));
    assert_eq!(
        trusted
            .verify(&no_kid)
            .await
            .unwrap()
            .identity
            .role
            .as_deref(),
        Some("student"),
        "the one ES256 key verifies a token without a kid"
    );
}

#[tokio::test]
async fn wrong_claims_keys_and_algorithms_are_refused() {
    let rsa = provider_key(Algorithm::RS256, "rsa-1");
    let ec = provider_key(Algorithm::ES256, "ec-1");
    let stranger = provider_key(Algorithm::RS256, "rsa-1");
    let trusted = issuer(&[&rsa, &ec]);
    let good = claims(&["learner"]);
    let with = |field: &str, value: Value| {
        let mut changed = good.clone();
        changed[field] = value;
        changed
    };
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let refused = [
        (
            "wrong audience",
            mint(
                &rsa,
                Algorithm::RS256,
                Some("rsa-1"),
                &with("aud", json!("other")),
            ),
        ),
        (
            "wrong issuer",
            mint(
                &rsa,
                Algorithm::RS256,
                Some("rsa-1"),
                &with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "expired",
            mint(
                &rsa,
                Algorithm::RS256,
                Some("rsa-1"),
                &with("exp", json!(unix_now() - 60)),
            ),
        ),
        (
            "no user id",
            mint(&rsa, Algorithm::RS256, Some("rsa-1"), &no_sub),
        ),
        (
            "a key the provider never published",
            mint(&stranger, Algorithm::RS256, Some("rsa-1"), &good),
        ),
        (
            "an unknown kid",
            mint(&rsa, Algorithm::RS256, Some("rsa-9"), &good),
        ),
        (
            "an EC key named for an RSA token",
            mint(&ec, Algorithm::ES256, Some("rsa-1"), &good),
        ),
        (
            "an algorithm the issuer does not use",
            mint(&rsa, Algorithm::RS512, Some("rsa-1"), &good),
        ),
        (
            "a control character in the username",
            mint(
                &rsa,
                Algorithm::RS256,
                Some("rsa-1"),
                &with("preferred_username", json!("ada\r\nX-User-Role: admin")),
            ),
        ),
    ];
    for (why, token) in refused {
        assert_eq!(
            trusted.verify(&token).await.err(),
            Some(TokenError::Invalid),
            "{why}"
        );
    }
    // HS256 signed with the RSA key's public modulus as the secret: the classic confusion.
    let n = rsa.jwk["n"].as_str().unwrap();
    let confused = jsonwebtoken::encode(
        &Header {
            kid: Some("rsa-1".to_string()),
            ..Header::new(Algorithm::HS256)
        },
        &good,
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        trusted.verify(&confused).await.err(),
        Some(TokenError::Invalid)
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-1"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    assert_eq!(
        trusted.verify(&unsigned).await.err(),
        Some(TokenError::Invalid)
    );
}

#[test]
fn dotted_paths_reach_nested_claims() {
    let claims = json!({"realm_access": {"roles": ["a"]}, "sub": "s"});
    assert_eq!(at_path(&claims, "realm_access.roles"), Some(&json!(["a"])));
    assert_eq!(at_path(&claims, "sub"), Some(&json!("s")));
    assert_eq!(at_path(&claims, "realm_access.missing"), None);
    assert_eq!(at_path(&claims, "sub.deeper"), None);
}
