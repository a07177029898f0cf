//! A tenant's own spend limits: `GET/PUT /v1/tenants/{tenant_id}/spend-limits` (admin, own
//! tenant). API keys' limits are set on the keys (`tenants.rs`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, JsonResponse};
use super::openapi::params::TenantPath;
use crate::auth::Principal;
use crate::error::AppResult;
use crate::services::limits::tenant::{self, TenantLimits, TenantLimitsRequest};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/spend-limits", tag = "spend-limits", security(("admin_token" = []), ("api_key" = [])), params(TenantPath),
    responses((status = 200, body = TenantLimits), (status = 400, description = "malformed tenant id"), (status = 401),
              (status = 403, description = "a service token"), (status = 404, description = "no such tenant (or another tenant's)")))]
pub async fn get_spend_limits(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, tenant::get(&s.pool, id, s.clock.now()).await?).into_response())
}

#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/spend-limits", tag = "spend-limits", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), request_body = TenantLimitsRequest,
    responses((status = 200, body = TenantLimits, description = "the limits with what their current windows have spent"),
              (status = 400, description = "an amount that is not a positive decimal string with at most 6 decimals, or an unknown field"),
              (status = 401), (status = 403, description = "a service token, or a suspended tenant's own key"),
              (status = 404, description = "no such tenant (or another tenant's)"), (status = 415)))]
pub async fn put_spend_limits(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<TenantLimitsRequest>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, tenant::put(&s.frame, id, req).await?).into_response())
}
