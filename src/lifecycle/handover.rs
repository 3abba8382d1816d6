//! The files a running gateway keeps: its pid file, and beside it the socket on which a
//! `guichet serve --upgrade` process receives the listening sockets. Both live in a directory
//! only the gateway's user can write: pingora makes the socket writable by everyone, and any
//! process that could listen on its path would receive the listeners on SIGQUIT.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a `serve --upgrade` process waits for the running one's sockets (pingora's five
/// tries, a second apart).
pub const UPGRADE_WAIT: Duration = Duration::from_secs(5);

/// The pid file and the upgrade socket, in directories checked to be the gateway's own.
#[derive(Debug)]
pub struct RuntimeFiles {
    pub pid_file: Option<PathBuf>,
    pub upgrade_socket: Option<PathBuf>,
}

impl RuntimeFiles {
    /// Resolves the paths (`pid_file` defaults to `guichet.pid` in the private runtime
    /// directory, `upgrade_socket` to `upgrade.sock` beside the pid file) and creates their
    /// directories, mode 0700. A path written in the configuration that cannot be used is an
    /// error; an unusable default is a warning, and the gateway then runs without pid file or
    /// binary upgrade.
    pub fn prepare(
        pid_file: Option<&Path>,
        upgrade_socket: Option<&Path>,
    ) -> Result<RuntimeFiles, String> {
        let written_pid = pid_file.is_some();
        let pid_file =
            pid_file.map_or_else(|| default_dir().join("guichet.pid"), Path::to_path_buf);
        // Absolute, so that a process started from another folder names the same socket.
        let pid_file = std::path::absolute(&pid_file).unwrap_or(pid_file);
        let written_socket = upgrade_socket.is_some();
        let upgrade_socket = upgrade_socket.map_or_else(
            || pid_file.with_file_name("upgrade.sock"),
            Path::to_path_buf,
        );
        let upgrade_socket = std::path::absolute(&upgrade_socket).unwrap_or(upgrade_socket);
        Ok(RuntimeFiles {
            pid_file: usable("pid_file", pid_file, written_pid)?,
            upgrade_socket: usable("upgrade_socket", upgrade_socket, written_socket)?,
        })
    }

    /// Writes this process's id, replacing the id of the process it took over from.
    pub fn write_pid_file(&self) {
        if let Some(path) = &self.pid_file {
            if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
                tracing::warn!(pid_file = %path.display(), "cannot write the pid file: {e}");
            }
        }
    }

    /// Removes the pid file unless a newer process has written its own id there.
    pub fn remove_pid_file(&self) {
        let Some(path) = &self.pid_file else { return };
        let ours = std::fs::read_to_string(path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The socket a `serve --upgrade` process is waiting on, or why none is: pingora would
/// otherwise stop serving after failing to hand the listeners to nobody. A socket file that no
/// process listens on (left by a waiting process that was killed) counts as none.
pub fn receiver_waiting(socket: Option<&Path>) -> Result<&Path, String> {
    let Some(socket) = socket else {
        return Err("there is no upgrade socket (see the warning at start)".to_string());
    };
    let is_socket =
        std::fs::symlink_metadata(socket).is_ok_and(|meta| meta.file_type().is_socket());
    if is_socket && listened_on(socket).unwrap_or(true) {
        return Ok(socket);
    }
    Err(format!(
        "no `guichet serve --upgrade` process is waiting on {}; start it first, then send \
         SIGQUIT within {} seconds",
        socket.display(),
        UPGRADE_WAIT.as_secs()
    ))
}

/// Whether a process listens on the unix socket bound at `path`, from the kernel's table of
/// unix sockets (`None` when it cannot be read). Connecting to find out would take the one
/// connection the waiting process accepts.
fn listened_on(path: &Path) -> Option<bool> {
    /// `__SO_ACCEPTCON` in the table's flags: the socket is listening.
    const LISTENING: u32 = 1 << 16;
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let path = path.to_str()?;
    Some(table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening = fields
            .get(3)
            .and_then(|flags| u32::from_str_radix(flags, 16).ok())
            .is_some_and(|flags| flags & LISTENING != 0);
        listening && fields.get(7) == Some(&path)
    }))
}

