//! Manual top-ups: payment method, bonus lots, limits, declines, provider faults, receipts.
//! Also the small helpers the auto top-up and webhook tests share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tally::config::Config;
use tally::payments::MockProvider;
use tally::services::money_in::attempts;
use uuid::Uuid;

use crate::helpers::*;

/// Tiny timings so faults, back-offs and retries play out in a test's time.
pub fn fast(c: &mut Config) {
    c.payment_timeout = Duration::from_millis(300);
    c.payment_retry = Duration::from_millis(50);
    c.auto_top_up_backoff = Duration::from_millis(50);
    c.webhook_backoff = Duration::from_millis(50);
    c.mock_slow_delay = Duration::from_millis(1500);
    c.allow_private_webhooks = true;
}

pub fn mock_of(app: &TestApp) -> Arc<MockProvider> {
    app.state.mock.clone().expect("the mock provider is configured")
}

pub async fn set_card(app: &TestApp, t: Uuid, token: &str) -> Resp {
    app.put(&format!("/v1/tenants/{t}/payment-method"), ADMIN, json!({ "token": token })).await
}

pub async fn top_up(app: &TestApp, t: Uuid, key: &str, amount: &str) -> Resp {
    app.post_idem(&format!("/v1/tenants/{t}/top-ups"), ADMIN, key, json!({ "amount": amount })).await
}

pub async fn top_ups_of(app: &TestApp, t: Uuid) -> Vec<Value> {
    let r = app.get(&format!("/v1/tenants/{t}/top-ups?limit=200"), ADMIN).await;
    r.assert(200);
    r.body["data"].as_array().unwrap().clone()
}

pub async fn events_of(app: &TestApp, t: Uuid) -> Vec<Value> {
    let r = app.get(&format!("/v1/tenants/{t}/events?limit=200"), ADMIN).await;
    r.assert(200);
    r.body["data"].as_array().unwrap().clone()
}

