//! TLS at the edge and to upstreams, against a test certificate authority: curl over HTTP/2
//! and HTTP/1.1, certificates chosen by SNI (seen with `openssl s_client`), a certificate
//! replaced on disk and reloaded while an HTTP/2 connection stays open, https upstreams that
//! are trusted or refused for the right reason, mutual TLS, and `check` on bad files.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use serde_json::Value;

use crate::common::tls::{acceptor, connector, Issued, KeyKind, TestCa, Validity};
use crate::common::{check, free_port, get_text, Gateway, GatewayConfig, Upstream};

/// The name the gateway's certificate is for; clients reach it with curl's `--resolve`.
const API: &str = "api.test";

/// gateway.yaml with a TLS listener on `tls` serving `certs/api.pem`, more certificates as
/// listed, and `extra` settings of the `tls:` section.
fn gateway_yaml(tls: SocketAddr, more_certificates: &[&str], extra: &str) -> String {
    let certificates: String = std::iter::once("api")
        .chain(more_certificates.iter().copied())
        .map(|stem| format!("    - {{ cert: certs/{stem}.pem, key: certs/{stem}.key }}\n"))
        .collect();
    format!(
        "include: [routes/*.yaml]\ntls:\n  listen: {tls}\n  certificates:\n{certificates}{extra}"
    )
}

fn public_routes(service: &str, upstream: &str, tls: &str, path: &str) -> String {
    format!(
        "service: {service}\nupstreams: [{upstream}]\n{tls}routes:\n  - path: {path}\n    auth: none\n"
    )
}

/// A configuration folder holding the CA (`certs/ca.pem`) and the API's certificate.
fn config_with(ca: &TestCa, gateway: &str, routes: &[(&str, String)]) -> GatewayConfig {
    let api = ca.issue(&[API], Validity::NOW);
    let mut config = GatewayConfig::new(gateway)
        .file(
            "certs/ca.pem",
            &String::from_utf8(ca.root.cert.to_pem().unwrap()).unwrap(),
        )
        .file("certs/api.pem", &api.cert_pem())
        .file_bytes(
            "certs/api.key",
            &api.key.private_key_to_pem_pkcs8().unwrap(),
        );
    for (name, text) in routes {
        config = config.file(name, text);
    }
    config
}

/// curl against the TLS listener as `https://api.test:<port>`, trusting the test CA (run
/// without blocking the test's runtime, which serves the upstreams).
async fn curl(gateway: &Gateway, tls: SocketAddr, args: &[&str], path: &str) -> Output {
    let ca = gateway.config_path().parent().unwrap().join("certs/ca.pem");
    tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--include", "--max-time", "60"])
        .arg("--cacert")
        .arg(&ca)
        .args(["--resolve", &format!("{API}:{}:127.0.0.1", tls.port())])
        .args(args)
        .arg(format!("https://{API}:{}{path}", tls.port()))
        .output()
        .await
        .expect("run curl")
}

