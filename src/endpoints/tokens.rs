//! The token endpoints of the inherited contract:
//! `POST /api/auth/token/` (login), `.../refresh/` (rotation with reuse detection),
//! `.../verify/`, `.../revoke/` (logout) and `GET /.well-known/jwks.json`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::{json, Value};

use std::net::IpAddr;

use crate::auth::jwt::{Claims, Subject, TokenType, Tokens};
use crate::auth::legacy::{LegacyClaims, LegacyTokens};
use crate::auth::password::PasswordChecker;
use crate::config::AuthConfig;
use crate::errors::GatewayError;
use crate::ratelimit::{Limiter, Mode, RatePolicy};
use crate::store::{FamilyRotation, Rotation, Store, StoreError, User};

/// Login and token bodies are small; anything larger is refused before it is read whole.
const MAX_BODY: usize = 16 * 1024;

fn token_not_valid(detail: &'static str) -> GatewayError {
    GatewayError::Unauthorized {
        detail,
        code: "token_not_valid",
        challenge: "Bearer realm=\"api\", error=\"invalid_token\"".to_string(),
    }
}

fn store_error(error: StoreError) -> GatewayError {
    tracing::warn!(%error, "store call failed on a token endpoint");
    GatewayError::AuthStoreUnavailable
}

/// The failed-login limits and the limiter that counts them.
struct LoginThrottle {
    limiter: Arc<Limiter>,
    policy: RatePolicy,
}

/// Everything the token endpoints need.
pub struct TokenService {
    tokens: Arc<Tokens>,
    /// The Django app's refresh tokens, exchanged once each while the window is open.
    legacy: Option<Arc<LegacyTokens>>,
    store: Arc<dyn Store>,
    passwords: PasswordChecker,
    throttle: LoginThrottle,
}

impl TokenService {
    /// The token endpoints of `config`, or `None` without a `jwt` section.
    pub fn new(
        config: &AuthConfig,
        tokens: Option<Arc<Tokens>>,
        legacy: Option<Arc<LegacyTokens>>,
        store: Arc<dyn Store>,
        limiter: Arc<Limiter>,
        limits: &RatePolicy,
    ) -> Option<TokenService> {
        // Half the cores at most: the lowest priority keeps checks off the cores' time, not out
        // of the caches and memory bandwidth they share with proxying (19 MiB per argon2 check).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tokens = tokens?;
        Some(TokenService {
            tokens,
            legacy,
            store,
            passwords: PasswordChecker::new((cores / 2).max(1), config.max_pending_logins),
            throttle: LoginThrottle {
                limiter,
                policy: limits.clone(),
            },
        })
    }

    /// `GET /.well-known/jwks.json`: the public keys tokens are verified with.
    pub fn jwks(&self) -> Result<Value, GatewayError> {
        serde_json::to_value(self.tokens.keys().jwks())
            .map_err(|_| GatewayError::Internal("the key set serialises to JSON"))
    }

    /// `POST /api/auth/token/`: a token pair for a username and password.
    pub async fn login(&self, body: &Value, client: IpAddr) -> Result<Value, GatewayError> {
        let login = field(body, "username")?;
        let password = field(body, "password")?;
        // Failed logins are limited per address and per username from that address.
        let limits = self.throttle.policy.login_limits(login, client);
        let limiter = &self.throttle.limiter;
        let seen = limiter
            .check(&limits, Mode::Peek)
            .await
            .map_err(|_| GatewayError::RateLimiterUnavailable)?;
        if !seen.allowed {
            return Err(GatewayError::Throttled {
                retry_after: seen.retry_after,
            });
        }
        // A place among the pending password checks, before any work: past the bound the
        // login is refused at once, and not counted as a failure (the password was not read).
        let place = self
            .passwords
            .admit()
            .map_err(|busy| GatewayError::LoginBusy {
                retry_after: busy.retry_after,
            })?;
        let user = self.store.user_by_login(login).await.map_err(store_error)?;
        let stored = user
            .as_ref()
            .filter(|u| u.active)
            .map(|u| u.password_hash.as_str());
        // An unknown or inactive user costs one argon2 verification too: no timing oracle.
        let verified = place
            .verify(password, stored)
            .await
            .map_err(|_| GatewayError::Internal("a password check runs to its end"))?;
        let user = match user {
            Some(user) if verified => user,
            _ => {
                // Counting the failure may fail too; the 401 stands either way.
                let _ = limiter.check(&limits, Mode::Consume).await;
                return Err(GatewayError::Unauthorized {
                    detail: "No active account found with the given credentials",
                    code: "no_active_account",
                    challenge: "Bearer realm=\"api\"".to_string(),
                });
            }
        };
        let (_, access, refresh) = self.new_family(&user).await?;
        Ok(json!({
            "access": access,
            "refresh": refresh,
            "user_id": user.id,
            "username": user.username,
            "email": user.email,
            "role": user.role,
            "token_lifetime": {
                "access": format!("{} seconds", self.tokens.access_ttl().as_secs()),
                "refresh": format!("{} seconds", self.tokens.refresh_ttl().as_secs()),
            },
        }))
    }

