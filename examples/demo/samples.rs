//! The demo's sample backends: a `courses` and an `accounts` service that keep their data in
//! memory and answer exactly as their fragments (specs/courses.yaml, specs/accounts.yaml) say,
//! checking request bodies against those fragments' own schemas. Every JSON answer carries
//! `backend`, an echo of what the gateway told the service (identity headers, request id,
//! client address), which the quickstart shows. Shared by the demo and the conformance test.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Courses,
    Accounts,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Courses => "courses",
            Service::Accounts => "accounts",
        }
    }

    /// The service's fragment, whose schemas the request bodies are checked against.
    fn fragment(self) -> &'static Value {
        static COURSES: OnceLock<Value> = OnceLock::new();
        static ACCOUNTS: OnceLock<Value> = OnceLock::new();
        let (cell, text) = match self {
            Service::Courses => (&COURSES, include_str!("../../specs/courses.yaml")),
            Service::Accounts => (&ACCOUNTS, include_str!("../../specs/accounts.yaml")),
        };
        cell.get_or_init(|| serde_yaml::from_str(text).expect("the sample fragments are YAML"))
    }
}

/// What the samples hold, shared by every target of a service (the demo runs two of courses).
pub struct Data {
    courses: BTreeMap<u64, Value>,
    users: BTreeMap<u64, Value>,
    last_id: u64,
}

impl Data {
    /// Two courses and one user to start with.
    pub fn seeded() -> Arc<Mutex<Data>> {
        let course = |id: u64, title: &str, level: &str| {
            (id, json!({"id": id, "title": title, "level": level}))
        };
        Arc::new(Mutex::new(Data {
            courses: BTreeMap::from([
                course(1, "Intro to web security", "beginner"),
                course(2, "Reverse engineering 101", "intermediate"),
            ]),
            users: BTreeMap::from([(1, json!({"id": 1, "username": "demo", "role": "student"}))]),
            last_id: 2,
        }))
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }
}

/// Serves `service` on `listener`, for as long as the runtime runs.
pub async fn serve(service: Service, data: Arc<Mutex<Data>>, listener: TcpListener) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let data = data.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |request| {
                answer(service, addr, data.clone(), request)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

/// A sample's answer before the echo is added: a status, a JSON body (none for 204) and, for
/// 405, the methods the path takes.
struct Reply {
    status: u16,
    body: Option<Value>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            allow: None,
        }
    }

    fn list<'a>(items: impl Iterator<Item = &'a Value>) -> Reply {
        let results: Vec<&Value> = items.collect();
        Reply::json(200, json!({"count": results.len(), "results": results}))
    }

    fn error(status: u16, detail: &str) -> Reply {
        Reply::json(status, json!({"detail": detail}))
    }

    fn not_allowed(allow: &'static str) -> Reply {
        Reply {
            allow: Some(allow),
            ..Reply::error(405, "Method not allowed on this resource.")
        }
    }
}

