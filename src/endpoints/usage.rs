//! `GET /api/analytics/usage/`: the usage statistics, for the highest role (`admin`), by JWT or
//! API key.

use pingora::http::RequestHeader;

use crate::analytics::{self, Usage};
use crate::auth::{jwt, Auth};
use crate::authz::{self, Needs};
use crate::config::AuthLevel;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::logs::Repeated;

/// The report the query asks for, once the caller is known to be an admin.
pub async fn report(
    usage: &Usage,
    auth: &Auth,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<serde_json::Value, GatewayError> {
    let roles = &ctx.snapshot.config.auth;
    let needs = Needs {
        level: AuthLevel::Any,
        min_role: roles.rank("admin").or(roles.roles.len().checked_sub(1)),
        scopes: &[],
    };
    authz::authorize(auth, request, ctx, &needs).await?;
    let query = analytics::Query::parse(request.uri.query().unwrap_or(""))?;
    usage
        .report(
            query.window,
            jwt::unix_now(),
            query.consumer.as_deref(),
            query.route.as_deref(),
        )
        .await
        .map_err(|e| {
            static UNAVAILABLE: Repeated = Repeated::new();
            if let Some(suppressed) = UNAVAILABLE.due() {
                tracing::warn!(error = %e, suppressed, "usage statistics unavailable");
            }
            GatewayError::StoreUnavailable
        })
}
