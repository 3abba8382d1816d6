//! The request's way through the gateway, as pingora phases: identify the request, match its
//! route (or answer a gateway endpoint), check its declared size, authenticate, authorize, pick a
//! healthy target, rewrite the headers, forward, log. Each step is a function that returns
//! `Ok(..)` to go on or the error to answer with.

mod failure;
pub(crate) mod parts;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType::InvalidHTTPHeader;
use pingora::{Error, ErrorType, OrErr, Result};

use crate::analytics::{self, Usage};
use crate::auth::Auth;
use crate::auth::{identity, jwt};
use crate::config::{EncodedSlashes, Route};
use crate::context::{CorsFrom, InFlight, RequestCtx};
use crate::cors;
use crate::endpoints::{Endpoint, Endpoints};
use crate::errors::GatewayError;
use crate::forwarded::{self, Origin};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::ratelimit::{Limiter, Mode};
use crate::request_id;
use crate::respond::{self, Reply};
use crate::router::Lookup;
use crate::snapshot::Current;
use crate::trace::{TraceContext, TRACEPARENT};
use crate::{authz, logs, path, websocket, wellformed};

use self::failure::{
    classify, may_resend, retry_elsewhere, untrusted_certificate, upstream_error_kind,
};
use self::parts::{edit_as_parts, edit_response_as_parts};

/// The proxy service: the current configuration and everything shared between requests.
pub struct Gateway {
    pub current: Current,
    pub auth: Arc<Auth>,
    pub endpoints: Endpoints,
    pub limiter: Arc<Limiter>,
    pub metrics: Arc<Metrics>,
    pub usage: Arc<Usage>,
    pub in_flight: InFlight,
    pub lifecycle: Lifecycle,
}

/// Where a request goes once its path is known.
enum Destination {
    /// One of the gateway's own endpoints.
    Gateway(Endpoint),
    /// A route's upstream; the route is in the context.
    Upstream,
}

