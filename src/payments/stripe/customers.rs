//! Customer binding: each tenant has its own Stripe Customer, and a card is charged only
//! once it is attached to that customer. A PaymentMethod attached to another customer is
//! refused, so a tenant that learns another's `pm_…` id cannot top up from that card.
//!
//! Creating a customer moves no money: when its answer is lost, the next key of the chain
//! simply creates another, and the service keeps the first id it stores. An orphan
//! customer holds no card and is harmless.

use serde_json::Value;
use uuid::Uuid;

use super::api::{Api, Reply};
use super::{chain_key, CHAIN};
use crate::payments::{MethodError, MethodInfo};

pub async fn create(api: &Api, tenant: Uuid) -> Result<String, MethodError> {
    let params = [("description", format!("Tally tenant {tenant}")), ("metadata[tally_tenant_id]", tenant.to_string())];
    let base = format!("tally_customer_{tenant}");
    for n in 0..CHAIN {
        match api.post("/v1/customers", &params, &chain_key(&base, n)).await {
            Reply::Ok(c) => {
                return c["id"].as_str().map(str::to_string).ok_or_else(|| unavailable("a customer without an id"))
            }
            Reply::ServerError { .. } => continue,
            other => return Err(unavailable(&format!("creating the tenant's customer: {other:?}"))),
        }
    }
    Err(unavailable("Stripe kept failing to create the tenant's customer"))
}

fn unavailable(why: &str) -> MethodError {
    MethodError::Unavailable(why.to_string())
}

/// Stripe ids are letters, digits and underscores; anything else never reaches a URL path.
/// At most 100 characters (Stripe's are about 30), so the keys made from one stay within
/// Stripe's 255-character limit.
fn check_id(token: &str) -> Result<(), MethodError> {
    let ok =
        token.starts_with("pm_") && token.len() <= 100 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(MethodError::Invalid("a Stripe PaymentMethod id (pm_…) is expected".into()))
    }
}

fn info(pm: &Value) -> Result<MethodInfo, MethodError> {
    let card = &pm["card"];
    let (Some(id), Some(brand), Some(last4)) = (pm["id"].as_str(), card["brand"].as_str(), card["last4"].as_str())
    else {
        return Err(MethodError::Invalid("only card payment methods can top up".into()));
    };
    Ok(MethodInfo { token: id.into(), brand: brand.into(), last4: last4.into() })
}

/// Binds `token` to the tenant's customer and says what to show of it. The token charged
/// from then on is the attached PaymentMethod's id (a test token such as `pm_card_visa`
/// makes a new PaymentMethod when attached).
pub async fn attach(api: &Api, tenant: Uuid, customer: &str, token: &str) -> Result<MethodInfo, MethodError> {
    check_id(token)?;
    // Stripe's test shortcuts (`pm_card_visa`, …) belong to nobody: each attach makes a new
    // PaymentMethod. Any other id is looked at first: whose is it?
    if !token.starts_with("pm_card_") {
        owned_by(api, customer, token).await?;
    }
    let (base, path, params) = (
        format!("tally_attach_{tenant}_{token}"),
        format!("/v1/payment_methods/{token}/attach"),
        [("customer", customer.to_string())],
    );
    for n in 0..CHAIN {
        match api.post(&path, &params, &chain_key(&base, n)).await {
            Reply::Ok(pm) if pm["customer"].as_str() == Some(customer) => return info(&pm),
            Reply::Ok(_) => return Err(MethodError::OtherCustomer("Stripe attached it to another customer".into())),
            // Attaching one PaymentMethod to one customer again changes nothing.
            Reply::ServerError { .. } => continue,
            Reply::Refused { status: 400 | 402 | 404, error } => return Err(MethodError::Invalid(error.describe())),
            other => return Err(unavailable(&format!("attaching the PaymentMethod: {other:?}"))),
        }
    }
    Err(unavailable("Stripe kept failing to attach the PaymentMethod"))
}

/// Refuses a PaymentMethod attached to another customer, or one that is not a card.
async fn owned_by(api: &Api, customer: &str, token: &str) -> Result<(), MethodError> {
    let pm = match api.get(&format!("/v1/payment_methods/{token}"), &[]).await {
        Reply::Ok(pm) => pm,
        Reply::Refused { status: 404, .. } => {
            return Err(MethodError::Invalid(format!("no such PaymentMethod {token}")))
        }
        Reply::Refused { status: 400, error } => return Err(MethodError::Invalid(error.describe())),
        other => return Err(unavailable(&format!("retrieving the PaymentMethod: {other:?}"))),
    };
    match pm["customer"].as_str() {
        Some(c) if c != customer => Err(MethodError::OtherCustomer(
            "this payment method belongs to another customer and cannot be used by this tenant".into(),
        )),
        _ => info(&pm).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_payment_method_ids_reach_a_path() {
        assert!(check_id("pm_card_visa").is_ok());
        assert!(check_id("pm_1PqRsT").is_ok());
        for bad in ["card_123", "pm_../../v1/charges", "pm_a?b=c", "pm_a/attach", ""] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