/// The status line and the body of curl's `--include` output.
fn status_line_and_body(output: &Output) -> (String, String) {
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn header(output: &Output, name: &str) -> Option<String> {
    String::from_utf8_lossy(&output.stdout)
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
}

#[tokio::test]
async fn curl_reaches_routes_over_http2_and_http11_with_the_same_answers() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], "  hsts: 1y\n"),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    );
    let gateway = Gateway::start(config).await;

    for (flag, version) in [("--http2", "HTTP/2 200"), ("--http1.1", "HTTP/1.1 200")] {
        let output = curl(&gateway, tls, &[flag], "/api/courses/7?x=1").await;
        let (status, body) = status_line_and_body(&output);
        assert!(status.starts_with(version), "{flag}: {status}");
        let echo: Value = serde_json::from_str(&body).expect("the upstream's echo");
        assert_eq!(echo["target"], "/api/courses/7?x=1");
        assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https", "{flag}");
        assert!(header(&output, "x-request-id").is_some(), "{flag}");
        assert_eq!(
            header(&output, "strict-transport-security").as_deref(),
            Some("max-age=31557600"),
            "{flag}"
        );

        let output = curl(&gateway, tls, &[flag], "/api/nowhere/").await;
        let (status, body) = status_line_and_body(&output);
        assert!(status.contains(" 404"), "{flag}: {status}");
        let error: Value = serde_json::from_str(&body).expect("the JSON error");
        assert_eq!(error["code"], "not_found", "{flag}");
    }

    // An HTTP/1.1 upstream's hop-by-hop fields do not reach an HTTP/2 client.
    let teapot = curl(&gateway, tls, &["--http2"], "/api/courses/teapot").await;
    let (status, body) = status_line_and_body(&teapot);
    assert!(status.starts_with("HTTP/2 418"), "{status}");
    assert_eq!(body, "tea");
    assert_eq!(header(&teapot, "x-brewed-by").as_deref(), Some("teapot"));
    assert!(header(&teapot, "keep-alive").is_none() && header(&teapot, "connection").is_none());

    // HTTP/2's `:authority` is checked as a Host header is.
    let bad_host = curl(
        &gateway,
        tls,
        &["--http2", "--header", "Host: api.test'();"],
        "/api/courses/",
    )
    .await;
    let (status, body) = status_line_and_body(&bad_host);
    assert!(status.starts_with("HTTP/2 400"), "{status}: {body}");
    assert!(
        body.contains("authority is not a valid host name"),
        "{body}"
    );
    assert_eq!(
        courses.hits(),
        2,
        "only the two good requests went upstream"
    );

    // A head refused before routing carries it too.
    let long = format!("/api/courses/{}", "a".repeat(20_000));
    let refused = curl(&gateway, tls, &["--http1.1"], &long).await;
    let (status, _) = status_line_and_body(&refused);
    assert!(status.contains(" 414"), "{status}");
    assert_eq!(
        header(&refused, "strict-transport-security").as_deref(),
        Some("max-age=31557600")
    );

    // No h2c: HTTP/2 with prior knowledge on the plain listener is not served as HTTP/2.
    let prior = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--include",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
        ])
        .arg(gateway.url("/api/courses/"))
        .output()
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&prior.stdout).starts_with("HTTP/2"),
        "{}",
        String::from_utf8_lossy(&prior.stdout)
    );

    // The plain listener answers as before, without HSTS.
    let plain = reqwest::get(gateway.url("/api/courses/")).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("strict-transport-security").is_none());
    let echo: Value = plain.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "http");
}

#[tokio::test]
async fn fifty_mebibytes_stream_both_ways_over_http2() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], ""),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/"),
        )],
    );
    let gateway = Gateway::start(config).await;
    const SIZE: u64 = 50 * 1024 * 1024;

    let download = curl(
        &gateway,
        tls,
        &[
            "--http2",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_version} %{size_download}",
        ],
        &format!("/download/{SIZE}"),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&download.stdout),
        format!("2 {SIZE}"),
        "{}",
        String::from_utf8_lossy(&download.stderr)
    );

    let upload = gateway.config_path().parent().unwrap().join("upload.bin");
    std::fs::write(&upload, vec![b'x'; SIZE as usize]).unwrap();
    let output = curl(
        &gateway,
        tls,
        &[
            "--http2",
            "--data-binary",
            &format!("@{}", upload.display()),
        ],
        "/upload",
    )
    .await;
    let (status, body) = status_line_and_body(&output);
    assert_eq!(status.trim(), "HTTP/2 200");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["body_bytes"], SIZE);
}

