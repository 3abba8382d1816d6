//! JSON Web Tokens: the signing and verification keys, issuing access and refresh tokens in the
//! inherited contract, and verifying them strictly (configured algorithm only, a known `kid` or
//! none for the current key, no `crit` or `b64` header parameter, `exp`/`nbf` with leeway, `iss`, `aud`, `token_type`, and
//! claims that identity headers can carry).

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::identity::Identity;
use crate::credentials::fits_a_header;

/// Why a key cannot be used. Each message keeps its cause's text, as `guichet check` prints it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} does not take a key file")]
    NoKeyFile(Algorithm),
    #[error("HS256 has no public keys to rotate")]
    NoPublicKeys,
    #[error("the HS256 secret is {0} bytes; it needs at least 32")]
    ShortSecret(usize),
    #[error("not a {algorithm:?} {kind} key in PEM form: {source}")]
    NotPem {
        algorithm: Algorithm,
        kind: &'static str,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The key parsed but a step after it failed: `what` names the step.
    #[error("cannot {what}: {source}")]
    Unusable {
        what: &'static str,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

impl KeyError {
    fn unusable(what: &'static str) -> impl FnOnce(jsonwebtoken::errors::Error) -> KeyError {
        move |source| KeyError::Unusable { what, source }
    }
}

/// A token that could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

/// The signing key and every key tokens are still accepted from, by `kid`.
pub struct Keys {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    /// The public keys, for `/.well-known/jwks.json`; empty for HS256.
    public: JwkSet,
}

impl Keys {
    /// Keys from a PEM private key (EdDSA, ES256 or RS256).
    pub fn from_private_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Keys, KeyError> {
        let encoding = match algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            other => return Err(KeyError::NoKeyFile(other)),
        }
        .map_err(|source| KeyError::NotPem {
            algorithm,
            kind: "private",
            source,
        })?;
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(KeyError::unusable("derive the public key"))?;
        let kid = thumbprint(&jwk)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(KeyError::unusable("use the public key"))?;
        Ok(Keys {
            algorithm,
            kid: kid.clone(),
            encoding,
            decoding: HashMap::from([(kid, decoding)]),
            public: JwkSet { keys: vec![jwk] },
        })
    }

    /// HS256 keys from a shared secret (at least 32 bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Keys, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        let kid = "hs256".to_string();
        Ok(Keys {
            algorithm: Algorithm::HS256,
            kid: kid.clone(),
            encoding: EncodingKey::from_secret(secret),
            decoding: HashMap::from([(kid, DecodingKey::from_secret(secret))]),
            public: JwkSet { keys: Vec::new() },
        })
    }

    /// Also accept tokens signed by an older key, given as a PEM public key.
    pub fn accept_public_pem(&mut self, pem: &[u8]) -> Result<String, KeyError> {
        let decoding = match self.algorithm {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            _ => return Err(KeyError::NoPublicKeys),
        }
        .map_err(|source| KeyError::NotPem {
            algorithm: self.algorithm,
            kind: "public",
            source,
        })?;
        let mut jwk = Jwk::from_decoding_key(&decoding, Some(self.algorithm))
            .map_err(KeyError::unusable("read the public key"))?;
        let kid = thumbprint(&jwk)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        self.decoding.insert(kid.clone(), decoding);
        self.public.keys.push(jwk);
        Ok(kid)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The JWKS document of the public keys.
    pub fn jwks(&self) -> &JwkSet {
        &self.public
    }
}

fn thumbprint(jwk: &Jwk) -> Result<String, KeyError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(KeyError::unusable("compute the key id"))
}

/// A new Ed25519 private key in PKCS#8 PEM form.
pub fn generate_ed25519_pem() -> String {
    // PKCS#8 v1 for Ed25519 (RFC 8410) is a fixed 16-byte prefix followed by the 32-byte seed.
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&rand::random::<[u8; 32]>());
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// The claims of every Guichet token (refresh tokens add `family`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub token_type: TokenType,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub user_id: u64,
    pub username: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// Who a token is for.
pub struct Subject<'a> {
    pub user_id: u64,
    pub username: &'a str,
    pub role: &'a str,
}

/// Why a token was refused; the message is safe to show the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("Token is invalid or expired")]
    Invalid,
    #[error("Token has wrong type")]
    WrongType,
}

/// Issues and verifies tokens with one configuration.
pub struct Tokens {
    keys: Keys,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    validation: Validation,
    /// This verifier's entries in the cache of verified access tokens.
    verifier: u64,
}

