//! The OpenAPI document, fetched from the running app: structural facts a client generator
//! and a fuzzer rely on (CI also runs openapi-spec-validator and schemathesis on it:
//! scripts/api-conformance.sh), and the service refusing what the document excludes.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
const PUBLIC: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/providers/stripe/webhook"];

async fn document() -> Value {
    let app = TestApp::spawn().await;
    let r = app.get("/openapi.json", "").await;
    r.assert(200);
    r.body.clone()
}

/// Every operation as (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

fn params<'a>(op: &'a Value, place: &str) -> Vec<&'a Value> {
    op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == place).collect()
}

#[tokio::test]
async fn every_parameter_is_declared_where_it_lives() {
    let doc = document().await;
    let ops = operations(&doc);
    assert!(ops.len() >= 50, "only {} operations", ops.len());
    for (path, method, op) in &ops {
        let templated: Vec<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let in_path: Vec<&str> = params(op, "path").iter().map(|p| p["name"].as_str().unwrap()).collect();
        let mut a = templated.clone();
        let mut b = in_path.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{method} {path}: path parameters declared {in_path:?}, template has {templated:?}");
        for p in params(op, "path") {
            assert_eq!(p["required"], true, "{method} {path}: path parameter {} must be required", p["name"]);
        }
        for p in params(op, "query") {
            assert_ne!(p["required"], true, "{method} {path}: query parameter {} is optional", p["name"]);
        }
    }
    // The query parameters the issue found declared in: path, now where they live.
    let find = |path: &str, name: &str| -> Value {
        let op = &doc["paths"][path]["get"];
        op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null)
    };
    for name in ["limit", "cursor", "from", "to", "kind", "api_key_id"] {
        assert_eq!(find("/v1/tenants/{tenant_id}/transactions", name)["in"], "query", "{name}");
    }
    assert_eq!(find("/v1/tenants/{tenant_id}/usage", "group_by")["in"], "query");
    let limit = find("/v1/tenants", "limit");
    assert_eq!(limit["schema"]["type"], "integer");
    assert_eq!((limit["schema"]["minimum"].as_i64(), limit["schema"]["maximum"].as_i64()), (Some(1), Some(200)));
    let kind = resolve(&doc, &find("/v1/tenants/{tenant_id}/transactions", "kind")["schema"]).clone();
    assert!(kind["enum"].as_array().unwrap().contains(&json!("top_up")), "kinds as the API spells them: {kind}");
}

#[tokio::test]
async fn public_routes_need_no_credentials_and_the_others_name_theirs() {
    let doc = document().await;
    for (path, method, op) in operations(&doc) {
        let security = op["security"].as_array().unwrap_or_else(|| panic!("{method} {path}: no security"));
        if PUBLIC.contains(&path.as_str()) {
            assert!(security.is_empty(), "{method} {path} is public: {security:?}");
        } else {
            assert!(!security.is_empty(), "{method} {path} needs a credential");
            for requirement in security {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_as_problems() {
    let doc = document().await;
    for (path, method, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('4')), "{method} {path}: no 4xx documented");
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no 2xx documented");
        for (status, response) in responses {
            let response = resolve(&doc, response);
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/problem+json"]["schema"];
                assert_eq!(schema["$ref"], "#/components/schemas/Problem", "{method} {path} {status}");
            }
        }
        let secured = !op["security"].as_array().unwrap().is_empty();
        if secured {
            assert!(responses.contains_key("401"), "{method} {path}: 401");
        }
        if path.contains('{') {
            assert!(responses.contains_key("404"), "{method} {path}: 404");
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("415") && responses.contains_key("413"), "{method} {path}: 413/415");
        }
        let accepts_limited = |s: &str| op["security"].as_array().unwrap().iter().any(|r| r.get(s).is_some());
        if accepts_limited("api_key") || accepts_limited("service_token") {
            let limited = resolve(&doc, &op["responses"]["429"]);
            for h in ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
                assert!(limited["headers"][h].is_object(), "{method} {path}: 429 without {h}");
            }
        }
    }
    let codes = &doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"];
    for code in
        ["invalid_request", "insufficient_funds", "spend_limit_exceeded", "rate_limited", "idempotency_key_reused"]
    {
        assert!(codes.as_array().unwrap().contains(&json!(code)), "{code}");
    }
}

