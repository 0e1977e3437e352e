//! The dashboard and GraphiQL: static files embedded in the binary and
//! served by the HTTP listener, so `cargo build` needs no Node and the
//! browser makes no request anywhere else.
//!
//! - `/`: the dashboard (`crates/api/web/index.html`, plain ES modules under
//!   `web/js/`), which talks to `/graphql` with the session cookie `/login`
//!   sets.
//! - `/graphiql`: GraphiQL, from the vendored npm bundles under
//!   `web/vendor/` (gzip-compressed as `web/vendor/fetch.sh` made them;
//!   sent as they are with `Content-Encoding: gzip`, or inflated here for a
//!   client that does not take gzip).
//!
//! The files hold no secret, but each response carries a strict
//! Content-Security-Policy (scripts and connections to this origin only),
//! and the router that mounts these checks `Host` first, as for GraphQL.

use std::io::Read;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    /// Its path under `/assets/`, or a page's own path.
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
    /// `body` is gzip-compressed.
    gzip: bool,
}

macro_rules! asset {
    ($path:literal, $mime:expr, $file:literal) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!("../web/", $file)),
            gzip: false,
        }
    };
    ($path:literal, $mime:expr, $file:literal, gzip) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!("../web/", $file)),
            gzip: true,
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

static PAGES: &[Asset] = &[
    asset!("/", HTML, "index.html"),
    asset!("/graphiql", HTML, "graphiql.html"),
];

static ASSETS: &[Asset] = &[
    asset!("app.css", CSS, "app.css"),
    asset!("icon.svg", "image/svg+xml", "icon.svg"),
    asset!("graphiql-start.js", JS, "graphiql-start.js"),
    asset!("js/main.js", JS, "js/main.js"),
    asset!("js/gql.js", JS, "js/gql.js"),
    asset!("js/ui.js", JS, "js/ui.js"),
    asset!("js/chart.js", JS, "js/chart.js"),
    asset!("js/processes.js", JS, "js/processes.js"),
    asset!("js/instances.js", JS, "js/instances.js"),
    asset!("js/catalog.js", JS, "js/catalog.js"),
    asset!("js/events.js", JS, "js/events.js"),
    asset!(
        "vendor/graphiql-3.8.3/graphiql.min.js",
        JS,
        "vendor/graphiql-3.8.3/graphiql.min.js.gz",
        gzip
    ),
    asset!(
        "vendor/graphiql-3.8.3/graphiql.min.css",
        CSS,
        "vendor/graphiql-3.8.3/graphiql.min.css.gz",
        gzip
    ),
    asset!(
        "vendor/react-18.3.1/react.production.min.js",
        JS,
        "vendor/react-18.3.1/react.production.min.js.gz",
        gzip
    ),
    asset!(
        "vendor/react-dom-18.3.1/react-dom.production.min.js",
        JS,
        "vendor/react-dom-18.3.1/react-dom.production.min.js.gz",
        gzip
    ),
];

/// The dashboard's policy: nothing but this origin, no inline script or
/// style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// GraphiQL's: its editor sets inline styles and its CSS carries its fonts
/// as data URLs.
const CSP_GRAPHIQL: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            // `gzip;q=0` refuses it.
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn send(a: &Asset, h: &HeaderMap, csp: &str, immutable: bool) -> Response {
    let mut body: Body = Body::from(a.body);
    let mut gzip = a.gzip;
    if a.gzip && !accepts_gzip(h) {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(a.body)
            .read_to_end(&mut out)
            .is_err()
        {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        body = Body::from(out);
        gzip = false;
    }
    let mut r = Response::new(body);
    let hs = r.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    if gzip {
        hs.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if a.gzip {
        hs.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    hs.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        hs.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    hs.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    hs.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    hs.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn page(uri: axum::http::Uri, h: HeaderMap) -> Response {
    match PAGES.iter().find(|a| a.path == uri.path()) {
        Some(a) if a.path == "/graphiql" => send(a, &h, CSP_GRAPHIQL, false),
        Some(a) => send(a, &h, CSP, false),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn asset(Path(path): Path<String>, h: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        // Vendored files carry their version in the path: cached for good.
        Some(a) => send(a, &h, CSP, a.path.starts_with("vendor/")),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The dashboard's and GraphiQL's routes (no checks: the caller adds them).
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/graphiql", get(page))
        .route("/assets/{*path}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gzip_asset_inflates_and_every_page_is_utf8() {
        for a in ASSETS.iter().chain(PAGES) {
            if a.gzip {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(a.body)
                    .read_to_end(&mut out)
                    .unwrap_or_else(|e| panic!("{}: {e}", a.path));
                assert!(out.len() > a.body.len(), "{}", a.path);
            } else {
                assert!(std::str::from_utf8(a.body).is_ok(), "{}", a.path);
            }
        }
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("*"));
        assert!(accepts_gzip(&h));
    }

    /// Every module the dashboard imports is served: a file added under
    /// `web/js/` but not listed here would be a 404 in the browser.
    #[test]
    fn every_imported_module_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/js");
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let path = format!("js/{name}");
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "{path} is not in ASSETS"
            );
        }
    }
}