    /// `POST .../refresh/`: a new access token and a rotated refresh token; presenting an
    /// already-rotated refresh token revokes its whole family.
    pub async fn refresh(&self, body: &Value) -> Result<Value, GatewayError> {
        let token = field(body, "refresh")?;
        let claims = match self.refresh_claims(token) {
            Ok(claims) => claims,
            Err(refused) => return self.exchange_legacy(token).await.unwrap_or(Err(refused)),
        };
        let family = claims.family.clone().unwrap_or_default();
        let ttl = self.tokens.refresh_ttl();
        // The user may have been disabled or changed role since the last token.
        let user = self
            .store
            .user_by_id(claims.user_id)
            .await
            .map_err(store_error)?
            .filter(|u| u.active);
        let Some(user) = user else {
            self.store
                .revoke_family(&family, ttl)
                .await
                .map_err(store_error)?;
            return Err(token_not_valid("Token is invalid or expired"));
        };
        let (access, refresh, next) = self.pair(&user, &family)?;
        let rotation = FamilyRotation {
            family: &family,
            presented: &claims.jti,
            next: &next.jti,
            ttl,
        };
        match self
            .store
            .rotate_family(&rotation)
            .await
            .map_err(store_error)?
        {
            Rotation::Rotated => Ok(json!({"access": access, "refresh": refresh})),
            Rotation::Refused => {
                tracing::warn!(user_id = user.id, %family, "refresh token reused; family revoked");
                Err(token_not_valid("Token is blacklisted"))
            }
        }
    }

    /// A refresh token of the Django app, exchanged for a Guichet pair of a new family, once:
    /// its `jti` is marked (with that family) for as long as the token could still be accepted,
    /// and a second exchange is refused as reuse and revokes the family the first one started,
    /// as a reused Guichet refresh token revokes its own. `None` when the token is not a legacy
    /// refresh token (or the window is shut).
    async fn exchange_legacy(&self, token: &str) -> Option<Result<Value, GatewayError>> {
        let legacy = self.legacy.as_ref()?;
        let claims = legacy.verify(token, TokenType::Refresh).ok()?;
        Some(self.exchange(legacy, &claims).await)
    }

    async fn exchange(
        &self,
        legacy: &LegacyTokens,
        claims: &LegacyClaims,
    ) -> Result<Value, GatewayError> {
        let user = self
            .store
            .user_by_id(claims.user_id)
            .await
            .map_err(store_error)?
            .filter(|u| u.active)
            .ok_or_else(|| token_not_valid("Token is invalid or expired"))?;
        // The family is started first: a store that fails here leaves the token unused.
        let (family, access, refresh) = self.new_family(&user).await?;
        let mark = legacy_refresh_key(&claims.jti);
        let reused = self
            .store
            .mark_used(&mark, &family, legacy.still_accepted(claims))
            .await
            .map_err(store_error)?;
        if let Some(first) = reused {
            let ttl = self.tokens.refresh_ttl();
            for family in [first.as_str(), family.as_str()]
                .into_iter()
                .filter(|f| !f.is_empty())
            {
                self.store
                    .revoke_family(family, ttl)
                    .await
                    .map_err(store_error)?;
            }
            tracing::warn!(user_id = user.id, jti = %claims.jti, "legacy refresh token presented again; the family it was exchanged for is revoked");
            return Err(token_not_valid("Token is blacklisted"));
        }
        Ok(json!({"access": access, "refresh": refresh}))
    }

    /// A pair for `user` starting a new refresh family, and the family.
    async fn new_family(&self, user: &User) -> Result<(String, String, String), GatewayError> {
        let family = uuid::Uuid::new_v4().simple().to_string();
        let (access, refresh, refresh_claims) = self.pair(user, &family)?;
        self.store
            .start_family(&family, &refresh_claims.jti, self.tokens.refresh_ttl())
            .await
            .map_err(store_error)?;
        Ok((family, access, refresh))
    }

