//! The real `guichet` binary, started on ephemeral ports with a configuration the test writes,
//! its JSON log lines collected, stopped by signal or when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{eventually, free_port};

pub const BINARY: &str = env!("CARGO_BIN_EXE_guichet");

/// A configuration folder: `gateway.yaml` and any other files, written to a temporary folder.
#[derive(Clone)]
pub struct GatewayConfig {
    files: Vec<(String, Vec<u8>)>,
}

impl GatewayConfig {
    /// `gateway` is the text of `gateway.yaml` (listen addresses are added by the harness).
    pub fn new(gateway: &str) -> GatewayConfig {
        GatewayConfig {
            files: vec![("gateway.yaml".to_string(), gateway.as_bytes().to_vec())],
        }
    }

    pub fn file(self, name: &str, text: &str) -> GatewayConfig {
        self.file_bytes(name, text.as_bytes())
    }

    /// A file that need not be UTF-8 text (replaces `gateway.yaml` when so named).
    pub fn file_bytes(mut self, name: &str, bytes: &[u8]) -> GatewayConfig {
        self.files.retain(|(existing, _)| existing != name);
        self.files.push((name.to_string(), bytes.to_vec()));
        self
    }

    /// Writes the files and returns the folder and the path of `gateway.yaml`.
    pub fn write(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in &self.files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write config");
        }
        let gateway = dir.path().join("gateway.yaml");
        (dir, gateway)
    }
}

/// Runs `guichet check` and returns its output.
pub fn check(config: &Path) -> Output {
    run_to_exit("check", config, &[])
}

/// Runs `guichet serve` on a config it is expected to refuse, and returns its output.
pub fn serve_refused(config: &Path) -> Output {
    serve_to_exit(config, &[])
}

/// Runs `guichet serve --config <config> <args>`, which must exit (it is expected to refuse
/// to start), and returns its output.
pub fn serve_to_exit(config: &Path, args: &[&str]) -> Output {
    run_to_exit("serve", config, args)
}

/// Runs `guichet <args> --config <config>` with `stdin` as its standard input.
pub fn cli(args: &[&str], config: &Path, stdin: &str) -> Output {
    cli_with_env(args, config, stdin, &[])
}

/// [`cli`] with more environment variables.
pub fn cli_with_env(args: &[&str], config: &Path, stdin: &str, env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BINARY)
        .envs(env.iter().copied())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run guichet");
    // A command that refuses its arguments exits without reading standard input: the write
    // then fails with a broken pipe, which is the command's answer, not the test's failure.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("guichet output")
}

