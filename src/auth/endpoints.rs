//! The token endpoints of the inherited contract, answered by the gateway itself:
//! `POST /api/auth/token/` (login), `.../refresh/` (rotation with reuse detection),
//! `.../verify/`, `.../revoke/` (logout) and `GET /.well-known/jwks.json`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::proxy::Session;
use serde_json::{json, Value};

use std::net::IpAddr;

use super::jwt::{Claims, Subject, TokenType, Tokens};
use super::password::PasswordChecker;
use crate::errors::GatewayError;
use crate::ratelimit::{Limiter, Mode, RatePolicy};
use crate::router::MethodSet;
use crate::store::{Rotation, Store, StoreError, User};

/// Login and token bodies are small; anything larger is refused before it is read whole.
const MAX_BODY: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Refresh,
    Verify,
    Revoke,
    Jwks,
    /// `GET /api/analytics/usage/`, for admins.
    Usage,
    /// `GET /api/`: the root view.
    Root,
    /// `GET /api/schema/`: the merged OpenAPI document.
    Schema,
    /// `GET /api/docs/`: Swagger UI.
    SwaggerUi,
    /// `GET /api/redoc/`: ReDoc.
    Redoc,
    /// `GET /api/docs/assets/<file>`: the scripts and styles of both pages.
    DocsAsset,
}

impl Endpoint {
    /// Every endpoint, in declaration order (so `endpoint as usize` is its position).
    pub const ALL: [Endpoint; 11] = [
        Endpoint::Token,
        Endpoint::Refresh,
        Endpoint::Verify,
        Endpoint::Revoke,
        Endpoint::Jwks,
        Endpoint::Usage,
        Endpoint::Root,
        Endpoint::Schema,
        Endpoint::SwaggerUi,
        Endpoint::Redoc,
        Endpoint::DocsAsset,
    ];

    /// The endpoint at a normalised path, if any (the trailing slash is optional).
    pub fn at(path: &str) -> Option<Endpoint> {
        if path.starts_with("/api/docs/assets/") {
            return Some(Endpoint::DocsAsset);
        }
        match path.trim_end_matches('/') {
            "/api/auth/token" => Some(Endpoint::Token),
            "/api/auth/token/refresh" => Some(Endpoint::Refresh),
            "/api/auth/token/verify" => Some(Endpoint::Verify),
            "/api/auth/token/revoke" => Some(Endpoint::Revoke),
            "/.well-known/jwks.json" => Some(Endpoint::Jwks),
            "/api/analytics/usage" => Some(Endpoint::Usage),
            "/api" => Some(Endpoint::Root),
            "/api/schema" => Some(Endpoint::Schema),
            "/api/docs" => Some(Endpoint::SwaggerUi),
            "/api/redoc" => Some(Endpoint::Redoc),
            _ => None,
        }
    }