#[tokio::test]
async fn the_plain_listener_redirects_to_https_when_told() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], "  redirect_http: true\n"),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    );
    let gateway = Gateway::start(config).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .post(gateway.url("/api/courses/7?page=2"))
        .header("host", "api.test:80")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://api.test:{}/api/courses/7?page=2", tls.port()).as_str()
    );
    assert_eq!(courses.hits(), 0, "nothing went upstream over plain HTTP");
    // HTTP/1.0 without a host goes to the default certificate's name.
    let bare =
        crate::common::raw_request(gateway.addr, "GET /api/courses/ HTTP/1.0\r\n\r\n", b"").await;
    assert_eq!(bare.status, 308);
    assert_eq!(
        bare.headers.get("location").map(String::as_str),
        Some(format!("https://api.test:{}/api/courses/", tls.port()).as_str())
    );
    // A proxy the gateway does not trust cannot claim https for its client.
    let claimed = no_redirects
        .get(gateway.url("/api/courses/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 308);
    let output = curl(&gateway, tls, &["--http2"], "/api/courses/").await;
    assert_eq!(status_line_and_body(&output).0.trim(), "HTTP/2 200");
}

/// The subject of the certificate the listener shows for `name` (`None`: no SNI).
fn served_subject(tls: SocketAddr, name: Option<&str>) -> String {
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", &tls.to_string()]);
    match name {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let handshake = command
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    {
        use std::io::Write;
        x509.stdin
            .take()
            .unwrap()
            .write_all(&handshake.stdout)
            .unwrap();
    }
    let subject = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&subject.stdout).trim().to_string()
}

#[tokio::test]
async fn each_name_gets_its_certificate_and_an_unknown_name_the_first() {
    let ca = TestCa::new("Guichet test CA");
    let tls = free_port();
    // An RSA certificate beside the ECDSA default.
    let docs = ca.issue_for(
        &["docs.test", "*.docs.test"],
        Validity::NOW,
        KeyKind::Rsa2048,
    );
    let routes = public_routes("courses", "http://127.0.0.1:9", "", "/api/courses/");
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &["docs"], ""),
        &[("routes/courses.yaml", routes)],
    )
    .file("certs/docs.pem", &docs.cert_pem())
    .file_bytes(
        "certs/docs.key",
        &docs.key.private_key_to_pem_pkcs8().unwrap(),
    );
    let _gateway = Gateway::start(config).await;

    let subject = |name| {
        let subject = served_subject(tls, name);
        assert!(subject.starts_with("subject="), "{name:?}: {subject}");
        subject
    };
    assert!(subject(Some("api.test")).ends_with("CN = api.test"));
    assert!(subject(Some("docs.test")).ends_with("CN = docs.test"));
    assert!(
        subject(Some("Eu.Docs.Test")).ends_with("CN = docs.test"),
        "wildcard, any case"
    );
    assert!(
        subject(Some("a.b.docs.test")).ends_with("CN = api.test"),
        "a wildcard covers one label"
    );
    assert!(subject(Some("unknown.example")).ends_with("CN = api.test"));
    assert!(subject(None).ends_with("CN = api.test"));
}

/// An HTTP/2 connection to the TLS listener that trusts `ca`.
async fn h2_connection(ca: &TestCa, tls: SocketAddr) -> h2::client::SendRequest<Bytes> {
    h2_connection_and_its_task(ca, tls).await.0
}

/// The same, with the task that runs the connection: it ends when the connection does.
async fn h2_connection_and_its_task(
    ca: &TestCa,
    tls: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let ssl = connector(ca, b"\x02h2")
        .configure()
        .unwrap()
        .into_ssl(API)
        .unwrap();
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut stream).connect().await.unwrap();
    assert_eq!(stream.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let (send, connection) = h2::client::handshake(stream).await.unwrap();
    let task = tokio::spawn(connection);
    (send, task)
}

async fn h2_get(send: &mut h2::client::SendRequest<Bytes>, tls: SocketAddr, path: &str) -> u16 {
    let request = http::Request::get(format!("https://{API}:{}{path}", tls.port()))
        .body(())
        .unwrap();
    let ready = send.clone().ready().await.expect("the connection is open");
    *send = ready;
    let (response, _) = send.send_request(request, true).expect("a stream");
    let response = response.await.expect("an answer on the open connection");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    status
}

#[tokio::test]
async fn a_renewed_certificate_serves_the_next_handshake_while_an_open_h2_connection_goes_on() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], ""),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    );
    let gateway = Gateway::start(config).await;
    let mut open = h2_connection(&ca, tls).await;
    assert_eq!(h2_get(&mut open, tls, "/api/courses/").await, 200);
    let before = served_serial(tls);

    // Valid ten days longer than the first, so the gauge tells them apart.
    let longer = Validity {
        from_days: -1,
        to_days: 40,
    };
    let renewed: Issued = ca.issue(&[API], longer);
    let folder = gateway.config_path().parent().unwrap().to_path_buf();
    renewed.write(&folder.join("certs"), "api");
    gateway.signal("HUP");
    gateway
        .wait_for_log(|l| l["message"] == "configuration reloaded")
        .await;

    let after = served_serial(tls);
    assert_ne!(before, after);
    assert_eq!(after, renewed.serial());
    assert_eq!(
        h2_get(&mut open, tls, "/api/courses/").await,
        200,
        "the connection opened before the reload still serves"
    );
    let metrics = get_text(gateway.admin_url("/metrics")).await;
    let expiry = metrics
        .lines()
        .find(|l| {
            l.starts_with("guichet_tls_certificate_expiry_timestamp_seconds{name=\"api.test\"}")
        })
        .expect("the expiry gauge");
    let at: i64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(at, openssl_unix(renewed.cert.not_after()));

    // A broken certificate on reload is refused; the renewed one keeps serving.
    std::fs::write(folder.join("certs/api.pem"), "not a certificate").unwrap();
    let response = reqwest::Client::new()
        .post(gateway.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body.to_string().contains("certs/api.pem"), "{body}");
    assert_eq!(served_serial(tls), after);
}

