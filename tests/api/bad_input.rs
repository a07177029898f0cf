//! A table of bad inputs: each gets its 4xx with a contract code, never a 5xx.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn bad_amounts_fields_bodies_and_ids() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let adj = format!("/v1/admin/tenants/{t}/adjustments");
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        ("negative gift", json!({ "amount": "-1", "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("zero", json!({ "amount": "0", "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("7 decimals", json!({ "amount": "1.0000001", "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("huge", json!({ "amount": "1e30", "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("too big", json!({ "amount": "99999999999999999999", "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("non-numeric", json!({ "amount": "ten", "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("json number", json!({ "amount": 1.5, "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        ("missing field", json!({ "kind": "gift", "reason": "x" }), 400, "invalid_request"),
        (
            "unknown field",
            json!({ "amount": "1", "kind": "gift", "reason": "x", "amout": "1" }),
            400,
            "invalid_request",
        ),
        ("wrong type", json!({ "amount": "1", "kind": 3, "reason": "x" }), 400, "invalid_request"),
        ("array body", json!([1, 2]), 400, "invalid_request"),
    ];
    for (what, body, status, code) in cases {
        let r = app.post_idem(&adj, ADMIN, &format!("bad-{what}"), body).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
        assert_eq!(r.body["code"], code, "{what}");
    }
    let charge_cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        ("7 decimals", json!({ "tenant_id": t, "amount": "0.0000001" }), 400, "invalid_request"),
        ("zero", json!({ "tenant_id": t, "amount": "0.00" }), 400, "invalid_request"),
        ("negative", json!({ "tenant_id": t, "amount": "-1" }), 400, "invalid_request"),
        ("both", json!({ "tenant_id": t, "amount": "1", "model": "gpt-4o-mini", "usage": {} }), 400, "invalid_request"),
        ("neither", json!({ "tenant_id": t }), 400, "invalid_request"),
        ("bad tenant id", json!({ "tenant_id": "nope", "amount": "1" }), 400, "invalid_request"),
        ("unknown tenant", json!({ "tenant_id": uuid::Uuid::now_v7(), "amount": "1" }), 404, "not_found"),
    ];
    for (what, body, status, code) in charge_cases {
        let r = app.post_idem("/v1/charges", ADMIN, &format!("bad-{what}"), body).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
        assert_eq!(r.body["code"], code, "{what}");
    }

    // Malformed JSON, wrong content type, oversized body.
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(format!("{}{}", app.base, adj))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "raw")
            .header("content-type", ct)
            .body(body)
    };
    let r = raw("{\"amount\": ", "application/json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = raw("amount=1", "application/x-www-form-urlencoded").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let big = "x".repeat(200_000);
    let r = app
        .client
        .post(format!("{}{}", app.base, adj))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", "big")
        .header("content-type", "application/json")
        .body(format!("{{\"reason\": \"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");

    // Non-UUID ids in paths.
    for path in ["/v1/tenants/not-a-uuid", "/v1/tenants/123/balance", "/v1/charges/xyz", "/v1/holds/1"] {
        let r = app.call(Method::GET, path, ADMIN, None, None).await;
        r.assert_error(400, "invalid_request");
    }
    app.get("/v1/tenants?cursor=zzz", ADMIN).await.assert_error(400, "invalid_request");
    app.get("/v1/tenants?bogus=1", ADMIN).await.assert_error(400, "invalid_request");
    assert_eq!(app.balance(t).await["paid"], "10.00", "no bad input moved money");
    app.assert_ledger_ok().await;
}