impl Gateway {
    /// Request id and client address, known before anything can fail.
    fn identify(&self, session: &Session, ctx: &mut RequestCtx) {
        let request = session.req_header();
        ctx.request_id = request_id::from_client_or_new(request.headers.get(&request_id::HEADER));
        ctx.trace = Some(TraceContext::from_header(request.headers.get(&TRACEPARENT)));
        let peer = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
        let claimed = forwarded::forwarded_for_list(request);
        let mut origin = Origin::new(
            peer,
            claimed.as_deref(),
            &ctx.snapshot.config.trusted_proxies,
        );
        origin.tls = session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some());
        ctx.origin = Some(origin);
        if let Some(cors) = &ctx.snapshot.config.cors {
            ctx.cors_origin = cors.allow_origin(request.headers.get(header::ORIGIN));
        }
    }

    /// Normalises the path once and finds where it goes; the normalised path is what goes upstream.
    fn route(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        method: &http::Method,
    ) -> Result<Destination, GatewayError> {
        let request = session.req_header();
        ctx.cors_from = CorsFrom::Gateway;
        let path = path::normalize(request.uri.path())
            .map_err(|bad| GatewayError::BadRequest(bad.detail().to_string()))?;
        // Refused unless the route that takes the path keeps them (the gateway's own
        // endpoints never do).
        let separator_refused = |route: Option<&Route>| {
            let setting = route.map_or(ctx.snapshot.config.encoded_slashes, |r| r.encoded_slashes);
            if setting == EncodedSlashes::Reject && path::has_encoded_separator(&path) {
                Err(GatewayError::BadRequest(ENCODED_SEPARATOR.to_string()))
            } else {
                Ok(())
            }
        };
        if let Some(endpoint) = self.endpoints.at(&path) {
            separator_refused(None)?;
            ctx.endpoint = Some(endpoint);
            let allowed = endpoint.allowed_methods();
            if !allowed.contains(method) {
                return Err(GatewayError::MethodNotAllowed {
                    method: method.to_string(),
                    allowed,
                });
            }
            return Ok(Destination::Gateway(endpoint));
        }
        match ctx.snapshot.router.lookup(&path, method) {
            Lookup::Found(found) => {
                ctx.cors_from = CorsFrom::Route(found.route.index);
                separator_refused(Some(found.route))?;
                let mut target = found.upstream_path();
                if let Some(query) = request.uri.query() {
                    target.push('?');
                    target.push_str(query);
                }
                ctx.upstream_target = target;
                ctx.route = Some(found.route.clone());
                Ok(Destination::Upstream)
            }
            Lookup::MethodNotAllowed(allowed, nearest) => {
                ctx.cors_from = CorsFrom::Route(nearest.index);
                separator_refused(None)?;
                Err(GatewayError::MethodNotAllowed {
                    method: method.to_string(),
                    allowed,
                })
            }
            Lookup::NotFound => {
                separator_refused(None)?;
                Err(GatewayError::NotFound)
            }
        }
    }

    /// Who the caller is and whether the route lets them in.
    async fn admit(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let route = ctx.route.clone().ok_or(NO_ROUTE)?;
        let needs = authz::Needs::of(&route);
        authz::authorize(&self.auth, session.req_header(), ctx, &needs).await
    }

    /// Counts the request against its consumer's tier and its route's limits, all or none.
    async fn throttle(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let (Some(route), Some(origin)) = (&ctx.route, &ctx.origin) else {
            return Err(NO_ROUTE);
        };
        let limits = ctx
            .snapshot
            .config
            .rate_limits
            .limits(route, &ctx.identity, origin.client);
        if limits.is_empty() {
            return Ok(());
        }
        let decision = self
            .limiter
            .check(&limits, Mode::Consume)
            .await
            .map_err(|_| GatewayError::RateLimiterUnavailable)?;
        let (policy, current) = decision.fields(&limits);
        ctx.rate_limit_fields = vec![(&RATELIMIT_POLICY, policy), (&RATELIMIT, current)];
        ctx.throttled_by = decision.refused_by.map(|i| limits[i].policy.clone());
        if decision.allowed {
            Ok(())
        } else {
            Err(GatewayError::Throttled {
                retry_after: decision.retry_after,
            })
        }
    }

    /// A CORS preflight is answered here, before authentication and limits (it carries no
    /// credentials), for the route that would take the method it asks about; where CORS is
    /// off it is an ordinary OPTIONS request (`None`).
    fn preflight(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        asked: &http::Method,
    ) -> Result<Option<Reply>, GatewayError> {
        let destination = self.route(session, ctx, asked);
        let snapshot = ctx.snapshot.clone();
        let Some(cors) = ctx.cors_from.policy(&snapshot.config) else {
            ctx.route = None;
            ctx.endpoint = None;
            ctx.cors_from = CorsFrom::Gateway;
            return Ok(None);
        };
        let origin = cors.allow_origin(session.req_header().headers.get(header::ORIGIN));
        let methods = match destination {
            Ok(Destination::Gateway(endpoint)) => endpoint.allowed_methods(),
            Ok(Destination::Upstream) => ctx.route.as_ref().ok_or(NO_ROUTE)?.methods,
            Err(GatewayError::MethodNotAllowed { allowed, .. }) => allowed,
            Err(other) => {
                ctx.cors_origin = origin;
                return Err(other);
            }
        };
        match cors.preflight(session.req_header(), asked, methods, origin.as_ref()) {
            Ok(fields) => {
                ctx.cors_origin = origin;
                Ok(Some(Reply::Preflight(fields)))
            }
            Err(refused) => {
                // Refused without the allow fields.
                ctx.cors_origin = None;
                Err(refused)
            }
        }
    }

    /// The request's way up to forwarding: its destination, then either the answer of one of
    /// the gateway's own endpoints or the checks a proxied request must pass, in order.
    async fn pass(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Step, GatewayError> {
        wellformed::check(session.req_header_mut())?;
        if let Some(location) = https_redirect(session, ctx)? {
            return Ok(Step::Answer(Reply::Redirect(location)));
        }
        if let Some(asked) = cors::preflight_method(session.req_header()) {
            if let Some(reply) = self.preflight(session, ctx, &asked)? {
                return Ok(Step::Answer(reply));
            }
        }
        let destination = self.route(session, ctx, &session.req_header().method);
        route_cors_origin(session, ctx);
        match destination? {
            Destination::Gateway(endpoint) => {
                if websocket::is_upgrade(session.req_header()) {
                    return Err(GatewayError::WebSocketNotAllowed);
                }
                Ok(Step::Answer(
                    self.endpoints.answer(endpoint, session, ctx).await?,
                ))
            }
            Destination::Upstream => {
                let upgrade = websocket_handshake(session, ctx)?;
                check_declared_body(session, ctx)?;
                self.admit(session, ctx).await?;
                self.throttle(ctx).await?;
                Ok(if upgrade {
                    Step::Upgrade
                } else {
                    Step::Forward
                })
            }
        }
    }

    /// Records a gateway-made error and turns it into the pingora error that ends proxying.
    fn fail(ctx: &mut RequestCtx, error: GatewayError) -> Box<Error> {
        let status = error.status();
        ctx.error = Some(error);
        Error::new(ErrorType::HTTPStatus(status))
    }
}