/// Adds the user `demo` (password `demo-password`, role student) to the store of the
/// configuration at `config`, as an operator does with `guichet users add`.
pub fn add_demo_user(config: &Path) {
    let args = [
        "users",
        "add",
        "--username",
        "demo",
        "--email",
        "demo@hackitech.example",
        "--role",
        "student",
    ];
    let output = cli(&args, config, "demo-password\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `guichet <command> --config <config> <args>` to its end. One that is still running
/// after 20 s is killed and fails the test, rather than hanging the suite.
fn run_to_exit(command: &str, config: &Path, args: &[&str]) -> Output {
    let child = Command::new(BINARY)
        .arg(command)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run guichet {command}: {e}"));
    let pid = child.id().to_string();
    let (exited, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let overdue = watched.recv_timeout(Duration::from_secs(20)).is_err();
        if overdue {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        overdue
    });
    let output = child.wait_with_output().expect("guichet's output");
    let _ = exited.send(());
    let overdue = watchdog.join().expect("the watchdog");
    assert!(
        !overdue,
        "guichet {command} {args:?} was still running after 20 s"
    );
    output
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    dir: Arc<tempfile::TempDir>,
    /// The pid file, with the upgrade socket beside it, private to this gateway.
    pid_file: PathBuf,
}

impl Gateway {
    /// Starts the gateway and waits until its admin listener answers `/healthz`.
    pub async fn start(config: GatewayConfig) -> Gateway {
        let (dir, path) = config.write();
        Gateway::start_in(dir, &path).await
    }

    /// Starts a gateway on a configuration already written (several replicas can share one).
    pub async fn start_in(dir: tempfile::TempDir, path: &Path) -> Gateway {
        Gateway::start_on(dir, path, free_port()).await
    }

    /// Starts the gateway with its public listener on `addr`, for configurations that name it
    /// (`public_url:`).
    pub async fn start_on(dir: tempfile::TempDir, path: &Path, addr: SocketAddr) -> Gateway {
        Gateway::launch(Command::new(BINARY), dir, path, addr).await
    }

    /// Starts the gateway with more environment variables (the secrets a config names).
    pub async fn start_with_env(config: GatewayConfig, env: &[(&str, &str)]) -> Gateway {
        let (dir, path) = config.write();
        let mut command = Command::new(BINARY);
        command.envs(env.iter().copied());
        Gateway::launch(command, dir, &path, free_port()).await
    }

    /// Starts the gateway with a soft limit of `open_files` descriptors, as a service manager
    /// may leave it (systemd's default soft limit is 1024).
    pub async fn start_with_open_files(config: GatewayConfig, open_files: u32) -> Gateway {
        let (dir, path) = config.write();
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -Sn {open_files} && exec \"$0\" \"$@\""),
            BINARY,
        ]);
        Gateway::launch(shell, dir, &path, free_port()).await
    }

    /// Runs `command` (the binary, or a shell that runs it) with `serve` and its arguments.
    async fn launch(
        command: Command,
        dir: tempfile::TempDir,
        path: &Path,
        addr: SocketAddr,
    ) -> Gateway {
        let admin = free_port();
        let pid_file = dir.path().join(format!("run-{}/guichet.pid", admin.port()));
        let mut gateway = Gateway::spawn(command, Arc::new(dir), path, addr, admin, pid_file, &[]);
        gateway.wait_until_serving().await;
        gateway
    }

    fn spawn(
        mut command: Command,
        dir: Arc<tempfile::TempDir>,
        path: &Path,
        addr: SocketAddr,
        admin: SocketAddr,
        pid_file: PathBuf,
        extra: &[&str],
    ) -> Gateway {
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(path)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--log-format", "json"])
            .arg("--pid-file")
            .arg(&pid_file)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start guichet");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        Gateway {
            child,
            addr,
            admin,
            stdout,
            stderr,
            dir,
            pid_file,
        }
    }

    /// Replaces this gateway's binary without closing its listeners: starts `serve --upgrade`
    /// on the same configuration, sends this process SIGQUIT once the new one waits for the
    /// sockets, and returns the new process once it serves them.
    pub async fn upgrade(&self) -> Gateway {
        let config = self.config_path();
        let mut next = Gateway::spawn(
            Command::new(BINARY),
            self.dir.clone(),
            &config,
            self.addr,
            self.admin,
            self.pid_file.clone(),
            &["--upgrade"],
        );
        let socket = self.pid_file.with_file_name("upgrade.sock");
        eventually("the new process waits on the upgrade socket", || async {
            socket.exists()
        })
        .await;
        self.signal("QUIT");
        let pid = next.pid().to_string();
        eventually("the new process wrote its pid file", || async {
            std::fs::read_to_string(&self.pid_file).is_ok_and(|text| text.trim() == pid)
        })
        .await;
        next.wait_until_serving().await;
        next
    }

    /// Starts a new process on this gateway's configuration, addresses and pid file, as a
    /// rolling update does once this one has exited; returns it once it serves.
    pub async fn replacement(&self) -> Gateway {
        let mut next = Gateway::spawn(
            Command::new(BINARY),
            self.dir.clone(),
            &self.config_path(),
            self.addr,
            self.admin,
            self.pid_file.clone(),
            &[],
        );
        next.wait_until_serving().await;
        next
    }

    /// `POST /api/auth/token/` with a username and password, ready to send (a test may add
    /// headers first).
    pub fn login_request(&self, username: &str, password: &str) -> reqwest::RequestBuilder {
        super::client()
            .post(self.url("/api/auth/token/"))
            .json(&serde_json::json!({"username": username, "password": password}))
    }

    /// Logs in, which must succeed, and returns the access token.
    pub async fn access_token(&self, username: &str, password: &str) -> String {
        let response = self
            .login_request(username, password)
            .send()
            .await
            .expect("a login answer");
        let (status, body) = super::status_and_json(response).await;
        assert_eq!(status, 200, "login of {username}: {body}");
        body["access"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    /// The file holding the running gateway's process id.
    pub fn pid_file(&self) -> &Path {
        &self.pid_file
    }

    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = super::client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers drain what the process wrote before it exited.
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!(
                    "the gateway exited with {status}.\nstderr:\n{}",
                    self.stderr.lock().expect("lock").join("\n")
                );
            }
            let health = client.get(self.admin_url("/healthz")).send().await;
            let public = tokio::net::TcpStream::connect(self.addr).await;
            if matches!(health, Ok(r) if r.status() == 200) && public.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start.\nstdout:\n{}\nstderr:\n{}",
                self.stdout.lock().expect("lock").join("\n"),
                self.stderr.lock().expect("lock").join("\n")
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Writes (or replaces) a file of the running gateway's configuration folder.
    pub fn write_config(&self, name: &str, text: &str) {
        self.write_config_bytes(name, text.as_bytes());
    }

    /// As [`Gateway::write_config`], for bytes that need not be UTF-8.
    pub fn write_config_bytes(&self, name: &str, bytes: &[u8]) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write config");
    }

    /// The `gateway.yaml` the gateway was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits up to 5 s for a log line that satisfies `matches`.
    pub async fn wait_for_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line; the log was:\n{}",
                self.stdout.lock().expect("lock").join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}
