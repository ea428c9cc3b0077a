//! The web console: one HTML page, three scripts (the app, its Releases and Retrieval views) and one stylesheet, compiled into the binary and
//! served at `/` and `/console/*` with a strict Content-Security-Policy. The console is a client
//! of the public JSON APIs only; it holds no state and no privilege of its own.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const RELEASES: &str = include_str!("../console/releases.js");
const RETRIEVAL: &str = include_str!("../console/retrieval.js");
const STYLE: &str = include_str!("../console/app.css");

/// Scripts and styles from this origin only (no inline script or style, no eval), requests to
/// this origin only, no plugins, no framing, no form posts elsewhere, no base-URL tricks.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

/// `GET /`: the console's page.
pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /console/app.js`.
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /console/releases.js` (the Releases view, a module `app.js` imports).
pub(crate) async fn releases() -> Response {
    asset(RELEASES, "text/javascript; charset=utf-8")
}

/// `GET /console/retrieval.js` (the Retrieval view, a module `app.js` imports).
pub(crate) async fn retrieval() -> Response {
    asset(RETRIEVAL, "text/javascript; charset=utf-8")
}

/// `GET /console/app.css`.
pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
