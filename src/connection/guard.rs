//! A client's stream as pingora's HTTP/1 session reads and writes it. While a request head
//! arrives, the guard holds its bytes back until the head is whole, so pingora parses each
//! head once and only within `client:` limits: a head that takes longer than
//! `header_timeout` is answered 408, one over `max_request_line` 414, over `max_header_size` or
//! `max_headers` 431 — all in the gateway's JSON shape, logged and counted. It closes a
//! keep-alive connection idle for `keepalive_timeout`. And it replaces the plain answers
//! pingora's parser gives to heads it refuses (two `Content-Length`, a malformed line) with
//! the gateway's JSON, logged and counted like every other answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head::{HeadScan, Progress};
use super::Refusals;
use crate::config::ClientLimits;
use crate::errors::GatewayError;

/// After refusing a head, how long and how much of what the client still sends is read and
/// dropped before closing, so that closing with unread bytes does not reset the connection
/// before the client has read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// What the connection's keep-alive loop and the gateway tell the guard.
#[derive(Debug, Default)]
pub struct Phase {
    /// Requests started on the connection; a new one means a new head is awaited.
    requests: AtomicU64,
    /// Whether the gateway has taken the current request's head: from then on, what is written
    /// is the gateway's answer.
    taken: AtomicBool,
}

impl Phase {
    /// The keep-alive loop starts a new request.
    pub fn next_request(&self) {
        self.taken.store(false, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The gateway has the request's head.
    pub fn head_taken(&self) {
        self.taken.store(true, Ordering::Relaxed);
    }
}

/// Where the current head stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// No byte of it yet.
    Awaited,
    /// Some bytes arrived, held back until the head is whole.
    Arriving,
    /// Handed to pingora whole.
    Handed,
}

/// A refusal written instead of what pingora would have answered.
#[derive(Debug)]
struct Answer {
    bytes: Bytes,
    /// Sent and flushed: then the write side is shut and the rest of the input dropped.
    flushed: bool,
    shut: bool,
    lingered: usize,
}

pub struct GuardedStream {
    inner: Stream,
    phase: Arc<Phase>,
    limits: ClientLimits,
    refusals: Arc<Refusals>,
    /// The request this guard last saw start (see [`Phase::requests`]).
    request: u64,
    head: Head,
    /// Bytes of a head that came in several reads, held until it is whole; then it and what
    /// followed it are handed over from `handed` on.
    held: BytesMut,
    handed: usize,
    /// The request line of the last head, kept to log a refusal of pingora's.
    line: Vec<u8>,
    /// Whether `held` starts a head whose bytes have not been looked at yet.
    unscanned: bool,
    scan: HeadScan,
    /// When waiting stops: the connection's start plus `header_timeout` for its first request,
    /// then the wait's start plus `keepalive_timeout`, then the head's first byte plus
    /// `header_timeout`. Set only when a read has to wait.
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    answer: Option<Answer>,
}

impl GuardedStream {
    pub fn new(
        inner: Stream,
        phase: Arc<Phase>,
        limits: ClientLimits,
        refusals: Arc<Refusals>,
    ) -> GuardedStream {
        GuardedStream {
            inner,
            phase,
            limits,
            refusals,
            request: 0,
            head: Head::Awaited,
            held: BytesMut::new(),
            handed: 0,
            line: Vec::new(),
            unscanned: false,
            scan: HeadScan::default(),
            deadline: Some(Instant::now() + limits.header_timeout),
            timer: None,
            answer: None,
        }
    }

    /// The phase shared with the keep-alive loop and the gateway.
    pub fn phase(&self) -> &Arc<Phase> {
        &self.phase
    }

    /// Starts awaiting the next head when the keep-alive loop has started a new request.
    fn follow_requests(&mut self) {
        let request = self.phase.requests.load(Ordering::Relaxed);
        if request != self.request {
            self.request = request;
            self.scan = HeadScan::default();
            self.line.clear();
            self.deadline = None;
            // Bytes read with the last head and never asked for (pipelined requests) start
            // the next one.
            let rest = self.held.split_off(self.handed);
            self.held = rest;
            self.handed = 0;
            self.head = Head::Awaited;
            self.unscanned = !self.held.is_empty();
        }
    }

