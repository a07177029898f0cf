//! Rate limits (the contract, "Rate limits"): one token bucket per credential, a 429
//! `rate_limited` with `Retry-After` that does nothing, `RateLimit-*` headers on every
//! response to a limited credential; the admin token and a rate of 0 are never limited.

use std::time::Duration;

use serde_json::json;
use tally::rate_limit::Rate;
use uuid::Uuid;

use crate::helpers::*;
use crate::portal::support::Portal;

fn header(r: &Resp, name: &str) -> Option<u64> {
    r.headers.get(name).map(|v| v.to_str().unwrap().parse().unwrap_or_else(|_| panic!("{name}: {v:?}")))
}

async fn charge_with(app: &TestApp, token: &str, key: &str, tenant: Uuid) -> Resp {
    app.post_idem("/v1/charges", token, key, json!({ "tenant_id": tenant, "amount": "1.00" })).await
}

#[tokio::test]
async fn a_credential_past_its_limit_gets_429_with_headers_and_nothing_done_others_unaffected() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit_service = Rate { per_second: 1, burst: 3 };
        c.rate_limit_tenant = Rate { per_second: 1, burst: 2 };
    })
    .await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let (busy, other) = (app.service_token().await, app.service_token().await);

    // Drive one service token until it is refused (a token comes back every second, so a
    // slow machine may see a few more than the burst pass first).
    let mut accepted = 0;
    let refused = loop {
        let r = charge_with(&app, &busy, &Uuid::now_v7().to_string(), t).await;
        if r.status != 201 {
            break r;
        }
        accepted += 1;
        assert_eq!(header(&r, "ratelimit-limit"), Some(3), "{:?}", r.headers);
        assert!(header(&r, "ratelimit-remaining").unwrap() < 3);
        assert!(header(&r, "ratelimit-reset").is_some());
        assert!(accepted < 20, "never refused");
    };
    assert!(accepted >= 3, "the whole burst passes first: {accepted}");
    refused.assert_error(429, "rate_limited");
    let retry_after = header(&refused, "retry-after").expect("Retry-After");
    assert!(retry_after >= 1, "whole seconds, at least 1");
    assert_eq!(refused.body["retry_after"], retry_after);
    assert_eq!(header(&refused, "ratelimit-limit"), Some(3));
    assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
    assert!(header(&refused, "ratelimit-reset").unwrap() >= 1);

    // Nothing done: the refused charge moved no money and stored nothing under its key.
    let key = Uuid::now_v7().to_string();
    charge_with(&app, &busy, &key, t).await.assert_error(429, "rate_limited");
    let charged: i64 = sqlx::query_scalar("SELECT count(*) FROM charges WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charged, accepted, "only the accepted charges are recorded");
    let paid: f64 = app.balance(t).await["paid"].as_str().unwrap().parse().unwrap();
    assert_eq!(paid, (100 - accepted) as f64, "only the accepted charges moved money");

    // Another credential has its own bucket; the admin token has none.
    let r = charge_with(&app, &other, &Uuid::now_v7().to_string(), t).await;
    r.assert(201);
    assert_eq!(header(&r, "ratelimit-remaining"), Some(2), "a fresh bucket");
    let admin = app.charge(t, "1.00").await;
    admin.assert(201);
    assert!(admin.headers.get("ratelimit-limit").is_none(), "the admin token is never limited");

    // Once the bucket has refilled, the refused request's key runs as new (not a replay).
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let r = charge_with(&app, &busy, &key, t).await;
    r.assert(201);
    assert!(r.headers.get("idempotent-replayed").is_none());

    // Tenant API keys: per key, on reads too; a refused request is a 429 before the 403 of
    // a route the key may not use, and the portal counts as its tenant.
    let (_, k1) = app.tenant_key(t).await;
    let (_, k2) = app.tenant_key(t).await;
    let balance = format!("/v1/tenants/{t}/balance");
    let refused = loop {
        let r = app.get(&balance, &k1).await;
        if r.status != 200 {
            break r;
        }
        assert_eq!(header(&r, "ratelimit-limit"), Some(2));
    };
    refused.assert_error(429, "rate_limited");
    let r = app.get(&balance, &k2).await;
    r.assert(200);
    assert_eq!(header(&r, "ratelimit-remaining"), Some(1));

    let portal = Portal::open(&app, t).await;
    let page = loop {
        let p = portal.get("/portal").await;
        if p.status != 200 {
            break p;
        }
        assert_eq!(p.headers["ratelimit-limit"], "2");
    };
    page.assert(429);
    assert!(page.headers.contains_key("retry-after"));
    assert!(page.text.contains("<h1>"), "the portal's own error page, HTML");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_rate_of_zero_is_off_no_headers_no_limit() {
    // A bucket of one would refuse the second request, were the limit on.
    let app = TestApp::spawn_with(|c| c.rate_limit_tenant = Rate { per_second: 0, burst: 1 }).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let (_, key) = app.tenant_key(t).await;
    let service = app.service_token().await;
    for _ in 0..20 {
        let r = app.get(&format!("/v1/tenants/{t}/balance"), &key).await;
        r.assert(200);
        assert!(r.headers.get("ratelimit-limit").is_none(), "{:?}", r.headers);
        // Service tokens: off by default.
        let r = charge_with(&app, &service, &Uuid::now_v7().to_string(), t).await;
        r.assert(201);
        assert!(r.headers.get("ratelimit-remaining").is_none());
    }
}
