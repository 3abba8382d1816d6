//! Route table tests, with a property test against an independent matcher.

use std::sync::Arc;

use http::Method;

use super::*;
use crate::config::Route;

fn route(id: &str, path: &str, upstream_path: Option<&str>, methods: &[&str]) -> Arc<Route> {
    let pattern = PathPattern::parse(path).unwrap();
    let upstream_path = upstream_path.map(|t| PathTemplate::parse(t, &pattern).unwrap());
    let methods = if methods.is_empty() {
        MethodSet::ALL
    } else {
        MethodSet::parse(methods.iter().copied()).unwrap()
    };
    Arc::new(Route {
        index: 0,
        id: id.to_string(),
        service: 0,
        pattern,
        upstream_path,
        methods,
        max_body: None,
        auth: crate::config::AuthLevel::None,
        min_role: None,
        scopes: Vec::new(),
        forward_authorization: false,
        rate_limits: Vec::new(),
        encoded_slashes: crate::config::EncodedSlashes::Reject,
        cors: None,
        websocket: false,
    })
}

fn found(router: &Router, method: Method, path: &str) -> Option<(String, String)> {
    match router.lookup(path, &method) {
        Lookup::Found(m) => Some((m.route.id.clone(), m.upstream_path())),
        _ => None,
    }
}

#[test]
fn longest_prefix_wins_on_segment_boundaries() {
    let router = Router::new(&[
        route("api", "/api/", None, &[]),
        route("courses", "/api/courses/", None, &[]),
        route("lessons", "/api/courses/lessons/", None, &[]),
    ]);
    let id = |path| found(&router, Method::GET, path).map(|(id, _)| id);
    assert_eq!(id("/api/courses/12").as_deref(), Some("courses"));
    assert_eq!(id("/api/courses").as_deref(), Some("courses"));
    assert_eq!(id("/api/courses/lessons/3").as_deref(), Some("lessons"));
    assert_eq!(id("/api/coursesX/1").as_deref(), Some("api"));
    assert_eq!(id("/api").as_deref(), Some("api"));
    assert_eq!(id("/apix"), None);
    assert_eq!(id("/"), None);
}

#[test]
fn literal_segments_beat_parameters_at_equal_depth() {
    let router = Router::new(&[
        route("by-id", "/api/users/{id}/", None, &[]),
        route("me", "/api/users/me/", None, &[]),
    ]);
    let id = |path| found(&router, Method::GET, path).map(|(id, _)| id);
    assert_eq!(id("/api/users/me/").as_deref(), Some("me"));
    assert_eq!(id("/api/users/42/").as_deref(), Some("by-id"));
    assert_eq!(id("/api/users/").as_deref(), None);
}

#[test]
fn a_deeper_parameter_route_beats_a_shallower_literal_one() {
    let router = Router::new(&[
        route("users", "/api/users/", None, &[]),
        route("user-courses", "/api/users/{id}/courses/", None, &[]),
    ]);
    let id = |path| found(&router, Method::GET, path).map(|(id, _)| id);
    assert_eq!(id("/api/users/7/courses/").as_deref(), Some("user-courses"));
    assert_eq!(id("/api/users/7/grades/").as_deref(), Some("users"));
}

#[test]
fn method_mismatch_is_405_with_the_allowed_methods_unless_a_shorter_route_accepts() {
    let router = Router::new(&[route("read", "/api/courses/", None, &["GET"])]);
    match router.lookup("/api/courses/1", &Method::DELETE) {
        Lookup::MethodNotAllowed(allowed, _) => assert_eq!(allowed.allow_header(), "GET, HEAD"),
        _ => panic!("expected 405"),
    }
    let router = Router::new(&[
        route("read", "/api/courses/", None, &["GET"]),
        route("legacy", "/api/", None, &[]),
    ]);
    assert_eq!(
        found(&router, Method::DELETE, "/api/courses/1")
            .map(|(id, _)| id)
            .as_deref(),
        Some("legacy")
    );
}

#[test]
fn same_path_with_disjoint_methods_goes_to_the_route_that_takes_the_method() {
    let router = Router::new(&[
        route("read", "/api/grades/", None, &["GET"]),
        route("write", "/api/grades/", None, &["POST", "PUT"]),
    ]);
    let id = |method| found(&router, method, "/api/grades/1").map(|(id, _)| id);
    assert_eq!(id(Method::GET).as_deref(), Some("read"));
    assert_eq!(id(Method::HEAD).as_deref(), Some("read"));
    assert_eq!(id(Method::PUT).as_deref(), Some("write"));
    match router.lookup("/api/grades/1", &Method::DELETE) {
        Lookup::MethodNotAllowed(allowed, _) => {
            assert_eq!(allowed.allow_header(), "GET, HEAD, POST, PUT")
        }
        _ => panic!("expected 405"),
    }
}

