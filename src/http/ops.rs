//! Unauthenticated operations routes: liveness, readiness, metrics (named in `crate::meters`).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::extract::JsonResponse;
use crate::db;
use crate::error::AppError;
use crate::meters;
use crate::services::notify::webhooks;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "process up")))]
pub async fn healthz() -> Response {
    JsonResponse(StatusCode::OK, json!({ "status": "ok" })).into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "database reachable, migrations current"), (status = 503, description = "not ready")))]
pub async fn readyz(State(s): State<AppState>) -> Response {
    match db::migrations_current(&s.pool).await {
        Ok(true) => JsonResponse(StatusCode::OK, json!({ "status": "ready" })).into_response(),
        Ok(false) => AppError::Unavailable("database migrations are not current".into()).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            AppError::Unavailable("the database is unreachable".into()).into_response()
        }
    }
}

/// The longest a scrape waits for the outbox figures.
const OUTBOX_READ_LIMIT: Duration = Duration::from_secs(2);

/// How often recorded histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed once, whatever the number of apps).
///
/// The recorder keeps each histogram sample until it is folded into its buckets, which a
/// scrape or an upkeep pass does: without upkeep, a service nobody scrapes grows by every
/// request's latency sample, forever. So a thread (independent of any async runtime, as the
/// recorder is of any one app) runs the upkeep every few seconds for the life of the process.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = meters::buckets(PrometheusBuilder::new())
            .expect("static buckets")
            .install_recorder()
            .expect("one Prometheus recorder per process");
        meters::describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", description = "Prometheus metrics")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    meters::pool(s.pool.size(), s.pool.num_idle(), s.config.db_pool_size);
    meters::rate_limit_buckets(s.rate_limits.buckets());
    // The outbox figures are the database's (all replicas): a scrape that cannot read them
    // in time keeps the last ones rather than fail or hang.
    match tokio::time::timeout(OUTBOX_READ_LIMIT, webhooks::backlog(&s.pool)).await {
        Ok(Ok((pending, oldest))) => meters::outbox(pending, oldest),
        Ok(Err(e)) => tracing::warn!(error = %e, "reading the outbox backlog for /metrics failed"),
        Err(_) => tracing::warn!("reading the outbox backlog for /metrics timed out"),
    }
    let mut r = prometheus().render().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}
