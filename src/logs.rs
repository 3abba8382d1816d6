//! Logging: the `tracing` subscriber (text or one JSON object per line, filtered by `RUST_LOG`),
//! the access-log line every request gets, and the error line every gateway-made 5xx gets.

use pingora::proxy::Session;
use tracing_subscriber::EnvFilter;

use crate::context::RequestCtx;
use crate::errors::GatewayError;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Pingora's own chatter stays at warn unless `RUST_LOG` says otherwise.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second call (tests, embedding) keeps the first subscriber.
    drop(installed);
}

fn upstream_url(ctx: &RequestCtx) -> &str {
    match (&ctx.route, ctx.target) {
        (Some(route), Some(target)) => {
            &ctx.snapshot
                .upstreams
                .pool(route.service)
                .target(target)
                .url
        }
        _ => "",
    }
}

/// The route's id, the gateway endpoint's, or `unmatched`.
fn route_id(ctx: &RequestCtx) -> &str {
    match (&ctx.route, ctx.endpoint) {
        (Some(route), _) => &route.id,
        (None, Some(endpoint)) => endpoint.id(),
        (None, None) => "unmatched",
    }
}

/// One line per request, proxied or answered by the gateway.
pub fn access(session: &Session, ctx: &RequestCtx) {
    let request = session.req_header();
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    let identity = &ctx.identity;
    tracing::info!(
        target: "guichet::access",
        request_id = %ctx.request_id,
        trace_id = ctx.trace.as_ref().map_or("", |t| t.trace_id.as_str()),
        client_ip = %ctx.origin.as_ref().map(|o| o.client.to_string()).unwrap_or_default(),
        method = %request.method,
        path = %request.uri.path(),
        route = route_id(ctx),
        status,
        duration_ms = ctx.started.elapsed().as_micros() as f64 / 1000.0,
        upstream = upstream_url(ctx),
        upstream_ms = ctx.upstream_time.map(|t| t.as_micros() as f64 / 1000.0),
        auth = identity.method.as_str(),
        user_id = identity.user_id,
        consumer = identity.consumer.as_deref(),
        rate_limited = ctx.throttled_by.as_deref(),
        bytes_in = ctx.body_bytes,
        bytes_out = session.body_bytes_sent(),
        "request"
    );
}

/// One line per 5xx the gateway made, with the cause.
pub fn gateway_error(ctx: &RequestCtx, error: &GatewayError, cause: &pingora::Error) {
    tracing::error!(
        target: "guichet::error",
        request_id = %ctx.request_id,
        trace_id = ctx.trace.as_ref().map_or("", |t| t.trace_id.as_str()),
        status = error.status(),
        code = error.code(),
        route = route_id(ctx),
        upstream = upstream_url(ctx),
        cause = %cause,
        "{}",
        error.detail()
    );
}
