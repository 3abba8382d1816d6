//! The Redis connection that the store, the shared limiter and the usage statistics share: one
//! node, the master that the sentinels name, or a cluster, behind one interface. With one node
//! or sentinels, each thread that calls Redis gets a connection of its own, made lazily inside
//! its runtime: a connection's reader and writer run on the runtime that made it, so no call
//! crosses threads. A cluster connection is shared, so that the cluster's map, learned anew
//! after a failover, is learned once for every thread. Every call runs within the store's
//! timeout.
//!
//! One node or a sentinel master: a connection that fails (or a master that turned replica and
//! refuses writes) is dropped with every other connection made before the failure, calls fail
//! fast for a moment, then the next call connects again, asking the sentinels where the master
//! is now. A cluster connection follows the cluster's map itself (redirections, failovers), so
//! a failing call does not drop it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ConnectionAddr, ErrorKind, RedisFuture, ServerErrorKind, TlsMode, Value};

use super::target::{address, redacted, RedisTarget, Topology};
use super::StoreError;

/// Why Redis could not answer: the cause of [`StoreError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum Outage {
    #[error("{0}")]
    Redis(#[source] redis::RedisError),
    #[error("down a moment ago; retrying shortly")]
    Resting,
    #[error("no connection within the timeout")]
    NoConnection,
    #[error("no answer within the timeout")]
    NoAnswer,
    /// A record read that is not the JSON the gateway writes, or one that could not be written.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
}

/// A Redis URL the client refuses (shown without its password).
#[derive(Debug, thiserror::Error)]
#[error("`{url}`: {source}")]
pub struct InvalidUrl {
    url: String,
    #[source]
    source: redis::RedisError,
}

/// Several URLs as one, for [`invalid`].
fn listed(nodes: &[String]) -> String {
    nodes
        .iter()
        .map(|url| redacted(url))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error for `url`, without the password it may hold.
fn invalid(url: &str) -> impl FnOnce(redis::RedisError) -> InvalidUrl {
    let url = redacted(url);
    move |source| InvalidUrl { url, source }
}

/// After a failure, calls fail fast for this long before one tries to reconnect, so an outage
/// costs requests nothing but the fallback.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// How many times a cluster call is sent again after a redirection or a lost node.
const CLUSTER_RETRIES: u32 = 2;

/// Where connections come from.
enum Source {
    Node(redis::Client),
    /// Asked for the master's address at every (re)connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster {
        client: ClusterClient,
        /// The seed node the next subscription is made on (any node hears every publication).
        next_subscriber: AtomicUsize,
    },
}

/// A live connection of either kind; cheap to clone, every clone shares it.
#[derive(Clone)]
pub enum Link {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Node(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// A thread's connection, and the epoch it was made in: a failure ends the epoch, and with it
/// every connection made before.
struct Live {
    epoch: u64,
    link: Link,
}

/// A thread's connection, if it has one; locked while it is being made.
type Slot = Arc<tokio::sync::Mutex<Option<Live>>>;

/// Lazily made connections, one per calling thread; every call, and every wait for a
/// connection, runs within the timeout.
pub struct RedisConnection {
    target: RedisTarget,
    source: Source,
    /// By calling thread; a cluster's one connection under `None`.
    connections: std::sync::Mutex<HashMap<Option<ThreadId>, Slot>>,
    /// Counts the failures that dropped the connections (see [`Live`]).
    epoch: AtomicU64,
    /// Counts the connections made, so a connection attempt that fails can tell whether another
    /// thread reached Redis meanwhile.
    made: AtomicU64,
    retry_at: std::sync::Mutex<Option<Instant>>,
    /// The node in use (the master, with sentinels), for `/readyz`; none while down, and
    /// none for a cluster, whose client picks the node per call.
    serving: std::sync::Mutex<Option<String>>,
    timeout: Duration,
}

impl RedisConnection {
    /// A connection to `target`; nothing is connected until the first call, so the connection
    /// belongs to the runtime that uses it.
    pub fn new(target: RedisTarget, timeout: Duration) -> Result<RedisConnection, InvalidUrl> {
        let source = match &target.topology {
            Topology::Node(url) => Source::Node(
                target
                    .connection_info(url)
                    .and_then(redis::Client::open)
                    .map_err(invalid(url))?,
            ),
            Topology::Sentinel { master, nodes } => {
                Source::Sentinel(tokio::sync::Mutex::new(sentinels(&target, master, nodes)?))
            }
            Topology::Cluster { nodes } => {
                let seeds = nodes
                    .iter()
                    .map(|url| target.connection_info(url).map_err(invalid(url)))
                    .collect::<Result<Vec<_>, _>>()?;
                // The seeds carry the credentials, which the client uses for every node.
                let client = ClusterClient::builder(seeds)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
                    .build()
                    .map_err(invalid(&listed(nodes)))?;
                // Each gateway starts at a node of its own: subscribers spread over the cluster.
                Source::Cluster {
                    client,
                    next_subscriber: AtomicUsize::new(rand::random::<usize>() % nodes.len()),
                }
            }
        };
        Ok(RedisConnection {
            target,
            source,
            connections: std::sync::Mutex::default(),
            epoch: AtomicU64::new(0),
            made: AtomicU64::new(0),
            retry_at: std::sync::Mutex::new(None),
            serving: std::sync::Mutex::new(None),
            timeout,
        })
    }

    /// Whether this is a cluster, where a script may only touch the keys of one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster { .. })
    }

    /// The configured Redis, as `/readyz` shows it.
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// The node in use: the master, with sentinels.
    pub fn serving(&self) -> Option<String> {
        lock(&self.serving).clone()
    }

    fn retry_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        lock(&self.retry_at)
    }

