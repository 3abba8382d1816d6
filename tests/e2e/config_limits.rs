//! Configuration that cannot hurt: each defect that once crashed the gateway or was read
//! silently wrong (alias and merge-key bombs, a NUL byte, an oversized or outside file, invalid
//! UTF-8, a second document, deep nesting) is refused by `check`, by `serve` and by `POST
//! /reload` with `file:line:col`, and the running gateway keeps serving; a byte-order mark is
//! accepted.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::gateway::BINARY;
use crate::common::{check, client, free_port, status_and_json, Gateway, GatewayConfig, Upstream};

const COURSES: &str = "routes/courses.yaml";

fn courses_file(upstream: &Upstream) -> String {
    format!(
        "service: courses\nupstreams: [{}]\nroutes:\n  - path: /api/courses/\n    auth: none\n",
        upstream.url()
    )
}

/// A gateway serving `/api/courses/` from `upstream`.
async fn serving(upstream: &Upstream) -> Gateway {
    let config =
        GatewayConfig::new("include: [routes/*.yaml]\n").file(COURSES, &courses_file(upstream));
    let gateway = Gateway::start(config).await;
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    gateway
}

async fn status(gateway: &Gateway, path: &str) -> u16 {
    let response = client()
        .get(gateway.url(path))
        .send()
        .await
        .expect("a response");
    response.status().as_u16()
}

/// Writes `bad` over the files of a running gateway, then checks that `POST /reload`, `check`
/// and `serve` all refuse the configuration with `message` at `(file, line, col)` (`{dir}` in
/// the message stands for the configuration's folder), and that the gateway still serves the
/// old configuration.
async fn refused_everywhere(
    bad: &[(&str, &[u8])],
    (file, line, col): (&str, usize, usize),
    message: &str,
) {
    let upstream = Upstream::start("courses").await;
    let gateway = serving(&upstream).await;
    for (name, bytes) in bad {
        gateway.write_config_bytes(name, bytes);
    }
    let path = gateway.config_path();
    let dir = path.parent().expect("the folder");
    let expected = format!(
        "{}:{line}:{col}: {}",
        dir.join(file).display(),
        message.replace("{dir}", &dir.display().to_string())
    );
    assert_reload_refused(&gateway, &expected).await;
    assert_eq!(
        status(&gateway, "/api/courses/").await,
        200,
        "the old configuration serves on"
    );
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    assert_has_line(&output, &expected, "check");
    let output = serve_until_exit(&path);
    assert_eq!(output.status.code(), Some(1));
    assert_has_line(&output, &expected, "serve");
}

async fn reload(gateway: &Gateway) -> (u16, serde_json::Value) {
    let response = client()
        .post(gateway.admin_url("/reload"))
        .send()
        .await
        .expect("a response");
    status_and_json(response).await
}

async fn assert_reload_refused(gateway: &Gateway, expected: &str) {
    let (code, body) = reload(gateway).await;
    assert_eq!(code, 422, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with(expected))),
        "POST /reload: no error starting with\n{expected}\nin {body}"
    );
}

fn assert_has_line(output: &Output, expected: &str, command: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.lines().any(|line| line.starts_with(expected)),
        "{command}: no line starting with\n{expected}\nin:\n{stderr}"
    );
}

