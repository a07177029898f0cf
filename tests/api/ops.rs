//! Operations endpoints and the error shape of unknown routes and methods.

use crate::helpers::*;

#[tokio::test]
async fn health_ready_metrics_openapi_docs() {
    let app = TestApp::spawn().await;
    app.get("/healthz", "").await.assert(200);
    let r = app.get("/readyz", "").await;
    r.assert(200);
    assert_eq!(r.body["status"], "ready");
    app.get("/v1/tenants", ADMIN).await.assert(200);
    let m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("http_requests_total"), "{m}");
    assert!(m.contains("route=\"/v1/tenants\""));
    assert!(m.contains("db_pool_connections"));
    let doc = app.get("/openapi.json", "").await;
    doc.assert(200);
    for path in ["/v1/charges", "/v1/tenants/{tenant_id}/balance", "/v1/admin/ledger/check", "/v1/estimates"] {
        assert!(doc.body["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    let docs = app.client.get(format!("{}/docs/", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    app.get("/v1/nope", ADMIN).await.assert_error(404, "not_found");
    app.delete("/v1/tenants", ADMIN).await.assert_error(405, "method_not_allowed");
    let r = app.get("/v1/tenants", ADMIN).await;
    assert!(r.headers.get("x-request-id").is_some(), "every response carries a request id");
}

#[tokio::test]
async fn readyz_is_503_when_migrations_are_not_current() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE _sqlx_migrations SET success = false").execute(&app.pool).await.unwrap();
    app.get("/readyz", "").await.assert_error(503, "unavailable");
}
