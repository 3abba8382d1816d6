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
