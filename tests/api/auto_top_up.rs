//! Auto top-up: settings, the rules of one attempt, and exactly-once behaviour under two
//! replicas, provider outages, slowness, a crash mid-attempt and an always-declining card.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::top_ups::{count_type, events_of, fast, mock_of, set_card, top_ups_of, wait_until};

async fn enable(app: &TestApp, t: Uuid, threshold: &str, amount: &str, limit: Option<&str>) -> Resp {
    app.put(
        &format!("/v1/tenants/{t}/auto-top-up"),
        ADMIN,
        json!({ "enabled": true, "threshold": threshold, "amount": amount, "monthly_limit": limit }),
    )
    .await
}

async fn settings(app: &TestApp, t: Uuid) -> Value {
    let r = app.get(&format!("/v1/tenants/{t}/auto-top-up"), ADMIN).await;
    r.assert(200);
    r.body
}

async fn succeeded(app: &TestApp, t: Uuid) -> usize {
    top_ups_of(app, t).await.iter().filter(|u| u["status"] == "succeeded").count()
}

#[tokio::test]
async fn settings_are_validated_read_back_and_disabled() {
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let path = format!("/v1/tenants/{t}/auto-top-up");
    let none = settings(&app, t).await;
    assert_eq!((none["enabled"].as_bool(), none["state"].as_str()), (Some(false), Some("disabled")));
    enable(&app, t, "10", "20", None).await.assert_error(422, "unprocessable");
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    enable(&app, t, "10", "3", None).await.assert_error(400, "invalid_request");
    enable(&app, t, "10", "20.50", None).await.assert_error(400, "invalid_request");
    enable(&app, t, "0", "20", None).await.assert_error(400, "invalid_request");
    enable(&app, t, "10", "20", Some("10")).await.assert_error(400, "invalid_request");
    app.put(&path, ADMIN, json!({ "enabled": true, "threshold": "10", "amount": "20", "every": "day" }))
        .await
        .assert_error(400, "invalid_request");
    enable(&app, Uuid::now_v7(), "10", "20", None).await.assert_error(404, "not_found");

    let on = enable(&app, t, "10", "20", Some("200")).await;
    on.assert(200);
    assert_eq!(on.body["enabled"], true);
    assert_eq!(
        (on.body["threshold"].as_str(), on.body["amount"].as_str(), on.body["monthly_limit"].as_str()),
        (Some("10.00"), Some("20.00"), Some("200.00"))
    );
    assert_eq!((on.body["state"].as_str(), on.body["consecutive_failures"].as_i64()), (Some("idle"), Some(0)));
    assert!(on.body["last_attempt"].is_null() && on.body["disabled_reason"].is_null());
    assert_eq!(on.body["spent_this_month"], "0.00");
    let b = app.balance(t).await;
    assert_eq!(b["auto_top_up"], json!({ "enabled": true, "threshold": "10.00", "amount": "20.00", "state": "idle" }));

    let service = app.service_token().await;
    app.get(&path, &service).await.assert_error(403, "forbidden");
    let other = app.create_tenant("b").await;
    let (_, other_key) = app.tenant_key(other).await;
    app.get(&path, &other_key).await.assert_error(404, "not_found");
    let (_, own_key) = app.tenant_key(t).await;
    app.get(&path, &own_key).await.assert(200);

    let del = app.delete(&path, ADMIN).await;
    del.assert(204);
    assert!(del.text.is_empty());
    let off = settings(&app, t).await;
    assert_eq!((off["enabled"].as_bool(), off["state"].as_str()), (Some(false), Some("disabled")));
    assert_eq!(off["threshold"], "10.00", "the settings are kept, only disabled");
    assert!(top_ups_of(&app, t).await.is_empty());
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn enabling_below_the_threshold_charges_whole_multiples_within_the_monthly_limit() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
    })
    .await;
    let t = app.create_tenant("a").await;
    app.fund(t, "3").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    enable(&app, t, "50", "20", None).await.assert(200);
    wait_until("the auto top-up", Duration::from_secs(5), || async { succeeded(&app, t).await == 1 }).await;
    let up = &top_ups_of(&app, t).await[0];
    assert_eq!((up["source"].as_str(), up["amount"].as_str()), (Some("auto"), Some("60.00")), "3 + 3 × 20 ≥ 50");
    assert_eq!(up["bonus_amount"], "6.00", "an auto top-up earns the bonus too");
    let b = app.balance(t).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("63.00"), Some("6.00")));
    let s = settings(&app, t).await;
    assert_eq!((s["state"].as_str(), s["spent_this_month"].as_str()), (Some("idle"), Some("60.00")));
    assert_eq!(
        (s["last_attempt"]["status"].as_str(), s["last_attempt"]["amount"].as_str()),
        (Some("succeeded"), Some("60.00"))
    );

    // A monthly limit caps an attempt at the whole multiples that still fit.
    let capped = app.create_tenant("b").await;
    set_card(&app, capped, "pm_mock_ok").await.assert(200);
    enable(&app, capped, "100", "20", Some("40")).await.assert(200);
    wait_until("the capped auto top-up", Duration::from_secs(5), || async { succeeded(&app, capped).await == 1 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ups = top_ups_of(&app, capped).await;
    assert_eq!(ups.len(), 1, "the limit is spent: no further attempt");
    assert_eq!(ups[0]["amount"], "40.00");
    assert_eq!(settings(&app, capped).await["spent_this_month"], "40.00");
    assert_eq!(mock_of(&app).charges().len(), 2);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn two_replicas_and_100_concurrent_charges_make_one_provider_charge() {
    // A provider that takes 400 ms to answer (within the time limit) keeps the attempt in
    // flight while the charges, the wake-ups and both replicas' sweeps go on.
    let slow_but_in_time = |c: &mut tally::config::Config| {
        fast(c);
        c.mock_slow_delay = Duration::from_millis(400);
        c.payment_timeout = Duration::from_millis(2000);
    };
    let a = TestApp::spawn_with(slow_but_in_time).await;
    let m = mock_of(&a);
    let shared = m.clone();
    let b = TestApp::spawn_sharing(a.db.clone(), Some(shared), slow_but_in_time).await;
    let t = a.create_tenant("busy").await;
    a.fund(t, "30").await;
    set_card(&a, t, "pm_mock_slow").await.assert(200);
    enable(&a, t, "29.5", "50", None).await.assert(200);

    // 100 charges of 0.10 through both replicas, in four bursts of 25: the sixth crosses the
    // threshold, and every later batch on either replica wakes its worker again while the
    // attempt is in flight.
    for burst in 0..4 {
        let calls = (0..25).map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            app.charge(t, "0.10")
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| r.status == 201), "burst {burst}: every charge fits");
    }

    wait_until("the top-up to be credited", Duration::from_secs(5), || async { succeeded(&a, t).await == 1 }).await;
    // Give both workers every chance to (wrongly) start a second attempt.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(m.calls().len(), 1, "exactly one provider call");
    assert_eq!(m.charges().len(), 1, "exactly one charge");
    let ups = top_ups_of(&a, t).await;
    assert_eq!(ups.len(), 1);
    assert_eq!((ups[0]["source"].as_str(), ups[0]["amount"].as_str()), (Some("auto"), Some("50.00")));
    let bal = a.balance(t).await;
    assert_eq!(bal["available"], "70.00", "30 - 10 + 50");
    let events = events_of(&a, t).await;
    assert_eq!(count_type(&events, "balance.low"), 1, "one crossing, one event");
    assert_eq!(count_type(&events, "top_up.succeeded"), 1);
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_unavailable_provider_is_retried_with_the_same_key_until_it_recovers() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    m.fail_next("pm_mock_ok", 2);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    enable(&app, t, "10", "20", None).await.assert(200);
    wait_until("recovery", Duration::from_secs(5), || async { succeeded(&app, t).await == 1 }).await;
    let calls = m.calls();
    assert_eq!(calls.len(), 3, "two unavailable answers, then the charge");
    assert!(
        calls.iter().all(|c| c.request.idempotency_key == calls[0].request.idempotency_key),
        "one attempt, one key"
    );
    assert_eq!(m.charges().len(), 1);
    let ups = top_ups_of(&app, t).await;
    assert_eq!((ups.len(), ups[0]["attempts"].as_i64()), (1, Some(3)));
    let s = settings(&app, t).await;
    assert_eq!(
        (s["state"].as_str(), s["consecutive_failures"].as_i64()),
        (Some("idle"), Some(0)),
        "unavailable is not a decline"
    );
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.failed"), 0);
    assert_eq!(app.balance(t).await["paid"], "20.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_provider_slower_than_the_timeout_charges_once() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    set_card(&app, t, "pm_mock_slow").await.assert(200);
    enable(&app, t, "10", "20", None).await.assert(200);
    wait_until("the attempt to start", Duration::from_secs(5), || async { !m.calls().is_empty() }).await;
    // While it is in flight, a refused charge says so.
    let refused = app.charge(t, "100").await;
    refused.assert_error(402, "insufficient_funds");
    assert_eq!(refused.body["auto_top_up"], json!({ "enabled": true, "in_flight": true }));
    wait_until("the re-driven attempt", Duration::from_secs(10), || async { succeeded(&app, t).await == 1 }).await;
    assert_eq!(m.charges().len(), 1, "timed out, re-driven with the same key: one charge");
    assert!(m.calls().len() >= 2);
    assert!(m.calls().iter().all(|c| c.request.idempotency_key == m.charges()[0].idempotency_key));
    assert_eq!(app.balance(t).await["paid"], "25.00");
    assert_eq!(top_ups_of(&app, t).await.len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_instance_killed_between_the_charge_and_its_record_is_recovered_by_another() {
    let mut a = TestApp::spawn_with(fast).await;
    let m = mock_of(&a);
    a.state.faults.stop_after_charge.store(true, std::sync::atomic::Ordering::SeqCst);
    let t = a.create_tenant("a").await;
    a.fund(t, "5").await;
    set_card(&a, t, "pm_mock_ok").await.assert(200);
    enable(&a, t, "10", "20", None).await.assert(200);
    wait_until("the charge", Duration::from_secs(5), || async { m.charges().len() == 1 }).await;
    a.shutdown().await;
    let (status, paid): (String, rust_decimal::Decimal) = sqlx::query_as(
        "SELECT u.status, b.paid FROM top_ups u JOIN balances b ON b.tenant_id = u.tenant_id WHERE u.tenant_id = $1",
    )
    .bind(t)
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), paid.to_string().as_str()), ("pending", "5.000000"), "charged, but nothing recorded");

    let shared = m.clone();
    let b = TestApp::spawn_sharing(a.db.clone(), Some(shared), fast).await;
    wait_until("the fresh instance to finish the attempt", Duration::from_secs(5), || async {
        succeeded(&b, t).await == 1
    })
    .await;
    assert_eq!(m.charges().len(), 1, "the provider was never charged twice");
    let calls = m.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].request.idempotency_key, calls[1].request.idempotency_key, "re-driven with the same key");
    let ups = top_ups_of(&b, t).await;
    assert_eq!((ups.len(), ups[0]["attempts"].as_i64()), (1, Some(2)));
    assert_eq!(b.balance(t).await["paid"], "25.00", "exactly one credit");
    b.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_always_declining_card_backs_off_and_stops_after_three() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_declined").await.assert(200);
    enable(&app, t, "10", "20", None).await.assert(200);
    wait_until("auto top-up to disable itself", Duration::from_secs(5), || async {
        settings(&app, t).await["state"] == "disabled"
    })
    .await;
    // Well past every back-off: nothing more is tried.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = m.calls();
    assert_eq!(calls.len(), 3, "three declines, then no more calls");
    for pair in calls.windows(2) {
        assert!(pair[1].at - pair[0].at >= chrono::Duration::milliseconds(45), "attempts back off");
    }
    assert!(calls[2].at - calls[1].at > calls[1].at - calls[0].at, "the back-off grows");
    let s = settings(&app, t).await;
    assert_eq!((s["enabled"].as_bool(), s["consecutive_failures"].as_i64()), (Some(false), Some(3)));
    assert!(s["disabled_reason"].as_str().unwrap().contains("3 consecutive declined"));
    assert_eq!((s["last_attempt"]["status"].as_str(), s["spent_this_month"].as_str()), (Some("failed"), Some("0.00")));
    let events = events_of(&app, t).await;
    assert_eq!(count_type(&events, "auto_top_up.disabled"), 1);
    assert_eq!(count_type(&events, "top_up.failed"), 3);
    let disabled = events.iter().find(|e| e["type"] == "auto_top_up.disabled").unwrap();
    assert_eq!(disabled["data"]["consecutive_failures"], 3);
    assert_eq!(top_ups_of(&app, t).await.len(), 3);
    // Turning it on again starts afresh.
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    let again = enable(&app, t, "10", "20", None).await;
    again.assert(200);
    assert!(again.body["disabled_reason"].is_null());
    wait_until("a fresh attempt", Duration::from_secs(5), || async { succeeded(&app, t).await == 1 }).await;
    assert_eq!(settings(&app, t).await["consecutive_failures"], 0);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_threshold_far_above_the_maximum_is_closed_by_attempts_each_within_it() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_max = "100".parse().unwrap();
    })
    .await;
    let m = mock_of(&app);
    let max: rust_decimal::Decimal = "100".parse().unwrap();
    let amounts = |ups: Vec<Value>| -> Vec<String> {
        let mut v: Vec<String> = ups.iter().map(|u| u["amount"].as_str().unwrap().to_string()).collect();
        v.reverse(); // oldest first
        v
    };

    // No monthly limit: 500 to reach in units of 30, at most 90 (3 × 30) per charge.
    let t = app.create_tenant("a").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    enable(&app, t, "500", "30", None).await.assert(200);
    wait_until("the threshold to be reached", Duration::from_secs(10), || async {
        app.balance(t).await["paid"] == "510.00"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        amounts(top_ups_of(&app, t).await),
        ["90.00", "90.00", "90.00", "90.00", "90.00", "60.00"],
        "the largest whole multiple under the maximum, then what closes the gap"
    );
    assert_eq!(succeeded(&app, t).await, 6);

    // The reviewer's settings (threshold 500000, amount 10) are accepted, and each charge
    // stays within the maximum; the monthly limit still caps the total.
    let r = app.create_tenant("b").await;
    set_card(&app, r, "pm_mock_ok").await.assert(200);
    enable(&app, r, "500000", "10", Some("250")).await.assert(200);
    wait_until("the monthly limit to be spent", Duration::from_secs(10), || async {
        settings(&app, r).await["spent_this_month"] == "250.00"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(amounts(top_ups_of(&app, r).await), ["100.00", "100.00", "50.00"]);
    assert_eq!(app.balance(r).await["paid"], "250.00");

    let charges = m.charges();
    assert_eq!(charges.len(), 9, "one charge per attempt");
    assert!(charges.iter().all(|c| c.amount.as_decimal() <= max), "every provider charge is within the maximum");
    assert_eq!(m.calls().len(), 9);
    app.assert_ledger_ok().await;
}
