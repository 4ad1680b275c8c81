//! The routes: which handler answers which path. Above the endpoints (they
//! import nothing from here); below `serve`, which runs the router on each
//! connection.
//!
//! | method and path | handler |
//! | --- | --- |
//! | `GET /v1/device` | device WebSocket (`device_endpoint`) |
//! | `GET /v1/receiver` | receiver WebSocket (`receiver_endpoint`) |
//! | `GET /v1/…`, `POST /v1/…` | the JSON API (`http_api`; readings: `readings_api`) |
//! | `GET /healthz`, `GET /metrics`, `GET /status` | health, Prometheus, status page (`http_api`) |
//! | `GET /`, `GET /assets/…` | the dashboard (`dashboard`) |

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::http_util::error_response;
use crate::{AppState, dashboard, device_endpoint, http_api, readings_api, receiver_endpoint};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/assets/{*path}", get(dashboard::asset))
        .route("/status", get(http_api::status_page))
        .route("/healthz", get(http_api::healthz))
        .route("/metrics", get(http_api::metrics))
        .route("/v1/device", get(device_endpoint::upgrade))
        .route("/v1/receiver", get(receiver_endpoint::upgrade))
        .route("/v1/me", get(http_api::whoami))
        .route("/v1/devices", get(http_api::list_devices))
        .route("/v1/channels", get(http_api::list_channels))
        .route("/v1/messages", get(http_api::read_messages))
        .route(
            "/v1/devices/{device}/commands",
            post(http_api::post_command),
        )
        .route("/v1/claim", post(http_api::claim))
        .route("/v1/descriptions", get(readings_api::descriptions))
        .route("/v1/series", get(readings_api::series))
        .route("/v1/export", get(readings_api::export))
        .fallback(|| async {
            error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}
