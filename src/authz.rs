//! Route permissions: from what authentication found and what the route asks (auth level, least
//! role, scopes) to the identity passed upstream, or the 401, 403 or 503 to answer.

use crate::auth::identity::{AuthMethod, Authentication, Identity};
use crate::config::{AuthConfig, AuthLevel, Route};
use crate::errors::GatewayError;

const REALM: &str = "realm=\"api\"";

/// What a route (or one of the gateway's own protected endpoints) asks of its callers.
pub struct Needs<'a> {
    pub level: AuthLevel,
    pub min_role: Option<usize>,
    pub scopes: &'a [String],
}

impl Needs<'_> {
    /// What `route` asks.
    pub fn of(route: &Route) -> Needs<'_> {
        Needs {
            level: route.auth,
            min_role: route.min_role,
            scopes: &route.scopes,
        }
    }
}

/// The identity the request goes on with, or the error that stops it.
pub fn decide(
    needs: &Needs,
    auth: &AuthConfig,
    found: Authentication,
) -> Result<Identity, GatewayError> {
    let identity = match (needs.level, found) {
        // A public route ignores bad credentials but passes good ones on.
        (AuthLevel::None, Authentication::Verified(identity)) => return Ok(identity),
        (AuthLevel::None, _) => return Ok(Identity::anonymous()),
        (_, Authentication::StoreUnavailable) => return Err(GatewayError::AuthStoreUnavailable),
        (level, Authentication::None) => return Err(not_authenticated(level)),
        (level, Authentication::InvalidToken) => {
            return Err(GatewayError::Unauthorized {
                detail: "Given token not valid for any token type",
                code: "token_not_valid",
                challenge: format!("{}, error=\"invalid_token\"", challenge(level)),
            })
        }
        (level, Authentication::InvalidKey) => {
            return Err(GatewayError::Unauthorized {
                detail: "Invalid API key.",
                code: "authentication_failed",
                challenge: challenge(level),
            })
        }
        (level, Authentication::Verified(identity)) => {
            let accepted = match level {
                AuthLevel::Jwt => identity.method == AuthMethod::Jwt,
                AuthLevel::ApiKey => identity.method == AuthMethod::ApiKey,
                _ => true,
            };
            if !accepted {
                return Err(not_authenticated(level));
            }
            identity
        }
    };
    let rank = identity.role.as_deref().and_then(|role| auth.rank(role));
    let role_ok = needs
        .min_role
        .is_none_or(|needed| rank.is_some_and(|rank| rank >= needed));
    let scopes_ok = needs.scopes.iter().all(|s| identity.scopes.contains(s));
    if role_ok && scopes_ok {
        Ok(identity)
    } else {
        Err(GatewayError::PermissionDenied)
    }
}

fn challenge(level: AuthLevel) -> String {
    match level {
        AuthLevel::ApiKey => format!("Api-Key {REALM}"),
        _ => format!("Bearer {REALM}"),
    }
}

fn not_authenticated(level: AuthLevel) -> GatewayError {
    GatewayError::Unauthorized {
        detail: "Authentication credentials were not provided.",
        code: "not_authenticated",
        challenge: challenge(level),
    }
}
