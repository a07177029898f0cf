//! Holds count while active; a capture keeps what it took and gives back the rest; a
//! release or an expiry gives all of it back; a refund gives back to the window the
//! charge counted in, if that window is still current.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::helpers::*;
use crate::top_ups::wait_until;

#[tokio::test]
async fn an_active_hold_counts_and_a_release_gives_it_all_back() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "day").await;
    let h = hold_key(&app, t, Some(key), "6", 600).await;
    h.assert(201);
    assert_eq!(key_spent(&app, t, key).await, "6.00");
    let r = charge_key(&app, t, Some(key), "5").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!(r.body["spent"], "6.00");
    // Another hold is decided against the same counter.
    hold_key(&app, t, Some(key), "4.01", 600).await.assert_error(402, "spend_limit_exceeded");
    app.post(&format!("/v1/holds/{}/release", h.id()), ADMIN, json!({})).await.assert(200);
    assert_eq!(key_spent(&app, t, key).await, "0.00");
    charge_key(&app, t, Some(key), "10").await.assert(201);
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_capture_keeps_what_it_took_and_gives_back_the_rest() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "week").await;
    app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "20.00", "month": "30.00" }))
        .await
        .assert(200);
    let h = hold_key(&app, t, Some(key), "8", 600).await;
    h.assert(201);
    assert_eq!(tenant_limits(&app, t).await["day"]["spent"], "8.00");
    let c = app.post_idem(&format!("/v1/holds/{}/capture", h.id()), ADMIN, "cap", json!({ "amount": "2.5" })).await;
    c.assert(201);
    assert_eq!(key_spent(&app, t, key).await, "2.50");
    let limits = tenant_limits(&app, t).await;
    assert_eq!((limits["day"]["spent"].as_str(), limits["month"]["spent"].as_str()), (Some("2.50"), Some("2.50")));
    // A replayed capture gives back nothing more.
    app.post_idem(&format!("/v1/holds/{}/capture", h.id()), ADMIN, "cap", json!({ "amount": "2.5" })).await.assert(201);
    assert_eq!(key_spent(&app, t, key).await, "2.50");
    charge_key(&app, t, Some(key), "7.50").await.assert(201);
    charge_key(&app, t, Some(key), "0.01").await.assert_error(402, "spend_limit_exceeded");
    // A whole capture gives nothing back.
    let key2 = limited_key(&app, t, "5.00", "day").await;
    let h2 = hold_key(&app, t, Some(key2), "5", 600).await;
    app.post_idem(&format!("/v1/holds/{}/capture", h2.id()), ADMIN, "cap2", json!({})).await.assert(201);
    assert_eq!(key_spent(&app, t, key2).await, "5.00");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_expired_hold_gives_it_all_back() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "month").await;
    app.state.clock.set(at("2030-05-10T12:00:00Z"));
    let h = hold_key(&app, t, Some(key), "9", 60).await;
    h.assert(201);
    charge_key(&app, t, Some(key), "2").await.assert_error(402, "spend_limit_exceeded");
    // The expiry worker runs by the same clock: move it past the hold's expiry.
    app.state.clock.set(at("2030-05-10T12:01:01Z"));
    let path = format!("/v1/holds/{}", h.id());
    wait_until("the hold expires", Duration::from_secs(10), || async {
        app.get(&path, ADMIN).await.body["status"] == "expired"
    })
    .await;
    assert_eq!(key_spent(&app, t, key).await, "0.00");
    charge_key(&app, t, Some(key), "10").await.assert(201);
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_hold_resolved_in_a_later_window_gives_back_only_to_windows_still_current() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "5.00", "month": "8.00" }))
        .await
        .assert(200);
    app.state.clock.set(at("2030-03-04T23:59:00Z"));
    let released = hold_key(&app, t, None, "3", 3600).await;
    let captured = hold_key(&app, t, None, "2", 3600).await;
    app.state.clock.set(at("2030-03-05T00:00:30Z"));
    app.post(&format!("/v1/holds/{}/release", released.id()), ADMIN, json!({})).await.assert(200);
    app.post_idem(&format!("/v1/holds/{}/capture", captured.id()), ADMIN, "c", json!({ "amount": "1" }))
        .await
        .assert(201);
    // The day the holds counted in has reset: today owes nothing to it. The month is still
    // current: it got back the release and the uncaptured part (5 - 3 - 1 = 1 counted).
    let limits = tenant_limits(&app, t).await;
    assert_eq!((limits["day"]["spent"].as_str(), limits["month"]["spent"].as_str()), (Some("0.00"), Some("1.00")));
    charge_key(&app, t, None, "5").await.assert(201);
    charge_key(&app, t, None, "2.01").await.assert_error(402, "spend_limit_exceeded");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

async fn refund(app: &TestApp, charge: uuid::Uuid, amount: &str, key: &str) -> Resp {
    let body = json!({ "amount": amount, "reason": "bad output" });
    app.post_idem(&format!("/v1/charges/{charge}/refunds"), ADMIN, key, body).await
}

#[tokio::test]
async fn a_refund_gives_back_to_the_window_the_charge_counted_in_while_it_is_current() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "day").await;
    app.state.clock.set(at("2030-06-01T10:00:00Z"));
    let c1 = charge_key(&app, t, Some(key), "4").await;
    c1.assert(201);
    refund(&app, c1.id(), "3", "r1").await.assert(201);
    assert_eq!(key_spent(&app, t, key).await, "1.00");
    let c2 = charge_key(&app, t, Some(key), "9").await;
    c2.assert(201);
    // The next day: a refund of yesterday's charge does not free today's window.
    app.state.clock.set(at("2030-06-02T10:00:00Z"));
    charge_key(&app, t, Some(key), "6").await.assert(201);
    refund(&app, c2.id(), "9", "r2").await.assert(201);
    assert_eq!(key_spent(&app, t, key).await, "6.00");
    charge_key(&app, t, Some(key), "4.01").await.assert_error(402, "spend_limit_exceeded");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_refund_of_a_capture_gives_back_to_the_hold_s_window() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "day").await;
    app.state.clock.set(at("2030-06-01T23:00:00Z"));
    let h = hold_key(&app, t, Some(key), "4", 7200).await;
    app.state.clock.set(at("2030-06-02T00:30:00Z"));
    let c = app.post_idem(&format!("/v1/holds/{}/capture", h.id()), ADMIN, "c", json!({})).await;
    c.assert(201);
    charge_key(&app, t, Some(key), "10").await.assert(201);
    // The capture counted on June 1 (when its hold was placed): its refund frees nothing today.
    app.post_idem(&format!("/v1/charges/{}/refunds", c.id()), ADMIN, "r", json!({ "reason": "x" })).await.assert(201);
    assert_eq!(key_spent(&app, t, key).await, "10.00");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}
