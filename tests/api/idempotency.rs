//! Idempotency keys: replay, reuse with another body, in flight, not stored on refusal.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn twenty_concurrent_identical_adjustments_have_one_effect() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let path = format!("/v1/admin/tenants/{t}/adjustments");
    let body = json!({ "amount": "7.25", "kind": "gift", "reason": "sorry" });
    let calls = (0..20).map(|_| app.post_idem(&path, ADMIN, "same-key", body.clone()));
    let results = futures::future::join_all(calls).await;
    let ok: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    assert!(!ok.is_empty());
    for r in &results {
        match r.status.as_u16() {
            201 => assert_eq!(r.body, ok[0].body, "every success is the first response"),
            409 => assert_eq!(r.body["code"], "request_in_progress"),
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    let effects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_transactions WHERE tenant_id = $1 AND kind = 'gift'")
            .bind(t)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(effects, 1);
    assert_eq!(app.balance(t).await["bonus"], "7.25");
    // After the dust settles, a retry replays byte for byte.
    let again = app.post_idem(&path, ADMIN, "same-key", body).await;
    again.assert(201);
    assert_eq!(again.text, ok[0].text);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn reuse_with_another_body_is_422_and_refusals_are_not_stored() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let path = format!("/v1/admin/tenants/{t}/adjustments");
    let first = app.post_idem(&path, ADMIN, "k", json!({ "amount": "1", "kind": "gift", "reason": "x" })).await;
    first.assert(201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // The same request spelled differently is the same request.
    let same = app.post_idem(&path, ADMIN, "k", json!({ "reason": "x", "kind": "gift", "amount": "1.000" })).await;
    same.assert(201);
    assert_eq!(same.id(), first.id());
    app.post_idem(&path, ADMIN, "k", json!({ "amount": "2", "kind": "gift", "reason": "x" }))
        .await
        .assert_error(422, "idempotency_key_reused");

    // A 422 that changed nothing is not stored: the same key runs again once it can succeed.
    let neg = json!({ "amount": "-3", "kind": "adjustment", "reason": "fix" });
    app.post_idem(&path, ADMIN, "k2", neg.clone()).await.assert_error(422, "unprocessable");
    app.fund(t, "5").await;
    app.post_idem(&path, ADMIN, "k2", neg).await.assert(201);

    // Keys are scoped per tenant.
    let other = app.create_tenant("b").await;
    app.post_idem(
        &format!("/v1/admin/tenants/{other}/adjustments"),
        ADMIN,
        "k",
        json!({ "amount": "9", "kind": "gift", "reason": "x" }),
    )
    .await
    .assert(201);
    // Header rules.
    app.post_idem(&path, ADMIN, &"x".repeat(256), json!({ "amount": "1", "kind": "gift", "reason": "x" }))
        .await
        .assert_error(400, "invalid_request");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn replayed_charge_moves_no_money() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let body = json!({ "tenant_id": t, "amount": "1.5" });
    let a = app.post_idem("/v1/charges", ADMIN, "charge-1", body.clone()).await;
    a.assert(201);
    let b = app.post_idem("/v1/charges", ADMIN, "charge-1", body).await;
    b.assert(201);
    assert_eq!(a.text, b.text);
    assert_eq!(b.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.balance(t).await["available"], "8.50");
    app.post_idem("/v1/charges", ADMIN, "charge-1", json!({ "tenant_id": t, "amount": "2" }))
        .await
        .assert_error(422, "idempotency_key_reused");
    // An insufficient-funds refusal is not stored.
    let big = json!({ "tenant_id": t, "amount": "100" });
    app.post_idem("/v1/charges", ADMIN, "charge-2", big.clone()).await.assert_error(402, "insufficient_funds");
    app.fund(t, "100").await;
    app.post_idem("/v1/charges", ADMIN, "charge-2", big).await.assert(201);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM charges WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let _ = Uuid::now_v7();
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn identical_requests_racing_never_fail() {
    // The key's row is read only after its lock is held: a request that wins the lock just
    // after the first one committed replays it instead of running again (and failing).
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let path = format!("/v1/admin/tenants/{t}/adjustments");
    let keys: Vec<String> = (0..150).map(|i| format!("pair-{i}")).collect();
    let calls = keys.iter().flat_map(|k| {
        let body = json!({ "amount": "1", "kind": "gift", "reason": "race" });
        [app.post_idem(&path, ADMIN, k, body.clone()), app.post_idem(&path, ADMIN, k, body)]
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert!(r.status == 201 || (r.status == 409 && r.body["code"] == "request_in_progress"), "{}", r.text);
    }
    assert_eq!(app.balance(t).await["bonus"], "150.00");
    app.assert_ledger_ok().await;
}
