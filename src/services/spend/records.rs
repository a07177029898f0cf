//! Charges and holds as recorded: the one place their rows are inserted and read, and the
//! one place their views are built (a new charge's response, a capture's, a read).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::Rows;
use crate::error::AppResult;
use crate::ledger::{BalanceSummary, Funding, LotPart};
use crate::money::Money;
use crate::vocab::HoldStatus;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cost {
    pub amount: Money,
    pub currency: String,
    /// The amount in legacy credits (`TALLY_CREDITS_PER_USD`), a decimal string.
    #[schema(value_type = String)]
    pub credits: String,
}

impl Cost {
    pub fn new(amount: Money, currency: &str, credits_per_usd: Decimal) -> Cost {
        let credits = (amount.as_decimal() * credits_per_usd).normalize().to_string();
        Cost { amount, currency: currency.to_string(), credits }
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, utoipa::ToSchema)]
pub struct FundedBy {
    pub bonus: Money,
    pub paid: Money,
}

impl From<&Funding> for FundedBy {
    fn from(f: &Funding) -> FundedBy {
        FundedBy { bonus: f.bonus(), paid: f.paid }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChargeView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Always `succeeded`: a refused charge records nothing.
    pub status: &'static str,
    pub cost: Cost,
    pub funded_by: FundedBy,
    /// The tenant's balance right after this charge.
    pub balance: BalanceSummary,
    pub refunded: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// A charge: what its row holds.
#[derive(Debug, Clone)]
pub struct Charge {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub transaction_id: Uuid,
    pub amount: Money,
    pub funding: Funding,
    pub model: Option<String>,
    pub price_version: Option<i32>,
    pub usage: Option<Value>,
    pub description: Option<String>,
    pub metadata: Option<Value>,
    pub api_key_id: Option<Uuid>,
    pub hold_id: Option<Uuid>,
    /// The tenant's balance right after the charge, as its response reported it.
    pub after: BalanceSummary,
    pub created_at: DateTime<Utc>,
}

impl Charge {
    /// The one builder of a charge's view.
    pub fn view(&self, currency: &str, credits_per_usd: Decimal, refunded: Money) -> ChargeView {
        ChargeView {
            id: self.id,
            tenant_id: self.tenant_id,
            status: "succeeded",
            cost: Cost::new(self.amount, currency, credits_per_usd),
            funded_by: FundedBy::from(&self.funding),
            balance: self.after,
            refunded,
            model: self.model.clone(),
            price_version: self.price_version,
            api_key_id: self.api_key_id,
            hold_id: self.hold_id,
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            created_at: self.created_at,
        }
    }
}

/// Inserts charges (of one tenant or several) in one statement.
pub async fn insert_charges(conn: &mut PgConnection, charges: &[Charge]) -> AppResult<()> {
    charge_rows(charges).insert(conn).await?;
    Ok(())
}

/// The rows of `charges`, for [`insert_charges`] or for a statement that carries them.
pub fn charge_rows(charges: &[Charge]) -> Rows<'_> {
    let col = |f: fn(&Charge) -> Decimal| charges.iter().map(f).collect::<Vec<Decimal>>();
    Rows::new(
        "INSERT INTO charges (tenant_id, id, transaction_id, amount, funded_bonus, funded_paid, lots, model, \
           price_version, usage, description, metadata, api_key_id, hold_id, total_after, available_after, created_at)",
        charges.len(),
    )
    .column("uuid", charges.iter().map(|c| c.tenant_id).collect())
    .column("uuid", charges.iter().map(|c| c.id).collect())
    .column("uuid", charges.iter().map(|c| c.transaction_id).collect())
    .column("numeric", col(|c| c.amount.as_decimal()))
    .column("numeric", col(|c| c.funding.bonus().as_decimal()))
    .column("numeric", col(|c| c.funding.paid.as_decimal()))
    .column("jsonb", charges.iter().map(|c| Json(&c.funding.lots)).collect())
    .column("text", charges.iter().map(|c| c.model.as_deref()).collect())
    .column("int4", charges.iter().map(|c| c.price_version).collect())
    .column("jsonb", charges.iter().map(|c| c.usage.as_ref()).collect())
    .column("text", charges.iter().map(|c| c.description.as_deref()).collect())
    .column("jsonb", charges.iter().map(|c| c.metadata.as_ref()).collect())
    .column("uuid", charges.iter().map(|c| c.api_key_id).collect())
    .column("uuid", charges.iter().map(|c| c.hold_id).collect())
    .column("numeric", col(|c| c.after.total.as_decimal()))
    .column("numeric", col(|c| c.after.available.as_decimal()))
    .column("timestamptz", charges.iter().map(|c| c.created_at).collect())
}

/// A charge row as selected by [`CHARGE_COLUMNS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChargeRow {
    tenant_id: Uuid,
    id: Uuid,
    transaction_id: Uuid,
    amount: Decimal,
    funded_paid: Decimal,
    lots: Json<Vec<LotPart>>,
    model: Option<String>,
    price_version: Option<i32>,
    usage: Option<Value>,
    description: Option<String>,
    metadata: Option<Value>,
    api_key_id: Option<Uuid>,
    hold_id: Option<Uuid>,
    total_after: Decimal,
    available_after: Decimal,
    created_at: DateTime<Utc>,
}

