//! Money back routes: top-up refunds (admin), a top-up's refunds and reversals (admin, own
//! tenant), and the mock provider's simulated dispute (admin; only when the mock is the
//! provider).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::credentials::{keyed, Admin};
use super::extract::{ApiJson, ApiPath, JsonResponse};
use super::openapi::params::{IdempotencyKeyHeader, TopUpPath};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::services::money_in::clawback::RefundView;
use crate::services::money_in::refunds::{self, TopUpRefundRequest};
use crate::services::money_in::reversals;
use crate::services::Page;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/top-ups/{top_up_id}/refunds", tag = "top-ups", security(("admin_token" = [])), params(TopUpPath, IdempotencyKeyHeader),
    request_body = TopUpRefundRequest,
    responses((status = 201, body = RefundView, description = "refunded; credit taken back (`clawed_back`), what was already spent in `shortfall`"),
              (status = 402, description = "payment_declined: the provider refused the refund, nothing taken back"),
              (status = 404, description = "no such top-up for this tenant"),
              (status = 409, description = "the top-up did not succeed, is already fully refunded, or a refund with this key is running"),
              (status = 422, description = "more than is left of the top-up to refund"),
              (status = 503, description = "payment_provider_unavailable: retry with the same key")))]
pub async fn refund_top_up(
    State(s): State<AppState>,
    Admin(p): Admin,
    headers: HeaderMap,
    ApiPath((id, top_up)): ApiPath<(Uuid, Uuid)>,
    ApiJson(req): ApiJson<TopUpRefundRequest>,
) -> AppResult<Response> {
    let key = keyed(&p, &headers)?;
    Ok(refunds::create(&s.money_in, id, top_up, key, req, p.actor()).await?.into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/top-ups/{top_up_id}/refunds", tag = "top-ups", security(("admin_token" = []), ("api_key" = [])), params(TopUpPath),
    responses((status = 200, body = Page<RefundView>, description = "every refund and reversal of the top-up, oldest first")))]
pub async fn list_top_up_refunds(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, top_up)): ApiPath<(Uuid, Uuid)>,
) -> AppResult<Response> {
    p.scope(id, false)?;
    let data = refunds::list(&s.pool, id, top_up).await?;
    Ok(JsonResponse(StatusCode::OK, Page { data, next_cursor: None }).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockReversalRequest {
    pub top_up_id: Uuid,
}

#[utoipa::path(post, path = "/v1/admin/mock-provider/reversals", tag = "admin", security(("admin_token" = [])), request_body = MockReversalRequest,
    responses((status = 201, body = RefundView, description = "a simulated dispute: what is left of the top-up is reversed"),
              (status = 404, description = "no such top-up, or the mock is not the payment provider"),
              (status = 409, description = "nothing left to reverse")))]
pub async fn mock_reversal(
    State(s): State<AppState>,
    Admin(p): Admin,
    ApiJson(req): ApiJson<MockReversalRequest>,
) -> AppResult<Response> {
    if s.mock.is_none() {
        return Err(AppError::NotFound);
    }
    let view = reversals::simulate_dispute(&s.frame, req.top_up_id, p.actor()).await?;
    Ok(JsonResponse(StatusCode::CREATED, view).into_response())
}
