//! Spend limits (issue 9): per API key and per tenant, in UTC calendar windows; enforced
//! in the charge batch under the tenant's lock; given back by captures, releases,
//! expiries and refunds; events once per limit and window; allowed models; the runway.
mod concurrency;
mod config;
mod holds;
mod runway;
mod windows;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A key of `t` with `spend_limit` (`null` for none) and `allowed_models`.
pub async fn key_with(app: &TestApp, t: Uuid, spend_limit: Value, allowed_models: Value) -> Uuid {
    let body = json!({ "name": "backend", "spend_limit": spend_limit, "allowed_models": allowed_models });
    let r = app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, body).await;
    r.assert(201);
    assert_eq!(r.body["spend_limit"], spend_limit);
    r.id()
}

/// A key of `t` limited to `amount` per `window`.
pub async fn limited_key(app: &TestApp, t: Uuid, amount: &str, window: &str) -> Uuid {
    key_with(app, t, json!({ "amount": amount, "window": window }), Value::Null).await
}

/// A charge of an explicit amount naming `key`.
pub async fn charge_key(app: &TestApp, t: Uuid, key: Option<Uuid>, amount: &str) -> Resp {
    let body = json!({ "tenant_id": t, "amount": amount, "api_key_id": key });
    app.post_idem("/v1/charges", ADMIN, &Uuid::now_v7().to_string(), body).await
}

/// A hold of an explicit amount naming `key`.
pub async fn hold_key(app: &TestApp, t: Uuid, key: Option<Uuid>, amount: &str, expires_in: i64) -> Resp {
    let body = json!({ "tenant_id": t, "amount": amount, "api_key_id": key, "expires_in_seconds": expires_in });
    app.post_idem("/v1/holds", ADMIN, &Uuid::now_v7().to_string(), body).await
}

/// The key's view.
pub async fn key_view(app: &TestApp, t: Uuid, key: Uuid) -> Value {
    let r = app.get(&format!("/v1/tenants/{t}/api-keys/{key}"), ADMIN).await;
    r.assert(200);
    r.body
}

/// What the key's limit has spent in its current window.
pub async fn key_spent(app: &TestApp, t: Uuid, key: Uuid) -> String {
    key_view(app, t, key).await["spent_in_window"].as_str().unwrap().to_string()
}

pub async fn tenant_limits(app: &TestApp, t: Uuid) -> Value {
    let r = app.get(&format!("/v1/tenants/{t}/spend-limits"), ADMIN).await;
    r.assert(200);
    r.body
}

/// The spend-limit events of `t`, oldest first.
pub async fn limit_events(app: &TestApp, t: Uuid) -> Vec<Value> {
    let r = app.get(&format!("/v1/tenants/{t}/events?limit=200"), ADMIN).await;
    r.assert(200);
    let mut events: Vec<Value> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("spend_limit."))
        .cloned()
        .collect();
    events.reverse();
    events
}

/// Checks the counters against history: each limited key's and the tenant's current
/// windows as the service counts them, recomputed here from the charges, refunds and
/// active holds (a capture counts when its hold was placed).
pub async fn assert_counters_match_history(app: &TestApp, t: Uuid) {
    let keys = app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await;
    let now = app.state.clock.now();
    for k in keys.body["data"].as_array().unwrap() {
        let Some(window) = k["spend_limit"]["window"].as_str() else { continue };
        let id: Uuid = k["id"].as_str().unwrap().parse().unwrap();
        let expected = history_spent(app, t, Some(id), window, now).await;
        assert_eq!(k["spent_in_window"].as_str().unwrap(), expected, "key {id} ({window})");
    }
    let limits = tenant_limits(app, t).await;
    for window in ["day", "month"] {
        if limits[window].is_null() {
            continue;
        }
        let expected = history_spent(app, t, None, window, now).await;
        assert_eq!(limits[window]["spent"].as_str().unwrap(), expected, "tenant {window}");
    }
}

async fn history_spent(app: &TestApp, t: Uuid, key: Option<Uuid>, window: &str, now: DateTime<Utc>) -> String {
    let start: DateTime<Utc> = sqlx::query_scalar(
        "SELECT CASE $1 WHEN 'day' THEN date_trunc('day', $2::timestamptz) \
                        WHEN 'week' THEN date_trunc('week', $2::timestamptz) \
                        WHEN 'month' THEN date_trunc('month', $2::timestamptz) \
                        ELSE 'epoch'::timestamptz END",
    )
    .bind(window)
    .bind(now)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let spent: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT COALESCE((SELECT sum(c.amount - COALESCE((SELECT sum(r.amount) FROM refunds r \
                            WHERE r.tenant_id = c.tenant_id AND r.charge_id = c.id), 0)) \
                          FROM charges c LEFT JOIN holds h ON h.tenant_id = c.tenant_id AND h.id = c.hold_id \
                          WHERE c.tenant_id = $1 AND ($2::uuid IS NULL OR c.api_key_id = $2) \
                            AND COALESCE(h.created_at, c.created_at) >= $3), 0) \
              + COALESCE((SELECT sum(amount) FROM holds WHERE tenant_id = $1 AND status = 'active' \
                          AND ($2::uuid IS NULL OR api_key_id = $2) AND created_at >= $3), 0)",
    )
    .bind(t)
    .bind(key)
    .bind(start)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut s = spent.normalize();
    if s.scale() < 2 {
        s.rescale(2);
    }
    s.to_string()
}
