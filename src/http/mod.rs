//! HTTP: parse, authenticate, call a service, map errors. No rules live here.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::AppError;
use crate::state::AppState;

pub mod admin;
pub mod credentials;
pub mod extract;
pub mod input;
pub mod limits;
pub mod money;
pub mod money_back;
pub mod money_in;
pub mod openapi;
pub mod ops;
pub mod providers;
pub mod receipts;
pub mod server;
pub mod tenants;
pub mod throttle;

pub fn router(state: AppState) -> Router {
    ops::prometheus();
    let timeout = state.config.request_timeout;
    let body_limit = state.config.body_limit_bytes;
    let portal = crate::portal::router(state.clone());
    let api = Router::new()
        .route("/v1/tenants", post(tenants::create_tenant).get(tenants::list_tenants))
        .route("/v1/tenants/{tenant_id}", get(tenants::get_tenant).patch(tenants::update_tenant))
        .route("/v1/tenants/{tenant_id}/balance", get(tenants::get_balance))
        .route("/v1/tenants/{tenant_id}/balance/breakdown", get(tenants::get_breakdown))
        .route("/v1/tenants/{tenant_id}/transactions", get(tenants::list_transactions))
        .route("/v1/tenants/{tenant_id}/usage", get(tenants::get_usage))
        .route("/v1/tenants/{tenant_id}/api-keys", post(tenants::create_key).get(tenants::list_keys))
        .route(
            "/v1/tenants/{tenant_id}/api-keys/{key_id}",
            get(tenants::get_key).patch(tenants::update_key).delete(tenants::delete_key),
        )
        .route("/v1/tenants/{tenant_id}/spend-limits", get(limits::get_spend_limits).put(limits::put_spend_limits))
        .route("/v1/tenants/{tenant_id}/payment-method", put(money_in::put_payment_method))
        .route("/v1/tenants/{tenant_id}/top-ups", post(money_in::create_top_up).get(money_in::list_top_ups))
        .route("/v1/tenants/{tenant_id}/top-ups/{top_up_id}", get(money_in::get_top_up))
        .route("/v1/tenants/{tenant_id}/top-ups/{top_up_id}/receipt", get(money_in::top_up_receipt))
        .route(
            "/v1/tenants/{tenant_id}/top-ups/{top_up_id}/refunds",
            post(money_back::refund_top_up).get(money_back::list_top_up_refunds),
        )
        .route("/v1/admin/mock-provider/reversals", post(money_back::mock_reversal))
        .route("/v1/providers/stripe/webhook", post(providers::stripe_webhook))
        .route(
            "/v1/tenants/{tenant_id}/auto-top-up",
            put(money_in::put_auto_top_up).get(money_in::get_auto_top_up).delete(money_in::delete_auto_top_up),
        )
        .route("/v1/tenants/{tenant_id}/webhook", put(money_in::put_webhook))
        .route("/v1/tenants/{tenant_id}/events", get(money_in::list_events))
        .route("/v1/api-keys/verify", post(tenants::verify_key))
        .route("/v1/prices", get(admin::list_prices))
        .route("/v1/prices/{model}/versions", get(admin::price_versions))
        .route("/v1/estimates", post(money::estimate))
        .route("/v1/charges", post(money::create_charge))
        .route("/v1/charges/{charge_id}", get(money::get_charge))
        .route("/v1/charges/{charge_id}/refunds", post(money::refund_charge))
        .route("/v1/holds", post(money::create_hold))
        .route("/v1/holds/{hold_id}", get(money::get_hold))
        .route("/v1/holds/{hold_id}/capture", post(money::capture_hold))
        .route("/v1/holds/{hold_id}/release", post(money::release_hold))
        .route("/v1/admin/service-tokens", post(admin::create_service_token).get(admin::list_service_tokens))
        .route("/v1/admin/service-tokens/{token_id}", delete(admin::revoke_service_token))
        .route("/v1/admin/tenants/{tenant_id}/adjustments", post(admin::adjust))
        .route("/v1/admin/tenants/{tenant_id}/credit-conversions", post(admin::convert))
        .route("/v1/admin/tenants/{tenant_id}/pricing", get(admin::get_tenant_pricing).put(admin::put_tenant_pricing))
        .route("/v1/admin/prices/{model}", put(admin::put_price))
        .route("/v1/admin/ledger/check", get(admin::ledger_check))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn(track))
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .with_state(state);

    api.merge(portal)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .layer(middleware::from_fn(throttle::headers))
        .layer(middleware::from_fn(input::refuse_bad_bytes))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| AppError::internal("handler panicked").into_response()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Request counts and latency by route and status.
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    crate::meters::http_request(method, route, resp.status().as_u16(), start.elapsed());
    resp
}

/// The request deadline. Database work runs on the posting frame's own tasks, so a
/// timed-out request never leaves a transaction half-done; the client gets a 503 and may
/// retry with its key.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            AppError::Unavailable("the request timed out; retry with the same Idempotency-Key".into()).into_response()
        }
    }
}
