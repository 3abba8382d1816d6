//! The admin listener, apart from client traffic: `/healthz` (the process is up), `/readyz`
//! (configuration loaded, every service has a healthy target, the store answers, not shutting
//! down; `?exclude=upstreams` and `?exclude=store` leave a check out of the verdict), `/metrics`
//! (Prometheus text format) and `POST /reload` (read the configuration again).

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::auth::issuers::TrustedIssuer;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::openapi::publish::ApiDocs;
use crate::reload::Reloader;
use crate::snapshot::Current;
use crate::store::Store;

pub struct Admin {
    pub current: Current,
    pub reloader: Arc<Reloader>,
    pub store: Arc<dyn Store>,
    /// Shown with their keys' age and last error; a provider that is down does not make the
    /// gateway unready, as the last good keys keep serving.
    pub issuers: Vec<Arc<TrustedIssuer>>,
    pub metrics: Arc<Metrics>,
    pub docs: Arc<ApiDocs>,
    /// Draining once SIGTERM arrives, so load balancers stop sending traffic first.
    pub lifecycle: Lifecycle,
}

/// The checks `/readyz?exclude=...` leaves out of its verdict (they are still reported): a
/// readiness probe shared by every replica should not take them all out of a Service because
/// one backend or the store is down, which no replica can fix.
#[derive(Default)]
struct Excluded {
    upstreams: bool,
    store: bool,
}

impl Excluded {
    fn from_query(query: Option<&str>) -> Result<Excluded, (StatusCode, Value)> {
        let mut excluded = Excluded::default();
        for pair in query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            match pair {
                "exclude=upstreams" => excluded.upstreams = true,
                "exclude=store" => excluded.store = true,
                _ => {
                    let detail = format!(
                        "`{pair}` is not a readiness option; write exclude=upstreams or exclude=store."
                    );
                    return Err((
                        StatusCode::BAD_REQUEST,
                        json!({"detail": detail, "code": "invalid_query"}),
                    ));
                }
            }
        }
        Ok(excluded)
    }
}

impl Admin {
    async fn readiness(&self, excluded: Excluded) -> (StatusCode, Value) {
        let mut services = serde_json::Map::new();
        let mut not_ready = Vec::new();
        let snapshot = self.current.load_full();
        for pool in snapshot.upstreams.pools() {
            let targets: Vec<Value> = pool
                .service
                .targets
                .iter()
                .enumerate()
                .map(
                    |(index, target)| json!({"url": target.url, "healthy": pool.is_healthy(index)}),
                )
                .collect();
            let counted_ready = if excluded.upstreams {
                pool.is_checked()
            } else {
                pool.is_ready()
            };
            if !counted_ready {
                not_ready.push(pool.service.name.as_str());
            }
            services.insert(
                pool.service.name.clone(),
                json!({"ready": pool.is_ready(), "healthy": pool.healthy_count(), "targets": targets}),
            );
        }
        // The node in use is read after the ping, which connects when no connection is open.
        let pinged = self.store.ping().await;
        let mut store = self.store.whereabouts();
        match pinged {
            Ok(()) => store["ok"] = json!(true),
            Err(e) => {
                if !excluded.store {
                    not_ready.push("store");
                }
                store["ok"] = json!(false);
                store["error"] = json!(e.to_string());
            }
        }
        let mut body = json!({
            "services": services,
            "store": store,
            "config": self.reloader.status(),
            "docs": self.docs.status(),
        });
        if !self.issuers.is_empty() {
            let issuers: serde_json::Map<String, Value> = self
                .issuers
                .iter()
                .map(|issuer| (issuer.issuer().to_string(), issuer.jwks.status()))
                .collect();
            body["issuers"] = Value::Object(issuers);
        }
        let (status, verdict) = if self.lifecycle.draining() {
            let detail = "The gateway is shutting down.";
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": detail, "code": "draining"}),
            )
        } else if not_ready.is_empty() {
            (StatusCode::OK, json!({"status": "ready"}))
        } else {
            let detail = format!("Not ready: {}.", not_ready.join(", "));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": detail, "code": "not_ready"}),
            )
        };
        let mut answer = verdict;
        if let (Value::Object(answer), Value::Object(body)) = (&mut answer, body) {
            answer.extend(body);
        }
        (status, answer)
    }

    /// `POST /reload`: 200 with what now serves, or 422 with every error and nothing changed.
    async fn reload(&self) -> (StatusCode, Value) {
        match self.reloader.reload("POST /reload").await {
            Ok(done) => (
                StatusCode::OK,
                json!({
                    "status": "reloaded",
                    "generation": done.generation,
                    "routes": done.routes,
                    "services": done.services,
                    "restart_required": done.restart_required,
                }),
            ),
            Err(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "detail": "The configuration has errors; the running configuration is unchanged.",
                    "code": "config_invalid",
                    "errors": errors,
                }),
            ),
        }
    }
}

fn method_not_allowed(method: &Method) -> (StatusCode, Value) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"detail": format!("Method \"{method}\" not allowed."), "code": "method_not_allowed"}),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let readable = request.method == Method::GET || request.method == Method::HEAD;
        if readable && request.uri.path() == "/metrics" {
            let body = self.metrics.render();
            return Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .header(header::CONTENT_LENGTH, body.len())
                .body(body)
                .unwrap_or_default();
        }
        let (status, body) = match request.uri.path() {
            "/healthz" if readable => (StatusCode::OK, json!({"status": "ok"})),
            "/readyz" if readable => match Excluded::from_query(request.uri.query()) {
                Ok(excluded) => self.readiness(excluded).await,
                Err(refused) => refused,
            },
            "/reload" if request.method == Method::POST => self.reload().await,
            "/healthz" | "/readyz" | "/reload" => method_not_allowed(&request.method),
            _ => (
                StatusCode::NOT_FOUND,
                json!({"detail": "Not found.", "code": "not_found"}),
            ),
        };
        let body = body.to_string().into_bytes();
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::CACHE_CONTROL, "no-store")
            .body(body)
            .unwrap_or_default()
    }
}
