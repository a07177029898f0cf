//! Forms: the CSRF token, and the same services, checks and idempotency as the API.

use std::time::Duration;

use super::support::*;
use crate::helpers::*;
use crate::top_ups::{fast, mock_of};

#[tokio::test]
async fn a_form_without_this_sessions_csrf_token_is_refused_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| c.allow_private_webhooks = true).await;
    let t = app.create_tenant("a").await;
    card(&app, t, "pm_mock_ok").await;
    let (key_id, _) = app.tenant_key(t).await;
    let p = Portal::open(&app, t).await;
    let other = Portal::open(&app, t).await; // another session of the same tenant
    let foreign = other.csrf().await;
    let form_key = p.get("/portal/top-ups").await.field("idempotency_key").unwrap();
    let key_path = format!("/portal/api-keys/{key_id}");
    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/portal/api-keys", vec![("name", "sneaky")]),
        (&key_path, vec![("action", "rename"), ("name", "sneaky")]),
        (&key_path, vec![("action", "disable")]),
        (&key_path, vec![("action", "limits"), ("limit_amount", "1"), ("limit_window", "day"), ("models", "all")]),
        ("/portal/settings/spend-limits", vec![("day", "1"), ("month", "2")]),
        ("/portal/top-ups", vec![("idempotency_key", &form_key), ("amount", "50")]),
        ("/portal/settings/auto-top-up", vec![("enabled", "on"), ("threshold", "10"), ("amount", "20")]),
        ("/portal/settings/webhook", vec![("url", "http://127.0.0.1:9/h"), ("events", "balance.low")]),
        ("/portal/sign-out", vec![]),
    ];
    for (path, fields) in &forms {
        for csrf in [None, Some(""), Some("0000"), Some(foreign.as_str())] {
            let mut f = fields.clone();
            if let Some(c) = csrf {
                f.push(("csrf", c));
            }
            let r = p.post(path, &f).await;
            r.assert(403).assert_contains("Nothing was changed");
            assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/html"), "a page, not JSON");
        }
    }
    // Nothing changed, and the session is still open.
    assert_eq!(count(&app, "SELECT count(*) FROM api_keys WHERE tenant_id = $1", t).await, 1);
    let key = app.get(&format!("/v1/tenants/{t}/api-keys/{key_id}"), ADMIN).await;
    assert_eq!((key.str("name"), key.str("status")), ("k".into(), "enabled".into()));
    assert!(key.body["spend_limit"].is_null());
    assert_eq!(count(&app, "SELECT count(*) FROM tenant_spend_limits WHERE tenant_id = $1", t).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM top_ups WHERE tenant_id = $1", t).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM auto_top_up WHERE tenant_id = $1", t).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", t).await, 0);
    assert!(mock_of(&app).calls().is_empty());
    p.get("/portal").await.assert(200);
    // With the right token, the same form works.
    let csrf = p.csrf().await;
    p.post("/portal/api-keys", &[("csrf", &csrf), ("name", "fine")]).await.assert(201);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_top_up_form_sent_twice_charges_the_card_once() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
    })
    .await;
    let t = app.create_tenant("a").await;
    card(&app, t, "pm_mock_ok").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let page = p.get("/portal/top-ups").await;
    page.assert(200).assert_contains("Visa ending 4242").assert_contains("10% bonus");
    let form_key = page.field("idempotency_key").unwrap();
    assert!(!form_key.is_empty());
    let again = p.get("/portal/top-ups").await.field("idempotency_key").unwrap();
    assert_ne!(form_key, again, "every drawn form gets its own key");

    let form = [("csrf", csrf.as_str()), ("idempotency_key", form_key.as_str()), ("amount", "50")];
    let first = p.post("/portal/top-ups", &form).await;
    first.assert(303);
    let done = first.location();
    assert!(done.starts_with("/portal/top-ups?done="), "{done}");
    let second = p.post("/portal/top-ups", &form).await;
    second.assert_redirect(&done);
    let shown = p.get(&done).await;
    shown.assert(200).assert_contains("Your top-up of $50.00 plus a $5.00 bonus succeeded");
    shown.assert_contains("Your total balance is now $55.00");

    // The same form sent twice at once (a double click): still one charge.
    let form_key = p.get("/portal/top-ups").await.field("idempotency_key").unwrap();
    let form = [("csrf", csrf.as_str()), ("idempotency_key", form_key.as_str()), ("amount", "30")];
    let (a, b) = tokio::join!(p.post("/portal/top-ups", &form), p.post("/portal/top-ups", &form));
    a.assert(303);
    b.assert_redirect(&a.location());

    // A key the page did not make (one a backend might use) is refused, charging nothing.
    let forged = [("csrf", csrf.as_str()), ("idempotency_key", "job-42"), ("amount", "30")];
    p.post("/portal/top-ups", &forged).await.assert(400).assert_contains("reload the page");
    assert_eq!(count(&app, "SELECT count(*) FROM top_ups WHERE tenant_id = $1", t).await, 2);
    assert_eq!(mock_of(&app).charges().len(), 2, "two forms, two charges");
    let top_up_txns =
        count(&app, "SELECT count(*) FROM ledger_transactions WHERE tenant_id = $1 AND kind = 'top_up'", t).await;
    assert_eq!(top_up_txns, 2);
    let b = app.balance(t).await;
    assert_eq!((b["paid"].as_str(), b["bonus"].as_str()), (Some("80.00"), Some("8.00")));
    // The history lists both, with receipts reachable in the session.
    let history = p.get("/portal/top-ups").await;
    let receipt = history.text.split("href=\"/portal/top-ups/").nth(1).unwrap().split('"').next().unwrap().to_string();
    let r = p.get(&format!("/portal/top-ups/{receipt}")).await;
    r.assert(200).assert_contains("Receipt").assert_contains("visa ending 4242");
    assert!(r.headers["content-security-policy"].to_str().unwrap().contains("script-src 'none'"));
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn top_up_errors_are_told_in_plain_words_on_the_page() {
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let submit = |key: String, amount: &'static str| {
        let (p, csrf) = (&p, csrf.clone());
        async move { p.post("/portal/top-ups", &[("csrf", &csrf), ("idempotency_key", &key), ("amount", amount)]).await }
    };
    let key = || async { p.get("/portal/top-ups").await.field("idempotency_key").unwrap() };

    // No card on file.
    let r = submit(key().await, "50").await;
    r.assert(422).assert_contains("There is no card on file");
    card(&app, t, "pm_mock_ok").await;
    // Amounts that are not amounts, or outside the limits.
    submit(key().await, "fifty").await.assert(400).assert_contains("must be an amount in dollars");
    submit(key().await, "").await.assert(400).assert_contains("Enter The amount");
    submit(key().await, "4").await.assert(400).assert_contains("Amount must be at least 5");
    submit(key().await, "12.50").await.assert(400).assert_contains("whole number of dollars");
    assert!(mock_of(&app).calls().is_empty());

    // A declined card: said so, nothing taken, and a fresh form for the next try.
    card(&app, t, "pm_mock_declined").await;
    let declined_key = key().await;
    let r = submit(declined_key.clone(), "25").await;
    r.assert(402).assert_contains("Your card was declined (card_declined: insufficient funds)");
    r.assert_contains("No money was taken");
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let fresh = r.field("idempotency_key").unwrap();
    assert_ne!(fresh, declined_key);
    assert_eq!(r.field("amount").as_deref(), Some("25"), "what was typed is kept");
    // The declined form sent again shows the same decline without a second provider call.
    submit(declined_key, "25").await.assert(402).assert_contains("declined");
    assert_eq!(mock_of(&app).calls().len(), 1);
    p.get("/portal/top-ups").await.assert_contains("Declined: card_declined");

    // The provider does not answer: safe to send again, with the same key.
    card(&app, t, "pm_mock_ok").await;
    mock_of(&app).fail_next("pm_mock_ok", 1);
    let k = key().await;
    let r = submit(k.clone(), "40").await;
    r.assert(503).assert_contains("Sending this form again is safe");
    assert_eq!(r.field("idempotency_key").as_deref(), Some(k.as_str()), "the retry keeps the key");
    submit(k, "40").await.assert(303);
    assert_eq!(mock_of(&app).charges().len(), 1, "one charge for that form");
    assert_eq!(app.balance(t).await["paid"], "40.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn api_keys_are_created_shown_once_renamed_disabled_and_enabled() {
    let app = TestApp::spawn_with(|c| c.auth_cache_ttl = Duration::from_millis(1)).await;
    let t = app.create_tenant("a").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let made = p.post("/portal/api-keys", &[("csrf", &csrf), ("name", "production backend")]).await;
    made.assert(201).assert_contains("Copy it now");
    let key = made.text.split("value=\"tk_").nth(1).unwrap().split('"').next().unwrap();
    let key = format!("tk_{key}");
    app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert(200);
    let list = p.get("/portal/api-keys").await;
    list.assert(200).assert_contains("production backend").assert_contains(&key[..12]);
    assert!(!list.text.contains(&key), "shown once only");
    let id =
        app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await.body["data"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/portal/api-keys/{id}");

    p.post(&path, &[("csrf", &csrf), ("action", "rename"), ("name", "  staging  ")])
        .await
        .assert_redirect("/portal/api-keys?done=renamed");
    p.get("/portal/api-keys?done=renamed").await.assert_contains("The key was renamed").assert_contains(">staging<");
    p.post(&path, &[("csrf", &csrf), ("action", "rename"), ("name", " ")])
        .await
        .assert(400)
        .assert_contains("Name must be 1-200 characters");
    p.post(&path, &[("csrf", &csrf), ("action", "disable")]).await.assert_redirect("/portal/api-keys?done=disabled");
    app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert_error(401, "unauthorized");
    p.get("/portal/api-keys").await.assert_contains("Disabled");
    p.post(&path, &[("csrf", &csrf), ("action", "enable")]).await.assert_redirect("/portal/api-keys?done=enabled");
    app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert(200);
    p.post(&path, &[("csrf", &csrf), ("action", "delete")]).await.assert(400);
    p.post("/portal/api-keys/not-a-key", &[("csrf", &csrf), ("action", "disable")]).await.assert(404);
    let k = app.get(&format!("/v1/tenants/{t}/api-keys/{id}"), ADMIN).await;
    assert_eq!((k.str("name"), k.str("status")), ("staging".into(), "enabled".into()));
}

#[tokio::test]
async fn auto_top_up_and_the_webhook_are_set_through_the_api_services() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.allow_private_webhooks = true;
    })
    .await;
    let t = app.create_tenant("a").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let auto = |fields: Vec<(&'static str, &'static str)>| {
        let (p, csrf) = (&p, csrf.clone());
        async move {
            let mut f: Vec<(&str, &str)> = vec![("csrf", &csrf)];
            f.extend(fields);
            p.post("/portal/settings/auto-top-up", &f).await
        }
    };
    auto(vec![("enabled", "on"), ("threshold", "10"), ("amount", "20")])
        .await
        .assert(422)
        .assert_contains("needs a card on file");
    card(&app, t, "pm_mock_ok").await;
    auto(vec![("enabled", "on"), ("threshold", "10"), ("amount", "2")]).await.assert(400).assert_contains("at least 5");
    let r = auto(vec![("enabled", "on"), ("threshold", "ten"), ("amount", "20")]).await;
    r.assert(400).assert_contains("The threshold must be an amount");
    assert_eq!(r.field("threshold").as_deref(), Some("ten"), "what was typed is kept");
    auto(vec![("enabled", "on"), ("threshold", "0"), ("amount", "20")])
        .await
        .assert(400)
        .assert_contains("Threshold must be positive");
    // Saved, and (the balance being 0, below 10) the worker tops up at once, as with the API.
    auto(vec![("enabled", "on"), ("threshold", "10"), ("amount", "20"), ("monthly_limit", "100")])
        .await
        .assert_redirect("/portal/settings?done=auto_top_up#auto-top-up");
    let v = app.get(&format!("/v1/tenants/{t}/auto-top-up"), ADMIN).await;
    assert_eq!(
        (v.body["enabled"].as_bool(), v.str("threshold"), v.str("amount"), v.str("monthly_limit")),
        (Some(true), "10.00".into(), "20.00".into(), "100.00".into())
    );
    crate::top_ups::wait_until("the auto top-up", Duration::from_secs(10), || async {
        app.balance(t).await["paid"] == "20.00"
    })
    .await;
    let page = p.get("/portal/settings?done=auto_top_up").await;
    page.assert_contains("Auto top-up settings saved").assert_contains("checked");
    // Turned off again, no other field lost.
    auto(vec![("threshold", "10"), ("amount", "20"), ("monthly_limit", "100")]).await.assert(303);
    assert_eq!(app.get(&format!("/v1/tenants/{t}/auto-top-up"), ADMIN).await.body["enabled"], false);

    // The webhook: its secret shown once, the chosen events kept.
    let bad =
        p.post("/portal/settings/webhook", &[("csrf", &csrf), ("url", "ftp://x"), ("events", "balance.low")]).await;
    bad.assert(400).assert_contains("must be http or https");
    let r = p
        .post(
            "/portal/settings/webhook",
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook"),
                ("events", "top_up.succeeded"),
                ("events", "balance.low"),
            ],
        )
        .await;
    r.assert(200).assert_contains("Copy the signing secret now");
    assert!(r.text.contains("value=\"whsec_"), "the signing secret");
    let (url, events): (String, Option<Vec<String>>) =
        sqlx::query_as("SELECT url, events FROM webhook_endpoints WHERE tenant_id = $1")
            .bind(t)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(url, "http://127.0.0.1:9/hook");
    assert_eq!(events, Some(vec!["top_up.succeeded".to_string(), "balance.low".to_string()]));
    let again = p.get("/portal/settings").await;
    assert!(!again.text.contains("whsec_"), "the secret is shown once");
    again.assert_contains("top_up.succeeded").assert_contains("Recent events");
    app.assert_ledger_ok().await;
}
