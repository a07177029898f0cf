//! Window boundaries, with the application clock set: UTC days, weeks from Monday, months
//! from the 1st.

use serde_json::json;

use super::*;
use crate::helpers::*;

#[tokio::test]
async fn a_charge_at_23_59_59_and_one_at_midnight_fall_in_different_days() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "1.00", "day").await;
    app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "1.50" })).await.assert(200);

    app.state.clock.set(at("2030-01-01T23:59:59Z"));
    charge_key(&app, t, Some(key), "1.00").await.assert(201);
    let r = charge_key(&app, t, Some(key), "0.01").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!(r.body["resets_at"], "2030-01-02T00:00:00Z");
    let r = charge_key(&app, t, None, "0.51").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!((r.body["scope"].as_str(), r.body["spent"].as_str()), (Some("tenant"), Some("1.00")));
    charge_key(&app, t, None, "0.50").await.assert(201);
    let v = key_view(&app, t, key).await;
    assert_eq!(
        (v["spent_in_window"].as_str(), v["window_resets_at"].as_str()),
        (Some("1.00"), Some("2030-01-02T00:00:00Z"))
    );

    app.state.clock.set(at("2030-01-02T00:00:00Z"));
    let v = key_view(&app, t, key).await;
    assert_eq!(
        (v["spent_in_window"].as_str(), v["window_resets_at"].as_str()),
        (Some("0.00"), Some("2030-01-03T00:00:00Z"))
    );
    assert_eq!(
        tenant_limits(&app, t).await["day"],
        json!({ "limit": "1.50", "spent": "0.00", "resets_at": "2030-01-03T00:00:00Z" })
    );
    charge_key(&app, t, Some(key), "1.00").await.assert(201);
    charge_key(&app, t, None, "0.50").await.assert(201);
    charge_key(&app, t, None, "0.01").await.assert_error(402, "spend_limit_exceeded");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_week_starts_on_monday() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "1.00", "week").await;
    // Monday 2029-12-31: the week runs across the new year.
    app.state.clock.set(at("2029-12-31T00:00:00Z"));
    charge_key(&app, t, Some(key), "0.60").await.assert(201);
    app.state.clock.set(at("2030-01-06T23:59:59Z"));
    let r = charge_key(&app, t, Some(key), "0.50").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!((r.body["window"].as_str(), r.body["resets_at"].as_str()), (Some("week"), Some("2030-01-07T00:00:00Z")));
    charge_key(&app, t, Some(key), "0.40").await.assert(201);
    app.state.clock.set(at("2030-01-07T00:00:00Z"));
    charge_key(&app, t, Some(key), "1.00").await.assert(201);
    let v = key_view(&app, t, key).await;
    assert_eq!(
        (v["spent_in_window"].as_str(), v["window_resets_at"].as_str()),
        (Some("1.00"), Some("2030-01-14T00:00:00Z"))
    );
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_month_rolls_on_the_first() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "1.00", "month").await;
    app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "month": "1.50" })).await.assert(200);
    app.state.clock.set(at("2030-01-01T00:00:00Z"));
    charge_key(&app, t, Some(key), "0.70").await.assert(201);
    app.state.clock.set(at("2030-01-31T23:59:59Z"));
    let r = charge_key(&app, t, Some(key), "0.40").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!(
        (r.body["scope"].as_str(), r.body["resets_at"].as_str()),
        (Some("api_key"), Some("2030-02-01T00:00:00Z"))
    );
    charge_key(&app, t, None, "0.80").await.assert(201);
    let r = charge_key(&app, t, None, "0.01").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!((r.body["scope"].as_str(), r.body["window"].as_str()), (Some("tenant"), Some("month")));
    app.state.clock.set(at("2030-02-01T00:00:00Z"));
    charge_key(&app, t, Some(key), "1.00").await.assert(201);
    let m = &tenant_limits(&app, t).await["month"];
    assert_eq!((m["spent"].as_str(), m["resets_at"].as_str()), (Some("1.00"), Some("2030-03-01T00:00:00Z")));
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}
