//! Group commit: one database transaction for many charges of one tenant, each still
//! decided alone, in order.

use std::sync::Arc;

use serde_json::json;
use tally::idempotency::{fingerprint, Claim, IdempotencyKey, Side};
use tally::services::spend::batch::{self, Item, Price, Spend, SpendKind};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::*;

fn item(
    tenant: Uuid,
    amount: &str,
    key: &str,
    description: Option<&str>,
) -> (Item, oneshot::Receiver<tally::error::AppResult<tally::idempotency::Stored>>) {
    let (reply, rx) = oneshot::channel();
    let spend = Spend {
        tenant_id: tenant,
        kind: SpendKind::Charge { metadata: None },
        price: Price::Amount(amount.parse().unwrap()),
        description: description.map(String::from),
        api_key_id: None,
    };
    let fp = fingerprint("charge", &json!({ "tenant_id": tenant, "amount": amount }));
    let claim = Claim { tenant, side: Side::Platform, key: IdempotencyKey(key.into()), fp };
    (Item { spend, claim, reply }, rx)
}

async fn status(rx: oneshot::Receiver<tally::error::AppResult<tally::idempotency::Stored>>) -> (u16, String) {
    match rx.await.unwrap() {
        Ok(s) => (s.status.as_u16(), if s.replayed { "replayed".into() } else { String::from_utf8(s.body).unwrap() }),
        Err(e) => (e.status().as_u16(), e.code().to_string()),
    }
}

#[tokio::test]
async fn one_batch_mixes_successes_refusals_replays_and_duplicates() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("hot").await;
    app.fund(t, "3").await;
    // A key used before: its charge must be replayed, not applied again.
    let (first, rx) = item(t, "0.5", "seen", None);
    batch::run(&app.state.frame, app.state.config.credits_per_usd, vec![first]).await;
    assert_eq!(status(rx).await.0, 201);

    let mut items = Vec::new();
    let mut rxs = Vec::new();
    for (amount, key) in [("1", "a"), ("2", "b"), ("0.5", "seen"), ("1", "c"), ("1", "c"), ("0.25", "d")] {
        let (i, rx) = item(t, amount, key, None);
        items.push(i);
        rxs.push(rx);
    }
    batch::run(&app.state.frame, app.state.config.credits_per_usd, items).await;
    let mut got = Vec::new();
    for rx in rxs {
        got.push(status(rx).await);
    }
    let codes: Vec<(u16, &str)> = got.iter().map(|(s, b)| (*s, if *s == 201 { "" } else { b.as_str() })).collect();
    // 2.50 left: a (1) fits, b (2) does not, seen is a replay, c (1) fits, its twin is in flight, d (0.25) fits.
    assert_eq!(
        codes,
        vec![(201, ""), (402, "insufficient_funds"), (201, ""), (201, ""), (409, "request_in_progress"), (201, "")]
    );
    assert_eq!(got[2].1, "replayed");
    let after_a: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    let after_d: serde_json::Value = serde_json::from_str(&got[5].1).unwrap();
    assert_eq!(after_a["balance"]["available"], "1.50", "each decision sees the ones before it");
    assert_eq!(after_d["balance"]["available"], "0.25");
    assert_eq!(app.balance(t).await["available"], "0.25");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM charges WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 4);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_failing_item_does_not_fail_its_batch() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("hot").await;
    app.fund(t, "10").await;
    // Postgres refuses a NUL byte in text: that item's insert fails the batch transaction,
    // and the batch is retried item by item.
    let (good1, rx1) = item(t, "1", "g1", Some("fine"));
    let (bad, rx2) = item(t, "1", "bad", Some("nul \u{0} byte"));
    let (good2, rx3) = item(t, "1", "g2", None);
    batch::run(&app.state.frame, app.state.config.credits_per_usd, vec![good1, bad, good2]).await;
    assert_eq!(status(rx1).await.0, 201);
    assert_eq!(status(rx2).await.0, 500);
    assert_eq!(status(rx3).await.0, 201);
    assert_eq!(app.balance(t).await["available"], "8.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_while_others_commit() {
    let app = Arc::new(TestApp::spawn().await);
    let busy = app.create_tenant("busy").await;
    let frozen = app.create_tenant("frozen").await;
    app.fund(busy, "100").await;
    app.fund(frozen, "100").await;
    app.patch(&format!("/v1/tenants/{frozen}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);
    let calls = (0..40).map(|i| {
        let app = app.clone();
        let tenant = if i % 4 == 0 { frozen } else { busy };
        async move { (tenant, app.charge(tenant, "1").await) }
    });
    for (tenant, r) in futures::future::join_all(calls).await {
        if tenant == frozen {
            r.assert_error(403, "forbidden");
        } else {
            r.assert(201);
        }
    }
    assert_eq!(app.balance(busy).await["available"], "70.00");
    assert_eq!(app.balance(frozen).await["available"], "100.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn charges_from_two_replicas_on_one_tenant_stay_exact() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), |_| {}).await;
    let t = a.create_tenant("shared").await;
    a.fund(t, "30").await;
    let calls = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.charge(t, "1")
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 30);
    assert_eq!(results.iter().filter(|r| r.status == 402).count(), 20);
    assert_eq!(a.balance(t).await["available"], "0.00");
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn work_after_the_commit_never_fails_a_committed_batch() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("hot").await;
    app.fund(t, "3").await;
    // Every after-commit step fails from now on.
    app.state.faults.fail_after_commit.store(true, std::sync::atomic::Ordering::SeqCst);
    let (fits, rx1) = item(t, "2", "fits", None);
    let (refused, rx2) = item(t, "2", "refused", None);
    let (also, rx3) = item(t, "0.5", "also", None);
    batch::run(&app.state.frame, app.state.config.credits_per_usd, vec![fits, refused, also]).await;
    let (s1, b1) = status(rx1).await;
    assert_eq!(s1, 201);
    assert_ne!(b1, "replayed", "answered as committed, not re-run and replayed");
    let first: serde_json::Value = serde_json::from_str(&b1).unwrap();
    assert_eq!(first["balance"]["available"], "1.00");
    assert_eq!(status(rx2).await, (402, "insufficient_funds".into()), "refused as decided, against 1.00");
    let (s3, b3) = status(rx3).await;
    assert_eq!((s3, b3 != "replayed"), (201, true));
    // Single movements too: the charge and the adjustment stand.
    app.charge(t, "0.25").await.assert(201);
    app.fund(t, "1").await;
    assert_eq!(app.balance(t).await["available"], "1.25");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM charges WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 3);
    app.assert_ledger_ok().await;
}
