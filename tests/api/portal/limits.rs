//! Spend limits and allowed models through the portal's forms (the key service and the
//! spend-limit service, with the API's checks and messages, the limits then enforced on
//! charges), top-up refunds and reversals in the history and the breakdown, and the runway.

use serde_json::{json, Value};
use uuid::Uuid;

use super::support::*;
use crate::helpers::*;
use crate::limits::charge_key;
use crate::top_ups::{fast, mock_of};

/// The key's view through the API.
async fn key_of(app: &TestApp, t: Uuid, key: Uuid) -> Value {
    let r = app.get(&format!("/v1/tenants/{t}/api-keys/{key}"), ADMIN).await;
    r.assert(200);
    r.body
}

/// The limits form of one key, as its page sends it.
fn limits<'a>(csrf: &'a str, amount: &'a str, window: &'a str, models: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![("csrf", csrf), ("action", "limits"), ("limit_amount", amount), ("limit_window", window)];
    match models {
        Some(m) => f.extend([("models", "only"), ("allowed_models", m)]),
        None => f.push(("models", "all")),
    }
    f
}

/// What the API says to the same bad key change, as the page words it.
async fn api_says(app: &TestApp, t: Uuid, key: Uuid, body: Value) -> String {
    let r = app.patch(&format!("/v1/tenants/{t}/api-keys/{key}"), ADMIN, body).await;
    r.assert_error(400, "invalid_request");
    let d = r.str("detail");
    let mut c = d.chars();
    let first = c.next().unwrap().to_uppercase().collect::<String>();
    format!("{first}{}", c.as_str())
}

