//! Ops routes: service tokens, adjustments, credit conversions, prices, tenant pricing,
//! and the ledger check.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::credentials::{keyed, Admin};
use super::extract::{ApiJson, ApiPath, ApiQuery, JsonResponse};
use super::openapi::params::{IdempotencyKeyHeader, ModelPath, TenantPath, TokenPath};
use crate::auth::Principal;
use crate::error::AppResult;
use crate::frame;
use crate::ledger::check::{self, CheckReport};
use crate::pricing::{PriceRule, TenantPricing};
use crate::services::accounts::adjustments::{self, AdjustmentRequest, ConversionRequest};
use crate::services::accounts::api_keys::{self, CreateServiceToken, CreatedServiceToken, ServiceToken};
use crate::services::accounts::history::TransactionView;
use crate::services::accounts::prices::{self, PriceVersion, TenantPricingView};
use crate::services::{Page, PageParams};
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/admin/service-tokens", tag = "admin", security(("admin_token" = [])), request_body = CreateServiceToken,
    responses((status = 201, body = CreatedServiceToken)))]
pub async fn create_service_token(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(req): ApiJson<CreateServiceToken>,
) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::CREATED, api_keys::create_service_token(&s.pool, &req.name).await?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/service-tokens", tag = "admin", security(("admin_token" = [])), params(PageParams),
    responses((status = 200, body = Page<ServiceToken>)))]
pub async fn list_service_tokens(
    State(s): State<AppState>,
    _: Admin,
    ApiQuery(q): ApiQuery<PageParams>,
) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, api_keys::list_service_tokens(&s.pool, &q).await?).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/service-tokens/{token_id}", tag = "admin", security(("admin_token" = [])), params(TokenPath),
    responses((status = 204, description = "revoked"), (status = 404, description = "unknown or already revoked")))]
pub async fn revoke_service_token(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Response> {
    api_keys::revoke_service_token(&s.pool, &s.auth_cache, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/adjustments", tag = "admin", security(("admin_token" = [])), params(TenantPath, IdempotencyKeyHeader), request_body = AdjustmentRequest,
    responses((status = 201, body = TransactionView), (status = 422, description = "would take paid below zero")))]
pub async fn adjust(
    State(s): State<AppState>,
    Admin(p): Admin,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AdjustmentRequest>,
) -> AppResult<Response> {
    let key = keyed(&p, &headers)?;
    Ok(adjustments::adjust(&s.frame, id, key, req, p.actor()).await?.into_response())
}

#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/credit-conversions", tag = "admin", security(("admin_token" = [])), params(TenantPath, IdempotencyKeyHeader), request_body = ConversionRequest,
    responses((status = 201, body = TransactionView)))]
pub async fn convert(
    State(s): State<AppState>,
    Admin(p): Admin,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ConversionRequest>,
) -> AppResult<Response> {
    let key = keyed(&p, &headers)?;
    let rate = s.config.credits_per_usd;
    Ok(adjustments::convert(&s.frame, id, key, req, rate, p.actor()).await?.into_response())
}

#[utoipa::path(get, path = "/v1/admin/ledger/check", tag = "admin", security(("admin_token" = [])), responses((status = 200, body = CheckReport)))]
pub async fn ledger_check(State(s): State<AppState>, _: Admin) -> AppResult<Response> {
    let report = frame::transaction(&s.pool, |tx| Box::pin(async move { Ok(check::run(tx).await?) })).await?;
    Ok(JsonResponse(StatusCode::OK, report).into_response())
}

#[utoipa::path(put, path = "/v1/admin/prices/{model}", tag = "pricing", security(("admin_token" = [])), params(ModelPath), request_body = PriceRule,
    responses((status = 200, body = PriceVersion)))]
pub async fn put_price(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(model): ApiPath<String>,
    ApiJson(rule): ApiJson<PriceRule>,
) -> AppResult<Response> {
    let v = prices::put(s.pool.clone(), s.prices.clone(), model, rule).await?;
    Ok(JsonResponse(StatusCode::OK, v).into_response())
}

#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/pricing", tag = "pricing", security(("admin_token" = [])), params(TenantPath), responses((status = 200, body = TenantPricingView)))]
pub async fn get_tenant_pricing(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, prices::get_deal(&s.pool, id).await?).into_response())
}

#[utoipa::path(put, path = "/v1/admin/tenants/{tenant_id}/pricing", tag = "pricing", security(("admin_token" = [])), params(TenantPath),
    request_body = TenantPricing,
    responses((status = 200, body = TenantPricingView)))]
pub async fn put_tenant_pricing(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(deal): ApiJson<TenantPricing>,
) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, prices::put_deal(&s.pool, &s.prices, id, deal).await?).into_response())
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PriceBook {
    pub data: Vec<PriceVersion>,
}

#[utoipa::path(get, path = "/v1/prices", tag = "pricing", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), responses((status = 200, body = PriceBook)))]
pub async fn list_prices(State(s): State<AppState>, _p: Principal) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, PriceBook { data: prices::list_latest(&s.pool).await? }).into_response())
}

#[utoipa::path(get, path = "/v1/prices/{model}/versions", tag = "pricing", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), params(ModelPath), responses((status = 200, body = PriceBook)))]
pub async fn price_versions(
    State(s): State<AppState>,
    _p: Principal,
    ApiPath(model): ApiPath<String>,
) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, PriceBook { data: prices::versions(&s.pool, &model).await? }).into_response())
}