    /// Whether the deadline has passed; otherwise the timer will wake the task at it.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = match self.deadline {
            Some(deadline) => deadline,
            None => {
                let wait = match self.head {
                    Head::Awaited => self.limits.keepalive_timeout,
                    _ => self.limits.header_timeout,
                };
                let deadline = Instant::now() + wait;
                self.deadline = Some(deadline);
                deadline
            }
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // The timer is only ever moved earlier: each request's wait would otherwise take it
        // out of the timer wheel and put it back. Set for an earlier wait, it fires early and
        // is then moved on to the deadline of the wait at hand.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
        false
    }

    /// Refuses the head with `error`: the answer is written in place of anything else.
    fn refuse(&mut self, error: &GatewayError, head: &[u8]) {
        if !head.is_empty() {
            self.keep_request_line(head);
        }
        let line = (!self.line.is_empty()).then_some(self.line.as_slice());
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let tls = self.inner.get_ssl_digest().is_some();
        let bytes = self.refusals.answer(peer, tls, line, error);
        self.answer = Some(Answer {
            bytes,
            flushed: false,
            shut: false,
            lingered: 0,
        });
    }

    /// Sends the answer, shuts the write side, then reads and drops what the client still
    /// sends for a while. Ready once the connection can be closed.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(answer) = self.answer.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut inner = Pin::new(&mut *self.inner);
        while answer.bytes.has_remaining() {
            let written = ready!(inner.as_mut().poll_write(cx, &answer.bytes))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            answer.bytes.advance(written);
        }
        if !answer.flushed {
            ready!(inner.as_mut().poll_flush(cx))?;
            answer.flushed = true;
        }
        if !answer.shut {
            ready!(inner.as_mut().poll_shutdown(cx))?;
            answer.shut = true;
            self.deadline = Some(Instant::now() + LINGER);
        }
        let mut scratch = [0u8; 4096];
        while answer.lingered < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut scratch);
            match inner.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    answer.lingered += buf.filled().len()
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let deadline = self.deadline.unwrap_or_else(Instant::now);
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    timer.as_mut().reset(deadline);
                    return match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads a head: held back until whole (or refused), then handed over with what follows.
    fn poll_read_head(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.answer.is_some() {
                ready!(self.poll_answer(cx))?;
                return Poll::Ready(Ok(()));
            }
            if std::mem::take(&mut self.unscanned) {
                self.head = Head::Arriving;
                let progress = self.scan.advance(&mut self.held, &self.limits);
                if self.conclude(progress, out) {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let before = out.filled().len();
            match Pin::new(&mut *self.inner).poll_read(cx, out) {
                Poll::Pending => {
                    if !self.deadline_passed(cx) {
                        return Poll::Pending;
                    }
                    if self.head == Head::Awaited {
                        // Nothing of a request came in time: closed without an answer, as
                        // nginx and HAProxy do.
                        return Poll::Ready(Ok(()));
                    }
                    let held = std::mem::take(&mut self.held);
                    self.refuse(&GatewayError::RequestTimeout, &held);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if out.filled().len() == before => {
                    // The client closed; a partial head is dropped, not parsed.
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    let fresh = &mut out.filled_mut()[before..];
                    if self.head == Head::Awaited {
                        if fresh.iter().all(|b| *b == b'\r' || *b == b'\n') {
                            // Empty lines between requests are the parser's to skip; they may
                            // also end a pipelined head pingora already holds part of.
                            return Poll::Ready(Ok(()));
                        }
                        self.head = Head::Arriving;
                        if self.request > 0 {
                            self.deadline = None;
                        }
                    }
                    let progress = if self.held.is_empty() {
                        // The usual case: the whole head in one read, looked at in place.
                        let progress = self.scan.advance(fresh, &self.limits);
                        if progress != Progress::Incomplete {
                            if let Progress::Refused(error) = &progress {
                                let head = fresh.to_vec();
                                out.set_filled(before);
                                self.refuse(error, &head);
                                continue;
                            }
                            self.keep_request_line(&out.filled()[before..]);
                            self.head = Head::Handed;
                            return Poll::Ready(Ok(()));
                        }
                        self.held.extend_from_slice(fresh);
                        out.set_filled(before);
                        progress
                    } else {
                        self.held.extend_from_slice(fresh);
                        out.set_filled(before);
                        self.scan.advance(&mut self.held, &self.limits)
                    };
                    if self.conclude(progress, out) {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }

    /// Acts on what scanning the held bytes found; true when `out` now holds the head.
    fn conclude(&mut self, progress: Progress, out: &mut ReadBuf<'_>) -> bool {
        match progress {
            Progress::Incomplete => false,
            Progress::Complete(_) => {
                let held = std::mem::take(&mut self.held);
                self.keep_request_line(&held);
                self.held = held;
                self.head = Head::Handed;
                self.hand_over(out);
                true
            }
            Progress::Refused(error) => {
                let head = std::mem::take(&mut self.held);
                self.handed = 0;
                self.refuse(&error, &head);
                false
            }
        }
    }

    /// Keeps the request line of a whole head, should pingora refuse it.
    fn keep_request_line(&mut self, head: &[u8]) {
        self.line.clear();
        if let Some(line) = self.scan.request_line(head) {
            self.line.extend_from_slice(line);
        }
    }

    /// Copies held bytes not yet handed over into `out`.
    fn hand_over(&mut self, out: &mut ReadBuf<'_>) {
        let rest = &self.held[self.handed..];
        let count = rest.len().min(out.remaining());
        out.put_slice(&rest[..count]);
        self.handed += count;
        if self.handed == self.held.len() {
            self.held.clear();
            self.handed = 0;
        }
    }

    /// A write before the gateway took the head is pingora refusing it (400 for a head its
    /// parser rejects, 405 for CONNECT): the gateway's JSON answer goes instead.
    fn intercept(&mut self, pingora_answer: &[u8]) {
        let status = pingora_answer
            .get(9..12)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse::<u16>().ok());
        let error = match status {
            Some(405) => GatewayError::MethodNotAllowed {
                method: "CONNECT".to_string(),
                allowed: crate::router::MethodSet::EMPTY,
            },
            _ => GatewayError::BadRequest("The request could not be parsed.".to_string()),
        };
        self.refuse(&error, &[]);
    }

    fn is_gateway_writing(&mut self) -> bool {
        self.follow_requests();
        self.answer.is_none() && self.phase.taken.load(Ordering::Relaxed)
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.follow_requests();
        if this.answer.is_some() {
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(()));
        }
        if this.handed < this.held.len() && this.head == Head::Handed {
            this.hand_over(out);
            return Poll::Ready(Ok(()));
        }
        match this.head {
            Head::Handed => Pin::new(&mut *this.inner).poll_read(cx, out),
            Head::Awaited | Head::Arriving => this.poll_read_head(cx, out),
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_gateway_writing() {
            return Pin::new(&mut *this.inner).poll_write(cx, buf);
        }
        if this.answer.is_none() {
            this.intercept(buf);
        }
        ready!(this.poll_answer(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_gateway_writing() {
            return Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        if this.answer.is_none() {
            this.intercept(first);
        }
        ready!(this.poll_answer(cx))?;
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            return this.poll_answer(cx);
        }
        Pin::new(&mut *this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            return this.poll_answer(cx);
        }
        Pin::new(&mut *this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        if self.answer.is_some() {
            // Answering is all that is left: the answer, then a short linger.
            let _ = std::future::poll_fn(|cx| self.poll_answer(cx)).await;
            return;
        }
        self.inner.shutdown().await;
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
