//! Request and response heads edited as plain `http` parts, without pingora's map of each
//! header name's original case.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// Headers added to an upstream response: `X-Request-Id`, the two rate limit fields, and the
/// `Date` and `Connection` that pingora writes (CORS's fields, where it is on, may grow the
/// map once: room for them would cost every answer a table twice the size).
const ADDED_DOWNSTREAM: usize = 5;

/// Edits a request as plain `http` parts. pingora's header keeps a second map of each name's
/// original case, which each of its inserts and removes parses the name for and grows or
/// searches; the parts have none. The client's request goes through here first (its index
/// sized for the headers the gateway adds), so the copy pingora makes for the upstream has no
/// case map either, and the headers set on it cost a fraction (measured with callgrind).
/// Upstreams receive header names in lower case, standard ones capitalised (names are
/// case-insensitive; HAProxy sends them all in lower case). The raw request-target is not kept:
/// routing and the upstream target use the normalised path, and upstreams are HTTP/1.
pub(crate) fn edit_as_parts(
    request: &mut RequestHeader,
    edit: impl FnOnce(&mut http::request::Parts) -> Result<()>,
) -> Result<()> {
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let send_end_stream = request.send_end_stream();
    let mut parts = http::request::Parts::from(std::mem::replace(request, placeholder));
    let edited = edit(&mut parts);
    *request = RequestHeader::from(parts);
    if let Some(end) = send_end_stream {
        request.set_send_end_stream(end);
    }
    edited
}

/// Edits an upstream's response as plain `http` parts, as `edit_as_parts` does requests, with
/// room for the headers added to it; its reason phrase is kept. Clients receive header names in
/// lower case, standard ones capitalised.
pub(crate) fn edit_response_as_parts(
    response: &mut ResponseHeader,
    edit: impl FnOnce(&mut http::HeaderMap) -> Result<()>,
) -> Result<()> {
    let reason = response
        .get_reason_phrase()
        .filter(|reason| Some(*reason) != response.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(response, placeholder));
    parts.headers.reserve(ADDED_DOWNSTREAM);
    let edited = edit(&mut parts.headers);
    *response = ResponseHeader::from(parts);
    response.set_reason_phrase(reason.as_deref())?;
    edited
}
