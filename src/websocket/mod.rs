//! WebSocket routes (`websocket: true`). The upgrade handshake passes the route's checks like
//! any request (a browser's token may come as `?access_token=`, since browsers cannot set
//! `Authorization` on a WebSocket); then the gateway relays the upgraded connection itself
//! rather than through pingora's proxy loop, so that it decides how the connection ends:
//! `timeouts.read` no longer applies, `timeouts.idle` closes one with nothing either way, and
//! just before the grace period of a drain ends the gateway sends both ends a close frame
//! (1001, going away).

mod frames;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, UPGRADE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{ErrorType, OrErr};

use self::frames::{going_away_from_client, going_away_from_server, FrameCursor};
use crate::config::Service;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::parts::edit_response_as_parts;

/// The query parameter a browser's token may come in.
const ACCESS_TOKEN: &str = "access_token";

/// How long a closing connection waits for the client's answering close frame.
const CLOSING: Duration = Duration::from_millis(250);

/// Whether the request asks to become a WebSocket (`Upgrade: websocket`).
pub fn is_upgrade(request: &RequestHeader) -> bool {
    request.headers.get(UPGRADE).is_some_and(|value| {
        value.to_str().is_ok_and(|protocols| {
            protocols
                .split(',')
                .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// Takes `access_token` out of the query of the request and of `upstream_target` (it reaches
/// neither the upstream nor the logs), and sends it as `Authorization: Bearer` when the request
/// has no `Authorization` of its own.
pub fn take_access_token(
    request: &mut RequestHeader,
    upstream_target: &mut String,
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
    let Some(token) = token else {
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

/// The handshake's own hop-by-hop fields, as the upstream must get them: `Connection: Upgrade`
/// and the client's `Upgrade`, nothing of HTTP/1.0 keep-alive.
pub fn keep_upgrade_fields(head: &mut RequestHeader) {
    for name in ["keep-alive", "proxy-connection", "te", "trailer"] {
        head.remove_header(name);
    }
    // A static value is always a valid field.
    let _ = head.insert_header(CONNECTION, "Upgrade");
}

/// Why a relayed connection ended.
enum End {
    /// One end closed or broke: the other is closed with it.
    Closed,
    /// `timeouts.idle` passed with nothing either way.
    Idle,
    /// The grace period of a drain is about to end.
    Farewell,
}

/// What a relay needs besides the request: the service's timeouts, the process's lifecycle
/// and the gauge of open connections.
pub struct Relay<'a> {
    pub service: &'a Service,
    pub lifecycle: &'a Lifecycle,
    pub metrics: &'a Metrics,
}

impl Relay<'_> {
    /// Sends the handshake `head` upstream on `stream` and passes its answer on; a 101 turns
    /// the connection into a relay of frames until one of the [`End`]s. An error is returned
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
            .map_err(|_| GatewayError::BadGateway)?;
        let mut answer = upstream
            .read_resp_header_parts()
            .await
            .map_err(|e| match e.etype() {
                ErrorType::ReadTimedout => GatewayError::UpstreamTimeout,
                _ => GatewayError::BadGateway,
            })?;
        ctx.upstream_time = ctx.upstream_sent.map(|sent| sent.elapsed());
        edit_response_as_parts(&mut answer, |headers| {
            crate::respond::stamp(headers, ctx).or_err(ErrorType::InvalidHTTPHeader, "field")
        })
        .map_err(|_| GatewayError::Internal("stamped fields are valid"))?;
        if !upstream.was_upgraded() {
            pass_answer(session, &mut upstream, answer).await;
            return Ok(());
        }
        upstream.maybe_upgrade_body_writer();
        upstream.read_timeout = None;
        upstream.write_timeout = None;
        session.set_read_timeout(None);
        if session.write_response_header(answer, false).await.is_err() {
            return Ok(());
        }
        let gauge = self
            .metrics
            .websocket_connections
            .with_label_values(&[ctx.route_label()]);
        gauge.inc();
        self.relay(session, ctx, &mut upstream).await;
        gauge.dec();
        Ok(())
    }

    /// Frames both ways until the connection ends; at the idle timeout and at the drain's end
    /// both ends get a close frame, each only between two frames.
    async fn relay(&self, session: &mut Session, ctx: &mut RequestCtx, upstream: &mut HttpSession) {
        let mut farewell = self.lifecycle.farewell();
        let (mut from_client, mut from_upstream) = (FrameCursor::default(), FrameCursor::default());
        let mut last = Instant::now();
        let end = loop {
            let quiet_until = tokio::time::Instant::from_std(last + self.service.idle_timeout);
            tokio::select! {
                read = session.read_request_body() => {
                    let Ok(Some(bytes)) = read else { break End::Closed };
                    from_client.advance(&bytes);
                    ctx.body_bytes += bytes.len() as u64;
                    last = Instant::now();
                    if upstream.write_body(&bytes).await.is_err() {
                        break End::Closed;
                    }
                }
                read = upstream.read_body_bytes() => {
                    let Ok(Some(bytes)) = read else { break End::Closed };
                    from_upstream.advance(&bytes);
                    last = Instant::now();
                    if session.write_response_body(Some(bytes), false).await.is_err() {
                        break End::Closed;
                    }
                }
                () = tokio::time::sleep_until(quiet_until) => break End::Idle,
                () = async { drop(farewell.wait_for(|leaving| *leaving).await) } => break End::Farewell,
            }
        };
        if matches!(end, End::Idle | End::Farewell) {
            if from_upstream.at_boundary() {
                let close = Bytes::copy_from_slice(&going_away_from_server());
                if session
                    .write_response_body(Some(close), false)
                    .await
                    .is_ok()
                {
                    // The client's answering close frame, so that it sees a clean close.
                    let _ = tokio::time::timeout(CLOSING, session.read_request_body()).await;
                }
            }
            if from_client.at_boundary() {
                let _ = upstream.write_body(&going_away_from_client(mask())).await;
            }
        }
    }
}

/// An answer other than 101 to the handshake, passed on as it is.
async fn pass_answer(
    session: &mut Session,
    upstream: &mut HttpSession,
    answer: Box<pingora::http::ResponseHeader>,
) {
    if session.write_response_header(answer, false).await.is_err() {
        return;
    }
    while let Ok(Some(bytes)) = upstream.read_body_bytes().await {
        if session
            .write_response_body(Some(bytes), false)
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = session.write_response_body(None, true).await;
}

/// A masking key for the gateway's own close frame to the upstream: unpredictable enough for
/// one frame (RFC 6455 §5.3 guards intermediaries against a client's chosen bytes).
fn mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    nanos.to_le_bytes()
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
        take_access_token(&mut head, &mut target).expect("taken");
        assert_eq!(head.uri.to_string(), "/ws/lab?room=4&x=1");
        assert_eq!(target, "/lab?room=4&x=1");
        assert_eq!(head.headers[AUTHORIZATION], "Bearer abc.def.ghi");

        let mut head = request("/ws/lab?access_token=abc");
        head.insert_header(AUTHORIZATION, "Bearer own")
            .expect("field");
        let mut target = "/lab?access_token=abc".to_string();
        take_access_token(&mut head, &mut target).expect("taken");
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
        take_access_token(&mut head, &mut target).expect("nothing to take");
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
