//! WebSocket routes (`websocket: true`). The upgrade handshake passes the route's checks like
//! any request (a browser's token may come as `?access_token=`, since browsers cannot set
//! `Authorization` on a WebSocket); then the gateway relays the upgraded connection itself
//! rather than through pingora's proxy loop, so that it decides how the connection ends:
//! `timeouts.read` no longer applies, `timeouts.idle` closes one with nothing either way, and
//! just before the grace period of a drain ends the gateway sends both ends a close frame
//! (1001, going away).

mod frames;
mod relay;

use std::time::Instant;

use futures_util::FutureExt;
use http::header::{AUTHORIZATION, CONNECTION, UPGRADE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{ErrorType, OrErr};
use prometheus::{IntGauge, IntGaugeVec};

use crate::config::Service;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::parts::edit_response_as_parts;

/// The query parameter a browser's token may come in.
const ACCESS_TOKEN: &str = "access_token";

/// Whether the request asks to become a WebSocket (`Upgrade: websocket` in HTTP/1.1; HTTP/1.0
/// has no upgrade, and pingora forwards such a request without its `Upgrade`).
pub fn is_upgrade(request: &RequestHeader) -> bool {
    if request.version != http::Version::HTTP_11 {
        return false;
    }
    request.headers.get(UPGRADE).is_some_and(|value| {
        value.to_str().is_ok_and(|protocols| {
            protocols
                .split(',')
                .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// A handshake carries no body: the upstream would wait for one the relay never sends.
pub fn check_handshake(request: &RequestHeader) -> Result<(), GatewayError> {
    let declared = crate::wellformed::declared_length(request).unwrap_or(0);
    if declared > 0
        || request
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
    {
        return Err(GatewayError::BadRequest(
            "A WebSocket handshake has no body.".to_string(),
        ));
    }
    Ok(())
}

/// Takes `access_token` out of the query of the request and of `upstream_target` (it reaches
/// neither the upstream nor the logs) and, on a `handshake`, sends it as `Authorization:
/// Bearer` when the request has no `Authorization` of its own: ordinary requests put tokens in
/// `Authorization`, where they are never written down.
pub fn take_access_token(
    request: &mut RequestHeader,
    upstream_target: &mut String,
    handshake: bool,
) -> Result<(), GatewayError> {
    let Some(query) = request.uri.query().filter(|q| q.contains(ACCESS_TOKEN)) else {
        return Ok(());
    };
    let (token, rest) = split_token(query);
    let token = token.map(str::to_owned);
    let mut uri = request.uri.path().to_string();
    if !rest.is_empty() {
        uri.push('?');
        uri.push_str(&rest);
    }
    let uri = uri
        .parse::<http::Uri>()
        .map_err(|_| GatewayError::Internal("a query less one parameter is a query"))?;
    request.set_uri(uri);
    if let Some((path, query)) = upstream_target.split_once('?') {
        let rest = split_token(query).1;
        *upstream_target = if rest.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{rest}")
        };
    }
    let Some(token) = token.filter(|_| handshake) else {
        return Ok(());
    };
    if !request.headers.contains_key(AUTHORIZATION) {
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            GatewayError::BadRequest("The access_token parameter is not a token.".to_string())
        })?;
        request
            .insert_header(AUTHORIZATION, bearer)
            .map_err(|_| GatewayError::Internal("Authorization is a valid field"))?;
    }
    Ok(())
}

/// The first `access_token` of a query, and the query without any.
fn split_token(query: &str) -> (Option<&str>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((ACCESS_TOKEN, value)) => {
                token = token.or(Some(value));
            }
            _ if pair == ACCESS_TOKEN => {}
            _ => rest.push(pair),
        }
    }
    (token.filter(|t| !t.is_empty()), rest.join("&"))
}

/// The handshake as the upstream must get it, cleaned as pingora cleans the requests it
/// forwards: `Connection: Upgrade` and `Upgrade: websocket`, no other hop-by-hop field, none
/// the client's `Connection` names.
pub fn keep_upgrade_fields(head: &mut RequestHeader) {
    let named: Vec<String> = head
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && name != "upgrade")
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        head.remove_header(name);
    }
    // Static values are always valid fields.
    let _ = head.insert_header(CONNECTION, "Upgrade");
    let _ = head.insert_header(UPGRADE, "websocket");
}

/// Hop-by-hop fields a handshake never passes on (RFC 9110 §7.6.1, and HTTP/2's upgrade).
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "http2-settings",
];

/// What a relay needs besides the request: the service's timeouts, the process's lifecycle
/// and the gauge of open connections.
pub struct Relay<'a> {
    pub service: &'a Service,
    pub lifecycle: &'a Lifecycle,
    pub metrics: &'a Metrics,
}