    /// Fails fast for a moment after a failure.
    fn resting(&self) -> Result<(), StoreError> {
        match self.retry_at().is_some_and(|at| Instant::now() < at) {
            true => Err(StoreError::Unavailable(Outage::Resting)),
            false => Ok(()),
        }
    }

    /// This thread's slot; the cluster's shared one.
    fn slot(&self) -> Slot {
        let thread = (!self.is_cluster()).then(|| std::thread::current().id());
        lock(&self.connections).entry(thread).or_default().clone()
    }

    /// This thread's connection and its epoch; made now if it has none from this epoch.
    async fn connected(&self) -> Result<(u64, Link), StoreError> {
        self.resting()?;
        let slot = self.slot();
        let mut slot = match slot.try_lock() {
            Ok(slot) => slot,
            Err(_) => match tokio::time::timeout(self.timeout, slot.lock()).await {
                Ok(slot) => slot,
                // Another call is connecting and taking its time.
                Err(_) => return Err(StoreError::Unavailable(Outage::NoConnection)),
            },
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(live) = slot.as_ref().filter(|live| live.epoch == epoch) {
            return Ok((epoch, live.link.clone()));
        }
        // The call that held the lock may have just failed to connect.
        self.resting()?;
        let made = self.made.load(Ordering::Acquire);
        match tokio::time::timeout(self.timeout, self.connect()).await {
            Ok(Ok((link, node))) => {
                *slot = Some(Live {
                    epoch,
                    link: link.clone(),
                });
                *lock(&self.serving) = node;
                self.made.fetch_add(1, Ordering::AcqRel);
                Ok((epoch, link))
            }
            Ok(Err(e)) => Err(self.down(&mut slot, made, Outage::Redis(e))),
            Err(_) => Err(self.down(&mut slot, made, Outage::NoConnection)),
        }
    }

    /// A new connection and the node it reaches.
    async fn connect(&self) -> redis::RedisResult<(Link, Option<String>)> {
        match &self.source {
            Source::Node(client) => self.manager(client.clone()).await,
            Source::Sentinel(sentinels) => {
                let master = sentinels.lock().await.async_get_client().await?;
                self.manager(master).await
            }
            Source::Cluster { client, .. } => {
                let connection = client.get_async_connection().await?;
                Ok((Link::Cluster(connection), None))
            }
        }
    }

    async fn manager(&self, client: redis::Client) -> redis::RedisResult<(Link, Option<String>)> {
        let node = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok((Link::Node(manager), Some(node)))
    }

    /// A connection attempt that began when `made` connections had been made failed. Calls
    /// fail fast for a moment, unless another thread connected meanwhile: then Redis is there,
    /// and this attempt went where it no longer is (a master the sentinels named just before a
    /// switch).
    fn down(&self, slot: &mut Option<Live>, made: u64, cause: Outage) -> StoreError {
        *slot = None;
        if self.made.load(Ordering::Acquire) == made {
            *lock(&self.serving) = None;
            *self.retry_at() = Some(Instant::now() + RETRY_AFTER_FAILURE);
        }
        StoreError::Unavailable(cause)
    }

    /// A call on a connection of `epoch` failed for good. The first such failure in an epoch
    /// ends it: every connection made before is dropped at its next call (they reach the same
    /// node), and calls fail fast for a moment. A connection made since is kept.
    fn failed(&self, epoch: u64, cause: Outage) -> StoreError {
        let ended =
            self.epoch
                .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire);
        if ended.is_ok() {
            *lock(&self.serving) = None;
            *self.retry_at() = Some(Instant::now() + RETRY_AFTER_FAILURE);
        }
        StoreError::Unavailable(cause)
    }

