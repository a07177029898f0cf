//! A tenant's payment method: the provider token top-ups charge, checked with the provider
//! when it is set. Only the brand, the last four digits and a prefix of the token are shown.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::visible_prefix;
use crate::error::{AppError, AppResult};
use crate::payments::{MethodError, PaymentProvider};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethodRequest {
    /// The provider's token, e.g. `pm_mock_ok` with the mock provider.
    pub token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentMethodView {
    pub brand: String,
    pub last4: String,
    pub token_prefix: String,
}

/// The card a top-up charges, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Card {
    pub token: String,
    pub brand: String,
    pub last4: String,
}

pub async fn put(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    tenant: Uuid,
    req: PaymentMethodRequest,
) -> AppResult<PaymentMethodView> {
    let token = req.token.trim();
    if token.is_empty() || token.len() > 255 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::invalid("token must be 1-255 printable ASCII characters"));
    }
    let info = provider.describe(token).await.map_err(|e| match e {
        MethodError::Invalid(m) => AppError::invalid(format!("token: {m}")),
        MethodError::Unavailable(_) => AppError::PaymentProviderUnavailable,
    })?;
    let r = sqlx::query(
        "INSERT INTO payment_methods (tenant_id, token, brand, last4, updated_at) SELECT id, $2, $3, $4, $5 FROM tenants WHERE id = $1 \
         ON CONFLICT (tenant_id) DO UPDATE SET token = EXCLUDED.token, brand = EXCLUDED.brand, last4 = EXCLUDED.last4, \
           updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant)
    .bind(token)
    .bind(&info.brand)
    .bind(&info.last4)
    .bind(Utc::now())
    .execute(pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(PaymentMethodView { brand: info.brand, last4: info.last4, token_prefix: visible_prefix(token) })
}

pub async fn card(conn: &mut sqlx::PgConnection, tenant: Uuid) -> AppResult<Option<Card>> {
    Ok(sqlx::query_as("SELECT token, brand, last4 FROM payment_methods WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?)
}
