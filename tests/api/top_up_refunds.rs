//! Top-up refunds and reversals with the mock provider: the credit comes back out of the
//! tenant (paid, and the top-up's own bonus lot in proportion), spent credit is a
//! shortfall, never more than the top-up, idempotent, tenant-scoped, and a provider that
//! declines takes nothing back.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::top_ups::{count_type, events_of, fast, mock_of, set_card, top_up};

async fn refund(app: &TestApp, t: Uuid, top_up: &str, key: &str, body: Value) -> Resp {
    app.post_idem(&format!("/v1/tenants/{t}/top-ups/{top_up}/refunds"), ADMIN, key, body).await
}

/// A service with a 10% top-up bonus, and a tenant who topped up `amount` with the mock.
async fn topped_up(amount: &str) -> (TestApp, Uuid, String) {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
        c.top_up_whole_dollars = false;
    })
    .await;
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    let up = top_up(&app, t, "up", amount).await;
    up.assert(201);
    (app, t, up.str("id"))
}

fn balance_of(b: &Value) -> (String, String, String) {
    let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    (s("paid"), s("bonus"), s("total"))
}

#[tokio::test]
async fn an_unspent_top_up_is_refunded_with_its_bonus_and_the_answer_is_replayed() {
    let (app, t, id) = topped_up("50").await;
    assert_eq!(app.balance(t).await["total"], "55.00");
    let r = refund(&app, t, &id, "r1", json!({ "reason": "customer asked" })).await;
    r.assert(201);
    assert_eq!(
        (r.str("top_up_id"), r.str("amount"), r.str("status"), r.str("kind")),
        (id.clone(), "50.00".into(), "succeeded".into(), "refund".into())
    );
    assert_eq!(r.body["clawed_back"], json!({ "paid": "50.00", "bonus": "5.00" }));
    assert_eq!(r.body["shortfall"], "0.00");
    assert_eq!(r.body["balance"], json!({ "total": "0.00", "available": "0.00" }));
    assert!(r.body["created_at"].is_string() && r.body["id"].is_string());
    assert_eq!(balance_of(&app.balance(t).await), ("0.00".into(), "0.00".into(), "0.00".into()));
    let m = mock_of(&app);
    assert_eq!(m.refunds().len(), 1);
    assert_eq!(m.refunds()[0].amount, "50".parse().unwrap());

    // The same key: the first answer, byte for byte; with another body: refused.
    let replay = refund(&app, t, &id, "r1", json!({ "reason": "customer asked" })).await;
    assert_eq!(
        (replay.text.as_str(), replay.headers["idempotent-replayed"].to_str().unwrap()),
        (r.text.as_str(), "true")
    );
    refund(&app, t, &id, "r1", json!({ "amount": "1", "reason": "customer asked" }))
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(m.refunds().len(), 1, "a replay refunds nothing");
    // Nothing left: without an amount a conflict, with one a 422.
    refund(&app, t, &id, "r2", json!({ "reason": "again" })).await.assert_error(409, "conflict");
    refund(&app, t, &id, "r3", json!({ "amount": "0.01", "reason": "again" })).await.assert_error(422, "unprocessable");

    // History, breakdown and events show it.
    let txns = app.get(&format!("/v1/tenants/{t}/transactions"), ADMIN).await;
    let row = txns.body["data"].as_array().unwrap().iter().find(|x| x["kind"] == "top_up_refund").cloned().unwrap();
    assert_eq!(
        (row["amount"].as_str(), row["direction"].as_str(), row["balance_after"].as_str()),
        (Some("55.00"), Some("debit"), Some("0.00"))
    );
    assert_eq!(row["reference"]["top_up_id"], id);
    let bd = app.get(&format!("/v1/tenants/{t}/balance/breakdown"), ADMIN).await;
    assert_eq!(
        (bd.body["debited"]["top_up_refund"].as_str(), bd.body["total"].as_str()),
        (Some("55.00"), Some("0.00"))
    );
    let events = events_of(&app, t).await;
    assert_eq!(count_type(&events, "top_up.refunded"), 1);
    let ev = events.iter().find(|e| e["type"] == "top_up.refunded").unwrap();
    assert_eq!(ev["data"]["clawed_back"]["paid"], "50.00");
    let list = app.get(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), ADMIN).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn credit_already_spent_is_not_taken_and_is_recorded_as_shortfall() {
    let (app, t, id) = topped_up("100").await;
    // $10 bonus first, then $85 of paid: $15 paid left, the lot empty.
    app.charge(t, "95").await.assert(201);
    let r = refund(&app, t, &id, "r", json!({ "amount": "100", "reason": "chargeback avoided" })).await;
    r.assert(201);
    assert_eq!(r.body["clawed_back"], json!({ "paid": "15.00", "bonus": "0.00" }));
    assert_eq!(r.body["shortfall"], "95.00", "$85 paid and $10 bonus were already spent");
    assert_eq!(balance_of(&app.balance(t).await), ("0.00".into(), "0.00".into(), "0.00".into()));
    let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE paid < 0 OR bonus < 0")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(negative, 0);
    // Fully refunded: a cent more is refused.
    refund(&app, t, &id, "r2", json!({ "amount": "0.01", "reason": "x" })).await.assert_error(422, "unprocessable");

    // Another top-up's bonus lot is never taken for this one's.
    let (app2, t2, first) = topped_up("20").await;
    app2.charge(t2, "2").await.assert(201); // the first top-up's $2 bonus lot is spent
    let second = top_up(&app2, t2, "up2", "20").await;
    second.assert(201);
    let r = refund(&app2, t2, &first, "r", json!({ "reason": "x" })).await;
    r.assert(201);
    assert_eq!(r.body["clawed_back"], json!({ "paid": "20.00", "bonus": "0.00" }));
    assert_eq!(r.body["shortfall"], "2.00");
    let b = app2.balance(t2).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("20.00"), Some("2.00")), "the second lot is untouched");
    app2.assert_ledger_ok().await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn partial_refunds_add_up_to_the_top_up_and_one_cent_more_is_refused() {
    let (app, t, id) = topped_up("10").await;
    // Thirds: the bonus follows each in proportion, and the shares add up to the whole $1.
    let mut bonus = Vec::new();
    for (i, amount) in ["3.33", "3.33", "3.34"].iter().enumerate() {
        let r = refund(&app, t, &id, &format!("p{i}"), json!({ "amount": amount, "reason": "partial" })).await;
        r.assert(201);
        assert_eq!(r.body["amount"], *amount);
        assert_eq!(r.body["shortfall"], "0.00");
        bonus.push(r.body["clawed_back"]["bonus"].as_str().unwrap().to_string());
    }
    assert_eq!(bonus, vec!["0.333", "0.333", "0.334"]);
    assert_eq!(balance_of(&app.balance(t).await), ("0.00".into(), "0.00".into(), "0.00".into()));
    refund(&app, t, &id, "more", json!({ "amount": "0.01", "reason": "one cent more" }))
        .await
        .assert_error(422, "unprocessable");
    refund(&app, t, &id, "zero", json!({ "amount": "0", "reason": "x" })).await.assert_error(400, "invalid_request");
    refund(&app, t, &id, "noreason", json!({ "amount": "1" })).await.assert_error(400, "invalid_request");
    let m = mock_of(&app);
    assert_eq!(m.refunds().len(), 3);
    let refunded = tally::money::Money::checked_sum(m.refunds().iter().map(|r| r.amount)).unwrap();
    assert_eq!(refunded.to_string(), "10.00", "the provider refunded exactly the top-up");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.refunded"), 3);
    let txns = app.get(&format!("/v1/tenants/{t}/transactions?kind=top_up_refund"), ADMIN).await;
    assert_eq!(txns.body["data"].as_array().unwrap().len(), 3);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn another_tenants_top_up_is_not_found_and_only_admins_refund() {
    let (app, t, id) = topped_up("30").await;
    let other = app.create_tenant("b").await;
    refund(&app, other, &id, "x", json!({ "reason": "not yours" })).await.assert_error(404, "not_found");
    refund(&app, t, &Uuid::now_v7().to_string(), "x", json!({ "reason": "none" })).await.assert_error(404, "not_found");
    refund(&app, Uuid::now_v7(), &id, "x", json!({ "reason": "none" })).await.assert_error(404, "not_found");
    app.get(&format!("/v1/tenants/{other}/top-ups/{id}/refunds"), ADMIN).await.assert_error(404, "not_found");
    let (_, key) = app.tenant_key(t).await;
    app.post_idem(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), &key, "k", json!({ "reason": "self-service" }))
        .await
        .assert_error(403, "forbidden");
    app.post(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), ADMIN, json!({ "reason": "no key" }))
        .await
        .assert_error(400, "invalid_request");
    // The tenant may read its own top-up's refunds; nothing was refunded.
    let own = app.get(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), &key).await;
    own.assert(200);
    assert_eq!(own.body["data"], json!([]));
    assert_eq!(mock_of(&app).refunds().len(), 0);
    assert_eq!(app.balance(t).await["total"], "33.00");
    // A failed top-up cannot be refunded.
    set_card(&app, t, "pm_mock_declined").await.assert(200);
    let failed = top_up(&app, t, "bad", "10").await;
    failed.assert_error(402, "payment_declined");
    refund(&app, t, &failed.str("top_up_id"), "f", json!({ "reason": "x" })).await.assert_error(409, "conflict");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_refund_the_provider_declines_takes_nothing_back() {
    let (app, t, id) = topped_up("40").await;
    let m = mock_of(&app);
    m.decline_next_refunds(1);
    let r = refund(&app, t, &id, "d", json!({ "amount": "10", "reason": "x" })).await;
    r.assert_error(402, "payment_declined");
    assert!(r.str("decline_reason").contains("declined"), "{}", r.text);
    assert_eq!(app.balance(t).await["total"], "44.00", "nothing taken back");
    let replay = refund(&app, t, &id, "d", json!({ "amount": "10", "reason": "x" })).await;
    assert_eq!((replay.status.as_u16(), replay.text.as_str()), (402, r.text.as_str()));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    // A declined refund takes nothing of what may be refunded: the whole $40 still can be.
    let ok = refund(&app, t, &id, "ok", json!({ "reason": "x" })).await;
    ok.assert(201);
    assert_eq!(ok.body["amount"], "40.00");
    let list = app.get(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), ADMIN).await;
    let statuses: Vec<&str> =
        list.body["data"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["failed", "succeeded"]);
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.refunded"), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_reversal_after_spend_takes_back_what_is_left() {
    let (app, t, id) = topped_up("100").await;
    // A partial refund first, then spend: $5 bonus and $45 paid left of the rest.
    refund(&app, t, &id, "r", json!({ "amount": "20", "reason": "partial" })).await.assert(201);
    app.charge(t, "36").await.assert(201); // the remaining $8 of bonus, then $28 of paid
    let b = app.balance(t).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("52.00"), Some("0.00")));

    let rev = app.post("/v1/admin/mock-provider/reversals", ADMIN, json!({ "top_up_id": id })).await;
    rev.assert(201);
    assert_eq!(
        (rev.str("kind"), rev.str("origin"), rev.str("amount")),
        ("reversal".into(), "provider".into(), "80.00".into())
    );
    assert_eq!(rev.body["clawed_back"], json!({ "paid": "52.00", "bonus": "0.00" }));
    assert_eq!(rev.body["shortfall"], "36.00", "$28 paid and $8 bonus were spent");
    assert!(rev.str("provider_ref").starts_with("dp_mock_"));
    assert_eq!(balance_of(&app.balance(t).await), ("0.00".into(), "0.00".into(), "0.00".into()));
    let events = events_of(&app, t).await;
    assert_eq!((count_type(&events, "payment.reversed"), count_type(&events, "top_up.refunded")), (1, 1));
    // Nothing left: another dispute, or a refund, is refused.
    app.post("/v1/admin/mock-provider/reversals", ADMIN, json!({ "top_up_id": id }))
        .await
        .assert_error(409, "conflict");
    refund(&app, t, &id, "late", json!({ "amount": "1", "reason": "x" })).await.assert_error(422, "unprocessable");
    // Admin only, known top-ups only.
    let (_, key) = app.tenant_key(t).await;
    app.post("/v1/admin/mock-provider/reversals", &key, json!({ "top_up_id": id }))
        .await
        .assert_error(403, "forbidden");
    app.post("/v1/admin/mock-provider/reversals", ADMIN, json!({ "top_up_id": Uuid::now_v7() }))
        .await
        .assert_error(404, "not_found");
    let txns = app.get(&format!("/v1/tenants/{t}/transactions?kind=top_up_refund"), ADMIN).await;
    assert_eq!(txns.body["data"].as_array().unwrap().len(), 2);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn concurrent_refunds_of_one_top_up_never_exceed_it() {
    let (app, t, id) = topped_up("50").await;
    let calls = (0..10).map(|i| {
        let (app, id) = (&app, id.clone());
        async move { refund(app, t, &id, &format!("c{i}"), json!({ "amount": "10", "reason": "race" })).await }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(ok, 5, "five refunds of $10 fit in $50: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(answers.iter().all(|r| r.status == 201 || r.body["code"] == "unprocessable"));
    assert_eq!(mock_of(&app).refunds().len(), 5);
    assert_eq!(balance_of(&app.balance(t).await), ("0.00".into(), "0.00".into(), "0.00".into()));
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn money_back_routes_are_in_the_openapi_document() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json", "").await;
    doc.assert(200);
    for (path, method) in [
        ("/v1/tenants/{tenant_id}/top-ups/{top_up_id}/refunds", "post"),
        ("/v1/tenants/{tenant_id}/top-ups/{top_up_id}/refunds", "get"),
        ("/v1/admin/mock-provider/reversals", "post"),
        ("/v1/providers/stripe/webhook", "post"),
    ] {
        assert!(doc.body["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    let webhook = &doc.body["paths"]["/v1/providers/stripe/webhook"]["post"];
    assert_eq!(webhook["security"], json!([]), "the webhook needs no bearer token");
    app.assert_ledger_ok().await;
}