pub fn count_type(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

/// Polls `cond` until it holds, or fails the test naming `what`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_top_up_credits_paid_and_a_bonus_lot_with_its_own_expiry() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
        c.top_up_bonus_expires_days = Some(30);
    })
    .await;
    let t = app.create_tenant("a").await;
    let pm = set_card(&app, t, "pm_mock_ok").await;
    pm.assert(200);
    assert_eq!(
        (pm.str("brand"), pm.str("last4"), pm.str("token_prefix")),
        ("visa".into(), "4242".into(), "pm_mock_ok".into())
    );

    let r = top_up(&app, t, "k1", "50").await;
    r.assert(201);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["source"], "manual");
    assert_eq!(r.body["amount"], "50.00");
    assert_eq!(r.body["bonus_amount"], "5.00");
    assert_eq!(r.body["currency"], "USD");
    assert_eq!(r.body["balance"], json!({ "total": "55.00", "available": "55.00" }));
    let expires: chrono::DateTime<chrono::Utc> = r.body["bonus_expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "bonus expires in 30 days, got {days}h");
    assert!(r.str("provider_ref").starts_with("ch_mock_"));

    let replay = top_up(&app, t, "k1", "50.00").await;
    assert_eq!(replay.text, r.text);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    top_up(&app, t, "k1", "60").await.assert_error(422, "idempotency_key_reused");

    let b = app.balance(t).await;
    assert_eq!(
        (b["paid"].as_str(), b["bonus"].as_str(), b["available"].as_str()),
        (Some("50.00"), Some("5.00"), Some("55.00"))
    );
    assert_eq!(b["expiring"][0]["amount"], "5.00");
    let bd = app.get(&format!("/v1/tenants/{t}/balance/breakdown"), ADMIN).await;
    assert_eq!(
        (bd.body["credited"]["top_up"].as_str(), bd.body["credited"]["bonus"].as_str()),
        (Some("50.00"), Some("5.00"))
    );

    // The tenant's own key may top up; a service token may not; another tenant sees nothing.
    let (_, key) = app.tenant_key(t).await;
    let own = app.post_idem(&format!("/v1/tenants/{t}/top-ups"), &key, "k2", json!({ "amount": "20" })).await;
    own.assert(201);
    let service = app.service_token().await;
    app.post_idem(&format!("/v1/tenants/{t}/top-ups"), &service, "k3", json!({ "amount": "20" }))
        .await
        .assert_error(403, "forbidden");
    let other = app.create_tenant("b").await;
    let (_, other_key) = app.tenant_key(other).await;
    app.get(&format!("/v1/tenants/{t}/top-ups/{}", r.id()), &other_key).await.assert_error(404, "not_found");

    let got = app.get(&format!("/v1/tenants/{t}/top-ups/{}", r.id()), &key).await;
    got.assert(200);
    assert_eq!((got.body["status"].as_str(), got.body["attempts"].as_i64()), (Some("succeeded"), Some(1)));
    let page = app.get(&format!("/v1/tenants/{t}/top-ups?limit=1"), ADMIN).await;
    assert_eq!(page.body["data"][0]["id"], own.body["id"], "newest first");
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let rest = app.get(&format!("/v1/tenants/{t}/top-ups?limit=1&cursor={cursor}"), ADMIN).await;
    assert_eq!(rest.body["data"][0]["id"], r.body["id"]);
    assert!(rest.body["next_cursor"].is_null());

    assert_eq!(mock_of(&app).charges().len(), 2, "two top-ups, two charges; the replay charged nothing");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.succeeded"), 2);
    let kinds: Vec<Value> = app.get(&format!("/v1/tenants/{t}/transactions"), ADMIN).await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].clone())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "top_up").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "bonus").count(), 2);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn limits_missing_payment_method_and_bad_input_record_nothing() {
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    top_up(&app, t, "k0", "50").await.assert_error(422, "unprocessable");
    set_card(&app, t, "pm_mock_nope").await.assert_error(400, "invalid_request");
    set_card(&app, t, "").await.assert_error(400, "invalid_request");
    app.put(&format!("/v1/tenants/{t}/payment-method"), ADMIN, json!({ "token": "pm_mock_ok", "cvc": "1" }))
        .await
        .assert_error(400, "invalid_request");
    set_card(&app, Uuid::now_v7(), "pm_mock_ok").await.assert_error(404, "not_found");
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    // Below the minimum, above the maximum, not whole dollars.
    for amount in ["4", "10001", "12.50"] {
        top_up(&app, t, &format!("k-{amount}"), amount).await.assert_error(400, "invalid_request");
    }
    top_up(&app, t, "k-num", "1.0000001").await.assert_error(400, "invalid_request");
    app.post(&format!("/v1/tenants/{t}/top-ups"), ADMIN, json!({ "amount": "50" }))
        .await
        .assert_error(400, "invalid_request");
    app.post_idem(&format!("/v1/tenants/{t}/top-ups"), ADMIN, "k-x", json!({ "amount": "50", "note": "x" }))
        .await
        .assert_error(400, "invalid_request");
    top_up(&app, Uuid::now_v7(), "k-404", "50").await.assert_error(404, "not_found");
    // A refusal stores nothing: the same key runs again once the input is right.
    top_up(&app, t, "k0", "50").await.assert(201);
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    assert_eq!(mock_of(&app).calls().len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_declined_card_records_a_failed_top_up_and_the_402_is_replayed() {
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_declined").await.assert(200);
    let r = top_up(&app, t, "k1", "25").await;
    r.assert_error(402, "payment_declined");
    assert!(r.str("decline_reason").contains("card_declined"));
    let failed = top_ups_of(&app, t).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["id"], r.body["top_up_id"]);
    assert!(failed[0]["error"].as_str().unwrap().contains("card_declined"));

    let replay = top_up(&app, t, "k1", "25").await;
    assert_eq!(replay.status, 402);
    assert_eq!(replay.text, r.text);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(mock_of(&app).calls().len(), 1, "the replay did not call the provider");
    app.get(&format!("/v1/tenants/{t}/top-ups/{}/receipt", failed[0]["id"].as_str().unwrap()), ADMIN)
        .await
        .assert_error(409, "conflict");
    assert_eq!(app.balance(t).await["total"], "0.00");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.failed"), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn provider_down_is_a_503_not_stored_and_the_retry_charges_once() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_unavailable").await.assert(200);
    top_up(&app, t, "down", "10").await.assert_error(503, "payment_provider_unavailable");
    top_up(&app, t, "down", "10").await.assert_error(503, "payment_provider_unavailable");
    let calls = m.calls();
    assert_eq!(calls.len(), 2, "not stored: the retry ran again");
    assert_eq!(calls[0].request.idempotency_key, calls[1].request.idempotency_key, "same attempt, same provider key");
    let pending = top_ups_of(&app, t).await;
    assert_eq!((pending.len(), pending[0]["status"].as_str()), (1, Some("pending")));

    // Never retried by its client, the attempt is handed to the sweep a day later, never
    // closed: with a real provider an unavailable answer may hide a charge. The sweep
    // re-drives it with the same provider key, and the client's key still leads to it.
    sqlx::query("UPDATE top_ups SET last_attempt_at = now() - interval '2 days' WHERE tenant_id = $1")
        .bind(t)
        .execute(&app.pool)
        .await
        .unwrap();
    wait_until("the sweep to take the attempt over", Duration::from_secs(5), || async { m.calls().len() > 2 }).await;
    assert_eq!(top_ups_of(&app, t).await[0]["status"], "pending");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.failed"), 0);
    let retry = top_up(&app, t, "down", "10").await;
    // 409 while the sweep's own call holds the attempt, else the provider's 503: never a new attempt.
    assert!(matches!(retry.status.as_u16(), 503 | 409), "{}", retry.text);
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    let down = calls[0].request.idempotency_key.clone();
    assert!(m.calls().iter().all(|c| c.request.idempotency_key == down), "one attempt, one provider key");

    // An outage that ends: the client's retry with its key re-drives the same attempt.
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    m.fail_next("pm_mock_ok", 1);
    top_up(&app, t, "flaky", "10").await.assert_error(503, "payment_provider_unavailable");
    let ok = top_up(&app, t, "flaky", "10").await;
    ok.assert(201);
    assert_eq!(ok.body["attempts"], 2);
    let flaky: Vec<_> = m.calls().into_iter().filter(|c| c.request.token == "pm_mock_ok").collect();
    assert_eq!(flaky.len(), 2);
    assert_eq!(flaky[0].request.idempotency_key, flaky[1].request.idempotency_key);
    assert_eq!(m.charges().len(), 1);
    assert_eq!(app.balance(t).await["paid"], "10.00");
    assert_eq!(top_ups_of(&app, t).await.len(), 2, "one attempt per key until its final answer");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_charge_slower_than_the_timeout_is_reconciled_once_with_its_key() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_slow").await.assert(200);
    top_up(&app, t, "slow", "30").await.assert_error(503, "payment_provider_unavailable");
    assert_eq!(m.charges().len(), 1, "the provider charged although we stopped waiting");
    assert_eq!(app.balance(t).await["paid"], "0.00");
    // The outcome is unknown to the service: the sweep re-drives the attempt with its key,
    // without waiting for the client, and stores the answer under the client's key.
    wait_until("the sweep to credit the slow top-up", Duration::from_secs(10), || async {
        top_ups_of(&app, t).await[0]["status"] == "succeeded"
    })
    .await;
    let answer = top_up(&app, t, "slow", "30").await;
    answer.assert(201);
    assert_eq!(answer.headers["idempotent-replayed"], "true");
    assert_eq!(answer.body["status"], "succeeded");
    assert_eq!(answer.body["attempts"], 2);
    assert_eq!(m.charges().len(), 1, "never charged twice");
    assert!(m.calls().iter().all(|c| c.request.idempotency_key == m.charges()[0].idempotency_key));
    assert_eq!(app.balance(t).await["paid"], "30.00");
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_receipt_is_printable_escaped_html() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "5".parse().unwrap();
    })
    .await;
    let r = app.post("/v1/tenants", ADMIN, json!({ "name": "<script>alert(1)</script> & Co" })).await;
    r.assert(201);
    let t = r.id();
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    let up = top_up(&app, t, "k", "40").await;
    up.assert(201);
    let receipt = app.get(&format!("/v1/tenants/{t}/top-ups/{}/receipt", up.id()), ADMIN).await;
    receipt.assert(200);
    assert!(receipt.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = &receipt.text;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script>"), "the tenant name is escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"));
    for part in [
        up.str("id"),
        t.to_string(),
        up.str("provider_ref"),
        "40.00".into(),
        "2.00".into(),
        "42.00".into(),
        "visa ending 4242".into(),
    ] {
        assert!(html.contains(&part), "the receipt shows {part}");
    }
    let paid_at: chrono::DateTime<chrono::Utc> = up.str("completed_at").parse().unwrap();
    assert!(html.contains(&paid_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()), "the receipt is dated");
    let other = app.create_tenant("b").await;
    app.get(&format!("/v1/tenants/{other}/top-ups/{}/receipt", up.id()), ADMIN).await.assert_error(404, "not_found");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn money_in_routes_are_in_the_openapi_document() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json", "").await;
    doc.assert(200);
    for (path, method) in [
        ("/v1/tenants/{tenant_id}/payment-method", "put"),
        ("/v1/tenants/{tenant_id}/top-ups", "post"),
        ("/v1/tenants/{tenant_id}/top-ups", "get"),
        ("/v1/tenants/{tenant_id}/top-ups/{top_up_id}", "get"),
        ("/v1/tenants/{tenant_id}/top-ups/{top_up_id}/receipt", "get"),
        ("/v1/tenants/{tenant_id}/auto-top-up", "put"),
        ("/v1/tenants/{tenant_id}/auto-top-up", "get"),
        ("/v1/tenants/{tenant_id}/auto-top-up", "delete"),
        ("/v1/tenants/{tenant_id}/webhook", "put"),
        ("/v1/tenants/{tenant_id}/events", "get"),
    ] {
        assert!(doc.body["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    let receipt = &doc.body["paths"]["/v1/tenants/{tenant_id}/top-ups/{top_up_id}/receipt"]["get"]["responses"]["200"];
    assert!(receipt["content"]["text/html"].is_object(), "the receipt is documented as HTML");
    app.assert_ledger_ok().await;
}

/// Whether a pending attempt is marked as possibly charged, scheduled for a re-drive, and leased.
async fn attempt_state(app: &TestApp, t: Uuid) -> (bool, bool, bool) {
    sqlx::query_as(
        "SELECT outcome_unknown, retry_at IS NOT NULL, lease_until IS NOT NULL FROM top_ups WHERE tenant_id = $1",
    )
    .bind(t)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Ages every top-up of the tenant past the hand-over delay, then runs the hand-over pass:
/// how many attempts it gave to the sweep (one that may have charged is already its own).
async fn hand_over_after_a_day(app: &TestApp, t: Uuid) -> usize {
    sqlx::query("UPDATE top_ups SET last_attempt_at = now() - interval '2 days' WHERE tenant_id = $1")
        .bind(t)
        .execute(&app.pool)
        .await
        .unwrap();
    attempts::hand_over_stale(&app.pool, attempts::HAND_OVER_AFTER, 100).await.unwrap()
        + attempts::hand_over_stale(&app.pool, Duration::ZERO, 100).await.unwrap()
}

#[tokio::test]
async fn a_timed_out_charge_then_an_outage_is_never_abandoned_and_is_credited_once() {
    // No sweep during the test: the client's calls and the closing pass run in a set order.
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.worker_interval = Duration::from_secs(3600);
    })
    .await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_slow").await.assert(200);

    // The first call times out: the provider charged, the service does not know it.
    top_up(&app, t, "k", "30").await.assert_error(503, "payment_provider_unavailable");
    assert_eq!(m.charges().len(), 1);
    // The client's retry meets a one-call outage: a definite "not processed" for this call
    // only; the earlier call's possible charge is not forgotten.
    m.fail_next("pm_mock_slow", 1);
    top_up(&app, t, "k", "30").await.assert_error(503, "payment_provider_unavailable");
    let calls = m.calls();
    assert_eq!(calls.len(), 2);
    assert!(matches!(calls[1].outcome, tally::payments::ChargeOutcome::Unavailable { .. }));
    assert_eq!(calls[0].request.idempotency_key, calls[1].request.idempotency_key);
    assert_eq!(attempt_state(&app, t).await, (true, true, false), "unknown, re-driven by the sweep, not leased");

    // A day later it is still not closed as failed: it may have charged the card.
    assert_eq!(hand_over_after_a_day(&app, t).await, 0);
    let ups = top_ups_of(&app, t).await;
    assert_eq!((ups.len(), ups[0]["status"].as_str()), (1, Some("pending")));
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.failed"), 0);
    let id = Uuid::parse_str(ups[0]["id"].as_str().unwrap()).unwrap();
    wait_until("the attempt to be due for a re-drive", Duration::from_secs(5), || async {
        attempts::due(&app.pool, 100).await.unwrap().contains(&(t, id))
    })
    .await;

    // The client's retry re-drives the same attempt with the same provider key.
    let ok = top_up(&app, t, "k", "30").await;
    ok.assert(201);
    assert_eq!((ok.body["status"].as_str(), ok.body["attempts"].as_i64()), (Some("succeeded"), Some(3)));
    assert_eq!(ok.id(), id);
    let replay = top_up(&app, t, "k", "30").await;
    replay.assert(201);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.text, ok.text);

    assert_eq!(m.charges().len(), 1, "exactly one charge");
    assert!(m.calls().iter().all(|c| c.request.idempotency_key == m.charges()[0].idempotency_key), "one provider key");
    assert_eq!(app.balance(t).await["paid"], "30.00", "credited exactly once");
    let events = events_of(&app, t).await;
    assert_eq!((count_type(&events, "top_up.succeeded"), count_type(&events, "top_up.failed")), (1, 0));
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_timed_out_charge_then_an_outage_is_re_driven_by_the_sweep_until_credited() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_slow").await.assert(200);
    top_up(&app, t, "k", "30").await.assert_error(503, "payment_provider_unavailable");
    // The next call, the sweep's or the client's, meets an outage; nobody gives up.
    m.fail_next("pm_mock_slow", 1);
    wait_until("the sweep to credit the top-up", Duration::from_secs(10), || async {
        top_ups_of(&app, t).await[0]["status"] == "succeeded"
    })
    .await;
    assert!(m.calls().iter().any(|c| matches!(c.outcome, tally::payments::ChargeOutcome::Unavailable { .. })));
    let answer = top_up(&app, t, "k", "30").await;
    answer.assert(201);
    assert_eq!(
        (answer.headers["idempotent-replayed"].to_str().unwrap(), answer.str("status")),
        ("true", "succeeded".into())
    );
    assert_eq!(m.charges().len(), 1, "exactly one charge");
    assert!(m.calls().iter().all(|c| c.request.idempotency_key == m.charges()[0].idempotency_key));
    assert_eq!(app.balance(t).await["paid"], "30.00");
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_caller_that_died_after_the_charge_leaves_an_outcome_that_is_never_abandoned() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.worker_interval = Duration::from_secs(3600);
    })
    .await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    // Charged, then the caller stops before recording anything (as a killed process would).
    app.state.faults.stop_after_charge.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(top_up(&app, t, "k", "30").await.status, 500);
    app.state.faults.stop_after_charge.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(m.charges().len(), 1);
    // Once its lease runs out, the retry takes the row over, and meets an outage.
    tokio::time::sleep(attempts::lease(&app.state.config) + Duration::from_millis(50)).await;
    m.fail_next("pm_mock_ok", 1);
    top_up(&app, t, "k", "30").await.assert_error(503, "payment_provider_unavailable");
    assert_eq!(attempt_state(&app, t).await, (true, true, false), "the dead call's outcome is unknown");
    assert_eq!(hand_over_after_a_day(&app, t).await, 0);
    let ok = top_up(&app, t, "k", "30").await;
    ok.assert(201);
    assert_eq!(m.charges().len(), 1);
    assert_eq!(app.balance(t).await["paid"], "30.00");
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_top_up_the_provider_never_answered_is_taken_over_and_answered_under_its_key() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    // An outage of three calls: the client's two, then the sweep's first.
    m.fail_next("pm_mock_ok", 3);
    top_up(&app, t, "k", "10").await.assert_error(503, "payment_provider_unavailable");
    top_up(&app, t, "k", "10").await.assert_error(503, "payment_provider_unavailable");
    assert_eq!(attempt_state(&app, t).await, (false, false, false), "waits for its client");

    // The client never comes back. A day later the sweep takes the attempt over and drives
    // it, with its one provider key, to the provider's final answer.
    sqlx::query("UPDATE top_ups SET last_attempt_at = now() - interval '2 days' WHERE tenant_id = $1")
        .bind(t)
        .execute(&app.pool)
        .await
        .unwrap();
    wait_until("the sweep to credit the top-up", Duration::from_secs(10), || async {
        top_ups_of(&app, t).await[0]["status"] == "succeeded"
    })
    .await;
    let calls = m.calls();
    assert_eq!(calls.len(), 4, "two by the client, an unavailable one and the success by the sweep");
    assert!(calls.iter().all(|c| c.request.idempotency_key == calls[0].request.idempotency_key), "one provider key");
    assert_eq!(m.charges().len(), 1);
    let events = events_of(&app, t).await;
    assert_eq!((count_type(&events, "top_up.succeeded"), count_type(&events, "top_up.failed")), (1, 0));

    // The client's key leads back to that answer.
    let answer = top_up(&app, t, "k", "10").await;
    answer.assert(201);
    assert_eq!(answer.headers["idempotent-replayed"], "true");
    assert_eq!((answer.str("status"), answer.body["attempts"].as_i64()), ("succeeded".into(), Some(4)));
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    assert_eq!(app.balance(t).await["paid"], "10.00");
    assert_eq!(m.calls().len(), 4, "a replay calls nobody");
    app.assert_ledger_ok().await;
}