fn openssl_unix(time: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
    let diff = epoch.diff(time).unwrap();
    i64::from(diff.days) * 86_400 + i64::from(diff.secs)
}

/// The serial number of the certificate the listener shows for `api.test`, lower-case hex.
fn served_serial(tls: SocketAddr) -> String {
    let handshake = Command::new("openssl")
        .args(["s_client", "-connect", &tls.to_string(), "-servername", API])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    {
        use std::io::Write;
        x509.stdin
            .take()
            .unwrap()
            .write_all(&handshake.stdout)
            .unwrap();
    }
    let out = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.strip_prefix("serial=")
        .unwrap_or(&text)
        .trim_start_matches('0')
        .to_lowercase()
}

/// An https upstream showing `issued`; `clients_of` demands a client certificate.
async fn tls_upstream(name: &str, issued: &Issued, clients_of: Option<&TestCa>) -> Upstream {
    Upstream::start_tls(name, acceptor(issued, clients_of)).await
}

fn https_service(name: &str, upstream: &Upstream, tls: &str) -> (String, String) {
    (
        format!("routes/{name}.yaml"),
        public_routes(
            name,
            &format!("https://127.0.0.1:{}", upstream.addr.port()),
            &format!("tls: {{ server_name: courses.internal, {tls} }}\n"),
            &format!("/api/{name}/"),
        ),
    )
}

#[tokio::test]
async fn https_upstreams_are_verified_and_a_refusal_names_its_cause() {
    let ca = TestCa::new("Guichet test CA");
    let stranger = TestCa::new("Someone else's CA");
    let trusted = tls_upstream(
        "trusted",
        &ca.issue(&["courses.internal"], Validity::NOW),
        None,
    )
    .await;
    let unknown = tls_upstream(
        "unknown",
        &stranger.issue(&["courses.internal"], Validity::NOW),
        None,
    )
    .await;
    let misnamed = tls_upstream(
        "misnamed",
        &ca.issue(&["other.internal"], Validity::NOW),
        None,
    )
    .await;
    let expired = tls_upstream(
        "expired",
        &ca.issue(&["courses.internal"], Validity::EXPIRED),
        None,
    )
    .await;
    let tls = free_port();
    let routes: Vec<(String, String)> = [
        ("trusted", &trusted),
        ("unknown", &unknown),
        ("misnamed", &misnamed),
        ("expired", &expired),
    ]
    .into_iter()
    .map(|(name, upstream)| https_service(name, upstream, "ca: certs/ca.pem"))
    .collect();
    let routes: Vec<(&str, String)> = routes
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let gateway = Gateway::start(config_with(&ca, &gateway_yaml(tls, &[], ""), &routes)).await;

    let response = reqwest::get(gateway.url("/api/trusted/1")).await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["upstream"], "trusted");
    assert_eq!(
        echo["headers"]["host"][0],
        format!("127.0.0.1:{}", trusted.addr.port())
    );

    for (name, cause) in [
        ("unknown", "unable to get local issuer certificate"),
        ("misnamed", "hostname mismatch"),
        ("expired", "certificate has expired"),
    ] {
        let response = reqwest::get(gateway.url(&format!("/api/{name}/1")))
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{name}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "bad_gateway", "{name}");
        let line = gateway
            .wait_for_log(|l| {
                l["target"] == "guichet::error"
                    && l["route"].as_str().is_some_and(|r| r.contains(name))
            })
            .await;
        let logged = line["cause"].as_str().unwrap_or_default();
        assert!(logged.contains(cause), "{name}: {line}");
    }
    assert_eq!(unknown.hits() + misnamed.hits() + expired.hits(), 0);
}