#[tokio::test]
async fn a_keys_spend_limit_and_models_are_set_changed_and_cleared_by_form_and_hold() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let (key, _) = app.tenant_key(t).await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let path = format!("/portal/api-keys/{key}");
    let page = p.get("/portal/api-keys").await;
    page.assert(200).assert_contains("No limit").assert_contains("Models: <span class=\"muted\">all</span>");
    assert_eq!(page.field("limit_amount").as_deref(), Some(""), "the create form: no limit");

    // Set: a day limit and two models.
    let r = p.post(&path, &limits(&csrf, "10", "day", Some("gpt-4o, claude-sonnet"))).await;
    r.assert_redirect(&format!("/portal/api-keys?done=limits#key-{key}"));
    let k = key_of(&app, t, key).await;
    assert_eq!(k["spend_limit"], json!({ "amount": "10.00", "window": "day" }));
    assert_eq!(k["allowed_models"], json!(["gpt-4o", "claude-sonnet"]));
    // Real: the limit holds on charges, the models on priced ones.
    charge_key(&app, t, Some(key), "3.50").await.assert(201);
    charge_key(&app, t, Some(key), "6.51").await.assert_error(402, "spend_limit_exceeded");
    let sdxl = json!({ "tenant_id": t, "model": "sdxl", "usage": { "width": 1024, "height": 1024, "count": 1 }, "api_key_id": key });
    app.post_idem("/v1/charges", ADMIN, "sdxl", sdxl).await.assert_error(403, "model_not_allowed");
    let page = p.get("/portal/api-keys?done=limits").await;
    page.assert_contains("The key's spend limit and models were saved").assert_contains("$10.00 a day");
    page.assert_contains("$3.50 spent, resets").assert_contains("<code>gpt-4o</code>, <code>claude-sonnet</code>");
    assert_eq!(page.field("limit_amount").as_deref(), Some(""), "the create form comes first, empty");
    let row = &page.text[page.text.find(&format!("id=\"key-{key}\"")).unwrap()..];
    assert_eq!(field(row, "limit_amount").as_deref(), Some("10.00"), "the key's form shows what is saved");
    assert_eq!(field(row, "allowed_models").as_deref(), Some("gpt-4o, claude-sonnet"));

    // Changed: a week's limit, recounted at once (the day's 3.50 is in this week).
    p.post(&path, &limits(&csrf, "$20", "week", Some("gpt-4o"))).await.assert(303);
    let k = key_of(&app, t, key).await;
    assert_eq!(k["spend_limit"], json!({ "amount": "20.00", "window": "week" }));
    assert_eq!((k["spent_in_window"].as_str(), k["allowed_models"].clone()), (Some("3.50"), json!(["gpt-4o"])));
    p.get("/portal/api-keys").await.assert_contains("$20.00 a week").assert_contains("$3.50 spent");

    // Refused, with the API's own words, the key's form open with what was typed, nothing changed.
    let zero = api_says(&app, t, key, json!({ "spend_limit": { "amount": "0", "window": "day" } })).await;
    let unknown = api_says(&app, t, key, json!({ "allowed_models": ["gpt-5"] })).await;
    for (form, words) in [
        (limits(&csrf, "0", "day", None), zero.as_str()),
        (limits(&csrf, "-5", "day", None), zero.as_str()),
        (limits(&csrf, "5", "day", Some("gpt-4o, gpt-5")), unknown.as_str()),
        (limits(&csrf, "1.0000001", "day", None), "The spend limit can have at most 6 decimal places"),
        (limits(&csrf, "ten", "day", None), "The spend limit must be an amount in dollars"),
        (limits(&csrf, "5", "year", None), "day, week, month or lifetime"),
    ] {
        let r = p.post(&path, &form).await;
        r.assert(400).assert_contains(words);
        r.assert_contains("<details class=\"limits\" open>").assert_contains("role=\"alert\"");
        let row = &r.text[r.text.find(&format!("id=\"key-{key}\"")).unwrap()..];
        assert_eq!(field(row, "limit_amount").as_deref(), Some(form[2].1), "what was typed is kept");
    }
    let k = key_of(&app, t, key).await;
    assert_eq!((k["spend_limit"]["amount"].as_str(), k["allowed_models"].clone()), (Some("20.00"), json!(["gpt-4o"])));

    // "Only these models" with none listed: explicit amounts only, as the API's [].
    p.post(&path, &limits(&csrf, "20", "week", Some(" "))).await.assert(303);
    assert_eq!(key_of(&app, t, key).await["allowed_models"], json!([]));
    p.get("/portal/api-keys").await.assert_contains("Models: none (fixed amounts only)");
    // Cleared: no amount, every model.
    p.post(&path, &limits(&csrf, "", "week", None)).await.assert(303);
    let k = key_of(&app, t, key).await;
    assert_eq!((k["spend_limit"].clone(), k["allowed_models"].clone()), (Value::Null, Value::Null));
    charge_key(&app, t, Some(key), "30").await.assert(201);
    p.get("/portal/api-keys")
        .await
        .assert_contains("No limit")
        .assert_contains("Models: <span class=\"muted\">all</span>");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_key_is_created_with_its_limit_and_models_or_refused_with_what_was_typed() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    p.get("/portal/api-keys").await.assert_contains("Models priced here:").assert_contains("<code>flux-pro</code>");
    let create = |name: &'static str, amount: &'static str, models: &'static str| {
        let (p, csrf) = (&p, csrf.clone());
        async move {
            let mut f = limits(&csrf, amount, "month", Some(models));
            f[1] = ("name", name);
            p.post("/portal/api-keys", &f).await
        }
    };
    let r = create("bad models", "5", "gpt-4o, no-such-model").await;
    r.assert(400).assert_contains("Allowed_models: unknown model `no-such-model`");
    assert_eq!(r.field("name").as_deref(), Some("bad models"), "what was typed is kept");
    assert_eq!(r.field("allowed_models").as_deref(), Some("gpt-4o, no-such-model"));
    create("bad amount", "5.1234567", "").await.assert(400).assert_contains("at most 6 decimal places");
    assert_eq!(count(&app, "SELECT count(*) FROM api_keys WHERE tenant_id = $1", t).await, 0, "nothing created");

    let made = create("limited", "5", "gpt-4o").await;
    made.assert(201).assert_contains("Copy it now");
    let listed = app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await;
    let k = &listed.body["data"][0];
    assert_eq!(
        (k["name"].as_str(), k["spend_limit"].clone()),
        (Some("limited"), json!({ "amount": "5.00", "window": "month" }))
    );
    assert_eq!(k["allowed_models"], json!(["gpt-4o"]));
    made.assert_contains("$5.00 a month");
}

