//! Money-in routes (admin, or the tenant's own key): payment method, top-ups and their
//! receipts, auto top-up, webhook endpoint and the event feed.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::credentials::keyed;
use super::extract::{ApiJson, ApiPath, ApiQuery, JsonResponse};
use super::openapi::params::{IdempotencyKeyHeader, TenantPath, TopUpPath};
use super::receipts;
use crate::auth::Principal;
use crate::error::AppResult;
use crate::services::money_in::auto_top_up::{self, AutoTopUpRequest, AutoTopUpView};
use crate::services::money_in::payment_methods::{self, PaymentMethodRequest, PaymentMethodView};
use crate::services::money_in::records::{self, TopUpView};
use crate::services::money_in::top_ups::{self, TopUpRequest};
use crate::services::notify::events::{self, EventView};
use crate::services::notify::webhooks::{self, WebhookRequest, WebhookView};
use crate::services::{Page, PageParams};
use crate::state::AppState;

#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/payment-method", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), request_body = PaymentMethodRequest,
    responses((status = 200, body = PaymentMethodView), (status = 400, description = "unknown token")))]
pub async fn put_payment_method(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PaymentMethodRequest>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let v = payment_methods::put(&s.pool, &*s.provider, id, req).await?;
    Ok(JsonResponse(StatusCode::OK, v).into_response())
}

#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/top-ups", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TenantPath, IdempotencyKeyHeader), request_body = TopUpRequest,
    responses((status = 201, body = TopUpView), (status = 400, description = "outside the top-up limits"),
              (status = 402, description = "payment_declined: recorded as a failed top-up"),
              (status = 409, description = "request_in_progress: a provider call for this key is running"),
              (status = 422, description = "no payment method on file"),
              (status = 503, description = "payment_provider_unavailable: retry with the same key")))]
pub async fn create_top_up(
    State(s): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<TopUpRequest>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let key = keyed(&p, &headers)?;
    Ok(top_ups::create(&s.money_in, id, key, req, p.actor()).await?.into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/top-ups", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TenantPath, PageParams),
    responses((status = 200, body = Page<TopUpView>)))]
pub async fn list_top_ups(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, records::list(&s.pool, id, &q).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/top-ups/{top_up_id}", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TopUpPath), responses((status = 200, body = TopUpView)))]
pub async fn get_top_up(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, top_up)): ApiPath<(Uuid, Uuid)>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, records::get(&s.pool, id, top_up).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/top-ups/{top_up_id}/receipt", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TopUpPath),
    responses((status = 200, content_type = "text/html", description = "A printable receipt"),
              (status = 409, description = "the top-up did not succeed")))]
pub async fn top_up_receipt(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, top_up)): ApiPath<(Uuid, Uuid)>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let html = receipts::receipt(&s.pool, id, top_up).await?;
    let mut r = html.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(r)
}

#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/auto-top-up", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), request_body = AutoTopUpRequest,
    responses((status = 200, body = AutoTopUpView), (status = 400, description = "amount outside the top-up limits"),
              (status = 422, description = "no payment method on file")))]
pub async fn put_auto_top_up(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AutoTopUpRequest>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let v = auto_top_up::put(&s.money_in, id, req).await?;
    Ok(JsonResponse(StatusCode::OK, v).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/auto-top-up", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), responses((status = 200, body = AutoTopUpView)))]
pub async fn get_auto_top_up(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, auto_top_up::get(&s.pool, id).await?).into_response())
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/auto-top-up", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TenantPath),
    responses((status = 204, description = "auto top-up switched off; GET still shows the settings (`enabled: false`) with their history")))]
pub async fn delete_auto_top_up(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    auto_top_up::delete(&s.money_in, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/webhook", tag = "events", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), request_body = WebhookRequest,
    responses((status = 200, body = WebhookView), (status = 400, description = "bad URL, private address or unknown event type")))]
pub async fn put_webhook(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let allow_private = s.config.allow_private_webhooks;
    let v = webhooks::put(&s.pool, id, req, allow_private).await?;
    Ok(JsonResponse(StatusCode::OK, v).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/events", tag = "events", security(("admin_token" = []), ("api_key" = [])), params(TenantPath, PageParams),
    responses((status = 200, body = Page<EventView>)))]
pub async fn list_events(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, events::list(&s.pool, id, &q).await?).into_response())
}