impl Tokens {
    pub fn new(
        keys: Keys,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
        refresh_ttl: Duration,
        leeway: Duration,
    ) -> Tokens {
        let mut validation = Validation::new(keys.algorithm);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Tokens {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            access_ttl,
            refresh_ttl,
            validation,
            verifier: super::verified::verifier_id(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// A signed token and its claims; refresh tokens belong to `family`.
    pub fn issue(
        &self,
        subject: &Subject,
        token_type: TokenType,
        family: Option<&str>,
    ) -> Result<(String, Claims), SignError> {
        let now = unix_now();
        let ttl = match token_type {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
        };
        let claims = Claims {
            token_type,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.user_id.to_string(),
            user_id: subject.user_id,
            username: subject.username.to_string(),
            role: subject.role.to_string(),
            family: family.map(str::to_string),
        };
        let mut header = Header::new(self.keys.algorithm);
        header.kid = Some(self.keys.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.keys.encoding).map_err(SignError)?;
        Ok((token, claims))
    }

    /// Verifies an access token presented to a route, remembering who it is on this thread until
    /// it expires, so the next request with it skips the signature check.
    pub fn verify_access(&self, token: &str) -> Result<Identity, TokenError> {
        let now = unix_now();
        if let Some(identity) = super::verified::get(token, now, |v| v == self.verifier) {
            return Ok(identity);
        }
        let claims = self.verify(token, TokenType::Access)?;
        let identity = Identity::user(claims.user_id, claims.username, claims.role);
        let until = claims.exp.saturating_add(self.validation.leeway);
        super::verified::remember(self.verifier, token, &identity, until, now);
        Ok(identity)
    }

    /// The id of this verifier's entries in the cache of verified tokens.
    pub fn verifier(&self) -> u64 {
        self.verifier
    }

    /// Verifies header, signature and claims; no store is consulted.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        let header = JoseHeader::of(token)?;
        // The token's `alg` never chooses the key: only the configured algorithm is accepted.
        if header.alg != self.keys.algorithm {
            return Err(TokenError::Invalid);
        }
        // A token without a `kid` (other JWT libraries leave it out) is checked against the
        // current signing key only; a `kid` that is there must name a known key.
        let kid = header.kid.as_deref().unwrap_or(&self.keys.kid);
        let key = self.keys.decoding.get(kid).ok_or(TokenError::Invalid)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let claims = data.claims;
        // Signed or not, a claim the identity headers cannot carry would fail every request.
        if !fits_a_header(&claims.username) || !fits_a_header(&claims.role) {
            return Err(TokenError::Invalid);
        }
        if claims.token_type != expected {
            return Err(TokenError::WrongType);
        }
        Ok(claims)
    }
}

/// The JOSE header parameters the gateway acts on, read here rather than through
/// `jsonwebtoken::Header`, which has no notion of refusing them. Repeated names are refused
/// (serde's duplicate-field error), as RFC 7515 §4 allows.
#[derive(Deserialize)]
pub struct JoseHeader<'a> {
    pub alg: Algorithm,
    #[serde(borrow)]
    pub kid: Option<Cow<'a, str>>,
    /// Present at all, whatever its value: the extensions it names must be understood, and the
    /// gateway understands none (RFC 7515 §4.1.11).
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    /// RFC 7797's unencoded payload: with `false`, the signature covers a payload other than the
    /// one decoded here. The gateway never issues it, so any `b64` is refused.
    #[serde(default, deserialize_with = "present")]
    b64: bool,
}

impl JoseHeader<'_> {
    /// The header of a compact JWS; `alg: none` does not read as an algorithm.
    pub fn of(token: &str) -> Result<JoseHeader<'static>, TokenError> {
        let header = header_segment(token).ok_or(TokenError::Invalid)?;
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Invalid)?;
        let header: JoseHeader =
            serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
        if header.crit || header.b64 {
            return Err(TokenError::Invalid);
        }
        Ok(JoseHeader {
            alg: header.alg,
            kid: header.kid.map(|kid| Cow::Owned(kid.into_owned())),
            crit: false,
            b64: false,
        })
    }
}

/// The `iss` claim of a token, read without verifying it: it only chooses the verifier.
pub fn unverified_issuer(token: &str) -> Result<Option<String>, TokenError> {
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1).ok_or(TokenError::Invalid)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Invalid)?;
    let claims: Issuer = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
    Ok(claims.iss)
}

/// True for a parameter that is there, `null` included; absent ones take the default, false.
fn present<'de, D: serde::Deserializer<'de>>(parameter: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(parameter).map(|_| true)
}

/// The header segment of a compact JWS, which has exactly three segments.
fn header_segment(token: &str) -> Option<&str> {
    let mut segments = token.split('.');
    let header = segments.next()?;
    segments.next()?;
    segments.next()?;
    segments.next().is_none().then_some(header)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
