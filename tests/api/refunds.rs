//! Refunds: partial and whole, never more than the charge, back to the right lots.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn refunds_return_money_where_it_came_from() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let later = (chrono::Utc::now() + chrono::Duration::days(9)).to_rfc3339();
    app.gift(t, "2", Some(later.clone())).await;
    let c = app.charge(t, "5").await;
    c.assert(201);
    assert_eq!(c.body["funded_by"]["bonus"], "2.00");
    let path = format!("/v1/charges/{}/refunds", c.id());

    let r1 = app.post_idem(&path, ADMIN, "r1", json!({ "amount": "3.5", "reason": "bad output" })).await;
    r1.assert(201);
    assert_eq!(r1.body["to_paid"], "3.00", "paid comes back first");
    assert_eq!(r1.body["to_bonus"], "0.50");
    app.post_idem(&path, ADMIN, "r2", json!({ "amount": "1.51", "reason": "x" }))
        .await
        .assert_error(422, "unprocessable");
    app.post_idem(&path, ADMIN, "r3", json!({ "amount": "1", "reason": "" }))
        .await
        .assert_error(400, "invalid_request");
    let r4 = app.post_idem(&path, ADMIN, "r4", json!({ "reason": "the rest" })).await;
    r4.assert(201);
    assert_eq!(r4.body["amount"], "1.50");
    app.post_idem(&path, ADMIN, "r5", json!({ "reason": "again" })).await.assert_error(409, "conflict");

    let b = app.balance(t).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("10.00"), Some("2.00")));
    assert_eq!(
        b["expiring"][0]["expires_at"].as_str().map(|s| &s[..19]),
        Some(&later[..19]),
        "the lot keeps its expiry"
    );
    let got = app.get(&format!("/v1/charges/{}", c.id()), ADMIN).await;
    assert_eq!(got.body["refunded"], "5.00");
    let usage = app.get(&format!("/v1/tenants/{t}/usage?group_by=model"), ADMIN).await;
    assert_eq!(usage.body["data"][0]["amount"], "0.00", "net usage: charges minus refunds");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_charge() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let c = app.charge(t, "3").await.id();
    let path = format!("/v1/charges/{c}/refunds");
    let keys: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let calls = keys.iter().map(|k| app.post_idem(&path, ADMIN, k, json!({ "amount": "1", "reason": "x" })));
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 3);
    assert_eq!(app.balance(t).await["paid"], "10.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn refund_to_an_expired_lot_expires_again() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    app.gift(t, "1", Some(soon)).await;
    let c = app.charge(t, "1").await;
    assert_eq!(c.body["funded_by"]["bonus"], "1.00");
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    let r = app.post_idem(&format!("/v1/charges/{}/refunds", c.id()), ADMIN, "r", json!({ "reason": "late" })).await;
    r.assert(201);
    assert_eq!(r.body["to_bonus"], "1.00");
    assert_eq!(r.body["expired"], "1.00");
    let b = app.balance(t).await;
    assert_eq!(b["total"], "0.00");
    let kinds = app.get(&format!("/v1/tenants/{t}/transactions"), ADMIN).await;
    let kinds: Vec<&str> = kinds.body["data"].as_array().unwrap().iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..2], &["expiry", "refund"], "the history says so");
    app.assert_ledger_ok().await;
}
