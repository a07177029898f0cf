//! Tenant isolation: tenant A's key learns nothing about tenant B (404 everywhere), and a
//! tenant key on an admin route is 403.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn tenant_key_never_reaches_another_tenant() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant("a").await;
    let b = app.create_tenant("b").await;
    app.fund(b, "10").await;
    let (_, key_a) = app.tenant_key(a).await;
    let (key_b_id, _) = app.tenant_key(b).await;
    let charge_b = app.charge(b, "1").await.id();
    let hold_b = app.post_idem("/v1/holds", ADMIN, "h", json!({ "tenant_id": b, "amount": "1" })).await.id();

    let scoped: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/v1/tenants/{b}/balance"), None),
        (Method::GET, format!("/v1/tenants/{b}/balance/breakdown"), None),
        (Method::GET, format!("/v1/tenants/{b}/transactions"), None),
        (Method::GET, format!("/v1/tenants/{b}/usage"), None),
        (Method::GET, format!("/v1/tenants/{b}/api-keys"), None),
        (Method::POST, format!("/v1/tenants/{b}/api-keys"), Some(json!({ "name": "x" }))),
        (Method::GET, format!("/v1/tenants/{b}/api-keys/{key_b_id}"), None),
        (Method::PATCH, format!("/v1/tenants/{b}/api-keys/{key_b_id}"), Some(json!({ "name": "x" }))),
        (Method::DELETE, format!("/v1/tenants/{b}/api-keys/{key_b_id}"), None),
        (Method::GET, format!("/v1/charges/{charge_b}"), None),
        (Method::GET, format!("/v1/holds/{hold_b}"), None),
        (
            Method::POST,
            "/v1/estimates".into(),
            Some(json!({ "model": "gpt-4o-mini", "usage": { "input_tokens": 1, "output_tokens": 1 }, "tenant_id": b })),
        ),
    ];
    for (m, path, body) in scoped {
        let r = app.call(m.clone(), &path, &key_a, body, Some("iso")).await;
        r.assert_error(404, "not_found");
    }
    // The same holds for ids that do not exist at all: indistinguishable.
    let ghost = uuid::Uuid::now_v7();
    app.get(&format!("/v1/tenants/{ghost}/balance"), &key_a).await.assert_error(404, "not_found");
    app.get(&format!("/v1/charges/{ghost}"), &key_a).await.assert_error(404, "not_found");

    let admin_routes: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::POST, "/v1/tenants".into(), Some(json!({ "name": "x" }))),
        (Method::GET, "/v1/tenants".into(), None),
        (Method::GET, format!("/v1/tenants/{a}"), None),
        (Method::GET, format!("/v1/tenants/{b}"), None),
        (Method::PATCH, format!("/v1/tenants/{a}"), Some(json!({ "name": "x" }))),
        (
            Method::POST,
            format!("/v1/admin/tenants/{a}/adjustments"),
            Some(json!({ "amount": "1", "kind": "gift", "reason": "x" })),
        ),
        (Method::POST, format!("/v1/admin/tenants/{a}/credit-conversions"), Some(json!({ "credits": "1" }))),
        (Method::GET, format!("/v1/admin/tenants/{a}/pricing"), None),
        (Method::PUT, format!("/v1/admin/tenants/{a}/pricing"), Some(json!({ "discount_percent": "50" }))),
        (Method::PUT, "/v1/admin/prices/gpt-4o-mini".into(), Some(json!({ "description": "x", "components": [] }))),
        (Method::POST, "/v1/admin/service-tokens".into(), Some(json!({ "name": "x" }))),
        (Method::GET, "/v1/admin/ledger/check".into(), None),
    ];
    for (m, path, body) in admin_routes {
        app.call(m, &path, &key_a, body, Some("adm")).await.assert_error(403, "forbidden");
    }
    // Backend-only routes refuse a tenant key whatever the id, so they reveal nothing either.
    let backend_routes: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::POST, format!("/v1/charges/{charge_b}/refunds"), Some(json!({ "reason": "x" }))),
        (Method::POST, format!("/v1/holds/{hold_b}/capture"), Some(json!({}))),
        (Method::POST, format!("/v1/holds/{hold_b}/release"), None),
        (Method::POST, "/v1/charges".into(), Some(json!({ "tenant_id": b, "amount": "1" }))),
        (Method::POST, "/v1/holds".into(), Some(json!({ "tenant_id": b, "amount": "1" }))),
    ];
    for (m, path, body) in backend_routes {
        app.call(m, &path, &key_a, body, Some("be")).await.assert_error(403, "forbidden");
    }
    // The credential is checked before the body: a tenant key with a bad body is still a 403.
    app.call(
        Method::POST,
        &format!("/v1/admin/tenants/{a}/adjustments"),
        &key_a,
        Some(json!({ "bogus": 1 })),
        Some("x"),
    )
    .await
    .assert_error(403, "forbidden");
    // Its own tenant is reachable.
    app.get(&format!("/v1/tenants/{a}/balance"), &key_a).await.assert(200);
    app.get(&format!("/v1/tenants/{a}/transactions"), &key_a).await.assert(200);
    assert_eq!(app.balance(b).await["held"], "1.00", "nothing of B's moved");
    app.assert_ledger_ok().await;
}
