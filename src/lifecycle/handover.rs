//! The files a running gateway keeps: its pid file, and beside it the socket on which a
//! `guichet serve --upgrade` process receives the listening sockets. Both live in a directory
//! only the gateway's user can write: pingora makes the socket writable by everyone, and any
//! process that could listen on its path would receive the listeners on SIGQUIT.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::MAX_SOCKET_PATH;

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
        let upgrade_socket =
            upgrade_socket.map_or_else(|| socket_beside(&pid_file), Path::to_path_buf);
        let upgrade_socket = std::path::absolute(&upgrade_socket).unwrap_or(upgrade_socket);
        let pid_file = usable("pid_file", pid_file, written_pid)?;
        let socket_named = written_socket || written_pid;
        let upgrade_socket = match socket_length(&upgrade_socket) {
            Ok(()) => usable("upgrade_socket", upgrade_socket, socket_named)?,
            Err(why) => refused("upgrade_socket", &upgrade_socket, &why, socket_named)?,
        };
        Ok(RuntimeFiles {
            pid_file,
            upgrade_socket,
        })
    }

    /// Whether this process may use the pid file: a plain `serve` must not take over the pid
    /// file (and the upgrade socket beside it) of another running gateway, and `--upgrade`
    /// needs an upgrade socket and a running process there to take the listeners over from.
    pub fn claim(&self, upgrade: bool) -> Result<(), String> {
        if upgrade && self.upgrade_socket.is_none() {
            return Err(
                "--upgrade needs an upgrade socket: set `upgrade_socket:` (or `pid_file:`) to a \
                 path in a directory only the gateway's user can write"
                    .to_string(),
            );
        }
        let Some(path) = &self.pid_file else {
            return Ok(());
        };
        if upgrade && self.running_process().is_none() {
            return Err(format!(
                "--upgrade: {} names no running process to take the listeners over from; start \
                 without --upgrade, or give the running gateway's pid file (--pid-file)",
                path.display()
            ));
        }
        if let Some(pid) = (!upgrade).then(|| self.running_gateway()).flatten() {
            return Err(format!(
                "pid_file: {}: gateway {pid} is running with this pid file (and the upgrade \
                 socket beside it); give this one its own `pid_file:` (or --pid-file), or \
                 replace that one with `serve --upgrade`",
                path.display()
            ));
        }
        Ok(())
    }

    /// The running process the pid file names, other than this one.
    fn running_process(&self) -> Option<u32> {
        let path = self.pid_file.as_ref()?;
        let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        (pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
    }

    /// The process the pid file names, when it is another running gateway: a second gateway
    /// started on the same pid file would take it (and the upgrade socket beside it) over. A
    /// pid reused by another program, after a crash left the file behind, does not count.
    fn running_gateway(&self) -> Option<u32> {
        let pid = self.running_process()?;
        let theirs = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let ours = std::env::current_exe().ok()?;
        // A binary replaced on disk since it started reads as "guichet (deleted)".
        let name = |path: &Path| {
            let name = path.file_name()?.to_str()?.to_owned();
            Some(name.trim_end_matches(" (deleted)").to_owned())
        };
        (name(&theirs)? == name(&ours)?).then_some(pid)
    }

    /// What `serve` would refuse in the paths written in the configuration, seen without
    /// creating anything (for `guichet check`): a directory that exists but is not the
    /// gateway's own, a socket path too long.
    pub fn inspect(pid_file: Option<&Path>, upgrade_socket: Option<&Path>) -> Vec<String> {
        let socket = upgrade_socket
            .map(Path::to_path_buf)
            .or_else(|| pid_file.map(socket_beside));
        let mut problems = Vec::new();
        for (key, path) in [
            ("pid_file", pid_file.map(Path::to_path_buf)),
            ("upgrade_socket", socket),
        ] {
            let Some(path) = path else { continue };
            let path = std::path::absolute(&path).unwrap_or(path);
            let dir = folder_of(&path);
            let length = if key == "upgrade_socket" {
                socket_length(&path)
            } else {
                Ok(())
            };
            let private = if std::fs::symlink_metadata(dir).is_ok() {
                only_ours(dir)
            } else {
                Ok(())
            };
            if let Err(why) = length.and(private) {
                problems.push(format!("{key}: {}: {why}", path.display()));
            }
        }
        problems
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
        let (fields, bound_at) = unix_socket_line(line);
        let listening = fields
            .get(3)
            .and_then(|flags| u32::from_str_radix(flags, 16).ok())
            .is_some_and(|flags| flags & LISTENING != 0);
        listening && bound_at == Some(path)
    }))
}

/// A line of `/proc/net/unix`: its seven fields, and the path the socket is bound at, which is
/// the rest of the line (spaces included).
fn unix_socket_line(line: &str) -> (Vec<&str>, Option<&str>) {
    let mut fields = Vec::with_capacity(7);
    let mut rest = line;
    while fields.len() < 7 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    (
        fields,
        rest.strip_prefix(' ').filter(|path| !path.is_empty()),
    )
}

