//! Stripe's webhook endpoint: signatures (valid, tampered body, wrong secret, old
//! timestamp, replayed event), and the money events it acts on — refunds through Tally and
//! at Stripe's dashboard (`charge.refunded`), disputes (`charge.dispute.created`).

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::stripe::{deliver, stripe_app, tenant_with_card};
use crate::stripe_fake::{FakeStripe, Fault, Op, WEBHOOK_SECRET};
use crate::top_ups::{count_type, events_of, top_up};

async fn refund(app: &TestApp, t: Uuid, top_up: &str, key: &str, body: Value) -> Resp {
    app.post_idem(&format!("/v1/tenants/{t}/top-ups/{top_up}/refunds"), ADMIN, key, body).await
}

#[tokio::test]
async fn only_deliveries_whose_signature_verifies_are_read() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |_| {}).await;
    let now = chrono::Utc::now().timestamp();
    let body = |id: &str| {
        serde_json::to_vec(&json!({ "id": id, "type": "customer.created", "data": { "object": { "id": "cus_x" } } }))
            .unwrap()
    };
    let sign = |secret: &str, payload: &[u8], t: i64| tally::payments::stripe::webhook::sign(secret, payload, t);

    // Valid: acknowledged (an event the service does not act on is ignored).
    let valid = deliver(&app, body("evt_a"), Some(&sign(WEBHOOK_SECRET, &body("evt_a"), now))).await;
    valid.assert(200);
    assert_eq!(valid.body["outcome"], "ignored");
    // The body changed after signing.
    let mut tampered = body("evt_b");
    let sig = sign(WEBHOOK_SECRET, &tampered, now);
    tampered.extend_from_slice(b" ");
    deliver(&app, tampered, Some(&sig)).await.assert_error(400, "invalid_request");
    // Signed with another secret.
    deliver(&app, body("evt_c"), Some(&sign("whsec_someone_else", &body("evt_c"), now)))
        .await
        .assert_error(400, "invalid_request");
    // An old delivery (beyond the 300-second tolerance), correctly signed.
    let old = deliver(&app, body("evt_d"), Some(&sign(WEBHOOK_SECRET, &body("evt_d"), now - 301))).await;
    old.assert_error(400, "invalid_request");
    assert!(old.str("detail").contains("tolerance"), "{}", old.text);
    // No signature, or a malformed one.
    deliver(&app, body("evt_e"), None).await.assert_error(400, "invalid_request");
    deliver(&app, body("evt_e"), Some("v1=abc")).await.assert_error(400, "invalid_request");
    // A replayed event (same id, fresh valid signature): acknowledged and ignored.
    let replay = deliver(&app, body("evt_a"), Some(&sign(WEBHOOK_SECRET, &body("evt_a"), now))).await;
    replay.assert(200);
    assert_eq!(replay.body["outcome"], "duplicate");
    let seen: Vec<(String, String)> =
        sqlx::query_as("SELECT id, outcome FROM provider_events ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(seen, vec![("evt_a".to_string(), "ignored".to_string())], "only the verified delivery was read");

    // With the mock as provider there is no Stripe endpoint.
    let mock = TestApp::spawn().await;
    deliver(&mock, body("evt_f"), Some(&sign(WEBHOOK_SECRET, &body("evt_f"), now)))
        .await
        .assert_error(404, "not_found");
    mock.assert_ledger_ok().await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_dispute_reverses_what_is_left_of_a_spent_top_up_once() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.top_up_bonus_percent = "10".parse().unwrap()).await;
    let t = tenant_with_card(&app, "pm_card_visa").await;
    let up = top_up(&app, t, "k", "100").await;
    up.assert(201);
    let intent = up.str("provider_ref");
    // $10 of bonus and $60 of paid credit spent: $40 paid left, the lot empty.
    app.charge(t, "70").await.assert(201);

    let mut dispute = json!({ "id": "dp_1", "object": "dispute", "amount": 10000, "currency": "usd",
        "payment_intent": intent, "charge": fake.intent(&intent)["latest_charge"], "reason": "fraudulent", "status": "needs_response" });
    let (payload, sig) = fake.event("evt_dp_1", "charge.dispute.created", dispute.clone());
    let r = deliver(&app, payload.clone(), Some(&sig)).await;
    r.assert(200);
    assert_eq!(r.body["outcome"], "reversed");
    let b = app.balance(t).await;
    assert_eq!(
        (b["paid"].as_str(), b["bonus"].as_str(), b["total"].as_str()),
        (Some("0.00"), Some("0.00"), Some("0.00"))
    );
    let list = app.get(&format!("/v1/tenants/{t}/top-ups/{}/refunds", up.str("id")), ADMIN).await;
    list.assert(200);
    let rev = &list.body["data"][0];
    assert_eq!(
        (rev["kind"].as_str(), rev["origin"].as_str(), rev["status"].as_str()),
        (Some("reversal"), Some("provider"), Some("succeeded"))
    );
    assert_eq!(rev["clawed_back"], json!({ "paid": "40.00", "bonus": "0.00" }));
    assert_eq!(rev["shortfall"], "70.00", "the $60 paid and $10 bonus already spent");
    assert_eq!(rev["provider_ref"], "dp_1");
    let events = events_of(&app, t).await;
    assert_eq!(count_type(&events, "payment.reversed"), 1);

    // The same dispute again (another event id), and the same delivery again: nothing more.
    dispute["status"] = json!("under_review");
    let (other, other_sig) = fake.event("evt_dp_2", "charge.dispute.created", dispute);
    assert_eq!(deliver(&app, other, Some(&other_sig)).await.body["outcome"], "already_recorded");
    assert_eq!(deliver(&app, payload, Some(&sig)).await.body["outcome"], "duplicate");
    assert_eq!(count_type(&events_of(&app, t).await, "payment.reversed"), 1);
    // Nothing is left to refund.
    refund(&app, t, &up.str("id"), "r", json!({ "amount": "0.01", "reason": "too late" }))
        .await
        .assert_error(422, "unprocessable");
    let txns = app.get(&format!("/v1/tenants/{t}/transactions?kind=top_up_refund"), ADMIN).await;
    assert_eq!(txns.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        (txns.body["data"][0]["direction"].as_str(), txns.body["data"][0]["amount"].as_str()),
        (Some("debit"), Some("40.00"))
    );
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn refunds_through_tally_and_at_stripes_dashboard_are_each_taken_back_once() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.top_up_bonus_percent = "10".parse().unwrap()).await;
    let t = tenant_with_card(&app, "pm_card_visa").await;
    let up = top_up(&app, t, "k", "50").await;
    up.assert(201);
    let (id, intent) = (up.str("id"), up.str("provider_ref"));

    // Through Tally, with Stripe failing after doing the work: found among the refunds.
    fake.fault(Op::CreateRefund, Fault::ErrorAfterWork, 1);
    let r = refund(&app, t, &id, "r1", json!({ "amount": "20", "reason": "customer asked" })).await;
    r.assert(201);
    assert_eq!(r.body["clawed_back"], json!({ "paid": "20.00", "bonus": "2.00" }));
    assert_eq!(r.body["shortfall"], "0.00");
    let call = &fake.requests(Op::CreateRefund)[0];
    assert_eq!((call.param("payment_intent"), call.param("amount")), (Some(intent.as_str()), Some("2000")));
    assert_eq!(call.param("metadata[tally_refund_id]"), Some(r.str("id").as_str()));
    assert_eq!(call.key.as_deref(), Some(format!("tally_refund_{}", r.str("id")).as_str()));
    assert_eq!(fake.refunds().len(), 1, "refunded once");
    assert!(r.str("provider_ref").starts_with("re_"));

    // At Stripe's dashboard: $10 more, reported by charge.refunded (which lists Tally's too).
    fake.refund_at_dashboard(&intent, 1000);
    let (payload, sig) = fake.event("evt_rf_1", "charge.refunded", fake.charge_of(&intent));
    let d = deliver(&app, payload, Some(&sig)).await;
    d.assert(200);
    assert_eq!(d.body["outcome"], "refund_recorded");
    let (again, again_sig) = fake.event("evt_rf_2", "charge.refunded", fake.charge_of(&intent));
    assert_eq!(deliver(&app, again, Some(&again_sig)).await.body["outcome"], "nothing_new");
    let list = app.get(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), ADMIN).await;
    let rows = list.body["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1]["origin"].as_str(), rows[1]["amount"].as_str()), (Some("provider"), Some("10.00")));
    assert_eq!(rows[1]["clawed_back"], json!({ "paid": "10.00", "bonus": "1.00" }));
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.refunded"), 2);

    // $20 is left; a cent more is refused, the rest goes through.
    refund(&app, t, &id, "r2", json!({ "amount": "20.01", "reason": "x" })).await.assert_error(422, "unprocessable");
    refund(&app, t, &id, "r3", json!({ "amount": "0.001", "reason": "x" })).await.assert_error(400, "invalid_request");
    let last = refund(&app, t, &id, "r4", json!({ "reason": "the rest" })).await;
    last.assert(201);
    assert_eq!(last.body["amount"], "20.00");
    assert_eq!(last.body["clawed_back"], json!({ "paid": "20.00", "bonus": "2.00" }));
    let b = app.balance(t).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("0.00"), Some("0.00")));
    assert_eq!(fake.refunds().iter().map(|r| r["amount"].as_i64().unwrap()).sum::<i64>(), 5000);
    assert_eq!(fake.violations(), Vec::<String>::new());
    app.assert_ledger_ok().await;
}
