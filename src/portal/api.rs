//! `POST /v1/tenants/{tenant_id}/portal-sessions`: a one-use link into the portal.
//!
//! Admin, or the tenant's own API key (a service token gets 403, another tenant 404, as
//! everywhere). The link's token is returned once and stored only as a hash. A suspended
//! tenant's own key may not make links (its keys change nothing); the admin may, and the
//! portal then opens read-only.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store;
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::http::extract::{parse_json, ApiPath, JsonResponse};
use crate::http::openapi::params::TenantPath;
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortalLink {
    /// `<TALLY_PUBLIC_URL>/portal/enter?token=…`: works once, until `expires_at`.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The request takes no fields: an empty body, or `{}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionRequest {}

#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/portal-sessions", tag = "portal", security(("admin_token" = []), ("api_key" = [])), params(TenantPath), request_body(content = Option<PortalSessionRequest>, description = "none, `{}` or `null`"),
    responses((status = 201, body = PortalLink), (status = 403, description = "a service token, or a suspended tenant's own key"),
              (status = 404, description = "no such tenant (or another tenant's)")))]
pub async fn create_session(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    body: Bytes,
) -> AppResult<Response> {
    p.scope(id, false)?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        parse_json::<Option<PortalSessionRequest>>(&body)?;
    }
    if let Principal::Tenant { .. } = p {
        if super::backend::tenant_suspended(&s.pool, id).await? {
            return Err(AppError::Forbidden("the tenant is suspended: its own keys change nothing".into()));
        }
    }
    let (pool, actor, ttl) = (s.pool.clone(), p.actor(), s.config.portal.link_ttl);
    let link = store::create_link(&pool, id, &actor, ttl).await?;
    let url = format!("{}/portal/enter?token={}", s.config.portal.base_url(s.config.addr), link.token);
    Ok(JsonResponse(StatusCode::CREATED, PortalLink { url, expires_at: link.expires_at }).into_response())
}
