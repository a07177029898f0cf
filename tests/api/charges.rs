//! Charges: bonus first, the 402 body, suspended tenants, attribution, concurrency.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn bonus_is_spent_first_soonest_expiring_first() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::Duration::days(9)).to_rfc3339();
    app.gift(t, "1", None).await;
    app.gift(t, "2", Some(later)).await;
    app.gift(t, "0.5", Some(soon)).await;

    let r = app.charge(t, "1").await;
    r.assert(201);
    assert_eq!(r.body["funded_by"]["bonus"], "1.00");
    assert_eq!(r.body["funded_by"]["paid"], "0.00");
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["cost"]["currency"], "USD");
    assert_eq!(r.body["balance"]["available"], "12.50");
    let b = app.balance(t).await;
    let exp = b["expiring"].as_array().unwrap();
    assert_eq!(exp.len(), 1, "the soonest lot is gone, then 0.5 of the later one: {b}");
    assert_eq!(exp[0]["amount"], "1.50");

    let r = app.charge(t, "3").await;
    assert_eq!(r.body["funded_by"]["bonus"], "2.50", "the dated lot, then the undated one");
    assert_eq!(r.body["funded_by"]["paid"], "0.50");
    let b = app.balance(t).await;
    assert_eq!((b["bonus"].as_str(), b["paid"].as_str()), (Some("0.00"), Some("9.50")));
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn insufficient_funds_says_what_is_missing_and_records_nothing() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "2").await;
    let r = app.charge(t, "2.000001").await;
    r.assert_error(402, "insufficient_funds");
    assert_eq!(r.body["required"], "2.000001");
    assert_eq!(r.body["available"], "2.00");
    assert_eq!(r.body["shortfall"], "0.000001");
    assert_eq!(r.body["currency"], "USD");
    assert_eq!(r.body["auto_top_up"]["enabled"], false);
    assert_eq!(r.body["auto_top_up"]["in_flight"], false);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM charges").fetch_one(&app.pool).await.unwrap();
    assert_eq!(n, 0);
    app.charge(t, "2").await.assert(201);
    assert_eq!(app.balance(t).await["available"], "0.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn suspended_tenants_cannot_spend() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);
    app.charge(t, "1").await.assert_error(403, "forbidden");
    app.post_idem("/v1/holds", ADMIN, "h", json!({ "tenant_id": t, "amount": "1" }))
        .await
        .assert_error(403, "forbidden");
    app.get(&format!("/v1/tenants/{t}/balance"), ADMIN).await.assert(200);
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "active" })).await.assert(200);
    app.charge(t, "1").await.assert(201);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn priced_charges_record_version_and_attribute_to_keys() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let (key_id, key) = app.tenant_key(t).await;
    let usage = json!({ "input_tokens": 120000, "output_tokens": 35000 });
    let est = app.post("/v1/estimates", ADMIN, json!({ "model": "gpt-4o-mini", "usage": usage, "tenant_id": t })).await;
    est.assert(200);
    let r = app
        .post_idem("/v1/charges", ADMIN, "c1", json!({ "tenant_id": t, "model": "gpt-4o-mini", "usage": usage, "api_key_id": key_id, "metadata": { "job": "j1" } }))
        .await;
    r.assert(201);
    assert_eq!(r.body["cost"], est.body["cost"], "a charge costs what the estimate said");
    assert_eq!(r.body["price_version"], est.body["price_version"]);
    assert_eq!(r.body["api_key_id"], key_id.to_string());
    assert_eq!(r.body["metadata"]["job"], "j1");
    // 120000 * 0.15/1M + 35000 * 0.60/1M = 0.018 + 0.021
    assert_eq!(r.body["cost"]["amount"], "0.039");
    assert_eq!(r.body["cost"]["credits"], "3.9");

    let got = app.get(&format!("/v1/charges/{}", r.id()), &key).await;
    got.assert(200);
    assert_eq!(got.body["cost"]["amount"], "0.039");
    assert_eq!(got.body["model"], "gpt-4o-mini");
    let keys = app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await;
    assert_eq!(keys.body["data"][0]["used_amount"], "0.039");

    // A key of another tenant cannot be named.
    let other = app.create_tenant("b").await;
    let (other_key, _) = app.tenant_key(other).await;
    app.post_idem("/v1/charges", ADMIN, "c2", json!({ "tenant_id": t, "amount": "1", "api_key_id": other_key }))
        .await
        .assert_error(422, "unprocessable");
    // Zero-cost usage and bad usage.
    app.post_idem(
        "/v1/charges",
        ADMIN,
        "c3",
        json!({ "tenant_id": t, "model": "gpt-4o-mini", "usage": { "input_tokens": 0, "output_tokens": 0 } }),
    )
    .await
    .assert_error(422, "unprocessable");
    for (what, usage) in [
        ("unknown field", json!({ "input_tokens": 1, "output_tokens": 1, "secret_tokens": 3 })),
        ("negative", json!({ "input_tokens": -1, "output_tokens": 1 })),
        ("fractional", json!({ "input_tokens": 1.5, "output_tokens": 1 })),
        ("missing", json!({ "input_tokens": 1 })),
        ("not an object", json!("lots")),
    ] {
        let r = app
            .post_idem("/v1/charges", ADMIN, what, json!({ "tenant_id": t, "model": "gpt-4o-mini", "usage": usage }))
            .await;
        r.assert_error(400, "invalid_request");
    }
    app.post_idem("/v1/charges", ADMIN, "c4", json!({ "tenant_id": t, "model": "no-such-model", "usage": {} }))
        .await
        .assert_error(400, "invalid_request");
    app.get(&format!("/v1/charges/{}", Uuid::now_v7()), ADMIN).await.assert_error(404, "not_found");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn sixty_four_concurrent_charges_against_forty_dollars() {
    for batching in [true, false] {
        let app = TestApp::spawn_with(|c| c.charge_batching = batching).await;
        let t = app.create_tenant("hot").await;
        app.fund(t, "40").await;
        let calls = (0..64).map(|_| app.charge(t, "1.00"));
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.status == 201).count();
        let refused = results.iter().filter(|r| r.status == 402 && r.body["code"] == "insufficient_funds").count();
        assert_eq!((ok, refused), (40, 24), "batching={batching}");
        let b = app.balance(t).await;
        assert_eq!(b["available"], "0.00");
        assert_eq!(b["total"], "0.00");
        let ids: std::collections::HashSet<String> =
            results.iter().filter(|r| r.status == 201).map(|r| r.str("id")).collect();
        assert_eq!(ids.len(), 40);
        app.assert_ledger_ok().await;
    }
}

#[tokio::test]
async fn a_hold_of_a_suspended_tenant_cannot_be_captured() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    let h = app.post_idem("/v1/holds", ADMIN, "h", json!({ "tenant_id": t, "amount": "2" })).await.id();
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);
    app.post_idem(&format!("/v1/holds/{h}/capture"), ADMIN, "c", json!({})).await.assert_error(403, "forbidden");
    // Releasing gives the money back, and is allowed.
    app.post(&format!("/v1/holds/{h}/release"), ADMIN, json!({})).await.assert(200);
    assert_eq!(app.balance(t).await["available"], "5.00");
    app.assert_ledger_ok().await;
}
