//! Which rendering of the API document a request asks for: `?format=json|yaml` (drf-spectacular's
//! `openapi-json` and `openapi` too) or the `Accept` header, and the `Content-Type` it gets. A
//! format or an `Accept` the gateway cannot serve is a 406 that names the formats, never another
//! rendering than the one asked for.

use crate::errors::GatewayError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    Json,
    Yaml,
}

/// One media type the document is served as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The media type `Accept` names.
    media: &'static str,
    pub content_type: &'static str,
    pub rendering: Rendering,
    /// What tells this representation's `ETag` from the others'.
    pub tag: &'static str,
}

/// What is served, YAML first: it is the default, as with drf-spectacular.
const OFFERS: [Offer; 4] = [
    Offer {
        media: "application/vnd.oai.openapi",
        content_type: "application/vnd.oai.openapi; charset=utf-8",
        rendering: Rendering::Yaml,
        tag: "yaml",
    },
    Offer {
        media: "application/yaml",
        content_type: "application/yaml; charset=utf-8",
        rendering: Rendering::Yaml,
        tag: "plain-yaml",
    },
    Offer {
        media: "application/vnd.oai.openapi+json",
        content_type: "application/vnd.oai.openapi+json",
        rendering: Rendering::Json,
        tag: "json",
    },
    Offer {
        media: "application/json",
        content_type: "application/json",
        rendering: Rendering::Json,
        tag: "plain-json",
    },
];

const FORMATS: &str = "formats: json, yaml";

/// The representation for a request with this query string and `Accept` header. `?format=`
/// picks the rendering and `Accept` then only the media type among that rendering's (its
/// first when `Accept` names none of them); without `?format=`, `Accept` picks both.
pub fn choose(query: Option<&str>, accept: Option<&str>) -> Result<Offer, GatewayError> {
    let format = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("format="));
    let rendering = match format {
        None => None,
        Some("json" | "openapi-json") => Some(Rendering::Json),
        Some("yaml" | "openapi") => Some(Rendering::Yaml),
        Some(other) => {
            return Err(GatewayError::NotAcceptable(format!(
            "The API document is not served as `{}`; {FORMATS} (`?format=json` or `?format=yaml`).",
            other.escape_default()
        )))
        }
    };
    const NO_OFFER: GatewayError = GatewayError::Internal("every rendering has an offer");
    let offers = OFFERS
        .iter()
        .filter(|offer| rendering.is_none_or(|r| offer.rendering == r));
    let accept = accept.map(str::trim).filter(|a| !a.is_empty());
    let Some(accept) = accept else {
        return offers.copied().next().ok_or(NO_OFFER);
    };
    let ranges: Vec<Range> = accept.split(',').filter_map(Range::parse).collect();
    // The most acceptable offer: by quality, then by how specifically `Accept` named it.
    let best = offers
        .clone()
        .filter_map(|offer| {
            let (quality, specificity) = ranges
                .iter()
                .filter_map(|range| range.matches(offer.media).map(|s| (range.quality, s)))
                .max_by_key(|(_, specificity)| *specificity)?;
            (quality > 0).then_some((quality, specificity, offer))
        })
        .reduce(|best, next| {
            if (next.0, next.1) > (best.0, best.1) {
                next
            } else {
                best
            }
        });
    match (best, rendering) {
        (Some((_, _, offer)), _) => Ok(*offer),
        // `?format=` was explicit: it wins over an `Accept` that names none of its types.
        (None, Some(_)) => offers.copied().next().ok_or(NO_OFFER),
        (None, None) => {
            let media: Vec<&str> = OFFERS.iter().map(|o| o.media).collect();
            Err(GatewayError::NotAcceptable(format!(
                "None of the media types in Accept is served here; {FORMATS} ({}).",
                media.join(", ")
            )))
        }
    }
}

/// One media range of `Accept`, with its quality in thousandths.
struct Range<'a> {
    kind: &'a str,
    subtype: &'a str,
    quality: u16,
}

impl<'a> Range<'a> {
    fn parse(text: &'a str) -> Option<Range<'a>> {
        let mut parts = text.split(';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        let mut quality = 1000;
        for parameter in parts {
            if let Some((name, value)) = parameter.trim().split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    quality = parse_quality(value.trim())?;
                }
            }
        }
        Some(Range {
            kind: kind.trim(),
            subtype: subtype.trim(),
            quality,
        })
    }

    /// How specifically this range names `media` (2 exactly, 1 as `type/*`, 0 as `*/*`), if it
    /// does.
    fn matches(&self, media: &str) -> Option<u8> {
        let (kind, subtype) = media.split_once('/')?;
        match (self.kind, self.subtype) {
            ("*", "*") => Some(0),
            (k, "*") if k.eq_ignore_ascii_case(kind) => Some(1),
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => Some(2),
            _ => None,
        }
    }
}

/// `q=0.8` as 800; `None` for a value that is not a quality (the range is then ignored).
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(query: &str, accept: Option<&str>) -> &'static str {
        choose(Some(query), accept).expect("served").content_type
    }

    #[test]
    fn yaml_by_default_and_json_on_request() {
        assert_eq!(content_type("", None), OFFERS[0].content_type);
        assert_eq!(content_type("", Some("*/*")), OFFERS[0].content_type);
        assert_eq!(
            content_type("format=json", None),
            "application/vnd.oai.openapi+json"
        );
        assert_eq!(
            content_type("a=1&format=openapi-json", None),
            "application/vnd.oai.openapi+json"
        );
        assert_eq!(
            content_type("format=yaml", Some("application/json")),
            OFFERS[0].content_type
        );
    }

    #[test]
    fn accept_picks_the_media_type_it_names() {
        assert_eq!(
            content_type("", Some("application/json")),
            "application/json"
        );
        assert_eq!(
            content_type("", Some("application/vnd.oai.openapi+json")),
            "application/vnd.oai.openapi+json"
        );
        assert_eq!(
            content_type("format=json", Some("application/json")),
            "application/json"
        );
        // Named exactly beats matched by a wildcard at the same quality.
        assert_eq!(
            content_type("", Some("*/*, application/json")),
            "application/json"
        );
        assert_eq!(
            content_type("", Some("application/json;q=0.5, application/yaml")),
            "application/yaml; charset=utf-8"
        );
        assert_eq!(
            content_type("", Some("application/*;q=0.2, application/json;q=0")),
            OFFERS[0].content_type
        );
    }

    #[test]
    fn what_cannot_be_served_is_a_406_naming_the_formats() {
        for (query, accept) in [
            ("format=xml", None),
            ("format=", None),
            ("", Some("application/xml")),
            ("", Some("application/json;q=0, text/html")),
        ] {
            let error = choose(Some(query), accept).expect_err("406");
            assert_eq!(error.status(), 406, "{query} {accept:?}");
            assert_eq!(error.code(), "not_acceptable");
            assert!(
                error.detail().contains("formats: json, yaml"),
                "{}",
                error.detail()
            );
        }
    }

    #[test]
    fn qualities_are_read_as_rfc_9110_writes_them() {
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0.8"), Some(800));
        assert_eq!(parse_quality("0.125"), Some(125));
        assert_eq!(parse_quality("1.5"), None);
        assert_eq!(parse_quality("0.1234"), None);
        assert_eq!(parse_quality("x"), None);
    }
}
