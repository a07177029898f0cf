//! What the pages show: one tenant's data only, escaped, read-only when suspended, and a
//! CSV download made by the API's own CSV code.

use serde_json::json;
use uuid::Uuid;

use super::support::*;
use crate::helpers::*;

/// A tenant with a bit of everything: a key, charges on it, a top-up, events, a webhook.
async fn busy_tenant(app: &TestApp, name: &str, key_name: &str, amount: &str) -> (Uuid, Uuid, Uuid) {
    let t = app.create_tenant(name).await;
    card(app, t, "pm_mock_ok").await;
    let top = app
        .post_idem(&format!("/v1/tenants/{t}/top-ups"), ADMIN, &Uuid::now_v7().to_string(), json!({ "amount": amount }))
        .await;
    top.assert(201);
    let key = app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({ "name": key_name })).await;
    key.assert(201);
    let key_id = key.id();
    let charge = app
        .post_idem(
            "/v1/charges",
            ADMIN,
            &Uuid::now_v7().to_string(),
            json!({ "tenant_id": t, "amount": "1.25", "api_key_id": key_id, "description": format!("{name} job") }),
        )
        .await;
    charge.assert(201);
    (t, key_id, top.id())
}

#[tokio::test]
async fn a_session_of_one_tenant_never_shows_another_tenants_data() {
    let app = TestApp::spawn_with(|c| c.allow_private_webhooks = true).await;
    let (a, _, _) = busy_tenant(&app, "Alpha", "alpha-key", "50").await;
    let (b, b_key, b_top_up) = busy_tenant(&app, "Bravo", "bravo-secret-key", "777").await;
    app.put(&format!("/v1/tenants/{b}/webhook"), ADMIN, json!({ "url": "http://127.0.0.1:9/bravo-hook" }))
        .await
        .assert(200);
    let b_txn = app.get(&format!("/v1/tenants/{b}/transactions"), ADMIN).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = Portal::open(&app, a).await;
    let bravo =
        // Bravo's top-up as money ("777.00"): a bare "777" can occur in any id.
        ["Bravo", "bravo-secret-key", "777.00", &b.to_string(), &b_key.to_string(), &b_top_up.to_string(), "bravo-hook"];
    let pages = [
        format!("/portal?tenant_id={b}"),
        format!("/portal/usage?tenant_id={b}&days=90"),
        format!("/portal/transactions?tenant_id={b}&cursor={b_txn}"),
        format!("/portal/transactions?api_key_id={b_key}"),
        format!("/portal/api-keys?tenant_id={b}&cursor={b_key}"),
        format!("/portal/top-ups?done={b_top_up}&tenant_id={b}"),
        format!("/portal/settings?tenant_id={b}"),
    ];
    for path in &pages {
        let r = p.get(path).await;
        r.assert(200);
        for secret in bravo {
            assert!(!r.text.contains(secret), "{path} shows {secret}");
        }
    }
    let own = p.get("/portal").await;
    own.assert_contains("Alpha").assert_contains("$48.75");
    p.get("/portal/api-keys").await.assert_contains("alpha-key");
    p.get(&format!("/portal/top-ups/{b_top_up}/receipt")).await.assert(404);
    p.get("/portal/top-ups/not-a-uuid/receipt").await.assert(404);
    let csv = p.get(&format!("/portal/transactions.csv?tenant_id={b}")).await;
    csv.assert(200);
    assert!(!csv.text.contains("777.00") && !csv.text.contains("Bravo"));

    // Forms naming B's key or B itself change nothing of B's.
    let csrf = p.csrf().await;
    let rename =
        p.post(&format!("/portal/api-keys/{b_key}"), &[("csrf", &csrf), ("action", "rename"), ("name", "pwned")]).await;
    rename.assert(404);
    p.post(&format!("/portal/api-keys/{b_key}"), &[("csrf", &csrf), ("action", "disable")]).await.assert(404);
    let key = app.get(&format!("/v1/tenants/{b}/api-keys/{b_key}"), ADMIN).await;
    assert_eq!((key.str("name"), key.str("status")), ("bravo-secret-key".into(), "enabled".into()));
    let page = p.get("/portal/top-ups").await;
    let form_key = page.field("idempotency_key").unwrap();
    p.post(
        "/portal/top-ups",
        &[("csrf", &csrf), ("idempotency_key", &form_key), ("amount", "20"), ("tenant_id", &b.to_string())],
    )
    .await
    .assert(303);
    assert_eq!(app.balance(a).await["total"], "68.75", "the session's tenant was topped up");
    assert_eq!(app.balance(b).await["total"], "775.75", "the other one was not");
    let hook = [("csrf", csrf.as_str()), ("url", "http://127.0.0.1:9/alpha"), ("tenant_id", &b.to_string())];
    p.post("/portal/settings/webhook", &hook).await.assert(400).assert_contains("Choose at least one event");
    let mut hook = hook.to_vec();
    hook.push(("events", "balance.low"));
    p.post("/portal/settings/webhook", &hook).await.assert(200);
    let b_hook: String = sqlx::query_scalar("SELECT url FROM webhook_endpoints WHERE tenant_id = $1")
        .bind(b)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(b_hook, "http://127.0.0.1:9/bravo-hook");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn names_are_shown_as_text() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("<script>alert('tenant')</script>").await;
    app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({ "name": "<script>alert(\"key\")</script>" }))
        .await
        .assert(201);
    app.fund(t, "5").await;
    app.post_idem(
        "/v1/charges",
        ADMIN,
        "c1",
        json!({ "tenant_id": t, "amount": "1", "description": "<img src=x onerror=alert(1)>" }),
    )
    .await
    .assert(201);
    let p = Portal::open(&app, t).await;
    for path in
        ["/portal", "/portal/api-keys", "/portal/usage", "/portal/transactions", "/portal/top-ups", "/portal/settings"]
    {
        let r = p.get(path).await;
        r.assert(200);
        assert!(!r.text.contains("<script"), "{path}: {}", r.text);
        assert!(!r.text.contains("<img"), "{path}");
        r.assert_contains("&lt;script&gt;alert(");
    }
    p.get("/portal/api-keys").await.assert_contains("&lt;script&gt;alert(&quot;key&quot;)&lt;/script&gt;");
    p.get("/portal/transactions").await.assert_contains("&lt;img src=x onerror=alert(1)&gt;");
    // Created through the portal, too.
    let csrf = p.csrf().await;
    let made = p.post("/portal/api-keys", &[("csrf", &csrf), ("name", "<b>bold</b>")]).await;
    made.assert(201);
    assert!(made.text.contains("&lt;b&gt;bold&lt;/b&gt;") && !made.text.contains("<b>bold"));
}

