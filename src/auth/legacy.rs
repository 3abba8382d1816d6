//! The Django app's tokens (djangorestframework-simplejwt: HS256 with the Django secret; claims
//! `token_type`, `exp`, `iat`, `jti`, `user_id`; no `iss`, `aud` or `kid`), accepted until
//! `accept_until` so that nobody is logged out the day Guichet takes over. Access tokens pass
//! on routes; a refresh token is exchanged once for a Guichet pair (`endpoints::tokens`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwt::{unix_now, JoseHeader, TokenError, TokenType};

/// The claims of a simplejwt token the gateway acts on.
#[derive(Debug, Deserialize)]
pub struct LegacyClaims {
    pub token_type: String,
    pub exp: u64,
    pub jti: String,
    /// simplejwt writes the user's primary key: a number up to 5.5.0, its text from 5.5.1.
    /// Guichet's users are numbered, so both read as one.
    #[serde(deserialize_with = "number_or_text")]
    pub user_id: u64,
}

fn number_or_text<'de, D: serde::Deserializer<'de>>(value: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }
    match Id::deserialize(value)? {
        Id::Number(id) => Ok(id),
        Id::Text(id) => id.parse().map_err(serde::de::Error::custom),
    }
}

pub struct LegacyTokens {
    key: DecodingKey,
    validation: Validation,
    /// Unix time from which legacy tokens are refused.
    accept_until: u64,
    verifier: u64,
}

impl LegacyTokens {
    pub fn new(secret: &[u8], accept_until: u64, leeway: u64) -> LegacyTokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway;
        validation.set_required_spec_claims(&["exp"]);
        LegacyTokens {
            key: DecodingKey::from_secret(secret),
            validation,
            accept_until,
            verifier: super::verified::verifier_id(),
        }
    }

    pub fn accept_until(&self) -> u64 {
        self.accept_until
    }

    pub fn verifier(&self) -> u64 {
        self.verifier
    }

    /// Verifies a legacy token of the `expected` type while the window is open.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<LegacyClaims, TokenError> {
        if unix_now() >= self.accept_until {
            return Err(TokenError::Invalid);
        }
        let header = JoseHeader::of(token)?;
        // simplejwt never writes a `kid`; a token with one is not the Django app's.
        if header.alg != Algorithm::HS256 || header.kid.is_some() {
            return Err(TokenError::Invalid);
        }
        let claims = jsonwebtoken::decode::<LegacyClaims>(token, &self.key, &self.validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        let wanted = match expected {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        };
        if claims.token_type != wanted {
            return Err(TokenError::WrongType);
        }
        Ok(claims)
    }

    /// How long a verified token can still be accepted (its expiry with the leeway, never past
    /// the window), counting the last second: what marks it used must last as long.
    pub fn still_accepted(&self, claims: &LegacyClaims) -> Duration {
        let last = self.remember_until(claims);
        Duration::from_secs(last.saturating_sub(unix_now()) + 1)
    }

    /// Until when a verified access token may be remembered: its expiry with the leeway, and
    /// never past the window.
    pub fn remember_until(&self, claims: &LegacyClaims) -> u64 {
        claims
            .exp
            .saturating_add(self.validation.leeway)
            .min(self.accept_until.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests;