#[test]
fn upstream_path_replaces_the_matched_prefix() {
    let router = Router::new(&[
        route("courses", "/api/courses/", Some("/courses/"), &[]),
        route("root", "/legacy/", Some("/"), &[]),
        route("mount", "/", Some("/v2/"), &[]),
        route(
            "params",
            "/api/users/{id}/courses/",
            Some("/members/{id}/enrolments/"),
            &[],
        ),
    ]);
    let up = |path| found(&router, Method::GET, path).map(|(_, up)| up);
    assert_eq!(up("/api/courses/12").as_deref(), Some("/courses/12"));
    assert_eq!(up("/api/courses/").as_deref(), Some("/courses/"));
    assert_eq!(up("/api/courses").as_deref(), Some("/courses"));
    assert_eq!(up("/legacy/a/b/").as_deref(), Some("/a/b/"));
    assert_eq!(up("/legacy").as_deref(), Some("/"));
    assert_eq!(up("/other/x").as_deref(), Some("/v2/other/x"));
    assert_eq!(up("/").as_deref(), Some("/v2/"));
    assert_eq!(
        up("/api/users/7/courses/3/").as_deref(),
        Some("/members/7/enrolments/3/")
    );
}

#[test]
fn without_upstream_path_the_normalised_path_is_forwarded() {
    let router = Router::new(&[route("courses", "/api/courses/", None, &[])]);
    assert_eq!(
        found(&router, Method::GET, "/api/courses/a%2Fb")
            .map(|(_, up)| up)
            .as_deref(),
        Some("/api/courses/a%2Fb")
    );
}

#[test]
fn patterns_must_be_absolute_normal_and_well_formed() {
    for bad in [
        "api/",
        "/api//x/",
        "/api/./x",
        "/api/../x",
        "/api/{id",
        "/api/{}/",
        "/api/x{id}/",
        "/api/{1d}/",
        "/api/{id}/{id}/",
        "/api/%7Euser/",
        "/api/?x=1",
    ] {
        assert!(PathPattern::parse(bad).is_err(), "{bad} should be refused");
    }
    for good in ["/", "/api/", "/api", "/api/{id}/x/", "/api/a%2Fb/"] {
        assert!(
            PathPattern::parse(good).is_ok(),
            "{good} should be accepted"
        );
    }
}

#[test]
fn templates_use_only_the_route_parameters() {
    let pattern = PathPattern::parse("/api/users/{id}/").unwrap();
    assert!(PathTemplate::parse("/users/{id}/", &pattern).is_ok());
    let error = PathTemplate::parse("/users/{user}/", &pattern).unwrap_err();
    assert!(error.message.contains("{user}"), "{}", error.message);
}

#[test]
fn same_shape_ignores_parameter_names_only() {
    let a = PathPattern::parse("/api/{id}/x/").unwrap();
    assert!(a.same_shape(&PathPattern::parse("/api/{slug}/x").unwrap()));
    assert!(!a.same_shape(&PathPattern::parse("/api/y/x/").unwrap()));
    assert!(!a.same_shape(&PathPattern::parse("/api/{id}/").unwrap()));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Route paths from a small alphabet, so that overlaps are frequent.
    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("{p}"), Just("{q}")],
            0..4,
        )
        .prop_map(|segs| {
            let mut seen = Vec::new();
            let segs: Vec<String> = segs
                .into_iter()
                .map(|s| {
                    // Parameter names must be unique within a path.
                    if s.starts_with('{') {
                        let name = format!("{{x{}}}", seen.len());
                        seen.push(());
                        name
                    } else {
                        s.to_string()
                    }
                })
                .collect();
            format!("/{}", segs.join("/"))
        })
    }

    fn request_path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
            0..5,
        )
        .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    /// The independent oracle: does `pattern` match `path` as a segment prefix, and how deep?
    fn matches(pattern: &PathPattern, path: &str) -> Option<usize> {
        let request: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let segments = pattern.segments();
        if segments.len() > request.len() {
            return None;
        }
        segments
            .iter()
            .zip(&request)
            .all(|(segment, part)| match segment {
                Segment::Static(text) => text == part,
                Segment::Param(_) => !part.is_empty(),
            })
            .then_some(segments.len())
    }

    proptest! {
        #[test]
        fn the_chosen_route_matches_and_none_deeper_accepts_the_method(
            patterns in prop::collection::vec((pattern(), any::<bool>()), 1..8),
            path in request_path(),
        ) {
            let routes: Vec<Arc<Route>> = patterns
                .iter()
                .enumerate()
                .map(|(i, (p, get_only))| {
                    route(&i.to_string(), p, None, if *get_only { &["GET"] } else { &[] })
                })
                .collect();
            let router = Router::new(&routes);
            let deepest_accepting = routes
                .iter()
                .filter(|r| r.methods.contains(&Method::POST))
                .filter_map(|r| matches(&r.pattern, &path))
                .max();
            match router.lookup(&path, &Method::POST) {
                Lookup::Found(found) => {
                    let depth = matches(&found.route.pattern, &path);
                    prop_assert!(depth.is_some(), "chosen route does not match");
                    prop_assert_eq!(depth, deepest_accepting);
                    prop_assert!(found.route.methods.contains(&Method::POST));
                }
                Lookup::MethodNotAllowed(..) => {
                    prop_assert_eq!(deepest_accepting, None);
                    prop_assert!(routes.iter().any(|r| matches(&r.pattern, &path).is_some()));
                }
                Lookup::NotFound => {
                    prop_assert!(routes.iter().all(|r| matches(&r.pattern, &path).is_none()));
                }
            }
        }
    }
}