/// `guichet serve` on free ports, expected to refuse its configuration: waits up to 20 s for it
/// to exit (and kills it if it serves instead).
fn serve_until_exit(config: &Path) -> Output {
    let mut child = Command::new(BINARY)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", &free_port().to_string()])
        .args(["--admin-listen", &free_port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start guichet");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve accepted the configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the output of serve")
}

/// A routes file with one route and whatever `more` adds.
fn routes_file(more: &str) -> Vec<u8> {
    format!("service: courses\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /api/courses/\n    auth: none\n{more}").into_bytes()
}

/// Nine levels of nine aliases: about 400 bytes that would expand to 387 million nodes, here as
/// lists, or as maps merged with `<<`.
fn alias_bomb(merge: bool) -> String {
    let mut text = if merge {
        "a0: &a0 {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x, k8: x}\n".to_string()
    } else {
        "a0: &a0 [x, x, x, x, x, x, x, x, x]\n".to_string()
    };
    for level in 1..9 {
        let items = vec![format!("*a{}", level - 1); 9].join(", ");
        let value = if merge {
            format!("{{<<: [{items}]}}")
        } else {
            format!("[{items}]")
        };
        text.push_str(&format!("a{level}: &a{level} {value}\n"));
    }
    text
}

#[tokio::test]
async fn an_alias_bomb_is_refused_where_it_passes_the_limit() {
    let bomb = alias_bomb(false);
    let message = "anchors and aliases copy more than 100000 nodes by here";
    refused_everywhere(&[(COURSES, bomb.as_bytes())], (COURSES, 5, 53), message).await;
}

#[tokio::test]
async fn a_merge_key_bomb_is_refused_at_its_first_merge_key() {
    let bomb = alias_bomb(true);
    let message = "merge keys (`<<`) are not supported";
    refused_everywhere(&[(COURSES, bomb.as_bytes())], (COURSES, 2, 10), message).await;
}

#[tokio::test]
async fn a_nul_byte_is_refused_where_it_is() {
    // Read up to the NUL, this file was once valid without its rate limits.
    let gateway = b"include: [routes/*.yaml]\nrate_limits:\n  anonymous: 5/min\0\n  user: 10/min\n";
    let message = "control character U+0000 (NUL) is not allowed in YAML";
    refused_everywhere(
        &[("gateway.yaml", gateway)],
        ("gateway.yaml", 3, 19),
        message,
    )
    .await;
}

#[tokio::test]
async fn a_routes_file_over_4_mib_is_refused_at_the_include_that_names_it() {
    let mut big = routes_file("");
    while big.len() <= 4 * 1024 * 1024 {
        big.extend_from_slice(
            b"# a comment that takes room, line after line, until past the cap\n",
        );
    }
    let message = "include[0]: {dir}/routes/big.yaml: it is larger than 4 MiB";
    refused_everywhere(
        &[("routes/big.yaml", &big)],
        ("gateway.yaml", 1, 11),
        message,
    )
    .await;
}

#[tokio::test]
async fn an_absolute_include_or_one_going_up_is_refused_without_reading_it() {
    for (pattern, why) in [
        ("/dev/zero", "is an absolute path"),
        ("../outside.yaml", "goes up with `..`"),
    ] {
        let gateway = format!("include: [routes/*.yaml, {pattern}]\n");
        let message = format!(
            "include[1]: `{pattern}` {why}; includes stay inside the configuration's folder"
        );
        let at = ("gateway.yaml", 1, 26);
        refused_everywhere(&[("gateway.yaml", gateway.as_bytes())], at, &message).await;
    }
}

#[tokio::test]
async fn a_symlink_out_of_the_folder_is_refused() {
    let upstream = Upstream::start("courses").await;
    let gateway = serving(&upstream).await;
    let outside = tempfile::tempdir().expect("a folder");
    let target = outside.path().join("secret.yaml");
    std::fs::write(
        &target,
        "service: secret\nupstreams: [http://127.0.0.1:1]\n",
    )
    .expect("write");
    let path = gateway.config_path();
    let dir = path.parent().expect("the folder");
    std::os::unix::fs::symlink(&target, dir.join("routes/secret.yaml")).expect("symlink");
    let expected = format!(
        "{}:1:11: include[0]: {} leads to {}, outside the configuration's folder",
        path.display(),
        dir.join("routes/secret.yaml").display(),
        target.canonicalize().expect("canonical").display()
    );
    assert_reload_refused(&gateway, &expected).await;
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    assert_has_line(&check(&path), &expected, "check");
    assert_has_line(&serve_until_exit(&path), &expected, "serve");
    // A link that stays inside the folder is followed.
    std::fs::remove_file(dir.join("routes/secret.yaml")).expect("remove");
    std::fs::rename(&target, dir.join("secret.yaml")).expect("move");
    std::os::unix::fs::symlink(dir.join("secret.yaml"), dir.join("routes/secret.yaml"))
        .expect("symlink");
    let output = check(&path);
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn invalid_utf8_is_refused_at_its_first_bad_byte() {
    let latin1 = [
        &routes_file("  - path: /api/caf")[..],
        b"\xE9/\n    auth: none\n",
    ]
    .concat();
    let message = "not UTF-8 text: byte 0xE9 is not valid here (save the file as UTF-8)";
    refused_everywhere(&[(COURSES, &latin1)], (COURSES, 6, 19), message).await;
}

#[tokio::test]
async fn a_second_document_is_refused_where_it_starts() {
    let two = routes_file("---\nservice: lessons\nupstreams: [http://127.0.0.1:1]\n");
    let message = "a second YAML document starts here; a file holds one";
    refused_everywhere(&[(COURSES, &two)], (COURSES, 6, 1), message).await;
}

#[tokio::test]
async fn nesting_deeper_than_64_levels_is_refused() {
    let brackets = "[".repeat(100) + &"]".repeat(100);
    let deep = routes_file(&format!("  - path: /api/deep/\n    methods: {brackets}\n"));
    // The file's map, `routes` and the route are three levels: the 62nd bracket is too deep.
    let message = "nested deeper than 64 levels";
    refused_everywhere(&[(COURSES, &deep)], (COURSES, 7, 13 + 62), message).await;
}

#[tokio::test]
async fn files_starting_with_a_byte_order_mark_are_read() {
    let upstream = Upstream::start("courses").await;
    let bom = "\u{FEFF}";
    let config = GatewayConfig::new(&format!("{bom}include: [routes/*.yaml]\n"))
        .file(COURSES, &format!("{bom}{}", courses_file(&upstream)));
    let gateway = Gateway::start(config).await;
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    let output = check(&gateway.config_path());
    assert!(output.status.success(), "{output:?}");

    gateway.write_config(
        "routes/lessons.yaml",
        &format!(
            "{bom}service: lessons\nupstreams: [{}]\nroutes:\n  - path: /api/lessons/\n    auth: none\n",
            upstream.url()
        ),
    );
    let (code, body) = reload(&gateway).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&gateway, "/api/lessons/").await, 200);
}

