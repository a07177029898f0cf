//! A suspended tenant's own API keys can read but change nothing: 403 on every write, at
//! once on the replica that suspended it (even with the key cached), on other replicas
//! within their auth cache period; reactivation gives writes back the same way.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

async fn set_status(app: &TestApp, t: Uuid, status: &str) {
    let r = app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": status })).await;
    r.assert(200);
    assert_eq!(r.body["status"], status);
}

/// Every write a tenant key may otherwise make on its own tenant.
fn writes(t: Uuid, key_id: Uuid) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::POST, format!("/v1/tenants/{t}/api-keys"), Some(json!({ "name": "new" }))),
        (Method::PATCH, format!("/v1/tenants/{t}/api-keys/{key_id}"), Some(json!({ "name": "renamed" }))),
        (Method::DELETE, format!("/v1/tenants/{t}/api-keys/{key_id}"), None),
        (Method::PUT, format!("/v1/tenants/{t}/webhook"), Some(json!({ "url": "https://8.8.8.8/hook" }))),
        (Method::PUT, format!("/v1/tenants/{t}/payment-method"), Some(json!({ "token": "pm_mock_ok" }))),
        (Method::POST, format!("/v1/tenants/{t}/top-ups"), Some(json!({ "amount": "10" }))),
        (
            Method::PUT,
            format!("/v1/tenants/{t}/auto-top-up"),
            Some(json!({ "enabled": true, "threshold": "5", "amount": "10" })),
        ),
        (Method::DELETE, format!("/v1/tenants/{t}/auto-top-up"), None),
    ]
}

#[tokio::test]
async fn a_suspended_tenants_keys_read_but_change_nothing() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "20").await;
    let (key_id, key) = app.tenant_key(t).await;
    // The key is used (and cached) before the suspension.
    app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert(200);
    app.put(&format!("/v1/tenants/{t}/payment-method"), &key, json!({ "token": "pm_mock_ok" })).await.assert(200);

    set_status(&app, t, "suspended").await;
    for (method, path, body) in writes(t, key_id) {
        let r = app.call(method.clone(), &path, &key, body, Some(&Uuid::now_v7().to_string())).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        r.assert_error(403, "forbidden");
    }
    for path in [
        format!("/v1/tenants/{t}/balance"),
        format!("/v1/tenants/{t}/transactions"),
        format!("/v1/tenants/{t}/api-keys"),
        format!("/v1/tenants/{t}/api-keys/{key_id}"),
        format!("/v1/tenants/{t}/top-ups"),
        format!("/v1/tenants/{t}/auto-top-up"),
        format!("/v1/tenants/{t}/events"),
        "/v1/prices".to_string(),
    ] {
        app.get(&path, &key).await.assert(200);
    }
    // An estimate changes nothing: it stays open to the key.
    let est = json!({ "model": "gpt-4o-mini", "usage": { "input_tokens": 10, "output_tokens": 10 } });
    app.post("/v1/estimates", &key, est).await.assert(200);
    // Nothing changed: one key, no top-up, the same balance.
    let keys = app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await;
    assert_eq!(keys.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(keys.body["data"][0]["name"], "k");
    assert_eq!(app.get(&format!("/v1/tenants/{t}/top-ups"), ADMIN).await.body["data"], json!([]));
    assert_eq!(app.balance(t).await["available"], "20.00");

    // Another tenant's keys are not affected.
    let other = app.create_tenant("b").await;
    let (_, other_key) = app.tenant_key(other).await;
    app.post(&format!("/v1/tenants/{other}/api-keys"), &other_key, json!({ "name": "x" })).await.assert(201);

    // Reactivated: writes work again at once.
    set_status(&app, t, "active").await;
    app.post(&format!("/v1/tenants/{t}/api-keys"), &key, json!({ "name": "back" })).await.assert(201);
    app.patch(&format!("/v1/tenants/{t}/api-keys/{key_id}"), &key, json!({ "name": "renamed" })).await.assert(200);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn another_replica_applies_a_suspension_within_its_cache_period() {
    let a = TestApp::spawn_with(|c| c.run_workers = false).await;
    let ttl = Duration::from_millis(400);
    let b = TestApp::spawn_on(a.db.clone(), |c| {
        c.run_workers = false;
        c.auth_cache_ttl = ttl;
    })
    .await;
    let t = a.create_tenant("a").await;
    a.fund(t, "5").await;
    let (_, key) = a.tenant_key(t).await;
    b.post(&format!("/v1/tenants/{t}/api-keys"), &key, json!({ "name": "cached at b" })).await.assert(201);
    set_status(&a, t, "suspended").await;
    a.post(&format!("/v1/tenants/{t}/api-keys"), &key, json!({ "name": "x" })).await.assert_error(403, "forbidden");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    b.post(&format!("/v1/tenants/{t}/api-keys"), &key, json!({ "name": "x" })).await.assert_error(403, "forbidden");
    b.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert(200);
    a.assert_ledger_ok().await;
}