/// A phase after routing found no route in the context: only proxied requests get there.
const NO_ROUTE: GatewayError = GatewayError::Internal("a proxied request has its route and origin");
/// The upstream request is made only once a target was chosen.
const NO_TARGET: GatewayError =
    GatewayError::Internal("an upstream request has its route, origin and target");

const ENCODED_SEPARATOR: &str = "The request path holds an encoded slash or backslash (%2F, %5C) or a backslash, which this route does not accept.";

/// Hop-by-hop headers of HTTP/1.0 keep-alive that some upstreams still send.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Headers the gateway may add to an upstream request: `X-Forwarded-*`, the identity headers,
/// `X-Auth-Method`, `X-Request-Id` and `traceparent`.
const ADDED_UPSTREAM: usize = 10;

/// A request whose `Content-Length` already says it is over the route's `max_body`.
fn check_declared_body(session: &Session, ctx: &RequestCtx) -> Result<(), GatewayError> {
    let Some(limit) = ctx.route.as_ref().and_then(|route| route.max_body) else {
        return Ok(());
    };
    match wellformed::declared_length(session.req_header()) {
        Some(length) if length > limit => Err(GatewayError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// `Access-Control-Allow-Origin` for the request once its route is known, asked again only
/// when the route's policy is not gateway.yaml's (which `identify` asked).
fn route_cors_origin(session: &Session, ctx: &mut RequestCtx) {
    let config = &ctx.snapshot.config;
    let policy = ctx.cors_from.policy(config);
    let same = match (policy, config.cors.as_deref()) {
        (Some(route), Some(gateway)) => std::ptr::eq(route, gateway),
        (route, gateway) => route.is_none() && gateway.is_none(),
    };
    if !same {
        let origin = session.req_header().headers.get(header::ORIGIN);
        ctx.cors_origin = policy.and_then(|cors| cors.allow_origin(origin));
    }
}

/// Whether the request is a WebSocket handshake its route takes (its token taken out of the
/// query); an upgrade elsewhere is refused, and so is a handshake with a body or from a page
/// CORS does not allow.
fn websocket_handshake(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool, GatewayError> {
    let upgrade = websocket::is_upgrade(session.req_header());
    if !ctx.route.as_ref().is_some_and(|route| route.websocket) {
        return if upgrade {
            Err(GatewayError::WebSocketNotAllowed)
        } else {
            Ok(false)
        };
    }
    websocket::take_access_token(session.req_header_mut(), &mut ctx.upstream_target, upgrade)?;
    if upgrade {
        websocket::check_handshake(session.req_header())?;
        refuse_foreign_origin(session, ctx)?;
    }
    Ok(upgrade)
}

/// A browser opens a WebSocket from any page, without a preflight: where CORS is on, a
/// handshake from an origin it does not allow is refused (cross-site WebSocket hijacking).
/// Clients that are not browsers send no `Origin`.
fn refuse_foreign_origin(session: &Session, ctx: &RequestCtx) -> Result<(), GatewayError> {
    let origin = session.req_header().headers.get(header::ORIGIN);
    match origin {
        Some(origin) if ctx.cors().is_some() && ctx.cors_origin.is_none() => {
            Err(GatewayError::CorsRejected(format!(
                "WebSocket connections from the origin `{}` are not allowed here.",
                String::from_utf8_lossy(origin.as_bytes())
            )))
        }
        _ => Ok(()),
    }
}

/// With `tls.redirect_http`, where a request on the plain listener goes instead: not one that
/// came over TLS, to the gateway or to a trusted proxy in front of it.
fn https_redirect(
    session: &Session,
    ctx: &RequestCtx,
) -> Result<Option<HeaderValue>, GatewayError> {
    let (snapshot, request) = (&ctx.snapshot, session.req_header());
    let redirect = snapshot
        .config
        .tls
        .as_ref()
        .is_some_and(|tls| tls.redirect_http);
    let secure = ctx
        .origin
        .as_ref()
        .is_none_or(|origin| origin.tls || forwarded::came_over_https(request, origin));
    if !redirect || secure {
        return Ok(None);
    }
    let default_name = snapshot
        .tls
        .listener
        .as_ref()
        .and_then(|certificates| certificates.select(None).host.as_deref());
    crate::tls::redirect::https_location(request, &snapshot.config, default_name)
        .map(Some)
        .ok_or_else(|| {
            GatewayError::BadRequest(
                "This address answers over https only; the request names no host to send it to."
                    .to_string(),
            )
        })
}

/// The request head as its upstream gets it: the route's path, the forwarding and identity
/// headers, the request id and the trace.
fn upstream_head(request: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
    let (Some(route), Some(target), Some(origin)) = (&ctx.route, ctx.target, &ctx.origin) else {
        return Err(Gateway::fail(ctx, NO_TARGET));
    };
    let uri = ctx
        .upstream_target
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "upstream path", e))?;
    let host = &ctx
        .snapshot
        .upstreams
        .pool(route.service)
        .target(target)
        .host;
    ctx.upstream_sent = Some(std::time::Instant::now());
    let request_id = ctx.request_id.header();
    let trace = match &ctx.trace {
        Some(trace) => {
            Some(HeaderValue::try_from(trace.header()).or_err(InvalidHTTPHeader, "trace")?)
        }
        None => None,
    };
    edit_as_parts(request, |parts| {
        parts.uri = uri;
        forwarded::rewrite_upstream_headers(parts, origin, host)?;
        let headers = &mut parts.headers;
        identity::set_upstream_headers(headers, &ctx.identity, route.forward_authorization)?;
        headers.insert(&request_id::HEADER, request_id);
        if let Some(trace) = trace {
            headers.insert(&TRACEPARENT, trace);
        }
        Ok(())
    })
}

/// Where a request stands once the gateway's own checks are done.
enum Step {
    /// On to the upstream.
    Forward,
    /// A WebSocket handshake on a `websocket: true` route, relayed by the gateway itself.
    Upgrade,
    /// The upgraded connection has ended; nothing is left to answer.
    Relayed,
    /// Answered by one of the gateway's own endpoints.
    Answer(Reply),
}

/// The one place where the outcome becomes pingora's "already answered" flag.
async fn conclude(
    session: &mut Session,
    ctx: &mut RequestCtx,
    step: Result<Step, GatewayError>,
) -> Result<bool> {
    match step {
        Ok(Step::Forward | Step::Upgrade) => Ok(false),
        Ok(Step::Relayed) => Ok(true),
        Ok(Step::Answer(reply)) => {
            respond::send(session, ctx, reply).await?;
            Ok(true)
        }
        Err(error) => {
            if error.invariant().is_some() {
                logs::gateway_error(ctx, &error, None);
            }
            respond::send(session, ctx, Reply::Error(error.clone())).await?;
            ctx.error = Some(error);
            Ok(true)
        }
    }
}

impl Gateway {
    /// Adds the request to the usage statistics, under its consumer and route.
    fn record_usage(&self, session: &Session, ctx: &RequestCtx) {
        let identity = &ctx.identity;
        // A trusted issuer's user is named with the issuer: two providers may both have an `ada`.
        let user = identity.username.as_ref().or(identity.user_id.as_ref());
        let consumer = match (identity.method, user, &identity.issuer, &identity.consumer) {
            (identity::AuthMethod::Jwt, Some(name), None, _) => format!("user:{name}"),
            (identity::AuthMethod::Jwt, Some(name), Some(issuer), _) => {
                format!("user:{name}@{issuer}")
            }
            (identity::AuthMethod::ApiKey, _, _, Some(name)) => format!("key:{name}"),
            _ => "anonymous".to_string(),
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // An upgraded connection's latency is its handshake's, not its life.
        let latency = match ctx.upstream_sent {
            Some(sent) if status == 101 => {
                sent + ctx.upstream_time.unwrap_or_default() - ctx.started
            }
            _ => ctx.started.elapsed(),
        };
        let observation = analytics::Observation {
            consumer: &consumer,
            route: ctx.route_label(),
            status,
            latency,
            throttled: ctx.throttled_by.is_some(),
        };
        self.usage.record(&observation, jwt::unix_now());
    }
}

impl Gateway {
    /// A WebSocket handshake that passed the route's checks: a connection to a healthy target
    /// (the next one when one cannot be reached), then the gateway's own relay.
    async fn relay(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let snapshot = ctx.snapshot.clone();
        let route = ctx.route.clone().ok_or(NO_ROUTE)?;
        let pool = snapshot.upstreams.pool(route.service);
        let mut failure = None;
        let stream = loop {
            let Some(index) = pool.select(&ctx.failed_targets) else {
                let error = failure.unwrap_or_else(|| GatewayError::NoHealthyUpstream {
                    service: pool.service.name.clone(),
                });
                return Err(self.relay_failed(ctx, error));
            };
            ctx.target = Some(index);
            match crate::upstream::connect(pool, index).await {
                Ok(stream) => break stream,
                Err(error) => {
                    self.count_upstream_error(ctx, "connect");
                    failure = Some(websocket::upstream_failure(&error));
                    ctx.failed_targets.push(index);
                }
            }
        };
        let mut head = session.req_header().clone();
        upstream_head(&mut head, ctx).map_err(|_| NO_TARGET)?;
        websocket::keep_upgrade_fields(&mut head);
        let relay = websocket::Relay {
            service: &pool.service,
            lifecycle: &self.lifecycle,
            metrics: &self.metrics,
        };
        relay
            .run(session, ctx, stream, head)
            .await
            .map_err(|error| self.relay_failed(ctx, error))
    }

    /// Counts and logs a WebSocket handshake the upstream failed, as `fail_to_proxy` does
    /// proxied requests.
    fn relay_failed(&self, ctx: &RequestCtx, error: GatewayError) -> GatewayError {
        if let Some(kind) = upstream_error_kind(&error) {
            self.count_upstream_error(ctx, kind);
        }
        logs::gateway_error(ctx, &error, None);
        error
    }

    /// Adds one to `guichet_upstream_errors_total` for the request's service.
    fn count_upstream_error(&self, ctx: &RequestCtx, kind: &str) {
        if let Some(route) = &ctx.route {
            let service = &ctx.snapshot.upstreams.pool(route.service).service.name;
            self.metrics
                .upstream_errors
                .with_label_values(&[service.as_str(), kind])
                .inc();
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(&self.in_flight, self.current.load_full())
    }

    /// The head is the gateway's from here: its connection's guard stops watching for pingora's
    /// own refusals. While the gateway drains, the answer closes the connection.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::connection::head_taken(session);
        if self.lifecycle.closing_connections() {
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        edit_as_parts(session.req_header_mut(), |parts| {
            parts.headers.reserve(ADDED_UPSTREAM);
            Ok(())
        })?;
        self.identify(session, ctx);
        let step = match self.pass(session, ctx).await {
            // Boxed: the relay's state would otherwise be part of every request's future.
            Ok(Step::Upgrade) => Box::pin(self.relay(session, ctx))
                .await
                .map(|()| Step::Relayed),
            other => other,
        };
        conclude(session, ctx, step).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(Self::fail(ctx, NO_ROUTE));
        };
        let pool = ctx.snapshot.upstreams.pool(route.service);
        match pool.select(&ctx.failed_targets) {
            Some(index) => {
                ctx.target = Some(index);
                Ok(pool.peer(index))
            }
            None => {
                let service = pool.service.name.clone();
                Err(Self::fail(ctx, GatewayError::NoHealthyUpstream { service }))
            }
        }
    }

    /// A connection that could not be made carried nothing: any request is retried on a
    /// healthy target it has not failed on yet.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut error: Box<Error>,
    ) -> Box<Error> {
        self.count_upstream_error(ctx, "connect");
        let retry = retry_elsewhere(ctx, &error);
        error.set_retry(retry);
        error
    }

    /// A connection that broke before the answer began is retried on a healthy target the
    /// request has not failed on yet, when sending the request again is safe (`may_resend`).
    /// Replaces pingora's policy, which retried only on reused connections, on any target.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut error = error.more_context(format!("Peer: {peer}"));
        let retry = may_resend(session, &error) && retry_elsewhere(ctx, &error);
        if retry {
            // The failure that ends a request is counted by `fail_to_proxy`.
            self.count_upstream_error(ctx, "broken");
        }
        error.set_retry(retry);
        error
    }

    /// The gateway logs retries itself, at most once every ten seconds (`retry_elsewhere`);
    /// pingora's warning would come with every retried request while a target is down.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_head(request, ctx)
    }

    /// Counts the body as it streams through and stops it at the route's `max_body`.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |chunk| chunk.len() as u64);
        match ctx.route.as_ref().and_then(|route| route.max_body) {
            Some(limit) if ctx.body_bytes > limit => {
                Err(Self::fail(ctx, GatewayError::PayloadTooLarge { limit }))
            }
            _ => Ok(()),
        }
    }

    /// The upstream's answer as the client gets it: hop-by-hop fields of HTTP/1.0 keep-alive
    /// removed, the request id and the rate limit fields added (this hook runs before pingora's
    /// cache, which the gateway does not use; with a cache they would belong in
    /// `response_filter`).
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_time = ctx.upstream_sent.map(|sent| sent.elapsed());
        edit_response_as_parts(response, |headers| {
            headers.remove(&KEEP_ALIVE);
            headers.remove(&PROXY_CONNECTION);
            respond::stamp(headers, ctx).or_err(InvalidHTTPHeader, "response field")
        })
    }

    /// Every failure is answered in the gateway's JSON error shape.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(gateway_error) = ctx.error.clone().or_else(|| classify(error)) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = gateway_error.status();
        if let Some(kind) = upstream_error_kind(&gateway_error) {
            self.count_upstream_error(ctx, kind);
        }
        if status >= 500 {
            match untrusted_certificate(ctx, error).await {
                Some(why) => {
                    let cause = format!("{error}; the certificate is not trusted: {why}");
                    logs::gateway_error(ctx, &gateway_error, Some(&cause));
                }
                None => logs::gateway_error(ctx, &gateway_error, Some(error)),
            }
        }
        ctx.error = Some(gateway_error.clone());
        if session.response_written().is_none() {
            let reply = Reply::Error(gateway_error);
            if let Err(e) = respond::send(session, ctx, reply).await {
                tracing::debug!(request_id = %ctx.request_id, error = %e, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// The gateway writes its own error line in `fail_to_proxy`.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, _error: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.snapshot.config.record_metrics {
            self.metrics.record(session, ctx);
        }
        if ctx.snapshot.config.record_usage {
            self.record_usage(session, ctx);
        }
        logs::access(session, ctx);
    }
}