#[tokio::test]
async fn health_checks_verify_https_targets_as_requests_do() {
    let ca = TestCa::new("Guichet test CA");
    let stranger = TestCa::new("Someone else's CA");
    let trusted = tls_upstream(
        "trusted",
        &ca.issue(&["courses.internal"], Validity::NOW),
        None,
    )
    .await;
    let impostor = tls_upstream(
        "impostor",
        &stranger.issue(&["courses.internal"], Validity::NOW),
        None,
    )
    .await;
    let url = |upstream: &Upstream| format!("https://127.0.0.1:{}", upstream.addr.port());
    let routes = format!(
        "service: courses\nupstreams: [{}, {}]\ntls: {{ ca: certs/ca.pem, server_name: courses.internal }}\n\
         health_check: {{ path: /healthz, interval: 1s }}\nroutes:\n  - path: /api/courses/\n    auth: none\n",
        url(&trusted),
        url(&impostor)
    );
    let tls = free_port();
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], ""),
        &[("routes/courses.yaml", routes)],
    );
    let gateway = Gateway::start(config).await;

    let line = gateway
        .wait_for_log(|l| {
            l["message"] == "upstream target failed its health check; out of rotation"
        })
        .await;
    let cause = line["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("unable to get local issuer certificate"),
        "{line}"
    );
    crate::common::eventually("readyz shows the trusted target healthy", || async {
        let ready = crate::common::get_json(gateway.admin_url("/readyz")).await;
        let targets = &ready["services"]["courses"]["targets"];
        targets[0]["healthy"] == true && targets[1]["healthy"] == false
    })
    .await;
    for _ in 0..4 {
        let response = reqwest::get(gateway.url("/api/courses/")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(trusted.hits(), 4);
    assert_eq!(impostor.hits(), 0);
}

#[tokio::test]
async fn an_mtls_upstream_refuses_the_gateway_without_its_client_certificate() {
    let ca = TestCa::new("Guichet test CA");
    let upstream_certificate = ca.issue(&["courses.internal"], Validity::NOW);
    let strict = tls_upstream("strict", &upstream_certificate, Some(&ca)).await;
    let gateway_client = ca.issue(&["guichet.internal"], Validity::NOW);
    let tls = free_port();
    let routes = [
        https_service(
            "with",
            &strict,
            "ca: certs/ca.pem, client_cert: certs/gw.pem, client_key: certs/gw.key",
        ),
        https_service("without", &strict, "ca: certs/ca.pem"),
        https_service("blind", &strict, "verify: false"),
    ];
    let routes: Vec<(&str, String)> = routes
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let config = config_with(&ca, &gateway_yaml(tls, &[], ""), &routes)
        .file("certs/gw.pem", &gateway_client.cert_pem())
        .file_bytes(
            "certs/gw.key",
            &gateway_client.key.private_key_to_pem_pkcs8().unwrap(),
        );
    let gateway = Gateway::start(config).await;

    let with = reqwest::get(gateway.url("/api/with/1")).await.unwrap();
    assert_eq!(with.status(), 200);
    let without = reqwest::get(gateway.url("/api/without/1")).await.unwrap();
    assert_eq!(without.status(), 502);
    let blind = reqwest::get(gateway.url("/api/blind/1")).await.unwrap();
    assert_eq!(
        blind.status(),
        502,
        "no verification does not make up for no client certificate"
    );
    let warning = gateway
        .wait_for_log(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("tls.verify: false"))
        })
        .await;
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("routes/blind.yaml"),
        "{warning}"
    );
    assert_eq!(
        strict.hits(),
        1,
        "only the request with the client certificate got through"
    );
    let metrics = get_text(gateway.admin_url("/metrics")).await;
    assert!(
        metrics.contains("guichet_tls_certificate_expiry_timestamp_seconds{name=\"with client\"}"),
        "{metrics}"
    );
}

