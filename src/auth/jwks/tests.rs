use http::HeaderValue;
use serde_json::json;

use super::*;

fn rsa_jwk(kid: &str) -> Value {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let pem = rsa.private_key_to_pem().unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).unwrap()
}

fn cache_control(value: &str) -> Duration {
    lifetime(Some(&HeaderValue::from_str(value).unwrap()))
}

#[test]
fn max_age_sets_the_lifetime_within_bounds() {
    assert_eq!(
        cache_control("public, max-age=600"),
        Duration::from_secs(600)
    );
    assert_eq!(cache_control("max-age=\"90\""), Duration::from_secs(90));
    assert_eq!(cache_control("max-age=0"), MIN_LIFETIME);
    assert_eq!(cache_control("max-age=99999999"), MAX_LIFETIME);
    // Keycloak answers its certs with `no-cache`: kept the default time, not fetched per token.
    assert_eq!(cache_control("no-cache"), DEFAULT_LIFETIME);
    assert_eq!(cache_control("max-age=soon"), DEFAULT_LIFETIME);
    assert_eq!(lifetime(None), DEFAULT_LIFETIME);
}

#[test]
fn only_public_signing_keys_are_kept() {
    let signing = rsa_jwk("sig-1");
    let mut encryption = rsa_jwk("enc-1");
    encryption["use"] = json!("enc");
    let symmetric =
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"});
    let unknown = json!({"kty": "XYZ", "kid": "odd"});
    let document = json!({"keys": [signing, encryption, symmetric, unknown]});
    let set = KeySet::parse(Bytes::from(document.to_string())).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.has("sig-1"));
    assert!(!set.has("enc-1") && !set.has("hmac"));

    // A document with nothing usable reads as an empty set; saved in a file, it is refused.
    let only_symmetric = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
    let empty = KeySet::parse(Bytes::from(only_symmetric.to_string())).unwrap();
    assert!(empty.is_empty());
    let refused = Jwks::from_document(Bytes::from(only_symmetric.to_string()));
    assert!(refused.err().unwrap().contains("no public signing key"));
    assert!(KeySet::parse(Bytes::from_static(b"<html>")).is_err());
}

#[test]
fn a_key_verifies_only_algorithms_of_its_type_and_its_pinned_alg() {
    let mut pinned = rsa_jwk("pinned");
    pinned["alg"] = json!("RS384");
    let mut free = rsa_jwk("free");
    free.as_object_mut().unwrap().remove("alg");
    let document = json!({"keys": [free, pinned]});
    let set = KeySet::parse(Bytes::from(document.to_string())).unwrap();
    assert!(set.named("free", Algorithm::RS256).is_some());
    assert!(set.named("free", Algorithm::PS256).is_some());
    assert!(set.named("free", Algorithm::ES256).is_none());
    assert!(set.named("free", Algorithm::HS256).is_none());
    assert!(set.named("pinned", Algorithm::RS384).is_some());
    assert!(set.named("pinned", Algorithm::RS256).is_none());
    // Without a kid, a token needs exactly one key that fits.
    assert!(
        set.only_key_for(Algorithm::RS384).is_none(),
        "both keys fit RS384"
    );
    assert!(set.only_key_for(Algorithm::RS256).is_some());
    assert!(set.only_key_for(Algorithm::ES256).is_none());
    let two = json!({"keys": [rsa_jwk("a"), rsa_jwk("b")]});
    let two = KeySet::parse(Bytes::from(two.to_string())).unwrap();
    assert!(two.only_key_for(Algorithm::RS256).is_none());
    // One kid, two keys of different algorithms: each token finds the key of its own.
    let mut pinned_rs384 = rsa_jwk("shared");
    pinned_rs384["alg"] = json!("RS384");
    let shared = json!({"keys": [rsa_jwk("shared"), pinned_rs384]});
    let shared = KeySet::parse(Bytes::from(shared.to_string())).unwrap();
    assert!(shared.named("shared", Algorithm::RS256).is_some());
    assert!(shared.named("shared", Algorithm::RS384).is_some());
    assert_eq!(shared.len(), 2);
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_leaves_the_keys_and_says_why() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url: Uri = format!("http://{}/certs", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let jwks = Jwks::from_url(url).unwrap();
    assert!(jwks.due());
    jwks.refresh().await;
    assert_eq!(jwks.keys().len(), 0);
    assert!(jwks.last_error().unwrap().contains("cannot connect"));
    assert_eq!(jwks.failures(), 1);
    assert!(!jwks.due(), "the next try waits {RETRY_AFTER:?}");
    // A token with an unknown kid fetches again once, then not within the interval.
    jwks.refresh_for_unknown_kid().await;
    jwks.refresh_for_unknown_kid().await;
    assert_eq!(jwks.failures(), 2);
}
