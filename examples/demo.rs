//! The quickstart: two small sample backends of the Hackitech platform (courses on :8001 and
//! :8002, accounts on :8003, as `routes/` expects) and the gateway in front of them.
//!
//! `cargo run --release --example demo` (arguments after `--` go to `guichet serve`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

fn main() -> std::process::ExitCode {
    let backends = [
        ("courses", "127.0.0.1:8001"),
        ("courses", "127.0.0.1:8002"),
        ("accounts", "127.0.0.1:8003"),
    ];
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the sample backends: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for (service, addr) in backends {
        let addr: SocketAddr = addr.parse().expect("sample addresses are valid");
        let listener = match runtime.block_on(tokio::net::TcpListener::bind(addr)) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("sample backend {service} cannot listen on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        runtime.spawn(serve_sample(service, addr, listener));
    }
    println!("sample backends: courses on :8001 and :8002, accounts on :8003");
    guichet::cli::run()
}

async fn serve_sample(service: &'static str, addr: SocketAddr, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |request| answer(service, addr, request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

async fn answer(
    service: &'static str,
    addr: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let seen = json!({
        "served_by": format!("{service}@{addr}"),
        "path": request.uri().to_string(),
        "request_id": header("x-request-id"),
        "forwarded_for": header("x-forwarded-for"),
        "user": {
            "auth_method": header("x-auth-method"),
            "user_id": header("x-user-id"),
            "username": header("x-user-name"),
            "role": header("x-user-role"),
            "consumer": header("x-consumer"),
        },
    });
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, data): (u16, Value) = match (service, method.as_str(), segments.as_slice()) {
        (_, _, ["healthz"]) => (200, json!({"status": "ok"})),
        ("courses", "GET", ["courses"]) => (200, json!([course(1), course(2)])),
        ("courses", "POST", ["courses"]) => (
            201,
            json!({"id": 3, "created_from": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)}),
        ),
        ("courses", "GET", ["courses", id]) => match id.parse::<u64>() {
            Ok(id) if id <= 2 => (200, course(id)),
            _ => (404, json!({"detail": "No course with this id."})),
        },
        ("courses", "POST", ["courses", id, "grades"]) => (
            201,
            json!({"course": id, "recorded": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)}),
        ),
        ("courses", "GET", ["courses", id, "lessons"]) => (
            200,
            json!([{"course": id, "lesson": 1, "title": "Threat modelling"}]),
        ),
        ("accounts", "GET", ["users"]) => (
            200,
            json!([{"id": 1, "username": "demo", "role": "student"}]),
        ),
        _ => (404, json!({"detail": "Not found on the sample backend."})),
    };
    let mut body = json!({"data": data, "backend": seen});
    if status >= 400 {
        body = json!({"detail": data["detail"], "backend": seen});
    }
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a static response is valid"))
}

fn course(id: u64) -> Value {
    let titles = ["", "Intro to web security", "Reverse engineering 101"];
    json!({"id": id, "title": titles[id as usize], "level": if id == 1 { "beginner" } else { "intermediate" }})
}