    /// Whether `error` means the connection is no use any more: it broke, or the node it
    /// reaches is no longer the master. A cluster connection mends itself.
    fn lost(&self, error: &redis::RedisError) -> bool {
        !self.is_cluster()
            && (error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || matches!(
                    error.kind(),
                    ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                ))
    }

    /// Runs `op` on this thread's connection (the cluster's shared one) within the timeout.
    pub async fn with<T, F>(&self, op: impl FnOnce(Link) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (epoch, connection) = self.connected().await?;
        match tokio::time::timeout(self.timeout, op(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if self.lost(&e) => Err(self.failed(epoch, Outage::Redis(e))),
            Ok(Err(e)) => Err(StoreError::Unavailable(Outage::Redis(e))),
            Err(_) if self.is_cluster() => Err(StoreError::Unavailable(Outage::NoAnswer)),
            Err(_) => Err(self.failed(epoch, Outage::NoAnswer)),
        }
    }

    /// A new pub/sub connection: to the node, to the current master, or to the next seed node
    /// of a cluster (a publication reaches every node of a cluster).
    pub async fn subscriber(&self) -> redis::RedisResult<(PubSub, String)> {
        let client = match &self.source {
            Source::Node(client) => client.clone(),
            Source::Sentinel(sentinels) => {
                let lookup = async { sentinels.lock().await.async_get_client().await };
                tokio::time::timeout(self.timeout, lookup)
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((
                            ErrorKind::Io,
                            "the sentinels did not name the master within the timeout",
                        ))
                    })??
            }
            Source::Cluster {
                next_subscriber, ..
            } => {
                let Topology::Cluster { nodes } = &self.target.topology else {
                    unreachable!("a cluster source is made from a cluster topology")
                };
                let url = &nodes[next_subscriber.fetch_add(1, Ordering::Relaxed) % nodes.len()];
                redis::Client::open(self.target.connection_info(url)?)?
            }
        };
        let node = client.get_connection_info().addr().to_string();
        Ok((client.get_async_pubsub().await?, node))
    }
}

/// The sentinels, which name the master at each connection; the master is reached over TLS
/// when the sentinels are.
fn sentinels(
    target: &RedisTarget,
    master: &str,
    nodes: &[String],
) -> Result<SentinelClient, InvalidUrl> {
    let infos = nodes
        .iter()
        .map(|url| target.sentinel_info(url).map_err(invalid(url)))
        .collect::<Result<Vec<_>, _>>()?;
    let secure = infos
        .first()
        .is_some_and(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
    // The credentials of the data nodes: the master's URL is made from its address alone.
    let login = target
        .connection_info(&format!("redis://{}", address(&nodes[0])))
        .map_err(invalid(&nodes[0]))?
        .redis_settings()
        .clone();
    let mut master_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(login);
    if secure {
        master_info = master_info.set_tls_mode(TlsMode::Secure);
    }
    SentinelClient::build(
        infos,
        master.to_string(),
        Some(master_info),
        SentinelServerType::Master,
    )
    .map_err(invalid(&listed(nodes)))
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
impl RedisConnection {
    /// A connection to a port nothing listens on.
    pub(crate) fn unreachable() -> RedisConnection {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        RedisConnection::new(
            RedisTarget::node(&format!("redis://127.0.0.1:{port}")),
            Duration::from_secs(2),
        )
        .expect("a valid URL")
    }
}
