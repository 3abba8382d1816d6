//! What a failed attempt means: the answer the client gets, the `kind` counted in
//! `guichet_upstream_errors_total`, whether the request may go to another target, and why an
//! upstream's certificate was refused.

use std::sync::Arc;

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, RetryType};

use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::logs;

/// The `kind` label of `guichet_upstream_errors_total` for an upstream failure.
pub(super) fn upstream_error_kind(error: &GatewayError) -> Option<&'static str> {
    match error {
        GatewayError::BadGateway => Some("broken"),
        GatewayError::UpstreamTimeout => Some("timeout"),
        GatewayError::NoHealthyUpstream { .. } => Some("no_healthy_target"),
        _ => None,
    }
}

/// What a pingora error means for the client, or `None` when the client is already gone.
pub(super) fn classify(error: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    match (error.esource(), error.etype()) {
        (_, HTTPStatus(400)) => Some(GatewayError::BadRequest(
            "The request could not be parsed.".to_string(),
        )),
        (ErrorSource::Downstream, InvalidHTTPHeader) => Some(GatewayError::BadRequest(format!(
            "A request header is not valid: {}.",
            error
                .context
                .as_ref()
                .map_or("it cannot be forwarded", |why| why.as_str())
        ))),
        (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout) => {
            Some(GatewayError::UpstreamTimeout)
        }
        (ErrorSource::Upstream, _) => Some(GatewayError::BadGateway),
        (
            ErrorSource::Downstream,
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout,
        ) => None,
        (ErrorSource::Downstream, _) => Some(GatewayError::BadRequest(
            "The request could not be read.".to_string(),
        )),
        _ => Some(GatewayError::Internal(
            "pingora fails only up- or downstream",
        )),
    }
}

/// Whether a request whose connection broke after it was made may be sent again: pingora marks
/// the error as safe to retry (the upstream refused the request unprocessed), or nothing of
/// the answer reached the client, the method is idempotent, its body can be sent again whole
/// (none, or all of it in pingora's retry buffer) and the connection broke (closed, reset,
/// unwritable). POST and PATCH are thus never sent twice: a connection that breaks once they
/// are written may break after the upstream acted on them. Timeouts are not retried either,
/// as nginx does not by default: an upstream too slow once is likely slow twice.
pub(super) fn may_resend(session: &Session, error: &Error) -> bool {
    use ErrorType::{ConnectionClosed, ReadError, WriteError};
    if session.response_written().is_some() {
        return false;
    }
    if matches!(error.retry, RetryType::Decided(true)) {
        return true;
    }
    let broken = matches!(error.etype(), ConnectionClosed | ReadError | WriteError);
    broken
        && *error.esource() == ErrorSource::Upstream
        && session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated()
}

/// Marks the current target as failed for this request and says whether a healthy target it
/// has not failed on is left: the retries of one request go to each target at most once.
pub(super) fn retry_elsewhere(ctx: &mut RequestCtx, error: &Error) -> bool {
    static RETRIED: logs::Repeated = logs::Repeated::new();
    let (Some(route), Some(target)) = (&ctx.route, ctx.target) else {
        return false;
    };
    if !ctx.failed_targets.contains(&target) {
        ctx.failed_targets.push(target);
    }
    let pool = ctx.snapshot.upstreams.pool(route.service);
    let retry = pool.has_healthy_outside(&ctx.failed_targets);
    if retry {
        if let Some(suppressed) = RETRIED.due() {
            tracing::warn!(
                request_id = %ctx.request_id,
                service = %pool.service.name,
                target = %pool.target(target).url,
                cause = %error,
                suppressed,
                "upstream attempt failed; retried on another target"
            );
        }
    }
    retry
}

/// Why the upstream's certificate failed verification, when that is what `error` is: pingora's
/// error does not say, so the target's TLS settings diagnose it (`UpstreamMaterial::diagnose`).
pub(super) async fn untrusted_certificate(ctx: &RequestCtx, error: &Error) -> Option<Arc<str>> {
    if error.etype() != &ErrorType::InvalidCert {
        return None;
    }
    let (route, target) = (ctx.route.as_ref()?, ctx.target?);
    let pool = ctx.snapshot.upstreams.pool(route.service);
    pool.tls
        .diagnose(pool.target(target), pool.service.connect_timeout)
        .await
}