fn check_output(config: &GatewayConfig) -> (bool, String) {
    let (_dir, path) = config.write();
    let output = check(&path);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn check_names_the_file_and_line_of_a_bad_certificate_and_warns_of_risks() {
    let ca = TestCa::new("Guichet test CA");
    let tls = free_port();
    let other = ca.issue(&["other.test"], Validity::NOW);
    let base = config_with(&ca, &gateway_yaml(tls, &[], ""), &[]);

    let mismatched = base.clone().file_bytes(
        "certs/api.key",
        &other.key.private_key_to_pem_pkcs8().unwrap(),
    );
    let (ok, errors) = check_output(&mismatched);
    assert!(!ok);
    assert!(
        errors.contains("gateway.yaml:5:") && errors.contains("is not the key of the certificate"),
        "{errors}"
    );

    let expired = ca.issue(&[API], Validity::EXPIRED);
    let (ok, errors) = check_output(
        &base
            .clone()
            .file_bytes("certs/api.pem", expired.cert_pem().as_bytes())
            .clone()
            .file_bytes(
                "certs/api.key",
                &expired.key.private_key_to_pem_pkcs8().unwrap(),
            ),
    );
    assert!(!ok);
    assert!(
        errors.contains("gateway.yaml:5:") && errors.contains("expired on"),
        "{errors}"
    );

    let encrypted = other
        .key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"a pass phrase")
        .unwrap();
    let (ok, errors) = check_output(&base.clone().file_bytes("certs/api.key", &encrypted));
    assert!(!ok, "an encrypted key is refused, not asked for");
    assert!(
        errors.contains("holds no unencrypted PEM private key"),
        "{errors}"
    );

    let (ok, errors) = check_output(
        &base
            .clone()
            .file("gateway.yaml", &gateway_yaml(tls, &[], "  hsts: 3y\n")),
    );
    assert!(!ok);
    assert!(
        errors.contains("tls.hsts: `3y` is longer than two years"),
        "{errors}"
    );

    let missing = GatewayConfig::new(&gateway_yaml(tls, &[], ""));
    let (ok, errors) = check_output(&missing);
    assert!(!ok);
    assert!(errors.contains("certs/api.pem does not exist"), "{errors}");

    let expiring = ca.issue(&[API], Validity::EXPIRING);
    let upstream_unverified = public_routes(
        "courses",
        "https://localhost:8443",
        "tls: { verify: false }\n",
        "/api/courses/",
    );
    let soon = base
        .clone()
        .file_bytes("certs/api.pem", expiring.cert_pem().as_bytes())
        .clone()
        .file_bytes(
            "certs/api.key",
            &expiring.key.private_key_to_pem_pkcs8().unwrap(),
        );
    let (ok, warnings) = check_output(&soon.file("routes/courses.yaml", &upstream_unverified));
    assert!(ok, "{warnings}");
    assert!(
        warnings.contains("gateway.yaml:5:") && warnings.contains("expires on"),
        "{warnings}"
    );
    assert!(
        warnings.contains("routes/courses.yaml:3:") && warnings.contains("not verified"),
        "{warnings}"
    );
}

#[test]
fn check_refuses_an_https_upstream_named_by_address_without_a_server_name() {
    let routes = public_routes("courses", "https://10.0.0.7:8443", "", "/api/courses/");
    let config =
        GatewayConfig::new("include: [routes/*.yaml]\n").file("routes/courses.yaml", &routes);
    let (ok, errors) = check_output(&config);
    assert!(!ok);
    assert!(errors.contains("server_name"), "{errors}");
}