    /// `POST .../verify/`: whether a token is one of the gateway's, unexpired.
    pub fn verify(&self, body: &Value) -> Result<Value, GatewayError> {
        let token = field(body, "token")?;
        let legacy = |expected| {
            self.legacy
                .as_ref()
                .is_some_and(|legacy| legacy.verify(token, expected).is_ok())
        };
        let valid = self.tokens.verify(token, TokenType::Access).is_ok()
            || self.tokens.verify(token, TokenType::Refresh).is_ok()
            || legacy(TokenType::Access)
            || legacy(TokenType::Refresh);
        if valid {
            Ok(json!({}))
        } else {
            Err(token_not_valid("Token is invalid or expired"))
        }
    }

    /// `POST .../revoke/`: logs out, revoking the refresh token's whole family; a legacy
    /// refresh token is marked as used, so it can no longer be exchanged.
    pub async fn revoke(&self, body: &Value) -> Result<Value, GatewayError> {
        let token = field(body, "refresh")?;
        let claims = match self.refresh_claims(token) {
            Ok(claims) => claims,
            Err(refused) => {
                let Some(legacy) = self.legacy.as_ref() else {
                    return Err(refused);
                };
                let Ok(claims) = legacy.verify(token, TokenType::Refresh) else {
                    return Err(refused);
                };
                let mark = legacy_refresh_key(&claims.jti);
                let ttl = legacy.still_accepted(&claims);
                let first = self.store.mark_used(&mark, "", ttl).await;
                // Already exchanged: logging out ends the family it was exchanged for.
                if let Some(family) = first.map_err(store_error)?.filter(|f| !f.is_empty()) {
                    let ttl = self.tokens.refresh_ttl();
                    self.store
                        .revoke_family(&family, ttl)
                        .await
                        .map_err(store_error)?;
                }
                return Ok(json!({}));
            }
        };
        let family = claims.family.unwrap_or_default();
        self.store
            .revoke_family(&family, self.tokens.refresh_ttl())
            .await
            .map_err(store_error)?;
        Ok(json!({}))
    }

    fn refresh_claims(&self, token: &str) -> Result<Claims, GatewayError> {
        match self.tokens.verify(token, TokenType::Refresh) {
            Ok(claims) if claims.family.is_some() => Ok(claims),
            _ => Err(token_not_valid("Token is invalid or expired")),
        }
    }

    fn pair(&self, user: &User, family: &str) -> Result<(String, String, Claims), GatewayError> {
        let subject = Subject {
            user_id: user.id,
            username: &user.username,
            role: &user.role,
        };
        let signed = self
            .tokens
            .issue(&subject, TokenType::Access, None)
            .and_then(|(access, _)| {
                let (refresh, claims) =
                    self.tokens
                        .issue(&subject, TokenType::Refresh, Some(family))?;
                Ok((access, refresh, claims))
            });
        signed.map_err(|e| {
            tracing::error!(error = %e, "cannot sign a token");
            GatewayError::Internal("tokens can be signed with the configured key")
        })
    }
}

/// What marks a legacy refresh token as exchanged (or revoked).
fn legacy_refresh_key(jti: &str) -> String {
    format!("legacy-refresh:{jti}")
}

/// A required, non-empty text field of the JSON body.
fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, GatewayError> {
    match body.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(Value::String(_)) => Err(GatewayError::BadRequest(format!(
            "Field \"{name}\" may not be blank."
        ))),
        Some(_) => Err(GatewayError::BadRequest(format!(
            "Field \"{name}\" must be a string."
        ))),
        None => Err(GatewayError::BadRequest(format!(
            "Field \"{name}\" is required."
        ))),
    }
}

/// The request body as a JSON object, at most [`MAX_BODY`] bytes.
pub(super) async fn read_json(session: &mut Session) -> Result<Value, GatewayError> {
    let too_large = || GatewayError::PayloadTooLarge {
        limit: MAX_BODY as u64,
    };
    let declared = crate::wellformed::declared_length(session.req_header());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(GatewayError::BadRequest(
                    "The request body could not be read.".to_string(),
                ))
            }
        }
    }
    parse_object(&body.freeze())
}

fn parse_object(body: &Bytes) -> Result<Value, GatewayError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(GatewayError::BadRequest(
            "The body must be a JSON object.".to_string(),
        )),
        Err(e) => Err(GatewayError::BadRequest(format!("JSON parse error - {e}"))),
    }
}