pub const CHARGE_COLUMNS: &str = "tenant_id, id, transaction_id, amount, funded_paid, lots, model, price_version, \
     usage, description, metadata, api_key_id, hold_id, total_after, available_after, created_at";

impl From<ChargeRow> for Charge {
    fn from(r: ChargeRow) -> Charge {
        Charge {
            tenant_id: r.tenant_id,
            id: r.id,
            transaction_id: r.transaction_id,
            amount: Money::from_db(r.amount),
            funding: Funding { lots: r.lots.0, paid: Money::from_db(r.funded_paid) },
            model: r.model,
            price_version: r.price_version,
            usage: r.usage,
            description: r.description,
            metadata: r.metadata,
            api_key_id: r.api_key_id,
            hold_id: r.hold_id,
            after: BalanceSummary {
                total: Money::from_db(r.total_after),
                available: Money::from_db(r.available_after),
            },
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub amount: Money,
    pub currency: String,
    pub status: HoldStatus,
    pub funded_by: FundedBy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A hold: what its row holds.
#[derive(Debug, Clone)]
pub struct Hold {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub amount: Money,
    pub funding: Funding,
    pub status: HoldStatus,
    pub model: Option<String>,
    pub price_version: Option<i32>,
    pub usage: Option<Value>,
    pub description: Option<String>,
    pub api_key_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub charge_id: Option<Uuid>,
}

impl Hold {
    /// The one builder of a hold's view.
    pub fn view(&self, currency: &str, captured: Option<Money>) -> HoldView {
        HoldView {
            id: self.id,
            tenant_id: self.tenant_id,
            amount: self.amount,
            currency: currency.into(),
            status: self.status,
            funded_by: FundedBy::from(&self.funding),
            captured,
            charge_id: self.charge_id,
            model: self.model.clone(),
            price_version: self.price_version,
            api_key_id: self.api_key_id,
            description: self.description.clone(),
            expires_at: self.expires_at,
            created_at: self.created_at,
            resolved_at: self.resolved_at,
        }
    }
}

/// Inserts new holds in one statement.
pub async fn insert_holds(conn: &mut PgConnection, holds: &[Hold]) -> AppResult<()> {
    hold_rows(holds).insert(conn).await?;
    Ok(())
}

/// The rows of new `holds`, for [`insert_holds`] or for a statement that carries them.
pub fn hold_rows(holds: &[Hold]) -> Rows<'_> {
    let col = |f: fn(&Hold) -> Decimal| holds.iter().map(f).collect::<Vec<Decimal>>();
    Rows::new(
        "INSERT INTO holds (tenant_id, id, amount, funded_bonus, funded_paid, lots, status, model, price_version, \
           usage, description, api_key_id, expires_at, created_at)",
        holds.len(),
    )
    .column("uuid", holds.iter().map(|h| h.tenant_id).collect())
    .column("uuid", holds.iter().map(|h| h.id).collect())
    .column("numeric", col(|h| h.amount.as_decimal()))
    .column("numeric", col(|h| h.funding.bonus().as_decimal()))
    .column("numeric", col(|h| h.funding.paid.as_decimal()))
    .column("jsonb", holds.iter().map(|h| Json(&h.funding.lots)).collect())
    .column("text", holds.iter().map(|h| h.status).collect())
    .column("text", holds.iter().map(|h| h.model.as_deref()).collect())
    .column("int4", holds.iter().map(|h| h.price_version).collect())
    .column("jsonb", holds.iter().map(|h| h.usage.as_ref()).collect())
    .column("text", holds.iter().map(|h| h.description.as_deref()).collect())
    .column("uuid", holds.iter().map(|h| h.api_key_id).collect())
    .column("timestamptz", holds.iter().map(|h| h.expires_at).collect())
    .column("timestamptz", holds.iter().map(|h| h.created_at).collect())
}

/// A hold row as selected by [`HOLD_COLUMNS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HoldRow {
    tenant_id: Uuid,
    id: Uuid,
    amount: Decimal,
    funded_paid: Decimal,
    lots: Json<Vec<LotPart>>,
    status: HoldStatus,
    model: Option<String>,
    price_version: Option<i32>,
    usage: Option<Value>,
    description: Option<String>,
    api_key_id: Option<Uuid>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    charge_id: Option<Uuid>,
}

pub const HOLD_COLUMNS: &str = "tenant_id, id, amount, funded_paid, lots, status, model, price_version, usage, \
     description, api_key_id, expires_at, created_at, resolved_at, charge_id";

impl From<HoldRow> for Hold {
    fn from(r: HoldRow) -> Hold {
        Hold {
            tenant_id: r.tenant_id,
            id: r.id,
            amount: Money::from_db(r.amount),
            funding: Funding { lots: r.lots.0, paid: Money::from_db(r.funded_paid) },
            status: r.status,
            model: r.model,
            price_version: r.price_version,
            usage: r.usage,
            description: r.description,
            api_key_id: r.api_key_id,
            expires_at: r.expires_at,
            created_at: r.created_at,
            resolved_at: r.resolved_at,
            charge_id: r.charge_id,
        }
    }
}
