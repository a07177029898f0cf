//! Tenants and balances.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn create_get_list_update_tenants_with_signup_credit() {
    let app = TestApp::spawn_with(|c| c.signup_credit = "5".parse().unwrap()).await;
    let r = app.post("/v1/tenants", ADMIN, json!({ "name": "Acme", "external_ref": "cus_1" })).await;
    r.assert(201);
    assert_eq!(r.body["currency"], "USD");
    assert_eq!(r.body["status"], "active");
    let id = r.id();
    assert_eq!(id.get_version_num(), 7);

    app.post("/v1/tenants", ADMIN, json!({ "name": "Dup", "external_ref": "cus_1" }))
        .await
        .assert_error(409, "conflict");
    app.post("/v1/tenants", ADMIN, json!({ "name": "Eur", "currency": "EUR" }))
        .await
        .assert_error(400, "invalid_request");

    let b = app.balance(id).await;
    assert_eq!(b["bonus"], "5.00");
    assert_eq!(b["paid"], "0.00");
    assert_eq!(b["available"], "5.00");
    assert_eq!(b["total"], "5.00");
    assert_eq!(b["held"], "0.00");
    assert_eq!(b["currency"], "USD");

    let bd = app.get(&format!("/v1/tenants/{id}/balance/breakdown"), ADMIN).await;
    bd.assert(200);
    assert_eq!(bd.body["credited"]["signup"], "5.00");
    assert_eq!(bd.body["total"], "5.00");

    app.get(&format!("/v1/tenants/{id}"), ADMIN).await.assert(200);
    let p = app.patch(&format!("/v1/tenants/{id}"), ADMIN, json!({ "status": "suspended" })).await;
    p.assert(200);
    assert_eq!(p.body["status"], "suspended");
    app.patch(&format!("/v1/tenants/{id}"), ADMIN, json!({ "status": "gone" }))
        .await
        .assert_error(400, "invalid_request");
    app.patch(&format!("/v1/tenants/{}", uuid::Uuid::now_v7()), ADMIN, json!({ "name": "x" }))
        .await
        .assert_error(404, "not_found");

    for i in 0..3 {
        app.create_tenant(&format!("t{i}")).await;
    }
    let page = app.get("/v1/tenants?limit=2", ADMIN).await;
    page.assert(200);
    assert_eq!(page.body["data"].as_array().unwrap().len(), 2);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let rest = app.get(&format!("/v1/tenants?limit=2&cursor={cursor}"), ADMIN).await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 2);
    assert!(rest.body["next_cursor"].is_null());
    app.get("/v1/tenants?limit=0", ADMIN).await.assert_error(400, "invalid_request");
    app.get("/v1/tenants?limit=201", ADMIN).await.assert_error(400, "invalid_request");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn balance_reflects_writes_at_once_and_breakdown_sums_sources() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "20").await;
    assert_eq!(app.balance(t).await["paid"], "20.00", "visible on the very next request");
    app.gift(t, "3", None).await;
    app.charge(t, "4.5").await.assert(201);
    let bd = app.get(&format!("/v1/tenants/{t}/balance/breakdown"), ADMIN).await;
    assert_eq!(bd.body["credited"]["adjustment"], "20.00");
    assert_eq!(bd.body["credited"]["gift"], "3.00");
    assert_eq!(bd.body["debited"]["usage"], "4.50");
    assert_eq!(bd.body["total"], "18.50");
    assert_eq!(app.balance(t).await["total"], "18.50");
    let future = app.get(&format!("/v1/tenants/{t}/balance/breakdown?from=2999-01-01T00:00:00Z"), ADMIN).await;
    assert_eq!(future.body["total"], "0.00");
    app.assert_ledger_ok().await;
}
