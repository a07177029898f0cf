//! A tenant's payment method: the provider token top-ups charge, bound to the tenant's own
//! customer at the provider when it is set. Only the brand, the last four digits and a
//! prefix of the token are shown.
//!
//! Customer binding (Stripe): each tenant gets one customer at the provider, created on
//! its first `PUT …/payment-method` and stored (`payment_customers`); the card is attached
//! to it, and a card that belongs to another customer is refused (422), so a tenant that
//! learns another tenant's `pm_…` id cannot top up from that card. Concurrent first calls
//! may each create a customer; the first stored wins and the other stays empty, unused.

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
    /// The provider's token: `pm_mock_ok` with the mock provider, a Stripe PaymentMethod
    /// id (`pm_…`) with Stripe.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
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
    /// The tenant's customer the card is attached to (none with the mock).
    pub customer: Option<String>,
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
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant).fetch_one(pool).await?;
    if !exists {
        return Err(AppError::NotFound);
    }
    let customer = customer(pool, provider, tenant).await?;
    let info = provider.attach(tenant, customer.as_deref(), token).await.map_err(|e| match e {
        MethodError::Invalid(m) => AppError::invalid(format!("token: {m}")),
        MethodError::OtherCustomer(m) => AppError::unprocessable(format!("token: {m}")),
        MethodError::Unavailable(m) => {
            tracing::warn!(%tenant, reason = m, "the payment provider could not check a payment method");
            AppError::PaymentProviderUnavailable
        }
    })?;
    sqlx::query(
        "INSERT INTO payment_methods (tenant_id, token, brand, last4, customer_id, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id) DO UPDATE SET token = EXCLUDED.token, brand = EXCLUDED.brand, last4 = EXCLUDED.last4, \
           customer_id = EXCLUDED.customer_id, updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant)
    .bind(&info.token)
    .bind(&info.brand)
    .bind(&info.last4)
    .bind(&customer)
    .bind(Utc::now())
    .execute(pool)
    .await?;
    Ok(PaymentMethodView { brand: info.brand, last4: info.last4, token_prefix: visible_prefix(&info.token) })
}

/// The tenant's customer at the provider: the stored one, or a new one stored now (the
/// first stored wins a race). `None`: the provider has no customers (the mock).
async fn customer(pool: &PgPool, provider: &dyn PaymentProvider, tenant: Uuid) -> AppResult<Option<String>> {
    let read = || {
        sqlx::query_scalar::<_, String>(
            "SELECT customer_id FROM payment_customers WHERE tenant_id = $1 AND provider = $2",
        )
        .bind(tenant)
        .bind(provider.name())
        .fetch_optional(pool)
    };
    if let Some(id) = read().await? {
        return Ok(Some(id));
    }
    let created = provider.create_customer(tenant).await.map_err(|e| {
        tracing::warn!(%tenant, error = %e, "the payment provider could not create the tenant's customer");
        AppError::PaymentProviderUnavailable
    })?;
    let Some(id) = created else { return Ok(None) };
    sqlx::query(
        "INSERT INTO payment_customers (tenant_id, provider, customer_id, created_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(provider.name())
    .bind(&id)
    .execute(pool)
    .await?;
    Ok(read().await?.or(Some(id)))
}

pub async fn card(conn: &mut sqlx::PgConnection, tenant: Uuid) -> AppResult<Option<Card>> {
    Ok(sqlx::query_as("SELECT token, brand, last4, customer_id AS customer FROM payment_methods WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?)
}