/// `$XDG_RUNTIME_DIR/guichet`, else `/run/guichet` for root, else `/tmp/guichet-<uid>`.
fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir).join("guichet");
    }
    match rustix::process::geteuid().as_raw() {
        0 => PathBuf::from("/run/guichet"),
        uid => std::env::temp_dir().join(format!("guichet-{uid}")),
    }
}

/// The path, once its directory exists and is the gateway's own; `None` (with a warning) for
/// an unusable default.
fn usable(key: &str, path: PathBuf, written: bool) -> Result<Option<PathBuf>, String> {
    match private_dir(&path) {
        Ok(()) => Ok(Some(path)),
        Err(why) if written => Err(format!("{key}: {}: {why}", path.display())),
        Err(why) => {
            tracing::warn!(
                "{key}: {}: {why}; running without it (set `{key}:` to a path in a directory \
                 only the gateway's user can write)",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Creates the file's directory (mode 0700) if missing, and checks that only the gateway's user
/// can write it.
fn private_dir(file: &Path) -> Result<(), String> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user {
        return Err(format!(
            "{} belongs to uid {}, not to the gateway's user (uid {user})",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "other users can write {} (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_socket_defaults_to_beside_the_pid_file_in_a_new_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("run/guichet/gw.pid");
        let files = RuntimeFiles::prepare(Some(&pid), None).unwrap();
        assert_eq!(files.pid_file.as_deref(), Some(pid.as_path()));
        assert_eq!(
            files.upgrade_socket,
            Some(dir.path().join("run/guichet/upgrade.sock"))
        );
        let mode = std::fs::metadata(dir.path().join("run/guichet"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_directory_others_can_write_is_refused_for_a_written_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let socket = dir.path().join("upgrade.sock");
        let private = tempfile::tempdir().unwrap();
        let error =
            RuntimeFiles::prepare(Some(&private.path().join("g.pid")), Some(&socket)).unwrap_err();
        assert!(error.starts_with("upgrade_socket: "), "{error}");
        assert!(error.contains("other users can write"), "{error}");
    }

    #[test]
    fn the_pid_file_is_removed_only_while_it_holds_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("g.pid");
        let files = RuntimeFiles::prepare(Some(&pid), None).unwrap();
        files.write_pid_file();
        assert_eq!(
            std::fs::read_to_string(&pid).unwrap(),
            format!("{}\n", std::process::id())
        );
        std::fs::write(&pid, "1\n").unwrap();
        files.remove_pid_file();
        assert!(pid.exists(), "another process's id stays");
        files.write_pid_file();
        files.remove_pid_file();
        assert!(!pid.exists());
    }

    #[test]
    fn sigquit_without_a_waiting_process_is_refused_with_the_steps() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("upgrade.sock");
        let why = receiver_waiting(Some(&socket)).unwrap_err();
        assert!(why.contains("start it first"), "{why}");
        std::fs::write(&socket, "").unwrap();
        assert!(
            receiver_waiting(Some(&socket)).is_err(),
            "a plain file is no socket"
        );
        let waiting = dir.path().join("u.sock");
        let listener = std::os::unix::net::UnixListener::bind(&waiting).unwrap();
        assert!(receiver_waiting(Some(&waiting)).is_ok());
        drop(listener);
        assert!(waiting.exists());
        assert!(
            receiver_waiting(Some(&waiting)).is_err(),
            "a socket left behind by a process that stopped waiting"
        );
    }

    #[test]
    fn relative_paths_are_made_absolute_so_every_process_names_the_same_socket() {
        let files = RuntimeFiles::prepare(Some(Path::new("target/test-run/g.pid")), None).unwrap();
        let socket = files.upgrade_socket.unwrap();
        assert!(socket.is_absolute(), "{}", socket.display());
        assert!(socket.ends_with("target/test-run/upgrade.sock"));
    }
}