    /// The name of the endpoint in logs and metrics.
    pub fn id(self) -> &'static str {
        match self {
            Endpoint::Token => "guichet:token",
            Endpoint::Refresh => "guichet:token-refresh",
            Endpoint::Verify => "guichet:token-verify",
            Endpoint::Revoke => "guichet:token-revoke",
            Endpoint::Jwks => "guichet:jwks",
            Endpoint::Usage => "guichet:usage",
            Endpoint::Root => "guichet:root",
            Endpoint::Schema => "guichet:schema",
            Endpoint::SwaggerUi => "guichet:docs",
            Endpoint::Redoc => "guichet:redoc",
            Endpoint::DocsAsset => "guichet:docs-assets",
        }
    }

    /// The path the endpoint answers at, as documented.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/api/auth/token/",
            Endpoint::Refresh => "/api/auth/token/refresh/",
            Endpoint::Verify => "/api/auth/token/verify/",
            Endpoint::Revoke => "/api/auth/token/revoke/",
            Endpoint::Jwks => "/.well-known/jwks.json",
            Endpoint::Usage => "/api/analytics/usage/",
            Endpoint::Root => "/api/",
            Endpoint::Schema => "/api/schema/",
            Endpoint::SwaggerUi => "/api/docs/",
            Endpoint::Redoc => "/api/redoc/",
            Endpoint::DocsAsset => "/api/docs/assets/",
        }
    }

    /// The endpoint the gateway answers itself at a normalised `path`: the token endpoints only
    /// when it issues tokens (otherwise their paths may be routed like any other).
    pub fn answered_at(path: &str, issues_tokens: bool) -> Option<Endpoint> {
        Endpoint::at(path).filter(|e| issues_tokens || e.is_docs() || *e == Endpoint::Usage)
    }

    /// The methods the endpoint takes: the documentation also answers HEAD.
    pub fn allowed_methods(self) -> MethodSet {
        let method = self.method();
        let mut names = vec![method.as_str()];
        if self.is_docs() {
            names.push("HEAD");
        }
        MethodSet::parse(names).unwrap_or(MethodSet::EMPTY)
    }

    /// The root view, the document and its two pages: public, answered from memory.
    pub fn is_docs(self) -> bool {
        matches!(
            self,
            Endpoint::Root
                | Endpoint::Schema
                | Endpoint::SwaggerUi
                | Endpoint::Redoc
                | Endpoint::DocsAsset
        )
    }

    pub fn method(self) -> Method {
        match self {
            Endpoint::Token | Endpoint::Refresh | Endpoint::Verify | Endpoint::Revoke => {
                Method::POST
            }
            _ => Method::GET,
        }
    }
}

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
pub struct LoginThrottle {
    pub limiter: Arc<Limiter>,
    pub policy: RatePolicy,
}

/// Everything the token endpoints need.
pub struct TokenService {
    pub tokens: Arc<Tokens>,
    pub store: Arc<dyn Store>,
    pub passwords: PasswordChecker,
    pub throttle: LoginThrottle,
}

impl TokenService {
    /// Answers one endpoint; the request body is read here, and only here.
    pub async fn answer(
        &self,
        endpoint: Endpoint,
        session: &mut Session,
        client: IpAddr,
    ) -> Result<Value, GatewayError> {
        if endpoint == Endpoint::Jwks {
            return serde_json::to_value(self.tokens.keys().jwks())
                .map_err(|_| GatewayError::Internal);
        }
        let body = read_json(session).await?;
        match endpoint {
            Endpoint::Token => self.login(&body, client).await,
            Endpoint::Refresh => self.refresh(field(&body, "refresh")?).await,
            Endpoint::Verify => self.verify(field(&body, "token")?),
            Endpoint::Revoke => self.revoke(field(&body, "refresh")?).await,
            _ => Err(GatewayError::Internal),
        }
    }

    async fn login(&self, body: &Value, client: IpAddr) -> Result<Value, GatewayError> {
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
        let verified = place.verify(password, stored).await.map_err(|_| {
            tracing::error!("a password check did not run to its end");
            GatewayError::Internal
        })?;
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
        let family = uuid::Uuid::new_v4().simple().to_string();
        let (access, refresh, refresh_claims) = self.pair(&user, &family)?;
        self.store
            .start_family(&family, &refresh_claims.jti, self.tokens.refresh_ttl())
            .await
            .map_err(store_error)?;
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

    /// A new access token and a rotated refresh token; presenting an already-rotated refresh
    /// token revokes its whole family.
    async fn refresh(&self, token: &str) -> Result<Value, GatewayError> {
        let claims = self.refresh_claims(token)?;
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
        match self
            .store
            .rotate_family(&family, &claims.jti, &next.jti, ttl)
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

    fn verify(&self, token: &str) -> Result<Value, GatewayError> {
        let valid = self.tokens.verify(token, TokenType::Access).is_ok()
            || self.tokens.verify(token, TokenType::Refresh).is_ok();
        if valid {
            Ok(json!({}))
        } else {
            Err(token_not_valid("Token is invalid or expired"))
        }
    }

    async fn revoke(&self, token: &str) -> Result<Value, GatewayError> {
        let claims = self.refresh_claims(token)?;
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
            GatewayError::Internal
        })
    }
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
async fn read_json(session: &mut Session) -> Result<Value, GatewayError> {
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
