//! The web console: static files embedded in the binary (no CDN, nothing read from disk), served
//! at `/`. Plain JavaScript over the same `/api` a script would use. Also the live message-flow
//! page of `examples/live-flow/` at `/live-flow/` (a Web-STOMP client; see its README).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");
const LIVE_FLOW: &str = include_str!("../../../examples/live-flow/index.html");

pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/live-flow/",
            get(|| async { asset("text/html; charset=utf-8", LIVE_FLOW) }),
        )
        .route(
            "/live-flow",
            get(|| async { axum::response::Redirect::permanent("/live-flow/") }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
