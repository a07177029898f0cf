//! Routes generation backends call: estimates, charges, refunds, holds.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::credentials::{keyed, Backend};
use super::extract::{ApiJson, ApiPath, JsonResponse};
use super::openapi::params::{ChargePath, HoldPath, IdempotencyKeyHeader};
use crate::auth::Principal;
use crate::error::AppResult;
use crate::services::spend::charges::{self, ChargeRequest, HoldRequest};
use crate::services::spend::estimates::{self, Estimate, EstimateRequest};
use crate::services::spend::holds::{self, CaptureRequest};
use crate::services::spend::records::{ChargeView, HoldView};
use crate::services::spend::refunds::{self, RefundRequest, RefundView};
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/estimates", tag = "pricing", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), request_body = EstimateRequest,
    responses((status = 200, body = Estimate), (status = 400, description = "unknown model or usage field"),
              (status = 404, description = "`tenant_id` names no tenant (or another tenant's)")))]
pub async fn estimate(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<EstimateRequest>,
) -> AppResult<Response> {
    if let Some(t) = req.tenant_id {
        p.scope(t, true)?;
    }
    let e = estimates::estimate(&s.pool, &s.prices, s.config.credits_per_usd, req).await?;
    Ok(JsonResponse(StatusCode::OK, e).into_response())
}

#[utoipa::path(post, path = "/v1/charges", tag = "charges", security(("admin_token" = []), ("service_token" = [])), params(IdempotencyKeyHeader), request_body = ChargeRequest,
    responses((status = 201, body = ChargeView),
              (status = 402, description = "insufficient_funds (checked first), or spend_limit_exceeded: `scope`, `window`, `limit`, `spent`, `required`, `resets_at`, `currency`"),
              (status = 403, description = "forbidden (tenant suspended), or model_not_allowed (the api_key_id's allowed_models lack the model)"),
              (status = 404, description = "`tenant_id` names no tenant")))]
pub async fn create_charge(
    State(s): State<AppState>,
    Backend(p): Backend,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChargeRequest>,
) -> AppResult<Response> {
    let (side, key) = keyed(&p, &headers)?;
    Ok(charges::charge(&s.charger, &s.prices, side, key, req).await?.into_response())
}

#[utoipa::path(get, path = "/v1/charges/{charge_id}", tag = "charges", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), params(ChargePath), responses((status = 200, body = ChargeView)))]
pub async fn get_charge(State(s): State<AppState>, p: Principal, ApiPath(id): ApiPath<Uuid>) -> AppResult<Response> {
    let c = charges::get(&s.pool, s.config.credits_per_usd, id).await?;
    p.scope(c.tenant_id, true)?;
    Ok(JsonResponse(StatusCode::OK, c).into_response())
}

#[utoipa::path(post, path = "/v1/charges/{charge_id}/refunds", tag = "charges", security(("admin_token" = []), ("service_token" = [])), params(ChargePath, IdempotencyKeyHeader), request_body = RefundRequest,
    responses((status = 201, body = RefundView), (status = 422, description = "more than is left to refund")))]
pub async fn refund_charge(
    State(s): State<AppState>,
    Backend(p): Backend,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RefundRequest>,
) -> AppResult<Response> {
    let tenant = refunds::tenant_of_charge(&s.pool, id).await?;
    p.scope(tenant, true)?;
    let key = keyed(&p, &headers)?;
    Ok(refunds::refund(&s.frame, tenant, id, key, req, p.actor()).await?.into_response())
}

#[utoipa::path(post, path = "/v1/holds", tag = "holds", security(("admin_token" = []), ("service_token" = [])), params(IdempotencyKeyHeader), request_body = HoldRequest,
    responses((status = 201, body = HoldView),
              (status = 402, description = "insufficient_funds (checked first), or spend_limit_exceeded: `scope`, `window`, `limit`, `spent`, `required`, `resets_at`, `currency`"),
              (status = 403, description = "forbidden (tenant suspended), or model_not_allowed (the api_key_id's allowed_models lack the model)"),
              (status = 404, description = "`tenant_id` names no tenant")))]
pub async fn create_hold(
    State(s): State<AppState>,
    Backend(p): Backend,
    headers: HeaderMap,
    ApiJson(req): ApiJson<HoldRequest>,
) -> AppResult<Response> {
    let (side, key) = keyed(&p, &headers)?;
    Ok(charges::hold(&s.charger, &s.prices, side, key, req).await?.into_response())
}

#[utoipa::path(get, path = "/v1/holds/{hold_id}", tag = "holds", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), params(HoldPath), responses((status = 200, body = HoldView)))]
pub async fn get_hold(State(s): State<AppState>, p: Principal, ApiPath(id): ApiPath<Uuid>) -> AppResult<Response> {
    let tenant = holds::tenant_of(&s.pool, id).await?;
    p.scope(tenant, true)?;
    Ok(JsonResponse(StatusCode::OK, holds::get(&s.pool, tenant, id).await?).into_response())
}

#[utoipa::path(post, path = "/v1/holds/{hold_id}/capture", tag = "holds", security(("admin_token" = []), ("service_token" = [])), params(HoldPath, IdempotencyKeyHeader), request_body = CaptureRequest,
    responses((status = 201, body = ChargeView), (status = 409, description = "already resolved"),
              (status = 422, description = "more than the hold")))]
pub async fn capture_hold(
    State(s): State<AppState>,
    Backend(p): Backend,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CaptureRequest>,
) -> AppResult<Response> {
    let tenant = holds::tenant_of(&s.pool, id).await?;
    p.scope(tenant, true)?;
    let key = keyed(&p, &headers)?;
    Ok(holds::capture(&s.frame, s.config.credits_per_usd, tenant, id, key, req).await?.into_response())
}

#[utoipa::path(post, path = "/v1/holds/{hold_id}/release", tag = "holds", security(("admin_token" = []), ("service_token" = [])), params(HoldPath),
    responses((status = 200, body = HoldView), (status = 409, description = "already resolved")))]
pub async fn release_hold(
    State(s): State<AppState>,
    Backend(p): Backend,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Response> {
    let tenant = holds::tenant_of(&s.pool, id).await?;
    p.scope(tenant, true)?;
    let view = holds::release(&s.frame, tenant, id, false).await?;
    Ok(JsonResponse(StatusCode::OK, view).into_response())
}
