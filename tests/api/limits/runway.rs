//! The runway in the balance: 7-day net usage per day, and how long `available` lasts.

use serde_json::{json, Value};

use super::*;
use crate::helpers::*;

#[tokio::test]
async fn the_balance_shows_the_runway() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    assert_eq!(app.balance(t).await["runway"], json!({ "daily_burn": "0.00", "days_left": null, "basis_days": 7 }));

    app.state.clock.set(at("2030-04-01T12:00:00Z"));
    charge_key(&app, t, None, "10").await.assert(201);
    app.state.clock.set(at("2030-04-05T12:00:00Z"));
    let c = charge_key(&app, t, None, "5").await;
    c.assert(201);
    app.post_idem(&format!("/v1/charges/{}/refunds", c.id()), ADMIN, "r", json!({ "amount": "1", "reason": "x" }))
        .await
        .assert(201);
    // Net 14 over 7 days: 2.00 a day; 86 available → 43 days.
    let b = app.balance(t).await;
    assert_eq!(b["available"], "86.00");
    assert_eq!(b["runway"], json!({ "daily_burn": "2.00", "days_left": 43.0, "basis_days": 7 }));
    // Holds are not usage until captured, but they lower `available`.
    hold_key(&app, t, None, "1.5", 600).await.assert(201);
    assert_eq!(app.balance(t).await["runway"]["days_left"], json!(42.2), "84.5 / 2 = 42.25, rounded down");
    // The first charge leaves the 7 days: only 4 net remain (0.571429 a day).
    app.state.clock.set(at("2030-04-08T12:00:01Z"));
    let r = &app.balance(t).await["runway"];
    assert_eq!(r["daily_burn"], "0.571429");
    assert_eq!(r["days_left"], json!(147.8), "84.5 / 0.571429 = 147.87…");
    app.state.clock.set(at("2030-04-20T00:00:00Z"));
    assert_eq!(app.balance(t).await["runway"]["days_left"], Value::Null);
    app.assert_ledger_ok().await;
}
