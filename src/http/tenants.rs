//! Tenant-scoped routes: tenants, balances, history, usage and API keys.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::credentials::{Admin, Backend};
use super::extract::{ApiJson, ApiPath, ApiQuery, JsonResponse};
use super::openapi::params::{KeyPath, TenantPath};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::services::accounts::api_keys::{self, ApiKey, CreateKey, CreatedKey, UpdateKey, VerifiedKey};
use crate::services::accounts::balance::{self, Balance, Breakdown, Window};
use crate::services::accounts::history::{self, TransactionFilter, TransactionView, Usage, UsageQuery};
use crate::services::accounts::tenants::{self, CreateTenant, Tenant, UpdateTenant};
use crate::services::{Page, PageParams};
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", security(("admin_token" = [])), request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 409, description = "external_ref taken")))]
pub async fn create_tenant(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(req): ApiJson<CreateTenant>,
) -> AppResult<Response> {
    let t = tenants::create(&s.frame, &s.config, req).await?;
    Ok(JsonResponse(StatusCode::CREATED, t).into_response())
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("admin_token" = [])), params(PageParams), responses((status = 200, body = Page<Tenant>)))]
pub async fn list_tenants(
    State(s): State<AppState>,
    _: Admin,
    ApiQuery(q): ApiQuery<PageParams>,
) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, tenants::list(&s.pool, &q).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}", tag = "tenants", security(("admin_token" = [])), params(TenantPath), responses((status = 200, body = Tenant)))]
pub async fn get_tenant(State(s): State<AppState>, _: Admin, ApiPath(id): ApiPath<Uuid>) -> AppResult<Response> {
    Ok(JsonResponse(StatusCode::OK, tenants::get(&s.pool, id).await?).into_response())
}

#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}", tag = "tenants", security(("admin_token" = [])), params(TenantPath), request_body = UpdateTenant, responses((status = 200, body = Tenant)))]
pub async fn update_tenant(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateTenant>,
) -> AppResult<Response> {
    let status_changes = req.status.is_some();
    let tenant = tenants::update(&s.pool, id, req).await?;
    if status_changes {
        // A suspension (or reactivation) applies to the tenant's keys at once on this replica.
        s.auth_cache.forget_tenant(id);
    }
    Ok(JsonResponse(StatusCode::OK, tenant).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/balance", tag = "balances", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), params(TenantPath), responses((status = 200, body = Balance)))]
pub async fn get_balance(State(s): State<AppState>, p: Principal, ApiPath(id): ApiPath<Uuid>) -> AppResult<Response> {
    p.scope(id, true)?;
    Ok(JsonResponse(StatusCode::OK, balance::get(&s.pool, id, s.clock.now()).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/balance/breakdown", tag = "balances", security(("admin_token" = []), ("api_key" = []), ("service_token" = [])), params(TenantPath, Window),
    responses((status = 200, body = Breakdown)))]
pub async fn get_breakdown(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(w): ApiQuery<Window>,
) -> AppResult<Response> {
    p.scope(id, true)?;
    Ok(JsonResponse(StatusCode::OK, balance::breakdown(&s.pool, id, &w).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/transactions", tag = "history", security(("admin_token" = []), ("api_key" = [])), params(TenantPath, TransactionFilter),
    responses((status = 200, description = "A page of transactions, newest first: JSON, or CSV when `Accept` names `text/csv` (the next cursor then in `X-Next-Cursor`)",
        content((Page<TransactionView> = "application/json"), (String = "text/csv")))))]
pub async fn list_transactions(
    State(s): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(f): ApiQuery<TransactionFilter>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let page = history::transactions(&s.pool, id, &f).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|m| m.trim().starts_with("text/csv")));
    if wants_csv {
        let mut r = history::to_csv(&page.data).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/csv; charset=utf-8"));
        if let Some(c) = page.next_cursor.as_deref().and_then(|c| header::HeaderValue::from_str(c).ok()) {
            r.headers_mut().insert("x-next-cursor", c);
        }
        return Ok(r);
    }
    Ok(JsonResponse(StatusCode::OK, page).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/usage", tag = "history", security(("admin_token" = []), ("api_key" = [])), params(TenantPath, UsageQuery), responses((status = 200, body = Usage)))]
pub async fn get_usage(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, history::usage(&s.pool, id, &q).await?).into_response())
}

#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/api-keys", tag = "api-keys", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, description = "invalid name, spend_limit or allowed_models"),
              (status = 401), (status = 403, description = "a service token"), (status = 404, description = "no such tenant")))]
pub async fn create_key(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CreateKey>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::CREATED, api_keys::create(&s.pool, &s.prices, id, req).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/api-keys", tag = "api-keys", security(("admin_token" = []), ("api_key" = [])), params(TenantPath, PageParams),
    responses((status = 200, body = Page<ApiKey>)))]
pub async fn list_keys(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    tenants::get(&s.pool, id).await?;
    Ok(JsonResponse(StatusCode::OK, api_keys::list(&s.pool, id, &q, s.clock.now()).await?).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "api-keys", security(("admin_token" = []), ("api_key" = [])), params(KeyPath), responses((status = 200, body = ApiKey)))]
pub async fn get_key(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, key)): ApiPath<(Uuid, Uuid)>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    Ok(JsonResponse(StatusCode::OK, api_keys::get(&s.pool, id, key, s.clock.now()).await?).into_response())
}

#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "api-keys", security(("admin_token" = []), ("api_key" = [])), params(KeyPath), request_body = UpdateKey,
    responses((status = 200, body = ApiKey), (status = 400, description = "invalid name, status, spend_limit or allowed_models"),
              (status = 401), (status = 403, description = "a service token"), (status = 404, description = "no such key of this tenant")))]
pub async fn update_key(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, key)): ApiPath<(Uuid, Uuid)>,
    ApiJson(req): ApiJson<UpdateKey>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let view = api_keys::update(&s.frame, &s.auth_cache, &s.prices, id, key, req).await?;
    Ok(JsonResponse(StatusCode::OK, view).into_response())
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "api-keys", security(("admin_token" = []), ("api_key" = [])), params(KeyPath), responses((status = 204)))]
pub async fn delete_key(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, key)): ApiPath<(Uuid, Uuid)>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    api_keys::delete(&s.pool, &s.auth_cache, id, key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub key: String,
}

#[utoipa::path(post, path = "/v1/api-keys/verify", tag = "api-keys", security(("admin_token" = []), ("service_token" = [])), request_body = VerifyRequest,
    responses((status = 200, body = VerifiedKey, description = "the key's tenant, status, spend limit and allowed models"),
              (status = 400), (status = 401, description = "unknown or deleted key"), (status = 403, description = "a tenant key")))]
pub async fn verify_key(
    State(s): State<AppState>,
    _: Backend,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> AppResult<Response> {
    if req.key.is_empty() || req.key.len() > 256 {
        return Err(AppError::Unauthorized);
    }
    Ok(JsonResponse(StatusCode::OK, api_keys::verify(&s.pool, &req.key, s.clock.now()).await?).into_response())
}
