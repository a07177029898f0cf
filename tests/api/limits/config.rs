//! Setting limits and allowed models: key create/PATCH/views/verify, the tenant's limits,
//! recounting a limit set mid-window, events, tenant isolation, bad input.

use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::helpers::*;

#[tokio::test]
async fn keys_show_their_limits_and_verify_answers_them() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "50").await;
    let body = json!({ "name": "prod", "spend_limit": { "amount": "25.5", "window": "week" }, "allowed_models": ["gpt-4o-mini", "gpt-4o-mini"] });
    let created = app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, body).await;
    created.assert(201);
    assert_eq!(created.body["spend_limit"], json!({ "amount": "25.50", "window": "week" }));
    assert_eq!(created.body["allowed_models"], json!(["gpt-4o-mini"]), "each model once");
    let (key, secret) = (created.id(), created.str("key"));
    charge_key(&app, t, Some(key), "1.25").await.assert(201);

    let v = key_view(&app, t, key).await;
    assert_eq!((v["spent_in_window"].as_str(), v["used_amount"].as_str()), (Some("1.25"), Some("1.25")));
    assert!(v["window_resets_at"].as_str().unwrap().ends_with("T00:00:00Z"));
    let listed = app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await;
    assert_eq!(listed.body["data"][0]["spent_in_window"], "1.25");
    let plain = key_with(&app, t, Value::Null, Value::Null).await;
    let p = key_view(&app, t, plain).await;
    assert_eq!(
        (&p["spend_limit"], &p["allowed_models"], &p["window_resets_at"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(p["spent_in_window"], "0.00");

    let token = app.service_token().await;
    let r = app.post("/v1/api-keys/verify", &token, json!({ "key": secret })).await;
    r.assert(200);
    assert_eq!(r.body["spend_limit"], json!({ "amount": "25.50", "window": "week" }));
    assert_eq!(r.body["allowed_models"], json!(["gpt-4o-mini"]));
    assert_eq!(
        (r.body["api_key_id"].as_str(), r.body["spent_in_window"].as_str()),
        (Some(key.to_string().as_str()), Some("1.25"))
    );

    // PATCH: absent fields stay, null removes, a new limit replaces.
    let path = format!("/v1/tenants/{t}/api-keys/{key}");
    let r = app.patch(&path, ADMIN, json!({ "name": "renamed" })).await;
    r.assert(200);
    assert_eq!(
        (r.body["spend_limit"]["amount"].as_str(), r.body["allowed_models"][0].as_str()),
        (Some("25.50"), Some("gpt-4o-mini"))
    );
    let r = app
        .patch(&path, ADMIN, json!({ "allowed_models": null, "spend_limit": { "amount": "1.00", "window": "day" } }))
        .await;
    r.assert(200);
    assert_eq!((r.body["allowed_models"].clone(), r.body["spent_in_window"].as_str()), (Value::Null, Some("1.25")));
    charge_key(&app, t, Some(key), "0.01").await.assert_error(402, "spend_limit_exceeded");
    let r = app.patch(&path, ADMIN, json!({ "spend_limit": null })).await;
    assert_eq!((r.body["spend_limit"].clone(), r.body["spent_in_window"].as_str()), (Value::Null, Some("0.00")));
    charge_key(&app, t, Some(key), "5").await.assert(201);
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_limit_set_mid_window_counts_what_the_window_spent_already() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = key_with(&app, t, Value::Null, Value::Null).await;
    charge_key(&app, t, Some(key), "3").await.assert(201);
    let refunded = charge_key(&app, t, Some(key), "2").await;
    app.post_idem(
        &format!("/v1/charges/{}/refunds", refunded.id()),
        ADMIN,
        "r",
        json!({ "amount": "0.5", "reason": "x" }),
    )
    .await
    .assert(201);
    hold_key(&app, t, Some(key), "1", 600).await.assert(201);
    let released = hold_key(&app, t, Some(key), "7", 600).await;
    app.post(&format!("/v1/holds/{}/release", released.id()), ADMIN, json!({})).await.assert(200);
    charge_key(&app, t, None, "10").await.assert(201);
    // Key: 3 + 2 - 0.5 + 1 (active hold) = 5.50; tenant: that and 10 more.
    let r = app
        .patch(
            &format!("/v1/tenants/{t}/api-keys/{key}"),
            ADMIN,
            json!({ "spend_limit": { "amount": "6.00", "window": "month" } }),
        )
        .await;
    r.assert(200);
    assert_eq!(r.body["spent_in_window"], "5.50");
    let r = app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "16.00" })).await;
    r.assert(200);
    assert_eq!(r.body["day"]["spent"], "15.50");
    assert_eq!((r.body["month"].clone(), r.body["currency"].as_str()), (Value::Null, Some("USD")));
    charge_key(&app, t, Some(key), "0.51").await.assert_error(402, "spend_limit_exceeded");
    charge_key(&app, t, Some(key), "0.50").await.assert(201);
    charge_key(&app, t, None, "0.01").await.assert_error(402, "spend_limit_exceeded");
    // A limit removed and set again is recounted, not resumed.
    app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": null })).await.assert(200);
    charge_key(&app, t, None, "4").await.assert(201);
    let r = app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "30.00", "month": "40.00" })).await;
    assert_eq!((r.body["day"]["spent"].as_str(), r.body["month"]["spent"].as_str()), (Some("20.00"), Some("20.00")));
    assert_eq!(app.get(&format!("/v1/tenants/{t}/spend-limits"), ADMIN).await.body, r.body);
    assert_counters_match_history(&app, t).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn events_carry_the_limit_once_per_window() {
    let app = TestApp::spawn_with(|c| c.allow_private_webhooks = true).await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = limited_key(&app, t, "10.00", "day").await;
    app.state.clock.set(at("2030-02-03T08:00:00Z"));
    for amount in ["3", "3", "2"] {
        charge_key(&app, t, Some(key), amount).await.assert(201);
    }
    for _ in 0..2 {
        charge_key(&app, t, Some(key), "3").await.assert_error(402, "spend_limit_exceeded");
    }
    charge_key(&app, t, Some(key), "2").await.assert(201);
    let events = limit_events(&app, t).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["spend_limit.warning", "spend_limit.reached"]);
    let expect = |spent: &str| {
        json!({ "scope": "api_key", "api_key_id": key, "window": "day", "limit": "10.00", "spent": spent,
                "resets_at": "2030-02-04T00:00:00Z", "currency": "USD" })
    };
    assert_eq!(events[0]["data"], expect("8.00"), "warning at 80%");
    assert_eq!(events[1]["data"], expect("8.00"), "reached on the first refusal");
    // The next day is a new window: its events may come again.
    app.state.clock.set(at("2030-02-04T00:00:00Z"));
    charge_key(&app, t, Some(key), "10").await.assert(201);
    let kinds: Vec<String> =
        limit_events(&app, t).await.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["spend_limit.warning", "spend_limit.reached", "spend_limit.warning", "spend_limit.reached"]);
    // Webhooks may subscribe to them.
    let r = app
        .put(
            &format!("/v1/tenants/{t}/webhook"),
            ADMIN,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["spend_limit.reached", "spend_limit.warning"] }),
        )
        .await;
    r.assert(200);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn allowed_models_refuse_other_models_but_not_explicit_amounts() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "100").await;
    let key = key_with(&app, t, Value::Null, json!(["gpt-4o-mini"])).await;
    let priced = |model: &str, usage: Value, path: &str| {
        let body = json!({ "tenant_id": t, "model": model, "usage": usage, "api_key_id": key });
        let path = path.to_string();
        let app = &app;
        async move { app.post_idem(&path, ADMIN, &Uuid::now_v7().to_string(), body).await }
    };
    let video = json!({ "seconds": 4, "resolution": "720p" });
    let tokens = json!({ "input_tokens": 1000, "output_tokens": 100 });
    let r = priced("veo-fast", video.clone(), "/v1/charges").await;
    r.assert_error(403, "model_not_allowed");
    priced("veo-fast", video.clone(), "/v1/holds").await.assert_error(403, "model_not_allowed");
    priced("gpt-4o-mini", tokens, "/v1/charges").await.assert(201);
    charge_key(&app, t, Some(key), "2").await.assert(201);
    // Without the key, or with a key that allows every model, any model goes.
    let body = json!({ "tenant_id": t, "model": "veo-fast", "usage": video });
    app.post_idem("/v1/charges", ADMIN, "no-key", body).await.assert(201);
    // An empty list allows no model at all (explicit amounts still go).
    let none = key_with(&app, t, Value::Null, json!([])).await;
    let body = json!({ "tenant_id": t, "model": "gpt-4o-mini", "usage": { "input_tokens": 1, "output_tokens": 1 }, "api_key_id": none });
    app.post_idem("/v1/charges", ADMIN, "empty", body).await.assert_error(403, "model_not_allowed");
    charge_key(&app, t, Some(none), "1").await.assert(201);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_tenant_key_manages_only_its_own_limits() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.create_tenant("a").await, app.create_tenant("b").await);
    let (a_key, a_secret) = app.tenant_key(a).await;
    let (b_key, _) = app.tenant_key(b).await;
    let limit = json!({ "spend_limit": { "amount": "5.00", "window": "day" } });
    // Its own: allowed.
    let r = app.patch(&format!("/v1/tenants/{a}/api-keys/{a_key}"), &a_secret, limit.clone()).await;
    r.assert(200);
    app.put(&format!("/v1/tenants/{a}/spend-limits"), &a_secret, json!({ "month": "9.00" })).await.assert(200);
    assert_eq!(app.get(&format!("/v1/tenants/{a}/spend-limits"), &a_secret).await.body["month"]["limit"], "9.00");
    // Another tenant's: 404, whether the key exists or not, and nothing changes.
    app.patch(&format!("/v1/tenants/{b}/api-keys/{b_key}"), &a_secret, limit.clone())
        .await
        .assert_error(404, "not_found");
    app.patch(&format!("/v1/tenants/{a}/api-keys/{b_key}"), &a_secret, limit.clone())
        .await
        .assert_error(404, "not_found");
    app.put(&format!("/v1/tenants/{b}/spend-limits"), &a_secret, json!({ "day": "1.00" }))
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/v1/tenants/{b}/spend-limits"), &a_secret).await.assert_error(404, "not_found");
    assert_eq!(key_view(&app, b, b_key).await["spend_limit"], Value::Null);
    assert_eq!(tenant_limits(&app, b).await["day"], Value::Null);
    let missing = Uuid::now_v7();
    app.get(&format!("/v1/tenants/{missing}/spend-limits"), ADMIN).await.assert_error(404, "not_found");
    app.put(&format!("/v1/tenants/{missing}/spend-limits"), ADMIN, json!({ "day": "1.00" }))
        .await
        .assert_error(404, "not_found");
    app.patch(&format!("/v1/tenants/{a}/api-keys/{missing}"), ADMIN, limit).await.assert_error(404, "not_found");
    // Service tokens do not manage limits.
    let token = app.service_token().await;
    app.put(&format!("/v1/tenants/{a}/spend-limits"), &token, json!({ "day": "1.00" }))
        .await
        .assert_error(403, "forbidden");
    app.get(&format!("/v1/tenants/{a}/spend-limits"), "nope").await.assert_error(401, "unauthorized");
    // A suspended tenant's own key reads its limits and changes none.
    app.patch(&format!("/v1/tenants/{a}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);
    app.get(&format!("/v1/tenants/{a}/spend-limits"), &a_secret).await.assert(200);
    app.put(&format!("/v1/tenants/{a}/spend-limits"), &a_secret, json!({ "month": null }))
        .await
        .assert_error(403, "forbidden");
    let r = app.patch(&format!("/v1/tenants/{a}/api-keys/{a_key}"), &a_secret, json!({ "spend_limit": null })).await;
    r.assert_error(403, "forbidden");
    assert_eq!(tenant_limits(&app, a).await["month"]["limit"], "9.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn bad_limits_are_refused() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let key = key_with(&app, t, Value::Null, Value::Null).await;
    let limits: Vec<(&str, Value)> = vec![
        ("negative", json!({ "amount": "-1.00", "window": "day" })),
        ("zero", json!({ "amount": "0", "window": "day" })),
        ("7 decimals", json!({ "amount": "1.0000001", "window": "day" })),
        ("json number", json!({ "amount": 10, "window": "day" })),
        ("unknown window", json!({ "amount": "10", "window": "year" })),
        ("window as number", json!({ "amount": "10", "window": 1 })),
        ("missing window", json!({ "amount": "10" })),
        ("unknown field", json!({ "amount": "10", "window": "day", "per": "key" })),
        ("not an object", json!("10")),
    ];
    for (what, limit) in limits {
        let r =
            app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({ "name": "k", "spend_limit": limit })).await;
        assert_eq!(
            (r.status.as_u16(), r.body["code"].as_str()),
            (400, Some("invalid_request")),
            "create, {what}: {}",
            r.text
        );
        let r = app.patch(&format!("/v1/tenants/{t}/api-keys/{key}"), ADMIN, json!({ "spend_limit": limit })).await;
        assert_eq!(
            (r.status.as_u16(), r.body["code"].as_str()),
            (400, Some("invalid_request")),
            "patch, {what}: {}",
            r.text
        );
    }
    let models: Vec<(&str, Value)> =
        vec![("unknown model", json!(["gpt-9"])), ("not a list", json!("gpt-4o-mini")), ("numbers", json!([1]))];
    for (what, m) in models {
        let r = app.patch(&format!("/v1/tenants/{t}/api-keys/{key}"), ADMIN, json!({ "allowed_models": m })).await;
        assert_eq!((r.status.as_u16(), r.body["code"].as_str()), (400, Some("invalid_request")), "{what}: {}", r.text);
    }
    let tenant: Vec<(&str, Value)> = vec![
        ("negative", json!({ "day": "-5" })),
        ("zero", json!({ "month": "0.00" })),
        ("7 decimals", json!({ "day": "0.0000001" })),
        ("json number", json!({ "day": 5 })),
        ("unknown window", json!({ "week": "5" })),
        ("lifetime is per key only", json!({ "lifetime": "5" })),
    ];
    for (what, body) in tenant {
        let r = app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, body).await;
        assert_eq!(
            (r.status.as_u16(), r.body["code"].as_str()),
            (400, Some("invalid_request")),
            "tenant, {what}: {}",
            r.text
        );
    }
    // Nothing was set by any of them.
    assert_eq!(key_view(&app, t, key).await["spend_limit"], Value::Null);
    assert_eq!(tenant_limits(&app, t).await, json!({ "day": null, "month": null, "currency": "USD" }));
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_openapi_document_describes_limits() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json", "").await;
    doc.assert(200);
    let paths = &doc.body["paths"];
    for method in ["get", "put"] {
        let responses = &paths["/v1/tenants/{tenant_id}/spend-limits"][method]["responses"];
        for status in ["200", "400", "401", "403", "404"] {
            assert!(responses[status].is_object(), "{method} spend-limits lacks {status}");
        }
    }
    for path in ["/v1/charges", "/v1/holds"] {
        let responses = &paths[path]["post"]["responses"];
        assert!(responses["402"]["description"].as_str().unwrap().contains("spend_limit_exceeded"), "{path}");
        assert!(responses["403"]["description"].as_str().unwrap().contains("model_not_allowed"), "{path}");
    }
    let schemas = &doc.body["components"]["schemas"];
    for field in ["spend_limit", "allowed_models", "spent_in_window", "window_resets_at"] {
        assert!(schemas["ApiKey"]["properties"][field].is_object(), "ApiKey.{field}");
        assert!(schemas["VerifiedKey"]["properties"][field].is_object(), "VerifiedKey.{field}");
    }
    assert!(schemas["Balance"]["properties"]["runway"].is_object());
}
