//! An upgraded connection's two directions, each at its own pace. The upstream's stream is split
//! in two halves, each driven by its own future; the client's side is pingora's session (one
//! object, read and written in turn), which reads from the client only while the way to the
//! upstream has room. Small bounded channels join them, so a peer that does not read holds up
//! only the direction towards it, and never the idle timer or the drain's farewell.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::protocols::Stream;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::frames::{going_away_from_client, going_away_from_server, FrameCursor};
use crate::context::RequestCtx;

/// Chunks in flight each way between the two sides.
const DEPTH: usize = 4;
/// The most one read from the upstream takes.
const READ_SIZE: usize = 64 * 1024;
/// How long the other side may still finish once one side has closed, and how long a close
/// frame waits for its answer.
const CLOSING: Duration = Duration::from_millis(250);

/// Why a relayed connection ended.
enum End {
    /// Both sides closed, or one closed and the other finished within [`CLOSING`].
    Closed,
    /// `timeouts.idle` passed with nothing either way.
    Idle,
    /// The grace period of a drain is about to end.
    Farewell,
    /// The client took no bytes for `timeouts.idle`, or during the farewell: it is cut
    /// mid-frame, with no close frame of its own.
    Stalled,
}

/// What the client's side needs to know of the upstream's.
struct UpstreamSide {
    /// Chunks for the upstream's writer; `None` once the client's side has closed it.
    outbox: Option<mpsc::Sender<Bytes>>,
    permit: Option<OwnedPermit<Bytes>>,
    /// Chunks from the upstream's reader; closed once the upstream is.
    inbox: mpsc::Receiver<Bytes>,
    open: bool,
}

/// Relays frames between the client's session and `upstream` (with `early`, bytes the upstream
/// sent right behind its 101) until the connection ends; at the idle timeout and at the
/// drain's farewell both ends get a close frame, each only between two frames.
pub(super) async fn relay(
    session: &mut Session,
    ctx: &mut RequestCtx,
    upstream: Stream,
    early: Option<Bytes>,
    idle: Duration,
    farewell: watch::Receiver<bool>,
) {
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let (outbox, mut to_write) = mpsc::channel::<Bytes>(DEPTH);
    let (inbox_sender, inbox) = mpsc::channel::<Bytes>(DEPTH);
    let (written, all_written) = oneshot::channel::<()>();
    let reader = async move {
        if let Some(bytes) = early {
            if inbox_sender.send(bytes).await.is_err() {
                return;
            }
        }
        let mut buffer = BytesMut::new();
        loop {
            buffer.reserve(READ_SIZE);
            match upstream_read.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if inbox_sender.send(buffer.split().freeze()).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some(bytes) = to_write.recv().await {
            let sent = async {
                upstream_write.write_all(&bytes).await?;
                upstream_write.flush().await
            };
            if sent.await.is_err() {
                break;
            }
        }
        let _ = upstream_write.shutdown().await;
        let _ = written.send(());
    };
    let upstream = UpstreamSide {
        outbox: Some(outbox),
        permit: None,
        inbox,
        open: true,
    };
    let client = client_side(session, ctx, upstream, all_written, idle, farewell);
    tokio::select! {
        () = client => {}
        () = async {
            tokio::join!(reader, writer);
            std::future::pending::<()>().await;
        } => {}
    }
}

/// The client's side of the relay: reads from the client while the upstream's writer has room,
/// writes what the upstream's reader brings, and says goodbye.
async fn client_side(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut upstream: UpstreamSide,
    all_written: oneshot::Receiver<()>,
    idle: Duration,
    mut farewell: watch::Receiver<bool>,
) {
    let (mut from_client, mut from_upstream) = (FrameCursor::default(), FrameCursor::default());
    let mut last = Instant::now();
    // Once one side has closed, when the other must be done.
    let mut linger: Option<Instant> = None;
    let end = loop {
        let quiet_until = last + idle;
        let deadline = linger.map_or(quiet_until, |linger| linger.min(quiet_until));
        tokio::select! {
            read = session.read_request_body(), if upstream.permit.is_some() => {
                let Ok(Some(bytes)) = read else {
                    // The client is done: the upstream's writer finishes and closes its half.
                    upstream.outbox = None;
                    upstream.permit = None;
                    if !upstream.open {
                        break End::Closed;
                    }
                    linger = Some(Instant::now() + CLOSING);
                    continue;
                };
                from_client.advance(&bytes);
                ctx.body_bytes += bytes.len() as u64;
                last = Instant::now();
                if let Some(permit) = upstream.permit.take() {
                    permit.send(bytes);
                }
            }
            reserved = reserve(upstream.outbox.clone()),
                if upstream.permit.is_none() && upstream.outbox.is_some() => {
                match reserved {
                    Some(permit) => upstream.permit = Some(permit),
                    // The upstream's writer failed: nothing more can reach it.
                    None => break End::Closed,
                }
            }
            received = upstream.inbox.recv(), if upstream.open => {
                let Some(bytes) = received else {
                    upstream.open = false;
                    if upstream.outbox.is_none() {
                        break End::Closed;
                    }
                    linger = Some(Instant::now() + CLOSING);
                    continue;
                };
                from_upstream.advance(&bytes);
                last = Instant::now();
                let written = tokio::select! {
                    written = session.write_response_body(Some(bytes), false) => written.is_ok(),
                    () = tokio::time::sleep_until(last + idle) => break End::Stalled,
                    () = said_farewell(&mut farewell) => break End::Stalled,
                };
                if !written {
                    break End::Closed;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                break if linger.is_some_and(|linger| linger <= Instant::now()) {
                    End::Closed
                } else {
                    End::Idle
                };
            }
            () = said_farewell(&mut farewell) => break End::Farewell,
        }
    };
    if matches!(end, End::Idle | End::Farewell) && from_upstream.at_boundary() {
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
    if !matches!(end, End::Closed) && from_client.at_boundary() {
        if let Some(outbox) = upstream.outbox.take() {
            let close = Bytes::copy_from_slice(&going_away_from_client(mask()));
            let _ = tokio::time::timeout(CLOSING, outbox.send(close)).await;
        }
    }
    // The upstream's writer sends what it holds and closes its half.
    drop(upstream);
    let _ = tokio::time::timeout(CLOSING, all_written).await;
}

/// Room for one more chunk towards the upstream; `None` when its writer is gone.
async fn reserve(outbox: Option<mpsc::Sender<Bytes>>) -> Option<OwnedPermit<Bytes>> {
    outbox?.reserve_owned().await.ok()
}

/// Resolves once the drain's farewell has been said (or can no longer be).
async fn said_farewell(farewell: &mut watch::Receiver<bool>) {
    drop(farewell.wait_for(|leaving| *leaving).await);
}

/// A masking key for the gateway's own close frame to the upstream: unpredictable enough for
/// one frame (RFC 6455 §5.3 guards intermediaries against a client's chosen bytes).
fn mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    nanos.to_le_bytes()
}
