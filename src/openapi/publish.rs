//! The published document and the pages around it. The document is merged and rendered (YAML
//! and JSON, with an ETag) once per configuration or fragment change and served from memory.
//! Fragments served by the services are fetched again every `docs.refresh`; a failed fetch keeps
//! the last good copy and shows in `/readyz` and the logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header;
use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::annotate::auth_name;
use super::fragment::FragmentError;
use super::merge::{self, Drift, Fragment};
use super::negotiate::{self, Rendering};
use super::GATEWAY_TAG;
use super::{fragment, pages, Problem};
use crate::config::{Config, SpecSource};
use crate::cors::CorsPolicy;
use crate::endpoints::Endpoint;
use crate::errors::GatewayError;
use crate::logs::WithCauses;
use crate::respond::Page;
use crate::router::Router;
use crate::snapshot::wait_for_reload;
use crate::snapshot::Current;

/// The document as rendered for one configuration and one set of fragments.
pub struct Published {
    pub yaml: Bytes,
    pub json: Bytes,
    /// A digest of the document and the root view; the ETags of both renderings derive from it.
    pub digest: String,
    /// `GET /api/`: every public route.
    pub root: Bytes,
    pub problems: Vec<Problem>,
    pub drift: Vec<Drift>,
}

/// The last fetch of one service's fragment.
#[derive(Default)]
struct FragmentState {
    source: Option<SpecSource>,
    /// The last good copy.
    document: Option<Value>,
    error: Option<String>,
    loaded_at: Option<u64>,
}

/// The published document, and the fragments it was made from.
pub struct ApiDocs {
    published: ArcSwap<Published>,
    fragments: Mutex<HashMap<String, FragmentState>>,
}

impl ApiDocs {
    /// Publishes the document of `config` with the fragments that are files; fragments served
    /// by the services come with the first [`ApiDocs::refresh`].
    pub fn new(config: &Config, router: &Router) -> ApiDocs {
        let mut states = HashMap::new();
        for service in &config.services {
            if let Some(source @ SpecSource::File(path)) = &service.openapi {
                let loaded = fragment::read_file(path);
                let mut state = FragmentState {
                    source: Some(source.clone()),
                    ..FragmentState::default()
                };
                record(&mut state, loaded);
                states.insert(service.name.clone(), state);
            }
        }
        let published = render(config, router, fragments_of(config, &states));
        log_problems(&published);
        ApiDocs {
            published: ArcSwap::from_pointee(published),
            fragments: Mutex::new(states),
        }
    }

