//! A limit is never exceeded by concurrent charges, on one service or on two replicas
//! sharing a database.

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::helpers::*;

/// Sends `n` charges of `amount` naming `key` at once, spread over `apps`; returns the
/// responses.
async fn charge_storm(apps: &[&TestApp], t: Uuid, key: Uuid, n: usize, amount: &str) -> Vec<Resp> {
    let token = apps[0].service_token().await;
    let calls = (0..n).map(|i| {
        let app = apps[i % apps.len()];
        let body = json!({ "tenant_id": t, "amount": amount, "api_key_id": key });
        let token = token.clone();
        async move { app.post_idem("/v1/charges", &token, &format!("storm-{i}"), body).await }
    });
    futures::future::join_all(calls).await
}

fn tally(rs: &[Resp]) -> (usize, usize) {
    let ok = rs.iter().filter(|r| r.status == 201).count();
    let refused = rs.iter().filter(|r| r.status == 402 && r.body["code"] == "spend_limit_exceeded").count();
    (ok, refused)
}

#[tokio::test]
async fn forty_concurrent_halves_against_a_key_limit_of_ten() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "day").await;
    let rs = charge_storm(&[&app], t, key, 40, "0.50").await;
    assert_eq!(tally(&rs), (20, 20), "{:?}", rs.iter().map(|r| &r.text).collect::<Vec<_>>());
    let refusal = rs.iter().find(|r| r.status == 402).unwrap();
    refusal.assert_error(402, "spend_limit_exceeded");
    let b = &refusal.body;
    assert_eq!((b["scope"].as_str(), b["window"].as_str()), (Some("api_key"), Some("day")));
    assert_eq!(
        (b["limit"].as_str(), b["spent"].as_str(), b["required"].as_str()),
        (Some("10.00"), Some("10.00"), Some("0.50"))
    );
    assert_eq!((b["currency"].as_str(), b["api_key_id"].as_str()), (Some("USD"), Some(key.to_string().as_str())));
    let tomorrow = (app.state.clock.now().date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    assert_eq!(b["resets_at"].as_str().map(at), Some(tomorrow));
    assert_eq!(refusal.headers.get("idempotent-replayed"), None);

    // Money and the counter agree: 10.00 charged, 90.00 left, 10.00 spent in the window.
    assert_eq!(app.balance(t).await["available"], "90.00");
    assert_eq!(key_spent(&app, t, key).await, "10.00");
    let events = limit_events(&app, t).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["spend_limit.warning", "spend_limit.reached"], "each once");
    // A refused request recorded nothing: its key can be retried and runs again.
    let retry = app
        .post_idem("/v1/charges", ADMIN, "storm-late", json!({ "tenant_id": t, "amount": "0.50", "api_key_id": key }))
        .await;
    retry.assert_error(402, "spend_limit_exceeded");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn two_replicas_on_one_database_share_the_limit() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), |_| {}).await;
    let t = a.create_tenant("a").await;
    a.fund(t, "100").await;
    let key = limited_key(&a, t, "10.00", "month").await;
    let rs = charge_storm(&[&a, &b], t, key, 40, "0.50").await;
    assert_eq!(tally(&rs), (20, 20));
    // Both replicas decided: each answered its half with a charge or the limit's refusal
    // (which replica wins the race to the last cents is up to the scheduler).
    for (i, name) in [(0, "a"), (1, "b")] {
        let mine: Vec<&Resp> = rs.iter().skip(i).step_by(2).collect();
        assert_eq!(mine.len(), 20, "replica {name}");
        assert!(
            mine.iter().all(|r| r.status == 201 || r.status == 402),
            "replica {name}: {:?}",
            mine.iter().map(|r| r.status).collect::<Vec<_>>()
        );
    }
    assert_eq!(a.balance(t).await["available"], "90.00");
    assert_eq!(key_spent(&b, t, key).await, "10.00");
    assert_eq!(limit_events(&a, t).await.len(), 2);
    assert_counters_match_history(&a, t).await;
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_tenant_limit_holds_across_keys_and_replicas() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), |_| {}).await;
    let t = a.create_tenant("a").await;
    a.fund(t, "100").await;
    a.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "7.00" })).await.assert(200);
    let (k1, k2) = (limited_key(&a, t, "100.00", "week").await, key_with(&a, t, json!(null), json!(null)).await);
    let token = a.service_token().await;
    let calls = (0..30).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let key = [Some(k1), Some(k2), None][i % 3];
        let body = json!({ "tenant_id": t, "amount": "0.50", "api_key_id": key });
        let token = token.clone();
        async move { app.post_idem("/v1/charges", &token, &format!("c{i}"), body).await }
    });
    let rs = futures::future::join_all(calls).await;
    assert_eq!(tally(&rs), (14, 16));
    let refusal = rs.iter().find(|r| r.status == 402).unwrap();
    assert_eq!((refusal.body["scope"].as_str(), refusal.body["window"].as_str()), (Some("tenant"), Some("day")));
    assert!(refusal.body.get("api_key_id").is_none());
    assert_eq!(tenant_limits(&a, t).await["day"]["spent"], "7.00");
    assert_counters_match_history(&a, t).await;
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_balance_check_comes_first() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "3").await;
    let key = limited_key(&app, t, "2.00", "lifetime").await;
    // Fits neither: insufficient funds, and the limit is not marked as reached.
    charge_key(&app, t, Some(key), "5").await.assert_error(402, "insufficient_funds");
    assert!(limit_events(&app, t).await.is_empty());
    // Fits the balance, not the limit.
    let r = charge_key(&app, t, Some(key), "2.50").await;
    r.assert_error(402, "spend_limit_exceeded");
    assert_eq!(r.body["resets_at"], serde_json::Value::Null, "lifetime never resets");
    charge_key(&app, t, Some(key), "2.00").await.assert(201);
    assert_eq!(key_view(&app, t, key).await["window_resets_at"], serde_json::Value::Null);
    assert_eq!(app.balance(t).await["available"], "1.00");
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}