/// The default upgrade socket: `upgrade.sock` beside the pid file.
fn socket_beside(pid_file: &Path) -> PathBuf {
    pid_file.with_file_name("upgrade.sock")
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
        Err(why) => refused(key, &path, &why, written),
    }
}

/// An error for a path written in the configuration or on the command line; a warning, and no
/// such file, for a default.
fn refused(key: &str, path: &Path, why: &str, written: bool) -> Result<Option<PathBuf>, String> {
    if written {
        return Err(format!("{key}: {}: {why}", path.display()));
    }
    tracing::warn!(
        "{key}: {}: {why}; running without it (set `{key}:` to a path in a directory only the \
         gateway's user can write)",
        path.display()
    );
    Ok(None)
}

fn socket_length(path: &Path) -> Result<(), String> {
    match path.as_os_str().len() {
        n if n > MAX_SOCKET_PATH => Err(format!(
            "a unix socket path has at most {MAX_SOCKET_PATH} bytes; this one has {n} (set \
             `upgrade_socket:` to a shorter path)"
        )),
        _ => Ok(()),
    }
}

/// Creates the file's directory (mode 0700) if needed, then makes sure no other user can put
/// a file there or swap the directory: a real directory, not a link, the gateway's user's,
/// writable by no one else, in a parent others can write only with the sticky bit.
fn private_dir(file: &Path) -> Result<(), String> {
    let dir = folder_of(file);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    only_ours(dir)
}

fn folder_of(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The checks of [`private_dir`] on a directory that exists.
fn only_ours(dir: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symbolic link, which its owner could point elsewhere; name a real directory",
            dir.display()
        ));
    }
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
    let parent = std::path::absolute(dir)
        .ok()
        .and_then(|dir| dir.parent().map(Path::to_path_buf));
    if let Some(parent) = parent {
        let mode = std::fs::metadata(&parent).map_or(0, |meta| meta.mode());
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "other users can rename {} away: its parent {} is writable by them without \
                 the sticky bit (mode {:o})",
                dir.display(),
                parent.display(),
                mode & 0o7777
            ));
        }
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
    fn a_directory_reached_through_a_link_or_in_a_parent_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("guichet-link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let error = RuntimeFiles::prepare(Some(&link.join("g.pid")), None).unwrap_err();
        assert!(error.starts_with("pid_file: "), "{error}");
        assert!(error.contains("is a symbolic link"), "{error}");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = RuntimeFiles::prepare(Some(&open.join("mine/g.pid")), None).unwrap_err();
        assert!(error.contains("without the sticky bit"), "{error}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(RuntimeFiles::prepare(Some(&open.join("mine/g.pid")), None).is_ok());
    }

    #[test]
    fn a_socket_path_too_long_for_a_unix_socket_is_refused_even_beside_a_written_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(MAX_SOCKET_PATH));
        let error = RuntimeFiles::prepare(Some(&deep.join("g.pid")), None).unwrap_err();
        assert!(error.starts_with("upgrade_socket: "), "{error}");
        assert!(error.contains("at most 107 bytes"), "{error}");
    }

    #[test]
    fn the_kernels_socket_table_is_read_with_paths_that_hold_spaces() {
        let line =
            "0000000000000000: 00000002 00000000 00010000 0001 01 123456 /run/my gw/upgrade.sock";
        let (fields, path) = unix_socket_line(line);
        assert_eq!(fields[3], "00010000");
        assert_eq!(path, Some("/run/my gw/upgrade.sock"));
        let unbound = "0000000000000000: 00000003 00000000 00000000 0001 03    4242";
        assert_eq!(unix_socket_line(unbound).1, None);

        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("my gw.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&spaced).unwrap();
        assert!(receiver_waiting(Some(&spaced)).is_ok());
    }

    #[test]
    fn only_a_running_gateway_in_the_pid_file_counts_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("g.pid");
        let files = RuntimeFiles::prepare(Some(&pid), None).unwrap();
        assert_eq!(files.running_process(), None, "no pid file");
        files.write_pid_file();
        assert_eq!(files.running_process(), None, "this process");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pid, format!("{}\n", other.id())).unwrap();
        assert_eq!(files.running_process(), Some(other.id()));
        assert_eq!(
            files.running_gateway(),
            None,
            "another program that got the pid is no gateway"
        );
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(files.running_process(), None, "gone");
    }

    #[test]
    fn relative_paths_are_made_absolute_so_every_process_names_the_same_socket() {
        let files = RuntimeFiles::prepare(Some(Path::new("target/test-run/g.pid")), None).unwrap();
        let socket = files.upgrade_socket.unwrap();
        assert!(socket.is_absolute(), "{}", socket.display());
        assert!(socket.ends_with("target/test-run/upgrade.sock"));
    }

    #[test]
    fn an_upgrade_without_a_usable_socket_is_refused_and_a_plain_start_goes_on() {
        // What `prepare` leaves when the default runtime directory is not private.
        let files = RuntimeFiles {
            pid_file: None,
            upgrade_socket: None,
        };
        let refused = files.claim(true).unwrap_err();
        assert!(
            refused.contains("--upgrade needs an upgrade socket"),
            "{refused}"
        );
        assert_eq!(files.claim(false), Ok(()));
    }
}