#[tokio::test]
async fn logins_tokens_limits_docs_and_metrics_work_over_http2() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let gateway_text = format!(
        "{}{}{}",
        gateway_yaml(tls, &[], ""),
        crate::auth::jwt_section(),
        crate::auth::seed()
    );
    let routes = format!(
        "service: courses\nupstreams: [{}]\nroutes:\n  - path: /api/courses/\n    auth: jwt\n    rate_limit: 2/hour\n",
        courses.url()
    );
    let config = config_with(&ca, &gateway_text, &[("routes/courses.yaml", routes)])
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem());
    let gateway = Gateway::start(config).await;
    let h2 = |extra: &'static [&'static str]| {
        let mut args = vec!["--http2"];
        args.extend_from_slice(extra);
        args
    };

    let login = curl(
        &gateway,
        tls,
        &h2(&[
            "--json",
            r#"{"username": "demo", "password": "demo-password"}"#,
        ]),
        "/api/auth/token/",
    )
    .await;
    let (status, body) = status_line_and_body(&login);
    assert!(status.starts_with("HTTP/2 200"), "{status}: {body}");
    let tokens: Value = serde_json::from_str(&body).unwrap();
    let access = tokens["access"].as_str().expect("an access token");

    let anonymous = curl(&gateway, tls, &h2(&[]), "/api/courses/").await;
    let (status, body) = status_line_and_body(&anonymous);
    assert!(status.starts_with("HTTP/2 401"), "{status}");
    assert!(header(&anonymous, "www-authenticate").is_some());
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["detail"].is_string() && error["code"].is_string(),
        "{error}"
    );

    let bearer = format!("Authorization: Bearer {access}");
    let mut args = vec!["--http2", "--header", bearer.as_str()];
    for _ in 0..2 {
        let allowed = curl(&gateway, tls, &args, "/api/courses/").await;
        let (status, body) = status_line_and_body(&allowed);
        assert!(status.starts_with("HTTP/2 200"), "{status}: {body}");
        let echo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echo["headers"]["x-auth-method"][0], "jwt");
        assert_eq!(echo["headers"]["x-user-id"][0], "1");
        assert!(header(&allowed, "ratelimit").is_some());
    }
    let throttled = curl(&gateway, tls, &args, "/api/courses/").await;
    let (status, body) = status_line_and_body(&throttled);
    assert!(status.starts_with("HTTP/2 429"), "{status}");
    assert!(header(&throttled, "retry-after").is_some());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "throttled"
    );
    assert_eq!(courses.hits(), 2);

    args.truncate(1);
    for (page, kind) in [
        ("/api/docs/", "text/html"),
        ("/api/redoc/", "text/html"),
        ("/api/schema/", "openapi"),
    ] {
        let answer = curl(&gateway, tls, &args, page).await;
        let (status, _) = status_line_and_body(&answer);
        assert!(status.starts_with("HTTP/2 200"), "{page}: {status}");
        let content_type = header(&answer, "content-type").unwrap_or_default();
        assert!(content_type.contains(kind), "{page}: {content_type}");
    }

    let metrics = get_text(gateway.admin_url("/metrics")).await;
    let counted = |status: &str| {
        metrics.lines().any(|line| {
            line.starts_with("guichet_http_requests_total{")
                && line.contains("courses:/api/courses/")
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(
        counted("200") && counted("401") && counted("429"),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_watch_a_renewed_certificate_is_served_without_a_signal() {
    let ca = TestCa::new("Guichet test CA");
    let tls = free_port();
    let routes = public_routes("courses", "http://127.0.0.1:9", "", "/api/courses/");
    let gateway_text = format!("watch: true\n{}", gateway_yaml(tls, &[], ""));
    let config = config_with(&ca, &gateway_text, &[("routes/courses.yaml", routes)]);
    let gateway = Gateway::start(config).await;
    let before = served_serial(tls);

    let renewed = ca.issue(&[API], Validity::NOW);
    let certs = gateway.config_path().parent().unwrap().join("certs");
    renewed.write(&certs, "api");
    let line = gateway
        .wait_for_log(|l| l["message"] == "configuration reloaded")
        .await;
    assert_ne!(line["trigger"], "SIGHUP");
    let after = served_serial(tls);
    assert_ne!(after, before);
    assert_eq!(after, renewed.serial());
}

#[tokio::test]
async fn an_upgrade_hands_the_tls_listener_over_while_an_h2_connection_is_open() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], ""),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    );
    let old = Gateway::start(config).await;
    let mut open = h2_connection(&ca, tls).await;
    assert_eq!(h2_get(&mut open, tls, "/api/courses/").await, 200);

    let new = old.upgrade().await;
    let output = curl(&new, tls, &["--http2"], "/api/courses/").await;
    assert!(status_line_and_body(&output).0.starts_with("HTTP/2 200"));
    assert!(served_subject(tls, Some(API)).ends_with("CN = api.test"));
}

#[tokio::test]
async fn a_drain_tells_http2_clients_to_go_at_once() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &format!("shutdown_delay: 5s\n{}", gateway_yaml(tls, &[], "")),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    );
    let gateway = Gateway::start(config).await;
    let (mut open, connection) = h2_connection_and_its_task(&ca, tls).await;
    assert_eq!(h2_get(&mut open, tls, "/api/courses/").await, 200);

    // A request in flight when the drain starts finishes: GOAWAY lets it, a cut would not.
    courses.set_delay(std::time::Duration::from_millis(1500));
    let in_flight = tokio::spawn(async move { h2_get(&mut open, tls, "/api/courses/").await });
    crate::common::eventually("the request reaches the upstream", || async {
        courses.hits() == 2
    })
    .await;
    gateway.signal("TERM");
    let status = tokio::time::timeout(std::time::Duration::from_secs(3), in_flight)
        .await
        .expect("the request in flight is answered")
        .unwrap();
    assert_eq!(status, 200);
    tokio::time::timeout(std::time::Duration::from_secs(3), connection)
        .await
        .expect("then the connection ends, well before the 5 s delay does")
        .unwrap()
        .ok();
    courses.set_delay(std::time::Duration::ZERO);
    // The listener still accepts during the delay: a new client is answered.
    let output = curl(&gateway, tls, &["--http2"], "/api/courses/").await;
    assert!(status_line_and_body(&output).0.starts_with("HTTP/2 200"));
}

