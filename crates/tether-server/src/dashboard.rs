//! The dashboard: the customer's browser as a receiver, served by the server
//! itself from files embedded in the binary (no build step, no separate web
//! server).
//!
//! ```text
//!  GET /                      index.html   ─┐ the page signs in (an account, or a receiver
//!  GET /assets/app.js         ES module     │ key), lists devices (GET /v1/devices), claims
//!  GET /assets/app.css                      │ (POST /v1/claim), opens a channel over the
//!  GET /assets/readings.{js,css}            │ receiver WebSocket and sends commands;
//!  GET /assets/vendor/uPlot.*  chart library ┘ readings.js draws a channel's readings
//!  GET /claim                 claim.html   ─┐ the label's QR code opens /claim#code=…:
//!  GET /invite                invite.html   │ create an account there; join with an
//!  GET /people                people.html   │ invitation; the owner manages people
//!  GET /assets/account.js, session.js, account.css ┘ (scripts of those pages)
//!  GET /favicon.ico, /assets/icon.svg, /manifest.webmanifest: the app's name and icon
//! ```
//!
//! Every response carries a strong `ETag` (SHA-256 of the file) and
//! `Cache-Control: no-cache`: browsers keep the files but revalidate them,
//! and get `304 Not Modified` while the server binary is unchanged, so an
//! upgraded server never runs against a stale script. The HTML page also
//! carries a Content-Security-Policy that allows only the server's own
//! scripts, styles and connections.
//!
//! The vendored uPlot build comes from the npm package pinned in
//! `crates/tether-server/web/package-lock.json`; `npm ci && npm run vendor`
//! in that directory copies it here again.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::http_util::error_response;

/// One embedded file.
struct Asset {
    /// Path below `/assets/` (the page itself is `index.html`).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Strong validator, `"<hex>"`.
    etag: String,
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        (
            $path,
            $content_type,
            include_bytes!(concat!("../assets/", $path)).as_slice(),
        )
    };
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        asset!("index.html", "text/html; charset=utf-8"),
        asset!("claim.html", "text/html; charset=utf-8"),
        asset!("invite.html", "text/html; charset=utf-8"),
        asset!("people.html", "text/html; charset=utf-8"),
        asset!("app.js", "text/javascript; charset=utf-8"),
        asset!("session.js", "text/javascript; charset=utf-8"),
        asset!("account.js", "text/javascript; charset=utf-8"),
        asset!("app.css", "text/css; charset=utf-8"),
        asset!("readings.js", "text/javascript; charset=utf-8"),
        asset!("readings.css", "text/css; charset=utf-8"),
        asset!("account.css", "text/css; charset=utf-8"),
        asset!("icon.svg", "image/svg+xml"),
        asset!("icon-192.png", "image/png"),
        asset!("icon-512.png", "image/png"),
        asset!("favicon.ico", "image/x-icon"),
        asset!("manifest.webmanifest", "application/manifest+json"),
        asset!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    ]
    .into_iter()
    .map(|(path, content_type, body)| Asset {
        path,
        content_type,
        body,
        etag: format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16])),
    })
    .collect()
});

fn respond(asset: &Asset, headers: &HeaderMap) -> Response {
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|tag| tag == asset.etag || tag == "*")
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        response_headers.insert(header::ETAG, etag);
    }
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if is_page(asset.path) {
        response_headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// Pages are served at their own paths (with the CSP), not under
/// `/assets/`.
fn is_page(path: &str) -> bool {
    path.ends_with(".html")
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    match find(path) {
        Some(asset) => respond(asset, headers),
        None => error_response(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

/// `GET /`: the dashboard page.
pub(crate) async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /claim`: add a device with its claim code (the label's QR code
/// opens `/claim#code=…`), creating the account if need be.
pub(crate) async fn claim_page(headers: HeaderMap) -> Response {
    serve("claim.html", &headers)
}

/// `GET /invite`: join a customer with an invitation link
/// (`/invite#token=…`).
pub(crate) async fn invite_page(headers: HeaderMap) -> Response {
    serve("invite.html", &headers)
}

/// `GET /people`: the customer's people and invitations.
pub(crate) async fn people_page(headers: HeaderMap) -> Response {
    serve("people.html", &headers)
}

/// `GET /favicon.ico`.
pub(crate) async fn favicon(headers: HeaderMap) -> Response {
    serve("favicon.ico", &headers)
}

/// `GET /manifest.webmanifest`: the app's name and icons.
pub(crate) async fn manifest(headers: HeaderMap) -> Response {
    serve("manifest.webmanifest", &headers)
}

/// `GET /assets/{*path}`: the pages' scripts, styles, icons and the chart
/// library.
pub(crate) async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path).filter(|asset| !is_page(asset.path)) {
        Some(asset) => respond(asset, &headers),
        None => error_response(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_a_distinct_etag() {
        assert_eq!(ASSETS.len(), 18);
        for asset in ASSETS.iter() {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            assert_eq!(asset.etag.len(), 34);
        }
        let mut tags: Vec<&str> = ASSETS.iter().map(|asset| asset.etag.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[tokio::test]
    async fn serves_with_type_validator_and_revalidation() {
        let response = asset(Path("app.js".to_owned()), HeaderMap::new()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let etag = headers[header::ETAG].clone();

        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_NONE_MATCH, etag);
        let response = asset(Path("app.js".to_owned()), conditional).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

        for response in [
            page(HeaderMap::new()).await,
            claim_page(HeaderMap::new()).await,
            invite_page(HeaderMap::new()).await,
            people_page(HeaderMap::new()).await,
        ] {
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response.headers()[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .is_ok_and(|csp| csp.contains("script-src 'self'"))
            );
        }
        let icon = favicon(HeaderMap::new()).await;
        assert_eq!(icon.status(), StatusCode::OK);
        assert_eq!(icon.headers()[header::CONTENT_TYPE], "image/x-icon");
        let manifest = manifest(HeaderMap::new()).await;
        assert_eq!(
            manifest.headers()[header::CONTENT_TYPE],
            "application/manifest+json"
        );
    }

    #[tokio::test]
    async fn unknown_files_and_the_page_under_assets_are_not_found() {
        for path in [
            "index.html",
            "claim.html",
            "people.html",
            "../Cargo.toml",
            "nope.js",
            "",
        ] {
            let response = asset(Path(path.to_owned()), HeaderMap::new()).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