#[tokio::test]
async fn bodies_are_closed_money_is_a_pattern_and_content_types_are_as_served() {
    let doc = document().await;
    for (path, method, op) in operations(&doc) {
        // Stripe's event is Stripe's: it grows fields, and the service reads what it needs.
        if let Some(body) = op.get("requestBody").filter(|_| path != "/v1/providers/stripe/webhook") {
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            if schema["type"] == "object" || schema.get("properties").is_some() {
                assert_eq!(schema["additionalProperties"], false, "{method} {path}: body open to unknown fields");
            }
        }
    }
    let money = &doc["components"]["schemas"]["Money"];
    assert_eq!(money["type"], "string");
    let pattern = money["pattern"].as_str().expect("money pattern");
    assert!(pattern.starts_with('^') && pattern.ends_with('$'), "{pattern}");
    let top_up = &doc["components"]["schemas"]["TopUpRequest"]["properties"]["amount"];
    assert!(top_up["pattern"].as_str().is_some_and(|p| !p.contains("-?")), "a top-up amount is positive: {top_up}");

    let csv = &doc["paths"]["/v1/tenants/{tenant_id}/transactions"]["get"]["responses"]["200"]["content"];
    assert!(csv["application/json"].is_object() && csv["text/csv"].is_object(), "{csv}");
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics["text/plain"].is_object(), "{metrics}");
    for path in
        ["/v1/charges", "/v1/holds", "/v1/tenants/{tenant_id}/top-ups", "/v1/admin/tenants/{tenant_id}/adjustments"]
    {
        let key = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .cloned()
            .unwrap_or_else(|| panic!("{path}: Idempotency-Key"));
        assert_eq!((key["in"].as_str(), key["required"].as_bool()), (Some("header"), Some(true)), "{path}");
    }
}

#[tokio::test]
async fn the_service_refuses_what_the_document_excludes() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("Doc").await;
    // An integer means an integer: no float, nothing out of bounds.
    for bad in ["5.0", "1e1", "0", "201", "-1", "x"] {
        app.get(&format!("/v1/tenants?limit={bad}"), ADMIN).await.assert_error(400, "invalid_request");
    }
    app.get("/v1/tenants?limit=200", ADMIN).await.assert(200);
    app.get(&format!("/v1/tenants/{t}/usage?group_by=week"), ADMIN).await.assert_error(400, "invalid_request");
    app.get(&format!("/v1/tenants/{t}/usage?group_by=api_key"), ADMIN).await.assert(200);
    // A body is an object: serde would read a struct from an array of its fields.
    for body in [json!([null, null]), json!(["x"]), json!("x"), json!(1)] {
        app.call(Method::PATCH, &format!("/v1/tenants/{t}"), ADMIN, Some(body), None)
            .await
            .assert_error(400, "invalid_request");
    }
    app.call(Method::PATCH, &format!("/v1/tenants/{t}"), ADMIN, Some(json!({ "nope": 1 })), None)
        .await
        .assert_error(400, "invalid_request");
    // A name is counted in characters, as the document and the database count it.
    let name: String = "é".repeat(200);
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "name": name })).await.assert(200);
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "name": format!("{name}é") }))
        .await
        .assert_error(400, "invalid_request");
    // Found by the fuzzer: amounts that carry a balance past the range of money are the
    // client's error (422), not a 500, and nothing is written.
    let big = json!({ "kind": "adjustment", "amount": "769877410571.546769", "reason": "fuzz" });
    let path = format!("/v1/admin/tenants/{t}/adjustments");
    app.post_idem(&path, ADMIN, "big-1", big.clone()).await.assert(201);
    app.post_idem(&path, ADMIN, "big-2", big).await.assert_error(422, "unprocessable");
    let balance = app.get(&format!("/v1/tenants/{t}/balance"), ADMIN).await;
    assert_eq!(balance.body["paid"], "769877410571.546769");
    assert_eq!(app.get("/v1/admin/ledger/check", ADMIN).await.assert(200).body["ok"], true);
}