    pub fn published(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Loads every fragment again, merges, and publishes when the document changed.
    pub async fn refresh(&self, config: &Config, router: &Router) {
        // All at once: one slow service does not hold the others' fragments back.
        let loads = config.services.iter().filter_map(|service| {
            let source = service.openapi.clone()?;
            Some(async move {
                let result = fragment::load(&source).await;
                (service.name.clone(), source, result)
            })
        });
        let loaded = futures_util::future::join_all(loads).await;
        let fragments = {
            let mut states = self
                .fragments
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            states.retain(|name, _| {
                config
                    .services
                    .iter()
                    .any(|s| s.name == *name && s.openapi.is_some())
            });
            for (name, source, result) in loaded {
                let state = states.entry(name.clone()).or_default();
                if state.source.as_ref() != Some(&source) {
                    // Another source: the copy of the old one is not this service's document.
                    *state = FragmentState {
                        source: Some(source.clone()),
                        ..FragmentState::default()
                    };
                }
                if let Err(error) = &result {
                    let error = WithCauses(error);
                    tracing::warn!(service = %name, %source, %error, "cannot load the OpenAPI fragment; keeping the last good copy");
                }
                record(state, result);
            }
            fragments_of(config, &states)
        };
        let published = render(config, router, fragments);
        let current = self.published.load();
        let changed = published.digest != current.digest
            || published.problems != current.problems
            || published.drift != current.drift;
        if changed {
            log_problems(&published);
            self.published.store(Arc::new(published));
        }
    }

    /// The `docs` object of `/readyz`: each fragment's state and what the merge reported.
    pub fn status(&self) -> Value {
        let states = self
            .fragments
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut fragments: Vec<(&String, &FragmentState)> = states.iter().collect();
        fragments.sort_by_key(|(name, _)| *name);
        let fragments: serde_json::Map<String, Value> = fragments
            .into_iter()
            .map(|(name, state)| {
                let source = state.source.as_ref().map(ToString::to_string);
                let value = json!({
                    "source": source,
                    "ok": state.error.is_none(),
                    "error": state.error,
                    "have_copy": state.document.is_some(),
                    "loaded_at": state.loaded_at,
                });
                (name.clone(), value)
            })
            .collect();
        let published = self.published.load();
        json!({
            "fragments": fragments,
            "problems": published.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "drift": published.drift.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// `GET /api/schema/`: the document in the rendering the request asks for (or the 406 to
    /// one it does not serve), 304 when the client's copy is current.
    pub fn schema(&self, request: &RequestHeader) -> Result<Page, GatewayError> {
        let published = self.published.load_full();
        let accept = request
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let offer = negotiate::choose(request.uri.query(), accept)?;
        let body = match offer.rendering {
            Rendering::Json => published.json.clone(),
            Rendering::Yaml => published.yaml.clone(),
        };
        let etag = format!("\"{}-{}\"", published.digest, offer.tag);
        let fresh = request
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                // Weak comparison, as If-None-Match asks: W/"x" matches "x".
                tags.split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == etag || t == "*")
            });
        Ok(Page {
            status: if fresh {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            },
            content_type: offer.content_type,
            body: if fresh { Bytes::new() } else { body },
            etag: Some(etag),
            cache_control: "no-cache",
            csp: None,
        })
    }

    /// `GET /api/`: every public route.
    pub fn root(&self) -> Page {
        Page::ok("application/json", self.published.load().root.clone())
    }
}

/// `GET /api/docs/`: Swagger UI.
pub fn swagger_ui(config: &Config) -> Page {
    html(pages::swagger_page(&config.docs.title))
}

/// `GET /api/redoc/`: ReDoc.
pub fn redoc(config: &Config) -> Page {
    html(pages::redoc_page(&config.docs.title))
}

/// `GET /api/docs/assets/<file>`: a script or style of the two pages.
pub fn asset(request: &RequestHeader) -> Result<Page, GatewayError> {
    let name = request.uri.path().rsplit('/').next().unwrap_or_default();
    let asset = pages::asset(name).ok_or(GatewayError::NotFound)?;
    Ok(Page {
        cache_control: "public, max-age=3600",
        ..Page::ok(asset.content_type, Bytes::from_static(asset.body))
    })
}

/// What did not fit, in the log, once per published document.
fn log_problems(published: &Published) {
    for problem in &published.problems {
        tracing::warn!(%problem, "OpenAPI fragment not merged whole");
    }
}

fn record(state: &mut FragmentState, result: Result<Value, FragmentError>) {
    match result {
        Ok(document) => {
            state.document = Some(document);
            state.error = None;
            state.loaded_at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs());
        }
        Err(error) => state.error = Some(error.to_string()),
    }
}

fn fragments_of(config: &Config, states: &HashMap<String, FragmentState>) -> Vec<Fragment> {
    config
        .services
        .iter()
        .enumerate()
        .filter_map(|(index, service)| {
            let state = states.get(&service.name)?;
            Some(Fragment {
                service: index,
                source: service.openapi.as_ref()?.to_string(),
                document: state.document.clone()?,
            })
        })
        .collect()
}

/// Merges and renders; the same inputs give the same bytes.
pub fn render(config: &Config, router: &Router, fragments: Vec<Fragment>) -> Published {
    let merged = merge::merge(config, router, fragments);
    let json = serde_json::to_vec_pretty(&merged.document).unwrap_or_default();
    let yaml = serde_yaml::to_string(&merged.document).unwrap_or_default();
    let root = root_view(config).to_string();
    let digest = Sha256::new()
        .chain_update(&json)
        .chain_update(&root)
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    Published {
        yaml: Bytes::from(yaml),
        json: Bytes::from(json),
        digest,
        root: Bytes::from(root),
        problems: merged.problems,
        drift: merged.drift,
    }
}