impl Relay<'_> {
    /// Sends the handshake `head` upstream on `stream` and passes its answer on; a 101 turns
    /// the connection into a relay of frames until it ends (`relay`). An error is returned
    /// only while the client can still be answered with it.
    pub async fn run(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        stream: Stream,
        head: RequestHeader,
    ) -> Result<(), GatewayError> {
        let mut upstream = HttpSession::new(stream);
        upstream.read_timeout = Some(self.service.read_timeout);
        upstream.write_timeout = Some(self.service.read_timeout);
        ctx.upstream_sent = Some(Instant::now());
        upstream
            .write_request_header(Box::new(head))
            .await
            .map_err(|e| upstream_failure(&e))?;
        let mut answer = upstream
            .read_resp_header_parts()
            .await
            .map_err(|e| upstream_failure(&e))?;
        ctx.upstream_time = ctx.upstream_sent.map(|sent| sent.elapsed());
        edit_response_as_parts(&mut answer, |headers| {
            crate::respond::stamp(headers, ctx).or_err(ErrorType::InvalidHTTPHeader, "field")
        })
        .map_err(|_| GatewayError::Internal("stamped fields are valid"))?;
        if !upstream.was_upgraded() {
            pass_answer(session, ctx, &mut upstream, answer).await;
            return Ok(());
        }
        // Bytes the upstream sent right behind its 101, which its session holds.
        let early = match upstream.read_body_bytes().now_or_never() {
            Some(Ok(Some(bytes))) => Some(bytes),
            Some(Ok(None) | Err(_)) => return Err(GatewayError::BadGateway),
            None => None,
        };
        session.set_read_timeout(None);
        if session.write_response_header(answer, false).await.is_err() {
            return Ok(());
        }
        let _open = OpenSocket::count(&self.metrics.websocket_connections, ctx.route_label());
        let farewell = self.lifecycle.farewell();
        let idle = self.service.idle_timeout;
        relay::relay(session, ctx, upstream.into_inner(), early, idle, farewell).await;
        Ok(())
    }
}

/// What the client is answered when the upstream fails the handshake.
pub fn upstream_failure(error: &pingora::Error) -> GatewayError {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            GatewayError::UpstreamTimeout
        }
        _ => GatewayError::BadGateway,
    }
}

/// One open WebSocket in `guichet_websocket_connections`, for as long as it lives, however its
/// relay ends.
struct OpenSocket(IntGauge);

impl OpenSocket {
    fn count(gauges: &IntGaugeVec, route: &str) -> OpenSocket {
        let gauge = gauges.with_label_values(&[route]);
        gauge.inc();
        OpenSocket(gauge)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An answer other than 101 to the handshake, passed on as it is. An upstream that breaks off
/// its body leaves the client's connection to be closed, never reused.
async fn pass_answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    upstream: &mut HttpSession,
    answer: Box<pingora::http::ResponseHeader>,
) {
    if session.write_response_header(answer, false).await.is_err() {
        return;
    }
    loop {
        match upstream.read_body_bytes().await {
            Ok(Some(bytes)) => {
                if session
                    .write_response_body(Some(bytes), false)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => break,
            Err(_) => {
                session.set_keepalive(None);
                ctx.error = Some(GatewayError::BadGateway);
                return;
            }
        }
    }
    let _ = session.write_response_body(None, true).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> RequestHeader {
        RequestHeader::build("GET", uri.as_bytes(), None).expect("head")
    }

    #[test]
    fn the_access_token_becomes_authorization_and_leaves_the_query() {
        let mut head = request("/ws/lab?room=4&access_token=abc.def.ghi&x=1");
        let mut target = "/lab?room=4&access_token=abc.def.ghi&x=1".to_string();
        take_access_token(&mut head, &mut target, true).expect("taken");
        assert_eq!(head.uri.to_string(), "/ws/lab?room=4&x=1");
        assert_eq!(target, "/lab?room=4&x=1");
        assert_eq!(head.headers[AUTHORIZATION], "Bearer abc.def.ghi");

        let mut head = request("/ws/lab?access_token=abc");
        head.insert_header(AUTHORIZATION, "Bearer own")
            .expect("field");
        let mut target = "/lab?access_token=abc".to_string();
        take_access_token(&mut head, &mut target, true).expect("taken");
        assert_eq!(head.uri.to_string(), "/ws/lab");
        assert_eq!(target, "/lab");
        assert_eq!(
            head.headers[AUTHORIZATION], "Bearer own",
            "its own one wins"
        );
    }

    #[test]
    fn a_query_without_the_token_is_left_alone() {
        let mut head = request("/ws/lab?my_access_token_count=2");
        let mut target = "/lab?my_access_token_count=2".to_string();
        take_access_token(&mut head, &mut target, true).expect("nothing to take");
        assert_eq!(head.uri.to_string(), "/ws/lab?my_access_token_count=2");
        assert_eq!(target, "/lab?my_access_token_count=2");
        assert!(!head.headers.contains_key(AUTHORIZATION));
    }

    #[test]
    fn only_an_upgrade_to_websocket_counts() {
        let mut head = request("/ws/");
        assert!(!is_upgrade(&head));
        head.insert_header(UPGRADE, "h2c").expect("field");
        assert!(!is_upgrade(&head));
        head.insert_header(UPGRADE, "WebSocket").expect("field");
        assert!(is_upgrade(&head));
    }
}
