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
//! | `/v1/session`, `/v1/accounts`, `/v1/members…`, `/v1/invitations…` | sign-in, accounts and people (`accounts::http`) |
//! | `GET /`, `/claim`, `/invite`, `/people`, `/assets/…`, `/favicon.ico`, `/manifest.webmanifest` | the dashboard's pages and files (`dashboard`) |

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};

use crate::accounts::http as accounts;
use crate::http_util::error_response;
use crate::{AppState, dashboard, device_endpoint, http_api, readings_api, receiver_endpoint};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/assets/{*path}", get(dashboard::asset))
        .route("/claim", get(dashboard::claim_page))
        .route("/invite", get(dashboard::invite_page))
        .route("/people", get(dashboard::people_page))
        .route("/favicon.ico", get(dashboard::favicon))
        .route("/manifest.webmanifest", get(dashboard::manifest))
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
        .route(
            "/v1/session",
            get(accounts::current_session)
                .post(accounts::sign_in)
                .delete(accounts::sign_out),
        )
        .route("/v1/accounts", post(accounts::create_account))
        .route("/v1/members", get(accounts::list_members))
        .route(
            "/v1/members/{account}",
            patch(accounts::change_member).delete(accounts::remove_member),
        )
        .route("/v1/invitations", post(accounts::invite))
        .route(
            "/v1/invitations/inspect",
            post(accounts::inspect_invitation),
        )
        .route(
            "/v1/invitations/{invitation}",
            delete(accounts::withdraw_invitation),
        )
        .route("/v1/descriptions", get(readings_api::descriptions))
        .route("/v1/series", get(readings_api::series))
        .route("/v1/export", get(readings_api::export))
        .fallback(|| async {
            error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}
