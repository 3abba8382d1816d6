//! Every response on the public listener goes one of two ways, and both end in [`stamp`], the
//! one place for the fields every response carries (`X-Request-Id`, the rate limit fields): the
//! answers the gateway makes itself are a [`Reply`], written by [`send`] (or, for heads pingora
//! could not parse, serialised by [`refusal`]); upstreams' answers get [`stamp`]ed in
//! `upstream_response_filter`. A field every response must carry is added in [`stamp`] only.

use bytes::{Bytes, BytesMut};
use http::header::{self, InvalidHeaderValue};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::OrErr;

use crate::context::RequestCtx;
use crate::errors::{self, GatewayError};
use crate::router::MethodSet;

/// An answer the gateway makes itself.
pub enum Reply {
    /// A JSON document, 200: the token endpoints, the usage report.
    Json(serde_json::Value),
    /// The API document, its viewers and their assets, the root view.
    Page(Page),
    /// An error, in the gateway's JSON error shape.
    Error(GatewayError),
    /// 308 to the same URL on https (`tls.redirect_http`).
    Redirect(HeaderValue),
    /// 204 to an allowed CORS preflight, with these fields.
    Preflight(HeaderMap),
}

/// The fields the gateway's own answers and the upstreams' share, set on `headers`: the request
/// id, the rate limit fields of a limited route, `Strict-Transport-Security` on the TLS
/// listener when `tls.hsts` is set, and the CORS fields where CORS is on.
pub fn stamp(headers: &mut HeaderMap, ctx: &RequestCtx) -> Result<(), InvalidHeaderValue> {
    headers.insert(&crate::request_id::HEADER, ctx.request_id.header());
    for (name, value) in &ctx.rate_limit_fields {
        headers.insert(*name, HeaderValue::from_str(value)?);
    }
    if let Some(hsts) = &ctx.snapshot.hsts {
        if ctx.origin.as_ref().is_some_and(|origin| origin.tls) {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    if let Some(cors) = ctx.cors() {
        cors.stamp(headers, ctx.cors_origin.as_ref());
    }
    Ok(())
}

/// Room for the fields a reply has, the stamped ones included (CORS's, where it is on, may grow
/// the map once).
const REPLY_FIELDS: usize = 9;

impl Reply {
    /// The status, fields and body of the reply, stamped.
    fn render(
        self,
        ctx: &RequestCtx,
    ) -> Result<(StatusCode, HeaderMap, Bytes), InvalidHeaderValue> {
        let mut headers = HeaderMap::with_capacity(REPLY_FIELDS);
        let mut preflight = None;
        let (status, body) = match self {
            Reply::Json(document) => {
                let body = Bytes::from(document.to_string());
                json_fields(&mut headers, body.len());
                (StatusCode::OK, body)
            }
            Reply::Page(page) => {
                page.fields(&mut headers)?;
                (page.status, page.body)
            }
            Reply::Error(error) => {
                let body =
                    errors::error_body(&error.detail(), error.code(), ctx.request_id.as_str());
                json_fields(&mut headers, body.len());
                error_fields(&mut headers, &error)?;
                let status = StatusCode::from_u16(error.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, body)
            }
            Reply::Redirect(location) => {
                headers.insert(header::LOCATION, location);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                (StatusCode::PERMANENT_REDIRECT, Bytes::new())
            }
            Reply::Preflight(fields) => {
                preflight = Some(fields);
                (StatusCode::NO_CONTENT, Bytes::new())
            }
        };
        stamp(&mut headers, ctx)?;
        // After the stamp, which replaces the CORS fields an upstream sent.
        for (name, value) in preflight.iter().flatten() {
            headers.append(name, value.clone());
        }
        Ok((status, headers, body))
    }
}

fn json_fields(headers: &mut HeaderMap, length: usize) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The fields some errors come with: `Allow`, `WWW-Authenticate`, `Retry-After`.
fn error_fields(headers: &mut HeaderMap, error: &GatewayError) -> Result<(), InvalidHeaderValue> {
    match error {
        // CONNECT, refused before routing, names no set.
        GatewayError::MethodNotAllowed { allowed, .. } if *allowed != MethodSet::EMPTY => {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_str(&allowed.allow_header())?,
            );
        }
        GatewayError::Unauthorized { challenge, .. } => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(challenge)?);
        }
        GatewayError::Throttled { retry_after } | GatewayError::LoginBusy { retry_after } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        _ => {}
    }
    Ok(())
}

/// Writes the whole reply, keeping the connection open for the next request; HEAD, and a reply
/// without a body, get the head only.
pub async fn send(session: &mut Session, ctx: &RequestCtx, reply: Reply) -> pingora::Result<()> {
    let (status, headers, body) = reply
        .render(ctx)
        .or_err(pingora::ErrorType::InvalidHTTPHeader, "reply field")?;
    let head = response_head(status, headers);
    let no_body = body.is_empty() || session.req_header().method == Method::HEAD;
    session
        .write_response_header(Box::new(head), no_body)
        .await?;
    if !no_body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A response head without pingora's map of name cases: standard names go out capitalised.
fn response_head(status: StatusCode, headers: HeaderMap) -> ResponseHeader {
    let mut head = http::Response::new(());
    *head.status_mut() = status;
    *head.headers_mut() = headers;
    ResponseHeader::from(head.into_parts().0)
}

/// The bytes of the whole answer to a head pingora refused, which closes the connection, and
/// how many of them are the body. The head is serialised as pingora writes every other one.
pub fn refusal(ctx: &RequestCtx, error: GatewayError, head_only: bool) -> (Bytes, usize) {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    // The fields of these errors are static and the request id the gateway's own: rendering
    // cannot fail; if it did, the status still goes out.
    let (status, mut headers, body) = Reply::Error(error)
        .render(ctx)
        .unwrap_or_else(|_| (status, HeaderMap::new(), Bytes::new()));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    if let Ok(date) = HeaderValue::from_str(&date) {
        headers.insert(header::DATE, date);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let sent = if head_only { 0 } else { body.len() };
    let reason = status.canonical_reason().unwrap_or("");
    let mut answer = BytesMut::with_capacity(256 + sent);
    answer.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
    response_head(status, headers).header_to_h1_wire(&mut answer);
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(&body[..sent]);
    (answer.freeze(), sent)
}

/// A page the gateway serves: the API document, its viewers and their assets, the root view.
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub etag: Option<String>,
    pub cache_control: &'static str,
    pub csp: Option<&'static str>,
}

impl Page {
    pub fn ok(content_type: &'static str, body: Bytes) -> Page {
        Page {
            status: StatusCode::OK,
            content_type,
            body,
            etag: None,
            cache_control: "no-cache",
            csp: None,
        }
    }

    /// The page's fields, but for the ones every response carries.
    fn fields(&self, headers: &mut HeaderMap) -> Result<(), InvalidHeaderValue> {
        if self.status != StatusCode::NOT_MODIFIED {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(self.cache_control),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(etag) = &self.etag {
            headers.insert(header::ETAG, HeaderValue::from_str(etag)?);
            // The document's rendering depends on Accept.
            headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        }
        if let Some(csp) = self.csp {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            );
        }
        Ok(())
    }
}
