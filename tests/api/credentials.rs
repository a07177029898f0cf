//! Admin token, service tokens, tenant API keys: 401 / 403 / 404 as the contract says.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn missing_or_bad_credentials_are_401() {
    let app = TestApp::spawn().await;
    let r = app.client.get(format!("{}/v1/tenants", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    app.get("/v1/tenants", "nope").await.assert_error(401, "unauthorized");
    app.get("/v1/tenants", "tk_0000000000000000000000000000000000000000000000000")
        .await
        .assert_error(401, "unauthorized");
    app.get("/v1/tenants", "st_0000000000000000000000000000000000000000000000000")
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn api_key_lifecycle() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let created = app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({ "name": "ci" })).await;
    created.assert(201);
    let key = created.str("key");
    let key_id = created.id();
    assert!(key.starts_with(&created.str("prefix")));
    assert_eq!(created.body["status"], "enabled");

    // The key reads its own tenant; it is never stored in clear.
    app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert(200);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(key_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(stored, key.as_bytes());
    let clear: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE prefix = $1 AND length(prefix) < 20")
        .bind(created.str("prefix"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(clear, 1);

    let list = app.get(&format!("/v1/tenants/{t}/api-keys"), &key).await;
    list.assert(200);
    let item = &list.body["data"][0];
    assert!(item.get("key").is_none(), "a listed key never shows its secret");
    assert!(!item["last_used_at"].is_null(), "last_used_at moves when the key is used");
    assert_eq!(item["used_amount"], "0.00");

    let svc = app.service_token().await;
    let v = app.post("/v1/api-keys/verify", &svc, json!({ "key": key })).await;
    v.assert(200);
    assert_eq!(v.body["tenant_id"], t.to_string());
    assert_eq!(v.body["api_key_id"], key_id.to_string());
    assert_eq!(v.body["status"], "enabled");
    app.post("/v1/api-keys/verify", &svc, json!({ "key": "tk_bogus" })).await.assert_error(401, "unauthorized");
    app.post("/v1/api-keys/verify", &key, json!({ "key": key })).await.assert_error(403, "forbidden");

    let p = app
        .patch(&format!("/v1/tenants/{t}/api-keys/{key_id}"), ADMIN, json!({ "status": "disabled", "name": "old" }))
        .await;
    p.assert(200);
    assert_eq!(p.body["status"], "disabled");
    assert_eq!(p.body["name"], "old");
    app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert_error(401, "unauthorized");
    let v = app.post("/v1/api-keys/verify", &svc, json!({ "key": key })).await;
    assert_eq!(v.body["status"], "disabled");

    app.delete(&format!("/v1/tenants/{t}/api-keys/{key_id}"), ADMIN).await.assert(204);
    app.delete(&format!("/v1/tenants/{t}/api-keys/{key_id}"), ADMIN).await.assert_error(404, "not_found");
    app.post("/v1/api-keys/verify", &svc, json!({ "key": key })).await.assert_error(401, "unauthorized");
    app.post(&format!("/v1/tenants/{}/api-keys", Uuid::now_v7()), ADMIN, json!({ "name": "x" }))
        .await
        .assert_error(404, "not_found");
    app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({ "name": "" }))
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn service_tokens_reach_backend_routes_not_admin_ones() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "1").await;
    let svc = app.service_token().await;
    app.post_idem("/v1/charges", &svc, "k1", json!({ "tenant_id": t, "amount": "0.25" })).await.assert(201);
    app.get(&format!("/v1/tenants/{t}/balance"), &svc).await.assert(200);
    app.get("/v1/tenants", &svc).await.assert_error(403, "forbidden");
    app.post("/v1/admin/service-tokens", &svc, json!({ "name": "x" })).await.assert_error(403, "forbidden");
    app.get(&format!("/v1/tenants/{t}/api-keys"), &svc).await.assert_error(403, "forbidden");
    // A tenant key cannot charge, even its own tenant: charging is for backends.
    let (_, key) = app.tenant_key(t).await;
    app.post_idem("/v1/charges", &key, "k2", json!({ "tenant_id": t, "amount": "0.25" }))
        .await
        .assert_error(403, "forbidden");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn generated_admin_token_is_kept_in_the_data_dir() {
    let dir = std::env::temp_dir().join(format!("tally-admin-{}", Uuid::now_v7()));
    let mut cfg = test_config();
    cfg.admin_token = None;
    cfg.data_dir = dir.clone();
    let h1 = tally::startup::admin_token_hash(&cfg).unwrap();
    let stored = std::fs::read_to_string(dir.join("admin_token")).unwrap();
    assert!(stored.starts_with("adm_") && stored.len() > 40);
    let h2 = tally::startup::admin_token_hash(&cfg).unwrap();
    assert_eq!(h1, h2, "a second start reuses the stored token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("admin_token")).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::remove_dir_all(dir).unwrap();
}
