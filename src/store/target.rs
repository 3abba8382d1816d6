//! Which Redis the store opens and how it logs in: one node (`GUICHET_REDIS_URL` when it is
//! set, else `store.url`), a master found through its sentinels (`store.sentinel`), or a cluster
//! (`store.cluster`); `username` and the password from `password_env` apply to each form. Taken
//! where the store is opened, and by every load so that `check` and a reload refuse a bad
//! setting at its position.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::{ConfigError, RedisSettings, Setting};

const REDIS_URL_ENV: &str = "GUICHET_REDIS_URL";

/// The Redis to open, resolved from the settings and the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub topology: Topology,
    pub username: Option<String>,
    password: Option<String>,
    /// The sentinels' own password (`sentinel.password_env`).
    sentinel_password: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One node: `redis://`, `rediss://` or `unix://`.
    Node(String),
    /// The master named `master`, as the sentinels at `nodes` report it.
    Sentinel { master: String, nodes: Vec<String> },
    /// A cluster, whose map is read from the first seed node that answers.
    Cluster { nodes: Vec<String> },
}

/// Shows the addresses only: URLs and passwords stay out of debug output.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("redis", &self.describe())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// `topology`, with the credentials its URLs carry (tests, benches, tools).
    pub fn new(topology: Topology) -> RedisTarget {
        RedisTarget {
            topology,
            username: None,
            password: None,
            sentinel_password: None,
        }
    }

    /// One node at `url`, with the credentials the URL carries.
    pub fn node(url: &str) -> RedisTarget {
        RedisTarget::new(Topology::Node(url.to_string()))
    }

    /// How to reach and log in to `url`: the URL's own settings, with `username` and the
    /// password from `password_env` in place of the URL's where they are configured.
    pub fn connection_info(&self, url: &str) -> redis::RedisResult<ConnectionInfo> {
        let info = url.into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        Ok(info.set_redis_settings(redis))
    }

    /// How to reach and log in to the sentinel at `url`: its own password, if configured.
    pub fn sentinel_info(&self, url: &str) -> redis::RedisResult<ConnectionInfo> {
        let info = url.into_connection_info()?;
        match &self.sentinel_password {
            Some(password) => {
                let redis = info.redis_settings().clone().set_password(password);
                Ok(info.set_redis_settings(redis))
            }
            None => Ok(info),
        }
    }

    /// What `/readyz` and the logs show: the form and addresses, never a password.
    pub fn describe(&self) -> String {
        let addresses = |nodes: &[String]| {
            nodes
                .iter()
                .map(|url| address(url))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.topology {
            Topology::Node(url) => address(url),
            Topology::Sentinel { master, nodes } => {
                format!("master `{master}` of the sentinels {}", addresses(nodes))
            }
            Topology::Cluster { nodes } => format!("the cluster seeded by {}", addresses(nodes)),
        }
    }
}

/// `url` with the password it may hold replaced by `…`, for messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:…{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// `host:port` or the socket's path, for showing; the URL itself may hold a password.
pub fn address(url: &str) -> String {
    url.into_connection_info()
        .map_or_else(|_| "?".to_string(), |info| info.addr().to_string())
}

/// The Redis the store opens, or the first setting that stops it, at that setting's position.
pub fn redis_target(settings: &RedisSettings) -> Result<RedisTarget, ConfigError> {
    let section = &settings.section;
    let from_env = std::env::var(REDIS_URL_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|value| Setting {
            value,
            at: settings.at.clone(),
            field: format!("{section}.url"),
        });
    let topology = match (&settings.sentinel, &settings.cluster, from_env) {
        (Some(_), _, Some(env)) | (_, Some(_), Some(env)) => {
            return Err(env.error(
                format!(
                    "{REDIS_URL_ENV} names one node, but `{section}` lists sentinels or a cluster"
                ),
                &format!("unset {REDIS_URL_ENV}, or remove `sentinel:`/`cluster:` to use one node"),
            ))
        }
        (Some(sentinel), _, None) => {
            nodes_over_one_transport(&sentinel.nodes, false)?;
            Topology::Sentinel {
                master: sentinel.master.clone(),
                nodes: values(&sentinel.nodes),
            }
        }
        (None, Some(nodes), None) => {
            nodes_over_one_transport(nodes, true)?;
            Topology::Cluster {
                nodes: values(nodes),
            }
        }
        (None, None, from_env) => {
            let Some(url) = from_env.or_else(|| settings.url.clone()) else {
                let backend = Setting {
                    value: (),
                    at: settings.at.clone(),
                    field: format!("{section}.backend"),
                };
                return Err(backend.error(
                    "the redis store needs a URL, sentinels or a cluster",
                    &format!("add `url: redis://127.0.0.1:6379/0`, or set {REDIS_URL_ENV}"),
                ));
            };
            parse(&url)?;
            Topology::Node(url.value)
        }
    };
    let sentinel_password = match &settings.sentinel {
        Some(sentinel) => password(sentinel.password_env.as_ref())?,
        None => None,
    };
    Ok(RedisTarget {
        topology,
        username: settings.username.clone(),
        password: password(settings.password_env.as_ref())?,
        sentinel_password,
    })
}

/// The password from the variable `password_env` names, if it names one.
fn password(password_env: Option<&Setting<String>>) -> Result<Option<String>, ConfigError> {
    let Some(variable) = password_env else {
        return Ok(None);
    };
    match std::env::var(&variable.value) {
        Ok(password) if !password.is_empty() => Ok(Some(password)),
        _ => Err(variable.error(
            format!("the environment variable {} is not set", variable.value),
            "set it to the Redis password, or remove `password_env` if Redis needs none",
        )),
    }
}

fn values(nodes: &[Setting<String>]) -> Vec<String> {
    nodes.iter().map(|node| node.value.clone()).collect()
}

fn parse(url: &Setting<String>) -> Result<ConnectionInfo, ConfigError> {
    url.value.as_str().into_connection_info().map_err(|e| {
        url.error(
            format!("`{}` is not a Redis URL: {e}", redacted(&url.value)),
            "write redis://host:6379/0, rediss://host:6379/0 (TLS) or unix:///path/to/redis.sock",
        )
    })
}

/// Every node of a list reached the same way: all over TLS or none; over TCP for a cluster,
/// whose nodes announce one another by address.
fn nodes_over_one_transport(nodes: &[Setting<String>], tcp_only: bool) -> Result<(), ConfigError> {
    let mut tls = None;
    for node in nodes {
        let secure = match parse(node)?.addr() {
            ConnectionAddr::Tcp(..) => false,
            ConnectionAddr::TcpTls { .. } => true,
            _ if tcp_only => {
                return Err(node.error(
                    "a cluster node is reached over TCP",
                    "write redis://host:port or rediss://host:port",
                ))
            }
            _ => false,
        };
        if *tls.get_or_insert(secure) != secure {
            return Err(node.error(
                "some nodes are listed with redis:// and some with rediss://",
                "reach every node the same way: all rediss:// (TLS) or all redis://",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:…@10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("rediss://guichet:s3cret@cache:6380"),
            "rediss://guichet:…@cache:6380"
        );
        assert_eq!(
            redacted("redis://10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(redacted("unix:///run/redis.sock"), "unix:///run/redis.sock");
        assert_eq!(redacted("no scheme"), "no scheme");
    }
}
