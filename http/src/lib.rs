//! codejail-http: openedx/codejail-service's HTTP API in front of the codejail broker,
//! so that edx-platform's `ENABLE_CODEJAIL_REST_SERVICE` path can point at it by
//! changing one URL. It calls the broker through `codejail-client` (`safe_exec`) over
//! its Unix socket and never runs code itself.
//!
//! - [`routes`] — every route and layer, in one function;
//! - [`exec`] — `POST /api/v0/code-exec`;
//! - [`checks`] — the start-up safety checks and the broker monitor behind `/health/`;
//! - [`payload`] — the `payload` field's JSON and schema;
//! - [`error`] — the one error type ([`ApiError`]) with upstream's codes and messages;
//! - [`metrics`] — `/metrics`;
//! - [`config`] — the TOML configuration;
//! - [`server`] — accept connections (header-read timeout, connection cap, open
//!   files) and [`serve`] them until a shutdown future resolves, then finish what runs.

pub mod checks;
pub mod config;
pub mod error;
pub mod exec;
pub mod metrics;
pub mod payload;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use codejail_client::pyjson::{Dict, Value};
use codejail_client::ClientConfig;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use checks::Readiness;
pub use config::Config;
pub use error::ApiError;
pub use metrics::Metrics;
pub use server::serve;

use error::json_response;
use metrics::BusySource;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// How to reach the broker (each request sets its own deadline on a copy).
    pub client: ClientConfig,
    /// Whether code-exec is served.
    pub readiness: Arc<Readiness>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State for this configuration (checked with [`Config::validate`] first: its
    /// durations must be in range), not ready until [`checks::monitor`] says so.
    pub fn new(config: Config) -> AppState {
        let socket = config
            .broker_socket
            .clone()
            .unwrap_or_else(codejail_client::socket_from_env);
        let mut client = ClientConfig::new(socket);
        client.connect_timeout = Duration::from_secs(1);
        AppState {
            config: Arc::new(config),
            client,
            readiness: Arc::new(Readiness::default()),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// Every route and layer of the front.
///
/// - `POST /api/v0/code-exec`: behind the in-flight cap (over it: 503 busy at once,
///   never an unbounded queue);
/// - `GET /health/`: readiness (200 only while the broker answers, its required layers
///   hold and the safety checks passed);
/// - `GET /live`: liveness of the front alone (200 while it serves HTTP, whatever the
///   broker does), so that an orchestrator does not restart the front for a broker
///   outage;
/// - `GET /metrics`: Prometheus text.
///
/// Bodies are capped (`max_body_bytes`, 413) and must arrive within
/// `body_timeout_secs`; each run's deadline is set on its broker call (see [`exec`]).
pub fn routes(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let retry_after = state.config.retry_after();
    let in_flight_cap = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
            let metrics = metrics.clone();
            async move {
                metrics.count_busy(BusySource::Front);
                ApiError::Busy { retry_after }
            }
        }))
        .load_shed()
        .concurrency_limit(state.config.max_in_flight);
    let code_exec = post(exec::code_exec)
        .fallback(method_not_allowed)
        .layer(in_flight_cap);
    Router::new()
        .route("/api/v0/code-exec", code_exec)
        .route("/health/", get(health))
        .route("/live", get(live))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs_f64(
            state.config.body_timeout_secs,
        )))
        // 5xx answers (not ready, busy) are expected states, logged as warnings.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}

fn status_body(status: &str) -> Value {
    let mut d = Dict::new();
    d.insert("status", status);
    Value::Dict(d)
}

async fn health(State(state): State<AppState>) -> Response {
    // The monitor's verdict, confirmed by a live status call: a broker that stopped
    // a moment ago turns the answer to 503 now, not at the next poll.
    let mut cfg = state.client.clone();
    cfg.total_timeout = Duration::from_secs(2);
    let answers = codejail_client::status(&cfg).await;
    match answers {
        Ok(report) if state.readiness.is_ready() && report.required_layers_hold() => {
            json_response(StatusCode::OK, &status_body("OK"))
        }
        Ok(_) => json_response(StatusCode::SERVICE_UNAVAILABLE, &status_body("UNAVAILABLE")),
        Err(e) => {
            tracing::warn!(error = %e, "health: the broker does not answer");
            state.readiness.broker_lost(&state.metrics);
            json_response(StatusCode::SERVICE_UNAVAILABLE, &status_body("UNAVAILABLE"))
        }
    }
}

async fn live() -> Response {
    json_response(StatusCode::OK, &status_body("OK"))
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