/// `GET /api/`: the gateway's endpoints and every route, with a link to its docs section.
pub fn root_view(config: &Config) -> Value {
    let mut endpoints = Vec::new();
    for endpoint in Endpoint::ALL {
        let active = match endpoint {
            Endpoint::Token
            | Endpoint::Refresh
            | Endpoint::Verify
            | Endpoint::Revoke
            | Endpoint::Jwks => config.auth.tokens.is_some(),
            _ => true,
        };
        if active {
            endpoints.push(json!({
                "id": endpoint.id(),
                "path": endpoint.path(),
                "methods": [endpoint.method().as_str()],
                "auth": if endpoint == Endpoint::Usage { "any" } else { "none" },
                "roles": if endpoint == Endpoint::Usage { config.auth.roles.last().cloned().into_iter().collect() } else { Vec::new() },
                "service": GATEWAY_TAG,
                "cors_origins": cors_origins(config.cors.as_deref()),
            }));
        }
    }
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|route| {
            let service = &config.service_of(route).name;
            let roles = route.min_role.and_then(|rank| config.auth.roles.get(rank..)).unwrap_or(&[]);
            json!({
                "id": route.id,
                "path": route.pattern.as_str(),
                "methods": route.methods.names().collect::<Vec<_>>(),
                "auth": auth_name(route.auth),
                "roles": roles,
                "scopes": route.scopes,
                "rate_limits": route.rate_limits.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "service": service,
                "cors_origins": cors_origins(route.cors.as_deref()),
                "docs": format!("{}/api/docs/#/{service}", config.public_url.trim_end_matches('/')),
            })
        })
        .collect();
    json!({
        "title": config.docs.title,
        "version": config.docs.version,
        "schema": "/api/schema/",
        "docs": "/api/docs/",
        "redoc": "/api/redoc/",
        "endpoints": endpoints,
        "routes": routes,
    })
}

/// The origins a browser may call from, as written; `null` where CORS is off.
fn cors_origins(cors: Option<&CorsPolicy>) -> Value {
    cors.map_or(Value::Null, |cors| {
        cors.origins.iter().map(ToString::to_string).collect()
    })
}

/// An HTML page, with the pages' Content-Security-Policy.
fn html(text: String) -> Page {
    Page {
        csp: Some(pages::CONTENT_SECURITY_POLICY),
        ..Page::ok("text/html; charset=utf-8", Bytes::from(text))
    }
}

/// Fetches the fragments again every `docs.refresh`, and at once after each reload.
pub struct DocsRefresh {
    pub docs: Arc<ApiDocs>,
    pub current: Current,
    pub reloaded: watch::Receiver<u64>,
}

#[async_trait]
impl BackgroundService for DocsRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloaded = self.reloaded.clone();
        loop {
            let snapshot = self.current.load_full();
            self.docs.refresh(&snapshot.config, &snapshot.router).await;
            let period = Some(snapshot.config.docs.refresh);
            if !wait_for_reload(&mut reloaded, period, &mut shutdown).await {
                return;
            }
        }
    }
}

/// Loads every fragment once and merges: what `guichet schema` prints. Fragments that cannot be
/// loaded are returned as problems too.
pub async fn merge_now(config: &Config) -> Published {
    let router = Router::new(&config.routes);
    let (fragments, mut unloaded) = load_all(config).await;
    let mut published = render(config, &router, fragments);
    unloaded.append(&mut published.problems);
    published.problems = unloaded;
    published
}

/// The problems and drift of [`merge_now`], without the document: what `guichet check`
/// reports.
pub async fn report_now(config: &Config) -> (Vec<Problem>, Vec<Drift>) {
    let router = Router::new(&config.routes);
    let (fragments, mut problems) = load_all(config).await;
    let (mut merge_problems, drift) = merge::report(config, &router, fragments);
    problems.append(&mut merge_problems);
    (problems, drift)
}

/// Every service's fragment, loaded once, and a problem for each that could not be. As many
/// at once as there are cores (files are parsed on blocking threads), in service order.
async fn load_all(config: &Config) -> (Vec<Fragment>, Vec<Problem>) {
    let loads = config
        .services
        .iter()
        .enumerate()
        .filter_map(|(index, service)| {
            let source = service.openapi.as_ref()?;
            Some(async move { (index, source, fragment::load(source).await) })
        });
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let loaded: Vec<_> = futures_util::stream::iter(loads)
        .buffered(cores)
        .collect()
        .await;
    let mut fragments = Vec::new();
    let mut unloaded = Vec::new();
    for (index, source, loaded) in loaded {
        match loaded {
            Ok(document) => fragments.push(Fragment {
                service: index,
                source: source.to_string(),
                document,
            }),
            Err(error) => unloaded.push(Problem::new(
                &source.to_string(),
                "",
                &format!("not loaded: {error}"),
            )),
        }
    }
    (fragments, unloaded)
}