#[tokio::test]
async fn another_tenants_key_is_not_found_and_a_form_without_its_token_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant("a").await;
    let b = app.create_tenant("b").await;
    let (a_key, _) = app.tenant_key(a).await;
    let (b_key, _) = app.tenant_key(b).await;
    let p = Portal::open(&app, a).await;
    let csrf = p.csrf().await;
    for form in [limits(&csrf, "1", "day", None), limits(&csrf, "2", "week", Some("gpt-4o"))] {
        p.post(&format!("/portal/api-keys/{b_key}"), &form).await.assert(404).assert_contains("Not found");
    }
    // Bad input is refused before any key is looked up, as by the API: nothing of B's shows.
    let r = p.post(&format!("/portal/api-keys/{b_key}"), &limits(&csrf, "0", "day", None)).await;
    r.assert(400).assert_contains("must be positive");
    assert!(!r.text.contains(&b_key.to_string()));
    let k = key_of(&app, b, b_key).await;
    assert_eq!((k["spend_limit"].clone(), k["allowed_models"].clone()), (Value::Null, Value::Null));
    p.get("/portal/api-keys").await.assert(200);

    // Without the session's token: refused before anything is read.
    let mut no_token = limits(&csrf, "1", "day", None);
    no_token.remove(0);
    p.post(&format!("/portal/api-keys/{a_key}"), &no_token).await.assert(403).assert_contains("Nothing was changed");
    p.post("/portal/settings/spend-limits", &[("day", "1"), ("month", "")]).await.assert(403);
    assert_eq!(key_of(&app, a, a_key).await["spend_limit"], Value::Null);
    assert_eq!(count(&app, "SELECT count(*) FROM tenant_spend_limits WHERE tenant_id = $1", a).await, 0);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_accounts_spend_limits_are_set_shown_enforced_and_cleared_on_the_settings_page() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let other = app.create_tenant("other").await;
    app.fund(t, "100").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let page = p.get("/portal/settings").await;
    page.assert(200).assert_contains("Spend limits").assert_contains("No limit");
    let put = |day: &'static str, month: &'static str| {
        let (p, csrf) = (&p, csrf.clone());
        // A tenant id in the form is not read: the session's tenant is the one changed.
        let other = other.to_string();
        async move {
            p.post(
                "/portal/settings/spend-limits",
                &[("csrf", &csrf), ("day", day), ("month", month), ("tenant_id", &other)],
            )
            .await
        }
    };
    put("5", "$1,000").await.assert_redirect("/portal/settings?done=spend_limits#spend-limits");
    let l = app.get(&format!("/v1/tenants/{t}/spend-limits"), ADMIN).await;
    assert_eq!((l.body["day"]["limit"].as_str(), l.body["month"]["limit"].as_str()), (Some("5.00"), Some("1000.00")));
    let o = app.get(&format!("/v1/tenants/{other}/spend-limits"), ADMIN).await;
    assert_eq!((o.body["day"].clone(), o.body["month"].clone()), (Value::Null, Value::Null));
    // Enforced on every charge, whichever key (or none).
    charge_key(&app, t, None, "3").await.assert(201);
    charge_key(&app, t, None, "2.01").await.assert_error(402, "spend_limit_exceeded");
    let page = p.get("/portal/settings?done=spend_limits").await;
    page.assert_contains("Spend limits saved.").assert_contains("$3.00 spent of <strong>$5.00</strong>");
    page.assert_contains("$3.00 spent of <strong>$1,000.00</strong>").assert_contains("Resets");
    assert_eq!((page.field("day").as_deref(), page.field("month").as_deref()), (Some("5.00"), Some("1000.00")));

    // Refused with the API's words, what was typed kept, nothing changed.
    let api = app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "0" })).await;
    api.assert_error(400, "invalid_request");
    let zero = api.str("detail");
    let r = put("0", "1000").await;
    r.assert(400).assert_contains(&format!("D{}", &zero[1..])).assert_contains("role=\"alert\"");
    assert_eq!(r.field("day").as_deref(), Some("0"));
    put("-1", "").await.assert(400).assert_contains("must be positive");
    put("5", "0.0000001").await.assert(400).assert_contains("The monthly limit can have at most 6 decimal places");
    put("five", "").await.assert(400).assert_contains("The daily limit must be an amount in dollars");
    let l = app.get(&format!("/v1/tenants/{t}/spend-limits"), ADMIN).await;
    assert_eq!((l.body["day"]["limit"].as_str(), l.body["month"]["limit"].as_str()), (Some("5.00"), Some("1000.00")));

    // Cleared: empty is no limit.
    put("", "1000").await.assert(303);
    let l = app.get(&format!("/v1/tenants/{t}/spend-limits"), ADMIN).await;
    assert_eq!((l.body["day"].clone(), l.body["month"]["limit"].as_str()), (Value::Null, Some("1000.00")));
    charge_key(&app, t, None, "10").await.assert(201);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn refunded_and_reversed_top_ups_show_in_the_history_and_the_breakdown_with_the_runway() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
    })
    .await;
    let t = app.create_tenant("a").await;
    card(&app, t, "pm_mock_ok").await;
    let up = |key: &'static str| {
        let app = &app;
        async move {
            let r = app.post_idem(&format!("/v1/tenants/{t}/top-ups"), ADMIN, key, json!({ "amount": "50" })).await;
            r.assert(201);
            r.id()
        }
    };
    let (first, second) = (up("t1").await, up("t2").await);
    let p = Portal::open(&app, t).await;
    p.get("/portal/top-ups").await.assert(200).assert_contains("Succeeded");
    assert!(!p.get("/portal/top-ups").await.text.contains("Refunds and reversals"));

    // Part of the first refunded through the platform, the rest reversed by the bank;
    // the second refunded whole.
    let refund = |id: Uuid, key: &'static str, body: Value| {
        let app = &app;
        async move {
            app.post_idem(&format!("/v1/tenants/{t}/top-ups/{id}/refunds"), ADMIN, key, body)
                .await
                .assert(201)
                .body
                .clone()
        }
    };
    refund(first, "r1", json!({ "amount": "20", "reason": "customer asked" })).await;
    let page = p.get("/portal/top-ups").await;
    page.assert_contains("Partly refunded").assert_contains("$20.00 refunded").assert_contains("customer asked");
    page.assert_contains("Credit taken back: $20.00 paid, $2.00 bonus.");
    app.post("/v1/admin/mock-provider/reversals", ADMIN, json!({ "top_up_id": first })).await.assert(201);
    refund(second, "r2", json!({ "reason": "closing" })).await;
    assert_eq!(mock_of(&app).refunds().len(), 2);
    let page = p.get("/portal/top-ups").await;
    page.assert_contains("$30.00 reversed").assert_contains("Reversal by the card's bank");
    page.assert_contains("$50.00 refunded");
    assert_eq!(page.text.matches("class=\"status refunded\">Refunded<").count(), 2, "both gone back whole");
    assert!(!page.text.contains("Partly"));

    // The breakdown: 110 in, all 110 back out.
    let bd = app.get(&format!("/v1/tenants/{t}/balance/breakdown"), ADMIN).await;
    assert_eq!(bd.body["debited"]["top_up_refund"], "110.00");
    let home = p.get("/portal").await;
    home.assert_contains("Top-up refunds and reversals</th><td class=\"num\">$110.00</td>");
    home.assert_contains("Net (all time)</th><td class=\"num\">$0.00</td>");

    // The runway, as the balance has it: 7 days of usage, then days at that rate.
    home.assert_contains("Runway").assert_contains("No recent usage");
    app.fund(t, "100").await;
    charge_key(&app, t, None, "14").await.assert(201);
    let runway = app.balance(t).await["runway"].clone();
    assert_eq!((runway["daily_burn"].as_str(), runway["days_left"].as_f64()), (Some("2.00"), Some(43.0)));
    p.get("/portal")
        .await
        .assert_contains(">43 days<")
        .assert_contains("At $2.00 a day, the average of the last 7 days.");
    app.assert_ledger_ok().await;
}
