//! The gateway's own endpoints: which paths they answer at, and the one dispatch from an
//! [`Endpoint`] to what answers it. The token endpoints are in [`tokens`], the usage report in
//! [`usage`], the document and its pages in `openapi::publish`.

pub mod tokens;
pub mod usage;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::Method;
use pingora::proxy::Session;

use crate::analytics::Usage;
use crate::auth::Auth;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::openapi::publish::{self, ApiDocs};
use crate::respond::Reply;
use crate::router::MethodSet;

use self::tokens::TokenService;

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

/// What answers the gateway's own endpoints.
pub struct Endpoints {
    /// `None` without a `jwt` section: the token endpoints are off.
    pub tokens: Option<TokenService>,
    pub auth: Arc<Auth>,
    pub usage: Arc<Usage>,
    pub docs: Arc<ApiDocs>,
}

impl Endpoints {
    /// The endpoint answered at a normalised `path`, if any.
    pub fn at(&self, path: &str) -> Option<Endpoint> {
        Endpoint::answered_at(path, self.tokens.is_some())
    }

    /// The answer of `endpoint`; the login, refresh, verify and revoke bodies are read here.
    pub async fn answer(
        &self,
        endpoint: Endpoint,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Reply, GatewayError> {
        let tokens = || {
            self.tokens.as_ref().ok_or(GatewayError::Internal(
                "a token endpoint is answered only when tokens are issued",
            ))
        };
        let client = ctx
            .origin
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |o| o.client);
        let request = session.req_header();
        Ok(match endpoint {
            Endpoint::Token => Reply::Json(
                tokens()?
                    .login(&tokens::read_json(session).await?, client)
                    .await?,
            ),
            Endpoint::Refresh => Reply::Json(
                tokens()?
                    .refresh(&tokens::read_json(session).await?)
                    .await?,
            ),
            Endpoint::Verify => Reply::Json(tokens()?.verify(&tokens::read_json(session).await?)?),
            Endpoint::Revoke => {
                Reply::Json(tokens()?.revoke(&tokens::read_json(session).await?).await?)
            }
            Endpoint::Jwks => Reply::Json(tokens()?.jwks()?),
            Endpoint::Usage => {
                Reply::Json(usage::report(&self.usage, &self.auth, request, ctx).await?)
            }
            Endpoint::Root => Reply::Page(self.docs.root()),
            Endpoint::Schema => Reply::Page(self.docs.schema(request)?),
            Endpoint::SwaggerUi => Reply::Page(publish::swagger_ui(&ctx.snapshot.config)),
            Endpoint::Redoc => Reply::Page(publish::redoc(&ctx.snapshot.config)),
            Endpoint::DocsAsset => Reply::Page(publish::asset(request)?),
        })
    }
}