async fn answer(
    service: Service,
    addr: SocketAddr,
    data: Arc<Mutex<Data>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let echo = echo(service, addr, &request);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply = {
        let mut data = data.lock().unwrap_or_else(PoisonError::into_inner);
        let handled = match (service, segments.as_slice()) {
            (_, ["healthz"]) => Ok(Reply::json(200, json!({"status": "ok"}))),
            (Service::Courses, segments) => courses(&mut data, &method, segments, &body),
            (Service::Accounts, segments) => accounts(&mut data, &method, segments, &body),
        };
        handled.unwrap_or_else(|refusal| refusal)
    };
    let mut response = Response::builder().status(reply.status);
    if let Some(allow) = reply.allow {
        response = response.header("allow", allow);
    }
    let body = match reply.body {
        Some(mut body) => {
            body["backend"] = echo;
            response = response.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    Ok(response
        .body(Full::new(body))
        .expect("a sample response is valid"))
}

/// What the gateway told the backend, echoed back; headers it did not send are left out (an
/// empty `user_id` would read as an id to a client that follows values from one answer to the
/// next).
fn echo(service: Service, addr: SocketAddr, request: &Request<Incoming>) -> Value {
    let headers = |names: &[(&str, &str)]| -> Value {
        names
            .iter()
            .filter_map(|(field, header)| {
                let value = request.headers().get(*header)?.to_str().ok()?;
                Some((field.to_string(), json!(value)))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut echo = headers(&[
        ("request_id", "x-request-id"),
        ("forwarded_for", "x-forwarded-for"),
    ]);
    echo["served_by"] = json!(format!("{}@{addr}", service.name()));
    echo["path"] = json!(request.uri().to_string());
    echo["user"] = headers(&[
        ("auth_method", "x-auth-method"),
        ("user_id", "x-user-id"),
        ("username", "x-user-name"),
        ("role", "x-user-role"),
        ("consumer", "x-consumer"),
    ]);
    echo
}

fn courses(
    data: &mut Data,
    method: &Method,
    segments: &[&str],
    body: &[u8],
) -> Result<Reply, Reply> {
    let reading = *method == Method::GET || *method == Method::HEAD;
    match segments {
        ["courses"] => match *method {
            _ if reading => Ok(Reply::list(data.courses.values())),
            Method::POST => {
                let input = valid(Service::Courses, body, "CourseInput")?;
                let id = data.next_id();
                Ok(Reply::json(
                    201,
                    store(&mut data.courses, id, &input, COURSE),
                ))
            }
            _ => Err(Reply::not_allowed("GET, HEAD, POST")),
        },
        ["courses", id] => {
            let methods = [Method::PUT, Method::PATCH, Method::DELETE];
            if !reading && !methods.contains(method) {
                return Err(Reply::not_allowed("GET, HEAD, PUT, PATCH, DELETE"));
            }
            let id = known(&data.courses, id, "No course with this id.")?;
            match *method {
                Method::PUT => {
                    let input = valid(Service::Courses, body, "CourseInput")?;
                    Ok(Reply::json(
                        200,
                        store(&mut data.courses, id, &input, COURSE),
                    ))
                }
                Method::PATCH => {
                    let changes = valid(Service::Courses, body, "CoursePatch")?;
                    Ok(Reply::json(
                        200,
                        patch(&mut data.courses, id, &changes, COURSE),
                    ))
                }
                Method::DELETE => {
                    data.courses.remove(&id);
                    Ok(Reply {
                        status: 204,
                        body: None,
                        allow: None,
                    })
                }
                _ => Ok(Reply::json(200, data.courses[&id].clone())),
            }
        }
        ["courses", id, "lessons"] => {
            if !reading {
                return Err(Reply::not_allowed("GET, HEAD"));
            }
            let id = known(&data.courses, id, "No course with this id.")?;
            let lesson = json!({"course": id, "lesson": 1, "title": "Threat modelling"});
            Ok(Reply::list([&lesson].into_iter()))
        }
        ["courses", id, "grades"] => {
            if *method != Method::POST {
                return Err(Reply::not_allowed("POST"));
            }
            let id = known(&data.courses, id, "No course with this id.")?;
            let grade = valid(Service::Courses, body, "Grade")?;
            Ok(Reply::json(201, json!({"course": id, "recorded": grade})))
        }
        _ => Err(Reply::error(404, "Not found on the sample backend.")),
    }
}

fn accounts(
    data: &mut Data,
    method: &Method,
    segments: &[&str],
    body: &[u8],
) -> Result<Reply, Reply> {
    match segments {
        ["users"] => match *method {
            Method::GET | Method::HEAD => Ok(Reply::list(data.users.values())),
            Method::POST => {
                let input = valid(Service::Accounts, body, "UserInput")?;
                let id = data.next_id();
                Ok(Reply::json(201, store(&mut data.users, id, &input, USER)))
            }
            _ => Err(Reply::not_allowed("GET, HEAD, POST")),
        },
        ["users", id] => {
            if *method != Method::PATCH {
                return Err(Reply::not_allowed("PATCH"));
            }
            let id = known(&data.users, id, "No user with this id.")?;
            let changes = valid(Service::Accounts, body, "UserPatch")?;
            Ok(Reply::json(200, patch(&mut data.users, id, &changes, USER)))
        }
        _ => Err(Reply::error(404, "Not found on the sample backend.")),
    }
}

/// The id of a stored item, or the 404.
fn known(items: &BTreeMap<u64, Value>, id: &str, missing: &str) -> Result<u64, Reply> {
    id.parse::<u64>()
        .ok()
        .filter(|id| items.contains_key(id))
        .ok_or_else(|| Reply::error(404, missing))
}

/// The fields of a course and of a user, besides their id.
const COURSE: &[&str] = &["title", "level"];
const USER: &[&str] = &["username", "role"];

/// Stores the item `id` made of the `fields` of `input`, and returns it.
fn store(items: &mut BTreeMap<u64, Value>, id: u64, input: &Value, fields: &[&str]) -> Value {
    let mut item = json!({"id": id});
    for field in fields {
        item[*field] = input[*field].clone();
    }
    items.insert(id, item.clone());
    item
}

/// Applies the `fields` that `changes` has to the stored item and returns it.
fn patch(items: &mut BTreeMap<u64, Value>, id: u64, changes: &Value, fields: &[&str]) -> Value {
    let item = items.entry(id).or_insert_with(|| json!({"id": id}));
    for field in fields {
        if let Some(value) = changes.get(field) {
            item[*field] = value.clone();
        }
    }
    item.clone()
}

/// The body, if it is JSON that the fragment's schema `name` accepts; the 400 otherwise.
fn valid(service: Service, body: &[u8], name: &str) -> Result<Value, Reply> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Reply::error(400, &format!("The body is not JSON: {e}")))?;
    let schema = json!({"$ref": format!("#/components/schemas/{name}")});
    check(&value, &schema, service.fragment(), "body").map_err(|why| Reply::error(400, &why))?;
    Ok(value)
}

/// Checks `value` against the part of JSON Schema the sample fragments use: `$ref`, `type`,
/// `required`, `properties`, `items`, `enum`, string lengths and number bounds.
fn check(value: &Value, schema: &Value, fragment: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = fragment
            .pointer(reference.trim_start_matches('#'))
            .ok_or_else(|| format!("{reference} is not in the fragment"))?;
        return check(value, target, fragment, at);
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let fits = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        // 3 and 3.0 are the same integer to JSON Schema.
        "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
        _ => true,
    };
    if !fits {
        return Err(format!("{at}: must be of type {kind}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!(
                "{at}: must be one of {}",
                Value::from(allowed.clone())
            ));
        }
    }
    let bound = |name: &str| schema.get(name).and_then(Value::as_f64);
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as f64;
        if bound("minLength").is_some_and(|min| length < min)
            || bound("maxLength").is_some_and(|max| length > max)
        {
            return Err(format!("{at}: has a length out of bounds"));
        }
    }
    if let Some(number) = value.as_f64() {
        if bound("minimum").is_some_and(|min| number < min)
            || bound("maximum").is_some_and(|max| number > max)
        {
            return Err(format!("{at}: is out of bounds"));
        }
    }
    if let Some(fields) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                return Err(format!("{at}.{name}: is required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            if let Some(property) = properties.and_then(|p| p.get(name)) {
                check(field, property, fragment, &format!("{at}.{name}"))?;
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            check(item, schema, fragment, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}
