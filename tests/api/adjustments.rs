//! Admin adjustments and credit conversions.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

async fn adjust(app: &TestApp, t: Uuid, body: serde_json::Value) -> Resp {
    app.post_idem(&format!("/v1/admin/tenants/{t}/adjustments"), ADMIN, &Uuid::now_v7().to_string(), body).await
}

#[tokio::test]
async fn bonus_kinds_are_lots_and_corrections_move_paid() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let expiry = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    for kind in ["gift", "referral", "compensation"] {
        let r =
            adjust(&app, t, json!({ "amount": "2", "kind": kind, "reason": "because", "expires_at": expiry })).await;
        r.assert(201);
        assert_eq!(r.body["kind"], kind);
        assert_eq!(r.body["direction"], "credit");
        assert_eq!(r.body["amount"], "2.00");
        assert_eq!(r.body["reference"]["actor"], "admin");
        assert_eq!(r.body["reference"]["reason"], "because");
    }
    let r = adjust(&app, t, json!({ "amount": "10", "kind": "adjustment", "reason": "wire received" })).await;
    r.assert(201);
    assert_eq!(r.body["balance_after"], "16.00");
    let r = adjust(&app, t, json!({ "amount": "-4.5", "kind": "adjustment", "reason": "double credit" })).await;
    r.assert(201);
    assert_eq!(r.body["direction"], "debit");

    let b = app.balance(t).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("5.50"), Some("6.00")));
    assert_eq!(b["expiring"].as_array().unwrap().len(), 3);

    // A correction never takes paid below zero, and records nothing when refused.
    adjust(&app, t, json!({ "amount": "-5.500001", "kind": "adjustment", "reason": "x" }))
        .await
        .assert_error(422, "unprocessable");
    assert_eq!(app.balance(t).await["paid"], "5.50");
    adjust(&app, t, json!({ "amount": "-1", "kind": "gift", "reason": "x" }))
        .await
        .assert_error(400, "invalid_request");
    adjust(&app, t, json!({ "amount": "0", "kind": "adjustment", "reason": "x" }))
        .await
        .assert_error(400, "invalid_request");
    adjust(&app, t, json!({ "amount": "1", "kind": "gift" })).await.assert_error(400, "invalid_request");
    adjust(&app, t, json!({ "amount": "1", "kind": "gift", "reason": " " })).await.assert_error(400, "invalid_request");
    adjust(&app, t, json!({ "amount": "1", "kind": "bribe", "reason": "x" }))
        .await
        .assert_error(400, "invalid_request");
    adjust(&app, t, json!({ "amount": "1", "kind": "adjustment", "reason": "x", "expires_at": expiry }))
        .await
        .assert_error(400, "invalid_request");
    adjust(&app, t, json!({ "amount": "1", "kind": "gift", "reason": "x", "expires_at": "2001-01-01T00:00:00Z" }))
        .await
        .assert_error(400, "invalid_request");
    adjust(&app, Uuid::now_v7(), json!({ "amount": "1", "kind": "gift", "reason": "x" }))
        .await
        .assert_error(404, "not_found");
    app.post(
        &format!("/v1/admin/tenants/{t}/adjustments"),
        ADMIN,
        json!({ "amount": "1", "kind": "gift", "reason": "x" }),
    )
    .await
    .assert_error(400, "invalid_request");

    let actor: String =
        sqlx::query_scalar("SELECT actor FROM ledger_transactions WHERE tenant_id = $1 AND kind = 'gift'")
            .bind(t)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(actor, "admin");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn credit_conversions_use_the_configured_rate() {
    let app = TestApp::spawn_with(|c| c.credits_per_usd = "250".parse().unwrap()).await;
    let t = app.create_tenant("a").await;
    let path = format!("/v1/admin/tenants/{t}/credit-conversions");
    let r = app.post_idem(&path, ADMIN, "c1", json!({ "credits": "1000" })).await;
    r.assert(201);
    assert_eq!(r.body["kind"], "conversion");
    assert_eq!(r.body["amount"], "4.00");
    assert_eq!(app.balance(t).await["paid"], "4.00");
    // 1 credit = 0.004 USD exactly; 0.0000001 credits is not a whole micro-dollar.
    app.post_idem(&path, ADMIN, "c2", json!({ "credits": "0.0000001" })).await.assert_error(400, "invalid_request");
    app.post_idem(&path, ADMIN, "c3", json!({ "credits": "-5" })).await.assert_error(400, "invalid_request");
    app.post_idem(&path, ADMIN, "c4", json!({ "credits": 5 })).await.assert_error(400, "invalid_request");
    let bd = app.get(&format!("/v1/tenants/{t}/balance/breakdown"), ADMIN).await;
    assert_eq!(bd.body["credited"]["conversion"], "4.00");
    app.assert_ledger_ok().await;
}
