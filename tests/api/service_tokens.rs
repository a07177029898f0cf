//! Service tokens: listed (cursor pages, never the token), revoked with DELETE: a revoked
//! token is a 401 at once on the replica that revoked it, and on another replica once its
//! auth cache period has passed.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

async fn create(app: &TestApp, name: &str) -> (Uuid, String) {
    let r = app.post("/v1/admin/service-tokens", ADMIN, json!({ "name": name })).await;
    r.assert(201);
    (r.id(), r.str("token"))
}

async fn charge_with(app: &TestApp, token: &str, tenant: Uuid) -> Resp {
    app.post_idem("/v1/charges", token, &Uuid::now_v7().to_string(), json!({ "tenant_id": tenant, "amount": "0.10" }))
        .await
}

#[tokio::test]
async fn tokens_are_listed_in_pages_without_their_secret() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let mut made = Vec::new();
    for name in ["one", "two", "three"] {
        made.push(create(&app, name).await);
    }
    let first = app.get("/v1/admin/service-tokens?limit=2", ADMIN).await;
    first.assert(200);
    let page = first.body["data"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["id"], made[2].0.to_string(), "newest first");
    assert_eq!(page[0]["name"], "three");
    assert!(page[0]["created_at"].is_string());
    let cursor = first.str("next_cursor");
    let second = app.get(&format!("/v1/admin/service-tokens?limit=2&cursor={cursor}"), ADMIN).await;
    second.assert(200);
    assert_eq!(second.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["data"][0]["id"], made[0].0.to_string());
    assert!(second.body["next_cursor"].is_null());
    for (_, token) in &made {
        assert!(!first.text.contains(token.as_str()) && !second.text.contains(token.as_str()), "never the token");
    }
    for item in page {
        assert!(item.get("token").is_none() && item.get("token_hash").is_none());
    }
    app.get("/v1/admin/service-tokens?limit=0", ADMIN).await.assert_error(400, "invalid_request");
    app.get("/v1/admin/service-tokens?cursor=nope", ADMIN).await.assert_error(400, "invalid_request");

    // Admin only.
    let t = app.create_tenant("a").await;
    let (_, key) = app.tenant_key(t).await;
    app.get("/v1/admin/service-tokens", &key).await.assert_error(403, "forbidden");
    app.get("/v1/admin/service-tokens", &made[0].1).await.assert_error(403, "forbidden");
    app.delete(&format!("/v1/admin/service-tokens/{}", made[0].0), &key).await.assert_error(403, "forbidden");
    app.delete(&format!("/v1/admin/service-tokens/{}", made[0].0), &made[1].1).await.assert_error(403, "forbidden");
    app.get("/v1/admin/service-tokens", "").await.assert_error(401, "unauthorized");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once_here_and_within_the_ttl_elsewhere() {
    let a = TestApp::spawn_with(|c| c.run_workers = false).await;
    let ttl = Duration::from_millis(400);
    let b = TestApp::spawn_on(a.db.clone(), |c| {
        c.run_workers = false;
        c.auth_cache_ttl = ttl;
    })
    .await;
    let t = a.create_tenant("a").await;
    a.fund(t, "10").await;
    let (id, token) = create(&a, "backend").await;
    let (other_id, other) = create(&a, "other backend").await;
    // Both replicas have the token cached.
    charge_with(&a, &token, t).await.assert(201);
    charge_with(&b, &token, t).await.assert(201);

    a.delete(&format!("/v1/admin/service-tokens/{id}"), ADMIN).await.assert(204);
    charge_with(&a, &token, t).await.assert_error(401, "unauthorized");
    a.get(&format!("/v1/tenants/{t}/balance"), &token).await.assert_error(401, "unauthorized");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    charge_with(&b, &token, t).await.assert_error(401, "unauthorized");

    // The other token is untouched; the list no longer shows the revoked one.
    charge_with(&a, &other, t).await.assert(201);
    let list = a.get("/v1/admin/service-tokens", ADMIN).await;
    let ids: Vec<&str> = list.body["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![other_id.to_string().as_str()]);
    // Revoking again, or a token that never existed: 404; a bad id: 400.
    a.delete(&format!("/v1/admin/service-tokens/{id}"), ADMIN).await.assert_error(404, "not_found");
    a.delete(&format!("/v1/admin/service-tokens/{}", Uuid::now_v7()), ADMIN).await.assert_error(404, "not_found");
    a.delete("/v1/admin/service-tokens/nope", ADMIN).await.assert_error(400, "invalid_request");
    // The revoked token's row stays: the ledger still names it as the actor of its charges.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM service_tokens WHERE id = $1 AND revoked_at IS NOT NULL")
        .bind(id)
        .fetch_one(&a.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);
    assert_eq!(a.balance(t).await["available"], "9.70");
    a.assert_ledger_ok().await;
}
