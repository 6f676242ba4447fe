//! The HTTP port: `/metrics` (OpenMetrics text), `/health` (the process is up) and
//! `/ready` (the node serves requests; 503 while starting or shutting down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use spool_broker::Broker;

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let body = state.metrics.render(&state.broker);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