#[tokio::test]
async fn a_fragment_nested_100000_deep_is_reported_by_check_and_left_out() {
    let (_dir, path) = GatewayConfig::new("include: [routes/*.yaml]\n")
        .file(
            "routes/deep.yaml",
            "service: deep\nupstreams: [http://127.0.0.1:1]\nopenapi: specs/deep.yaml\nroutes:\n  - path: /api/deep/\n    auth: none\n",
        )
        .file(
            "specs/deep.yaml",
            &("[".repeat(100_000) + &"]".repeat(100_000)),
        )
        .write();
    let output = check(&path);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("specs/deep.yaml#: not loaded: neither JSON nor YAML: 1:256: invalid YAML: recursion limit exceeded"),
        "{stderr}"
    );
}

#[test]
fn past_100_errors_the_rest_are_counted() {
    let routes: String = (0..150)
        .map(|i| format!("  - path: /api/r{i}/\n    auth: none\n    max_body: lots\n"))
        .collect();
    let (_dir, path) = GatewayConfig::new("include: [routes/*.yaml]\n")
        .file(
            "routes/many.yaml",
            &format!("service: many\nupstreams: [http://127.0.0.1:1]\nroutes:\n{routes}"),
        )
        .write();
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 102, "{stderr}");
    assert_eq!(lines[100], "… and 50 more");
    assert_eq!(lines[101], "150 errors in the configuration");
}
