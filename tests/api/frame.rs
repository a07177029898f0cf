//! The posting frame's promises seen from outside: the after-commit effects fire for every
//! movement that lowers `available`, idempotency keys live per side, and suspended tenants
//! start no top-up.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::top_ups::{count_type, events_of, fast, mock_of, set_card, top_up, top_ups_of, wait_until};

#[tokio::test]
async fn a_negative_adjustment_across_the_threshold_emits_balance_low_and_tops_up() {
    // No periodic sweep during the test: only the frame's after-commit wake-up can start
    // the attempt.
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.worker_interval = Duration::from_secs(3600);
    })
    .await;
    let t = app.create_tenant("a").await;
    app.fund(t, "30").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    let auto = json!({ "enabled": true, "threshold": "10", "amount": "20" });
    app.put(&format!("/v1/tenants/{t}/auto-top-up"), ADMIN, auto).await.assert(200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(top_ups_of(&app, t).await.is_empty(), "above the threshold: no attempt");

    app.post_idem(
        &format!("/v1/admin/tenants/{t}/adjustments"),
        ADMIN,
        "correction-1",
        json!({ "amount": "-25.00", "kind": "adjustment", "reason": "chargeback" }),
    )
    .await
    .assert(201);
    let events = events_of(&app, t).await;
    assert_eq!(count_type(&events, "balance.low"), 1, "30 → 5 crosses 10");
    let low = events.iter().find(|e| e["type"] == "balance.low").unwrap();
    assert_eq!(
        low["data"],
        json!({ "available": "5.00", "threshold": "10.00", "auto_top_up_enabled": true, "currency": "USD" })
    );
    wait_until("the auto top-up the adjustment woke", Duration::from_secs(5), || async {
        top_ups_of(&app, t).await.iter().any(|u| u["status"] == "succeeded")
    })
    .await;
    let ups = top_ups_of(&app, t).await;
    assert_eq!((ups.len(), ups[0]["source"].as_str(), ups[0]["amount"].as_str()), (1, Some("auto"), Some("20.00")));
    assert_eq!(app.balance(t).await["available"], "25.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_tenants_own_key_never_occupies_its_platforms_key() {
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let (_, own) = app.tenant_key(t).await;
    set_card(&app, t, "pm_mock_declined").await.assert(200);
    let top_ups = format!("/v1/tenants/{t}/top-ups");
    // With its own API key, the tenant stores a declined top-up under `job-42`.
    let declined = app.post_idem(&top_ups, &own, "job-42", json!({ "amount": "10" })).await;
    declined.assert_error(402, "payment_declined");

    // The backend's later charge with `job-42` is its own: applied and billed.
    let svc = app.service_token().await;
    let body = json!({ "tenant_id": t, "amount": "2.50" });
    let charge = app.post_idem("/v1/charges", &svc, "job-42", body.clone()).await;
    charge.assert(201);
    assert!(charge.headers.get("idempotent-replayed").is_none());
    assert_eq!(charge.body["cost"]["amount"], "2.50");
    assert_eq!(app.balance(t).await["available"], "7.50");

    // Each side replays its own answer; the platform's side is shared by service and admin tokens.
    let again = app.post_idem(&top_ups, &own, "job-42", json!({ "amount": "10" })).await;
    again.assert_error(402, "payment_declined");
    assert_eq!(
        (again.headers["idempotent-replayed"].to_str().unwrap(), again.text.as_str()),
        ("true", declined.text.as_str())
    );
    let replay = app.post_idem("/v1/charges", &svc, "job-42", body).await;
    assert_eq!(
        (replay.headers["idempotent-replayed"].to_str().unwrap(), replay.text.as_str()),
        ("true", charge.text.as_str())
    );
    app.post_idem("/v1/charges", ADMIN, "job-42", json!({ "tenant_id": t, "amount": "1" }))
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(app.balance(t).await["available"], "7.50", "billed once");
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM charges WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charges, 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_suspended_tenant_starts_no_top_up_manual_or_automatic() {
    let app = TestApp::spawn_with(fast).await;
    let m = mock_of(&app);
    let t = app.create_tenant("a").await;
    app.fund(t, "20").await;
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    let auto = json!({ "enabled": true, "threshold": "10", "amount": "20" });
    app.put(&format!("/v1/tenants/{t}/auto-top-up"), ADMIN, auto).await.assert(200);
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);

    top_up(&app, t, "manual-1", "10").await.assert_error(403, "forbidden");
    // Below the threshold while suspended: the wake-up and every sweep find nothing to do.
    app.post_idem(
        &format!("/v1/admin/tenants/{t}/adjustments"),
        ADMIN,
        "correction-1",
        json!({ "amount": "-15.00", "kind": "adjustment", "reason": "correction" }),
    )
    .await
    .assert(201);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(top_ups_of(&app, t).await.is_empty());
    assert!(m.calls().is_empty(), "the provider was never called");

    // Active again: the sweep tops it up, and a manual top-up works.
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "active" })).await.assert(200);
    wait_until("the auto top-up after reactivation", Duration::from_secs(5), || async {
        top_ups_of(&app, t).await.iter().any(|u| u["status"] == "succeeded")
    })
    .await;
    top_up(&app, t, "manual-1", "10").await.assert(201);
    assert_eq!(app.balance(t).await["paid"], "35.00", "5 + 20 automatic + 10 manual");
    app.assert_ledger_ok().await;
}
