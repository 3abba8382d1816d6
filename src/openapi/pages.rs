//! The API documentation pages: Swagger UI at `/api/docs/` and ReDoc at `/api/redoc/`.
//!
//! Both front-ends are embedded in the binary (`build.rs` takes them from the npm packages
//! pinned in `ui/package-lock.json`) and served under `/api/docs/assets/`, so the pages load
//! nothing from another origin and work offline. Each page has no inline script: a small init
//! script reads the schema URL from the page's root element.

/// An embedded file, as served under `/api/docs/assets/`.
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

/// The Content-Security-Policy sent with the two pages: only the gateway's own origin.
///
/// Beyond `'self'`, only what the UIs need to work (each checked in Chromium): both set inline
/// `style` attributes and ReDoc injects `<style>` elements (`'unsafe-inline'` styles, never
/// scripts), Swagger UI's CSS draws its icons as `data:` images, and ReDoc runs its search index
/// in a Web Worker made from a `blob:` URL.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     worker-src blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Where the pages load the assets from.
const ASSETS_PATH: &str = "/api/docs/assets/";

/// The merged OpenAPI document both pages show.
const SCHEMA_URL: &str = "/api/schema/?format=json";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The Swagger UI page.
pub fn swagger_page(title: &str) -> String {
    page(
        title,
        &["swagger-ui.css"],
        "swagger-ui",
        &["swagger-ui-bundle.js", "swagger-init.js"],
    )
}

/// The ReDoc page.
pub fn redoc_page(title: &str) -> String {
    page(
        title,
        &[],
        "redoc",
        &["redoc.standalone.js", "redoc-init.js"],
    )
}

/// An embedded asset by file name, as served under /api/docs/assets/.
pub fn asset(name: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], _) = match name {
        "swagger-ui-bundle.js" => (
            include_bytes!(concat!(
                env!("OUT_DIR"),
                "/docs-assets/swagger-ui-bundle.js"
            )),
            JS,
        ),
        "swagger-ui.css" => (
            include_bytes!(concat!(env!("OUT_DIR"), "/docs-assets/swagger-ui.css")),
            CSS,
        ),
        "redoc.standalone.js" => (
            include_bytes!(concat!(env!("OUT_DIR"), "/docs-assets/redoc.standalone.js")),
            JS,
        ),
        "swagger-init.js" => (include_bytes!("swagger-init.js"), JS),
        "redoc-init.js" => (include_bytes!("redoc-init.js"), JS),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// A page whose element `root_id` the last of `scripts` starts the UI on.
fn page(title: &str, styles: &[&str], root_id: &str, scripts: &[&str]) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n",
        escape(title)
    );
    for style in styles {
        html.push_str(&format!(
            "<link rel=\"stylesheet\" href=\"{ASSETS_PATH}{style}\">\n"
        ));
    }
    html.push_str(&format!(
        "</head>\n<body>\n<div id=\"{root_id}\" data-schema-url=\"{SCHEMA_URL}\"></div>\n"
    ));
    for script in scripts {
        html.push_str(&format!(
            "<script src=\"{ASSETS_PATH}{script}\"></script>\n"
        ));
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// `text` as HTML text or attribute content.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> [String; 2] {
        [swagger_page("Hackitech API"), redoc_page("Hackitech API")]
    }

    /// The values of every `name="…"` attribute in `html`.
    fn attributes<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
        let needle = format!(" {name}=\"");
        html.match_indices(&needle)
            .map(|(at, _)| {
                let rest = &html[at + needle.len()..];
                &rest[..rest.find('"').expect("attribute is closed")]
            })
            .collect()
    }

    #[test]
    fn pages_load_only_the_gateway_s_assets_and_schema() {
        for html in pages() {
            assert!(!html.contains("http"), "an absolute URL in:\n{html}");
            assert!(!html.contains("//"), "a protocol-relative URL in:\n{html}");
            let links: Vec<_> = attributes(&html, "src")
                .into_iter()
                .chain(attributes(&html, "href"))
                .collect();
            assert!(!links.is_empty());
            for link in links {
                assert!(link.starts_with(ASSETS_PATH), "{link} is not an asset");
            }
            assert_eq!(attributes(&html, "data-schema-url"), [SCHEMA_URL]);
        }
    }

    #[test]
    fn pages_have_no_inline_script() {
        for html in pages() {
            let scripts = html.matches("<script").count();
            assert_eq!(scripts, 2, "{html}");
            assert_eq!(html.matches("\"></script>").count(), scripts, "{html}");
            assert_eq!(attributes(&html, "src").len(), scripts);
            assert!(!html.contains(" on"), "an inline event handler in:\n{html}");
        }
    }

    #[test]
    fn the_title_is_escaped() {
        let title = "<script>alert('x')</script> & \"more\"";
        for html in [swagger_page(title), redoc_page(title)] {
            assert!(html.contains(
                "<title>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;\
                 </title>"
            ));
            assert!(!html.contains("alert('x')"));
        }
    }

    #[test]
    fn every_referenced_asset_is_embedded() {
        for html in pages() {
            for link in attributes(&html, "src")
                .into_iter()
                .chain(attributes(&html, "href"))
            {
                let name = &link[ASSETS_PATH.len()..];
                let asset = asset(name).unwrap_or_else(|| panic!("{name} is not embedded"));
                assert!(!asset.body.is_empty(), "{name} is empty");
                let expected = if name.ends_with(".css") { CSS } else { JS };
                assert_eq!(asset.content_type, expected, "{name}");
                assert!(
                    std::str::from_utf8(asset.body).is_ok(),
                    "{name} is not UTF-8"
                );
            }
        }
    }

    #[test]
    fn redoc_loads_no_logo_from_a_cdn() {
        let redoc = asset("redoc.standalone.js").expect("ReDoc is embedded");
        let redoc = std::str::from_utf8(redoc.body).expect("UTF-8");
        assert!(
            !redoc.contains("cdn.redoc.ly"),
            "build.rs must replace the logo URL"
        );
    }

    #[test]
    fn unknown_assets_are_not_found() {
        for name in ["", "index.html", "../pages.rs", "swagger-ui-bundle.js.map"] {
            assert!(asset(name).is_none(), "{name}");
        }
    }

    #[test]
    fn the_policy_allows_no_other_origin() {
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
        assert!(!CONTENT_SECURITY_POLICY.contains('*'));
        let scripts = CONTENT_SECURITY_POLICY
            .split(';')
            .find(|directive| directive.trim().starts_with("script-src"))
            .expect("a script-src directive");
        assert_eq!(scripts.trim(), "script-src 'self'");
    }
}
