//! Bad bytes in a path or query parameter: a 400 `invalid_request` on every route, never a
//! 500 (NUL used to reach SQL), whoever asks; clean percent-escapes still work.

use crate::helpers::*;

#[tokio::test]
async fn control_characters_and_invalid_utf8_in_paths_and_queries_are_400() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    let (_, key) = app.tenant_key(t).await;
    let targets = [
        "/v1/prices/x%00/versions".to_string(),
        "/v1/prices/x%01/versions".to_string(),
        "/v1/prices/%C3%28/versions".to_string(),
        "/v1/prices/%FF/versions".to_string(),
        "/v1/prices/a%7Fb/versions".to_string(),
        format!("/v1/tenants/{t}/transactions?kind=%00"),
        format!("/v1/tenants/{t}/transactions?kind=usage%0A"),
        format!("/v1/tenants/{t}/usage?group_by=%C2%85"),
        format!("/v1/tenants/{t}/api-keys?cursor=%00"),
        format!("/v1/tenants/{t}/events?cursor=%zz"),
        "/v1/tenants/%00".to_string(),
        "/nowhere/%00".to_string(),
    ];
    for target in &targets {
        for token in [ADMIN, key.as_str(), "not-a-token"] {
            app.get(target, token).await.assert_error(400, "invalid_request");
        }
    }
    let r = app.call(reqwest::Method::PUT, "/v1/admin/prices/x%00y", ADMIN, Some(serde_json::json!({})), None).await;
    r.assert_error(400, "invalid_request");
    // Clean escapes pass through to the route.
    app.get("/v1/prices/caf%C3%A9/versions", ADMIN).await.assert_error(404, "not_found");
    app.get("/v1/prices/gpt-4o-mini/versions", ADMIN).await.assert(200);
    app.get(&format!("/v1/tenants/{t}/transactions?kind=usage"), &key).await.assert(200);
    app.assert_ledger_ok().await;
}
