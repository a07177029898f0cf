//! Price book, versions, tenant deals, estimates = charges, credit expiry, history views.

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn price_book_versions_and_deals() {
    let app = TestApp::spawn().await;
    let book = app.get("/v1/prices", ADMIN).await;
    book.assert(200);
    let models: Vec<&str> =
        book.body["data"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    for m in ["gpt-4o-mini", "flux-pro", "veo-fast"] {
        assert!(models.contains(&m), "{m} in the default book");
    }
    let rule = json!({ "description": "cheap text", "components": [
        { "type": "per_unit", "name": "input_tokens", "field": "input_tokens", "unit_price": "0.00000015" },
        { "type": "per_unit", "name": "output_tokens", "field": "output_tokens", "unit_price": "0.0000006" } ] });
    let v1 = app.put("/v1/admin/prices/my-model", ADMIN, rule.clone()).await;
    v1.assert(200);
    assert_eq!(v1.body["version"], 1);
    let mut rule2 = rule.clone();
    rule2["components"][0]["unit_price"] = json!("0.0000003");
    assert_eq!(app.put("/v1/admin/prices/my-model", ADMIN, rule2).await.body["version"], 2);
    let versions = app.get("/v1/prices/my-model/versions", ADMIN).await;
    assert_eq!(versions.body["data"].as_array().unwrap().len(), 2, "earlier versions stay readable");
    app.put("/v1/admin/prices/bad", ADMIN, json!({ "description": "x", "components": [] }))
        .await
        .assert_error(400, "invalid_request");

    let usage = json!({ "input_tokens": 1000, "output_tokens": 1000 });
    let e = app.post("/v1/estimates", ADMIN, json!({ "model": "my-model", "usage": usage })).await;
    e.assert(200);
    assert_eq!(e.body["price_version"], 2);
    assert_eq!(e.body["cost"]["amount"], "0.0009");
    assert!(e.body.get("affordable").is_none());
    assert_eq!(e.body["lines"].as_array().unwrap().len(), 2);

    let t = app.create_tenant("vip").await;
    app.fund(t, "0.0005").await;
    let deal = json!({ "discount_percent": "50", "models": { "gpt-4o-mini": { "discount_percent": "10" } } });
    app.put(&format!("/v1/admin/tenants/{t}/pricing"), ADMIN, deal).await.assert(200);
    let got = app.get(&format!("/v1/admin/tenants/{t}/pricing"), ADMIN).await;
    assert_eq!(got.body["discount_percent"], "50");
    let e = app.post("/v1/estimates", ADMIN, json!({ "model": "my-model", "usage": usage, "tenant_id": t })).await;
    assert_eq!(e.body["cost"]["amount"], "0.00045");
    assert_eq!(e.body["affordable"], true);
    let c =
        app.post_idem("/v1/charges", ADMIN, "c", json!({ "tenant_id": t, "model": "my-model", "usage": usage })).await;
    c.assert(201);
    assert_eq!(c.body["cost"], e.body["cost"]);
    let e = app.post("/v1/estimates", ADMIN, json!({ "model": "my-model", "usage": usage, "tenant_id": t })).await;
    assert_eq!(e.body["affordable"], false);
    app.put(
        &format!("/v1/admin/tenants/{t}/pricing"),
        ADMIN,
        json!({ "models": { "no-such": { "discount_percent": "1" } } }),
    )
    .await
    .assert_error(400, "invalid_request");
    app.put(&format!("/v1/admin/tenants/{t}/pricing"), ADMIN, json!({ "discount_percent": "150" }))
        .await
        .assert_error(400, "invalid_request");
    app.post("/v1/estimates", ADMIN, json!({ "model": "nope", "usage": {} }))
        .await
        .assert_error(400, "invalid_request");
    app.post(
        "/v1/estimates",
        ADMIN,
        json!({ "model": "my-model", "usage": { "input_tokens": 1, "output_tokens": 1, "x": 1 } }),
    )
    .await
    .assert_error(400, "invalid_request");
    app.assert_ledger_ok().await;
}

fn random_usage(rng: &mut rand::rngs::StdRng) -> (&'static str, Value) {
    match rng.gen_range(0..3) {
        0 => (
            "gpt-4o-mini",
            json!({ "input_tokens": rng.gen_range(1..2_000_000u64), "output_tokens": rng.gen_range(0..500_000u64) }),
        ),
        1 => {
            let features: Vec<&str> = ["upscale", "hd"].into_iter().filter(|_| rng.gen_bool(0.5)).collect();
            (
                "flux-pro",
                json!({ "width": rng.gen_range(64..2048), "height": rng.gen_range(64..2048),
                                 "count": rng.gen_range(1..5), "features": features, "steps": rng.gen_range(1..60) }),
            )
        }
        _ => {
            let res = ["480p", "720p", "1080p", "4k"][rng.gen_range(0..4)];
            ("veo-fast", json!({ "seconds": rng.gen_range(1..30), "resolution": res }))
        }
    }
}

#[tokio::test]
async fn estimate_equals_charge_over_random_usages() {
    let app = TestApp::spawn().await;
    let svc = app.service_token().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100000").await;
    let deal = json!({ "discount_percent": "12.5", "models": { "flux-pro": { "discount_percent": "33.33" } } });
    app.put(&format!("/v1/admin/tenants/{t}/pricing"), ADMIN, deal).await.assert(200);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..60 {
        let (model, usage) = random_usage(&mut rng);
        let tenant = if i % 2 == 0 { Some(t) } else { None };
        let e = app.post("/v1/estimates", &svc, json!({ "model": model, "usage": usage, "tenant_id": tenant })).await;
        e.assert(200);
        if tenant.is_none() {
            continue;
        }
        let c = app
            .post_idem(
                "/v1/charges",
                &svc,
                &Uuid::now_v7().to_string(),
                json!({ "tenant_id": t, "model": model, "usage": usage }),
            )
            .await;
        c.assert(201);
        assert_eq!(c.body["cost"], e.body["cost"], "{model} {usage}");
    }
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn bonus_lots_expire_on_time() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "1").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    app.gift(t, "2.5", Some(soon)).await;
    let b = app.balance(t).await;
    assert_eq!(b["bonus"], "2.50");
    assert_eq!(b["expiring"][0]["amount"], "2.50");
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    // Past expiry it is not spendable, even before the worker sweeps it.
    app.charge(t, "1.5").await.assert_error(402, "insufficient_funds");
    let mut swept = false;
    for _ in 0..30 {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger_transactions WHERE tenant_id = $1 AND kind = 'expiry'")
                .bind(t)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if n == 1 {
            swept = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(swept, "the worker expired the lot");
    let b = app.balance(t).await;
    assert_eq!((b["bonus"].as_str(), b["total"].as_str()), (Some("0.00"), Some("1.00")));
    let bd = app.get(&format!("/v1/tenants/{t}/balance/breakdown"), ADMIN).await;
    assert_eq!(bd.body["debited"]["expired"], "2.50");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn transactions_and_usage_views() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "50").await;
    let (key_id, key) = app.tenant_key(t).await;
    let usage = json!({ "input_tokens": 1_000_000, "output_tokens": 0 });
    for i in 0..3 {
        app.post_idem(
            "/v1/charges",
            ADMIN,
            &format!("m{i}"),
            json!({ "tenant_id": t, "model": "gpt-4o-mini", "usage": usage, "api_key_id": key_id }),
        )
        .await
        .assert(201);
    }
    app.post_idem(
        "/v1/charges",
        ADMIN,
        "amt",
        json!({ "tenant_id": t, "amount": "2", "description": "a, \"quoted\" thing" }),
    )
    .await
    .assert(201);
    let h = app.post_idem("/v1/holds", ADMIN, "h", json!({ "tenant_id": t, "amount": "1" })).await.id();
    app.post(&format!("/v1/holds/{h}/release"), ADMIN, json!({})).await.assert(200);

    let all = app.get(&format!("/v1/tenants/{t}/transactions"), &key).await;
    all.assert(200);
    let rows = all.body["data"].as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["hold_release", "hold", "usage", "usage", "usage", "usage", "adjustment"]);
    assert_eq!(rows[0]["direction"], "credit");
    assert_eq!(rows[1]["direction"], "debit");
    assert_eq!(rows[1]["amount"], "1.00");
    assert_eq!(rows[2]["balance_after"], "47.55");
    assert_eq!(rows[6]["balance_after"], "50.00");

    let page = app.get(&format!("/v1/tenants/{t}/transactions?limit=2"), &key).await;
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = app.get(&format!("/v1/tenants/{t}/transactions?limit=2&cursor={cursor}"), &key).await;
    assert_eq!(next.body["data"][0]["id"], rows[2]["id"]);
    let by_kind = app.get(&format!("/v1/tenants/{t}/transactions?kind=usage"), &key).await;
    assert_eq!(by_kind.body["data"].as_array().unwrap().len(), 4);
    let by_key = app.get(&format!("/v1/tenants/{t}/transactions?api_key_id={key_id}"), &key).await;
    assert_eq!(by_key.body["data"].as_array().unwrap().len(), 3);
    app.get(&format!("/v1/tenants/{t}/transactions?kind=bogus"), &key).await.assert_error(400, "invalid_request");

    let csv = app
        .client
        .get(format!("{}/v1/tenants/{t}/transactions", app.base))
        .bearer_auth(&key)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.starts_with("id,kind,amount,direction,balance_after"));
    assert!(text.contains("\"a, \"\"quoted\"\" thing\""));

    let by_model = app.get(&format!("/v1/tenants/{t}/usage?group_by=model"), &key).await;
    by_model.assert(200);
    assert_eq!(
        by_model.body["data"],
        json!([
            { "key": "amount", "amount": "2.00", "count": 1 },
            { "key": "gpt-4o-mini", "amount": "0.45", "count": 3 }
        ])
    );
    let by_key = app.get(&format!("/v1/tenants/{t}/usage?group_by=api_key"), &key).await;
    let keys: Vec<&str> = by_key.body["data"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"none") && keys.contains(&key_id.to_string().as_str()));
    let by_day = app.get(&format!("/v1/tenants/{t}/usage"), &key).await;
    assert_eq!(by_day.body["data"][0]["key"], chrono::Utc::now().format("%Y-%m-%d").to_string());
    assert_eq!(by_day.body["data"][0]["amount"], "2.45");
    app.get(&format!("/v1/tenants/{t}/usage?group_by=week"), &key).await.assert_error(400, "invalid_request");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn totals_leave_out_expired_credit_even_before_the_worker_runs() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(400)).to_rfc3339();
    app.gift(t, "5", Some(soon)).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let c = app.charge(t, "1").await;
    c.assert(201);
    assert_eq!(c.body["balance"]["total"], "9.00");
    assert_eq!(c.body["balance"]["available"], "9.00");
    let txns = app.get(&format!("/v1/tenants/{t}/transactions"), ADMIN).await;
    assert_eq!(txns.body["data"][0]["kind"], "usage");
    assert_eq!(txns.body["data"][0]["balance_after"], "9.00");
    assert_eq!(txns.body["data"][1]["kind"], "expiry", "the charge swept the expired lot first");
    let b = app.balance(t).await;
    assert_eq!((b["total"].as_str(), b["bonus"].as_str()), (Some("9.00"), Some("0.00")));
    app.assert_ledger_ok().await;
}