#[tokio::test]
async fn no_redirect_for_what_a_trusted_proxy_received_over_https() {
    let ca = TestCa::new("Guichet test CA");
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    let config = config_with(
        &ca,
        &format!(
            "trusted_proxies: [127.0.0.1]\n{}",
            gateway_yaml(tls, &[], "  redirect_http: true\n")
        ),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    );
    let gateway = Gateway::start(config).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let terminated = client
        .get(gateway.url("/api/courses/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        terminated.status(),
        200,
        "a load balancer that terminated TLS is not sent round again"
    );
    let plain = client
        .get(gateway.url("/api/courses/"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 308);
}

#[tokio::test]
async fn a_chain_file_sends_its_intermediates() {
    let root = TestCa::new("Guichet test root");
    let intermediate = root.intermediate("Guichet test intermediate");
    let leaf = intermediate.issue(&[API], Validity::NOW);
    let chain = format!("{}{}", leaf.cert_pem(), intermediate.root.cert_pem());
    let courses = Upstream::start("courses").await;
    let tls = free_port();
    // The client trusts the root only: the handshake works when the intermediate comes with it.
    let config = config_with(
        &root,
        &gateway_yaml(tls, &[], ""),
        &[(
            "routes/courses.yaml",
            public_routes("courses", &courses.url(), "", "/api/courses/"),
        )],
    )
    .file("certs/api.pem", &chain)
    .file_bytes(
        "certs/api.key",
        &leaf.key.private_key_to_pem_pkcs8().unwrap(),
    );
    let gateway = Gateway::start(config).await;
    let output = curl(&gateway, tls, &["--http2"], "/api/courses/").await;
    let (status, _) = status_line_and_body(&output);
    assert!(status.starts_with("HTTP/2 200"), "{status}");
}

#[test]
fn tls_listen_on_the_command_line_needs_a_tls_section() {
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/courses.yaml",
        &public_routes("courses", "http://127.0.0.1:9", "", "/api/courses/"),
    );
    let (_dir, path) = config.write();
    let tls = free_port().to_string();
    let output = crate::common::serve_to_exit(&path, &["--tls-listen", &tls]);
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("--tls-listen") && errors.contains("no `tls:` section"),
        "{errors}"
    );
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let ca = TestCa::new("Guichet test CA");
    let tls = free_port();
    let routes = public_routes("courses", "http://127.0.0.1:9", "", "/api/courses/");
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], ""),
        &[("routes/courses.yaml", routes)],
    );
    let (_dir, path) = config.write();
    let plain = free_port().to_string();
    let output = crate::common::serve_to_exit(&path, &["--listen", &plain, "--tls-listen", &plain]);
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("`listen` and `tls.listen` are both") && errors.contains("its own address"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_websocket_opens_over_the_tls_listener_with_its_token_in_the_query() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let ca = TestCa::new("Guichet test CA");
    let echo = crate::common::live::EchoSocket::start().await;
    let tls = free_port();
    let routes = format!(
        "service: labs\nupstreams: [{}]\nroutes:\n  - path: /ws/\n    auth: none\n    websocket: true\n",
        echo.url()
    );
    let config = config_with(
        &ca,
        &gateway_yaml(tls, &[], "  hsts: 1y\n"),
        &[("routes/labs.yaml", routes)],
    );
    let _gateway = Gateway::start(config).await;
    // Browsers open a WebSocket on a connection of its own that offers HTTP/1.1 only (the
    // gateway does not offer WebSockets over HTTP/2, RFC 8441).
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let ssl = connector(&ca, b"\x08http/1.1")
        .configure()
        .unwrap()
        .into_ssl(API)
        .unwrap();
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut stream).connect().await.expect("handshake");
    let url = format!("wss://{API}:{}/ws/room?access_token=x.y.z", tls.port());
    let (mut socket, answer) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgraded over TLS");
    assert_eq!(
        answer.headers()["strict-transport-security"],
        "max-age=31557600",
        "the 101 is stamped as every answer over TLS (1y is 365.25 days)"
    );
    socket.send(Message::text("over tls")).await.expect("sent");
    let echoed = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
        .await
        .expect("in time");
    assert_eq!(echoed.unwrap().unwrap(), Message::text("over tls"));
    let seen = echo.handshakes();
    assert_eq!(
        seen[0].target, "/ws/room",
        "the token never reaches the upstream"
    );
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
}
