//! Route permissions: from what authentication found and what the route asks (auth level, least
//! role, scopes) to the identity passed upstream, or the 401, 403 or 503 to answer.

use pingora::http::RequestHeader;

use crate::auth::identity::{self, AuthMethod, Authentication, Identity};
use crate::auth::Auth;
use crate::config::{AuthConfig, AuthLevel, Route};
use crate::context::RequestCtx;
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

/// Authenticates the request and checks it against `needs`. A verified caller is recorded in
/// the context even when refused (403): the logs and metrics name who was refused.
pub async fn authorize(
    auth: &Auth,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
    needs: &Needs<'_>,
) -> Result<(), GatewayError> {
    let credential = identity::credential(request);
    let found = identity::authenticate(credential, auth.bearer.as_deref(), &auth.api_keys).await;
    if let Authentication::Verified(identity) = &found {
        ctx.identity = identity.clone();
    }
    ctx.identity = decide(needs, &ctx.snapshot.config.auth, found)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::StoreBackend;

    fn auth() -> AuthConfig {
        AuthConfig {
            store: StoreBackend::Memory,
            store_timeout: Duration::from_millis(250),
            api_key_cache_ttl: Duration::from_secs(30),
            max_pending_logins: 64,
            tokens: None,
            jwt_written: false,
            roles: ["student", "instructor", "admin"]
                .map(String::from)
                .to_vec(),
            seed_users: Vec::new(),
            seed_api_keys: Vec::new(),
        }
    }

    fn user(role: &str) -> Authentication {
        Authentication::Verified(Identity {
            method: AuthMethod::Jwt,
            user_id: Some("1".to_string()),
            username: Some("ada".to_string()),
            role: Some(role.to_string()),
            ..Identity::anonymous()
        })
    }

    fn key(role: &str, scopes: &[&str]) -> Authentication {
        Authentication::Verified(Identity {
            method: AuthMethod::ApiKey,
            role: Some(role.to_string()),
            consumer: Some("grading".to_string()),
            key_id: Some("gk_grading".to_string()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Identity::anonymous()
        })
    }

    /// The route's level, least role and scopes, what authentication found, and the identity's
    /// method or the status and code answered.
    type Case<'a> = (
        AuthLevel,
        Option<usize>,
        &'a [String],
        Authentication,
        Result<AuthMethod, (u16, &'static str)>,
    );

    #[test]
    fn each_auth_level_role_and_scope_gives_the_identity_or_the_answer_a_client_sees() {
        use AuthLevel::{Any, ApiKey, Jwt, None as Public};
        let scopes = ["grades:write".to_string()];
        let instructor = Some(1);
        let cases: Vec<Case> = vec![
            (
                Public,
                None,
                &[],
                Authentication::None,
                Ok(AuthMethod::Anonymous),
            ),
            (
                Public,
                None,
                &[],
                Authentication::InvalidToken,
                Ok(AuthMethod::Anonymous),
            ),
            (
                Public,
                None,
                &[],
                Authentication::StoreUnavailable,
                Ok(AuthMethod::Anonymous),
            ),
            (Public, None, &[], user("student"), Ok(AuthMethod::Jwt)),
            (
                Jwt,
                None,
                &[],
                Authentication::None,
                Err((401, "not_authenticated")),
            ),
            (
                Jwt,
                None,
                &[],
                Authentication::InvalidToken,
                Err((401, "token_not_valid")),
            ),
            (
                Jwt,
                None,
                &[],
                Authentication::InvalidKey,
                Err((401, "authentication_failed")),
            ),
            (
                Jwt,
                None,
                &[],
                Authentication::StoreUnavailable,
                Err((503, "auth_store_unavailable")),
            ),
            (Jwt, None, &[], user("student"), Ok(AuthMethod::Jwt)),
            (
                Jwt,
                None,
                &[],
                key("admin", &[]),
                Err((401, "not_authenticated")),
            ),
            (
                ApiKey,
                None,
                &[],
                user("admin"),
                Err((401, "not_authenticated")),
            ),
            (
                ApiKey,
                None,
                &[],
                key("student", &[]),
                Ok(AuthMethod::ApiKey),
            ),
            (Any, None, &[], user("student"), Ok(AuthMethod::Jwt)),
            (Any, None, &[], key("student", &[]), Ok(AuthMethod::ApiKey)),
            (
                Jwt,
                instructor,
                &[],
                user("student"),
                Err((403, "permission_denied")),
            ),
            (
                Jwt,
                instructor,
                &[],
                user("instructor"),
                Ok(AuthMethod::Jwt),
            ),
            (Jwt, instructor, &[], user("admin"), Ok(AuthMethod::Jwt)),
            (
                Jwt,
                instructor,
                &[],
                user("retired"),
                Err((403, "permission_denied")),
            ),
            (
                ApiKey,
                None,
                &scopes,
                key("admin", &[]),
                Err((403, "permission_denied")),
            ),
            (
                ApiKey,
                None,
                &scopes,
                key("student", &["grades:write"]),
                Ok(AuthMethod::ApiKey),
            ),
            (
                Any,
                None,
                &scopes,
                user("admin"),
                Err((403, "permission_denied")),
            ),
        ];
        let auth = auth();
        for (level, min_role, scopes, found, expected) in cases {
            let needs = Needs {
                level,
                min_role,
                scopes,
            };
            let case = format!("{level:?} role>={min_role:?} scopes {scopes:?} found {found:?}");
            let verified = match &found {
                Authentication::Verified(identity) => Some(identity.clone()),
                _ => None,
            };
            let got = decide(&needs, &auth, found);
            // A granted request goes on as the caller who was verified, whole (role, user,
            // key, scopes), or as anonymous.
            if let Ok(identity) = &got {
                let passed_on = match identity.method {
                    AuthMethod::Anonymous => Identity::anonymous(),
                    _ => verified
                        .clone()
                        .expect("only a verified caller has a method"),
                };
                assert_eq!(identity, &passed_on, "{case}");
            }
            let got = got
                .map(|identity| identity.method)
                .map_err(|e| (e.status(), e.code()));
            assert_eq!(got, expected, "{case}");
        }
    }
}
