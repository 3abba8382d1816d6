//! The settings given on `serve`'s command line: a configuration layer above the files, applied
//! to every load (at start and on each reload) so that a flag always wins over gateway.yaml.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Config;

/// Settings given on the command line, which win over the files on every load.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub tls_listen: Option<SocketAddr>,
    pub pid_file: Option<PathBuf>,
    pub upgrade_socket: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if self.pid_file.is_some() {
            config.pid_file.clone_from(&self.pid_file);
        }
        if self.upgrade_socket.is_some() {
            config.upgrade_socket.clone_from(&self.upgrade_socket);
        }
        if let Some(addr) = self.listen {
            config.listen.addr = addr;
            config.listen.at = None;
        }
        if let Some(addr) = self.admin_listen {
            config.admin_listen.addr = addr;
            config.admin_listen.at = None;
        }
        if let (Some(addr), Some(tls)) = (self.tls_listen, &mut config.tls) {
            tls.listen.addr = addr;
            tls.listen.at = None;
        }
    }
}

/// The listeners' addresses once the flags are applied are all different: a port given to two
/// of them would be bound twice (pingora binds with SO_REUSEPORT) and split their traffic.
pub fn distinct_listeners(config: &Config) -> Result<(), String> {
    let tls = config.tls.as_ref().map(|tls| &tls.listen);
    let listeners: Vec<&super::Listen> = [&config.listen, &config.admin_listen]
        .into_iter()
        .chain(tls)
        .collect();
    for (index, first) in listeners.iter().enumerate() {
        if let Some(second) = listeners[index + 1..].iter().find(|l| l.addr == first.addr) {
            return Err(format!(
                "`{}` and `{}` are both {}: give each listener its own address",
                first.field, second.field, first.addr
            ));
        }
    }
    Ok(())
}
