//! Group commit across tenants: one database transaction for charges and holds of several
//! tenants, each tenant's items decided in arrival order against its own balance, each item
//! with its own answer.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tally::error::AppResult;
use tally::idempotency::{fingerprint, Claim, IdempotencyKey, Side, Stored};
use tally::services::spend::batch::{self, Item, Price, Spend, SpendKind};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::*;

type Rx = oneshot::Receiver<AppResult<Stored>>;

fn item(tenant: Uuid, amount: &str, key: &str, hold: bool) -> (Item, Rx) {
    let (reply, rx) = oneshot::channel();
    let kind = if hold {
        SpendKind::Hold { expires_at: Utc::now() + chrono::Duration::hours(1) }
    } else {
        SpendKind::Charge { metadata: None }
    };
    let spend = Spend {
        tenant_id: tenant,
        kind,
        price: Price::Amount(amount.parse().unwrap()),
        description: None,
        api_key_id: None,
    };
    let fp = fingerprint(if hold { "hold" } else { "charge" }, &json!({ "tenant_id": tenant, "amount": amount }));
    let claim = Claim { tenant, side: Side::Platform, key: IdempotencyKey(key.into()), fp };
    (Item { spend, claim, reply }, rx)
}

/// (status, body or error code; `replayed` for a replay).
async fn answer(rx: Rx) -> (u16, Value) {
    match rx.await.unwrap() {
        Ok(s) if s.replayed => (s.status.as_u16(), json!("replayed")),
        Ok(s) => (s.status.as_u16(), serde_json::from_slice(&s.body).unwrap()),
        Err(e) => (e.status().as_u16(), json!(e.code())),
    }
}

/// How many database transactions wrote these charge and hold ids (`xmin`).
async fn writers(app: &TestApp, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM charges WHERE id = ANY($1) \
         UNION ALL SELECT xmin::text FROM holds WHERE id = ANY($1)) w",
    )
    .bind(ids)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn one_batch_over_several_tenants_answers_each_item_on_its_own() {
    let app = TestApp::spawn().await;
    let (a, b, c, frozen) = (
        app.create_tenant("a").await,
        app.create_tenant("b").await,
        app.create_tenant("c").await,
        app.create_tenant("frozen").await,
    );
    app.fund(a, "3").await;
    app.fund(b, "1").await;
    app.fund(c, "5").await;
    app.fund(frozen, "5").await;
    app.patch(&format!("/v1/tenants/{frozen}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);
    let run = |items| batch::run(&app.state.frame, app.state.config.credits_per_usd, items);
    // A key A used before: replayed, never applied again.
    let (seen, rx) = item(a, "0.5", "seen", false);
    run(vec![seen]).await;
    assert_eq!(answer(rx).await.0, 201);

    // One batch, tenants interleaved in arrival order.
    let plan = [
        (a, "1", "a1", false),      // A: 2.50 -> 1.50
        (b, "2", "b1", false),      // B: 1.00 is short: 402
        (a, "0.5", "seen", false),  // A: a replay
        (c, "1", "c1", false),      // C: 5.00 -> 4.00
        (c, "1", "c1", false),      // C: the same key in flight: 409
        (frozen, "1", "f1", false), // suspended: 403
        (a, "1", "a2", false),      // A: 1.50 -> 0.50
        (b, "0.75", "b2", false),   // B: still 1.00 after its 402: fits -> 0.25
        (a, "1", "a3", false),      // A: 0.50 is short: 402
        (c, "2", "c2", true),       // C: a hold, 4.00 -> 2.00 available
        (a, "0.5", "a4", false),    // A: fits exactly -> 0.00
    ];
    let (mut items, mut rxs) = (Vec::new(), Vec::new());
    for (t, amount, key, hold) in plan {
        let (i, rx) = item(t, amount, key, hold);
        items.push(i);
        rxs.push(rx);
    }
    run(items).await;
    let mut got = Vec::new();
    for rx in rxs {
        got.push(answer(rx).await);
    }
    let statuses: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![201, 402, 201, 201, 409, 403, 201, 201, 402, 201, 201]);
    assert_eq!(got[1].1, "insufficient_funds");
    assert_eq!(got[2].1, "replayed");
    assert_eq!(got[4].1, "request_in_progress");
    assert_eq!(got[5].1, "forbidden");
    assert_eq!(got[8].1, "insufficient_funds");
    // Each decision saw the ones of its own tenant before it, and only those.
    let available = |i: usize| got[i].1["balance"]["available"].clone();
    assert_eq!(available(0), "1.50");
    assert_eq!(available(3), "4.00");
    assert_eq!(available(6), "0.50");
    assert_eq!(available(7), "0.25");
    assert_eq!(available(10), "0.00");
    assert_eq!(got[9].1["status"], "active", "the hold is held");
    // All of it in one database transaction.
    let ids: Vec<Uuid> =
        [0, 3, 6, 7, 9, 10].iter().map(|i| got[*i].1["id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(writers(&app, &ids).await, 1);
    assert_eq!(app.balance(a).await["available"], "0.00");
    assert_eq!(app.balance(b).await["available"], "0.25");
    assert_eq!(app.balance(c).await["available"], "2.00");
    assert_eq!(app.balance(frozen).await["available"], "5.00");
    // Each answered key is stored once for its own tenant: a retry replays it.
    let (again, rx) = item(b, "0.75", "b2", false);
    run(vec![again]).await;
    assert_eq!(answer(rx).await.1, "replayed");
    let (retry, rx) = item(a, "1", "a3", false);
    run(vec![retry]).await;
    assert_eq!(answer(rx).await.1, "insufficient_funds", "a refusal stores nothing: decided again");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_lane_takes_what_queued_behind_its_commit_whatever_the_tenants() {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(|c| {
            c.charge_lanes = 1;
        })
        .await,
    );
    let mut tenants = Vec::new();
    for name in ["held", "t1", "t2", "t3"] {
        let t = app.create_tenant(name).await;
        app.fund(t, "10").await;
        tenants.push(t);
    }
    // Another transaction holds the first tenant's ledger lock: the lane's batch waits on it.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM balances WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenants[0])
        .execute(&mut *blocker)
        .await
        .unwrap();
    let charge = |t: Uuid| {
        let app = app.clone();
        tokio::spawn(async move { app.charge(t, "1").await })
    };
    let first = charge(tenants[0]);
    wait_until(|| app.state.charger.queued() == 0 && app.state.charger.busy() == 1).await;
    let rest: Vec<_> = tenants[1..].iter().map(|t| charge(*t)).collect();
    wait_until(|| app.state.charger.queued() == 3).await;
    blocker.rollback().await.unwrap();
    let first = first.await.unwrap();
    first.assert(201);
    let mut ids = Vec::new();
    for r in rest {
        let r = r.await.unwrap();
        r.assert(201);
        ids.push(r.id());
    }
    assert_eq!(writers(&app, &ids).await, 1, "three tenants' charges, one transaction");
    assert_eq!(writers(&app, &[ids[0], first.id()]).await, 2);
    app.assert_ledger_ok().await;
}

async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for the charger");
}