#[tokio::test]
async fn a_suspended_tenants_portal_is_read_only() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    card(&app, t, "pm_mock_ok").await;
    let (key_id, _) = app.tenant_key(t).await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let form_key = p.get("/portal/top-ups").await.field("idempotency_key").unwrap();
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);

    let home = p.get("/portal").await;
    home.assert(200).assert_contains("This account is suspended");
    let keys = p.get("/portal/api-keys").await;
    keys.assert_contains("<fieldset disabled>");
    p.get("/portal/top-ups").await.assert_contains("<fieldset disabled>");
    p.get("/portal/settings").await.assert_contains("<fieldset disabled>");

    let refused = [
        p.post("/portal/api-keys", &[("csrf", &csrf), ("name", "new")]).await,
        p.post(&format!("/portal/api-keys/{key_id}"), &[("csrf", &csrf), ("action", "disable")]).await,
        p.post(
            &format!("/portal/api-keys/{key_id}"),
            &[("csrf", &csrf), ("action", "limits"), ("limit_amount", "1"), ("limit_window", "day")],
        )
        .await,
        p.post("/portal/settings/spend-limits", &[("csrf", &csrf), ("day", "1"), ("month", "")]).await,
        p.post("/portal/top-ups", &[("csrf", &csrf), ("idempotency_key", &form_key), ("amount", "50")]).await,
        p.post(
            "/portal/settings/auto-top-up",
            &[("csrf", &csrf), ("enabled", "on"), ("threshold", "10"), ("amount", "20")],
        )
        .await,
        p.post(
            "/portal/settings/webhook",
            &[("csrf", &csrf), ("url", "https://example.com/h"), ("events", "balance.low")],
        )
        .await,
    ];
    for r in &refused {
        r.assert(403).assert_contains("suspended");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM api_keys WHERE tenant_id = $1", t).await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM top_ups WHERE tenant_id = $1", t).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM auto_top_up WHERE tenant_id = $1", t).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", t).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM tenant_spend_limits WHERE tenant_id = $1", t).await, 0);
    let key = app.get(&format!("/v1/tenants/{t}/api-keys/{key_id}"), ADMIN).await;
    assert_eq!(key.str("status"), "enabled");
    assert!(key.body["spend_limit"].is_null());
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_csv_download_is_the_apis_csv_of_every_matching_row() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    for i in 0..3 {
        app.post_idem(
            "/v1/charges",
            ADMIN,
            &format!("c{i}"),
            json!({ "tenant_id": t, "amount": "2.50", "description": format!("job, \"{i}\"") }),
        )
        .await
        .assert(201);
    }
    let p = Portal::open(&app, t).await;
    let csv = p.get("/portal/transactions.csv").await;
    csv.assert(200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let disposition = csv.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"transactions-"), "{disposition}");
    let api = app
        .client
        .get(format!("{}/v1/tenants/{t}/transactions?limit=200", app.base))
        .bearer_auth(ADMIN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.text, api, "the same rows, written by the same code");
    assert_eq!(csv.text.lines().count(), 1 + 4, "header, the funding and three charges");
    assert!(csv.text.contains("\"job, \"\"1\"\"\""), "quoted as the API quotes");

    let usage = p.get("/portal/transactions.csv?kind=usage").await;
    assert_eq!(usage.text.lines().count(), 1 + 3);
    assert!(usage.text.lines().skip(1).all(|l| l.contains(",usage,")));
    // The page offers the same filter in its download link.
    p.get("/portal/transactions?kind=usage").await.assert_contains("href=\"/portal/transactions.csv?kind=usage\"");
    // Paging with the API's cursors: one page of 50 at most, "Older" goes on.
    for i in 0..60 {
        app.post_idem("/v1/charges", ADMIN, &format!("p{i}"), json!({ "tenant_id": t, "amount": "0.01" }))
            .await
            .assert(201);
    }
    let first = p.get("/portal/transactions").await;
    assert_eq!(first.text.matches("data-label=\"Balance after\"").count(), 50);
    let older =
        first.text.split("href=\"/portal/transactions?cursor=").nth(1).unwrap().split('"').next().unwrap().to_string();
    let second = p.get(&format!("/portal/transactions?cursor={older}")).await;
    assert_eq!(second.text.matches("data-label=\"Balance after\"").count(), 14);
    assert_eq!(p.get("/portal/transactions.csv").await.text.lines().count(), 1 + 64, "the download is not paged");
    app.assert_ledger_ok().await;
}
