//! The error half of the document: the problem-details schema, the reusable error
//! responses, and the statuses every operation can return because of the layers in front
//! of its handler (the same for every route, so derived here rather than repeated on each).
//!
//! What is derived, and why each holds for the service:
//! - 400 everywhere: `input::refuse_bad_bytes` refuses a malformed path or query on every
//!   route, and extractors refuse malformed ids, queries and bodies;
//! - 503 everywhere: the request deadline (`http::deadline`) and a busy database;
//! - 401 on every operation with a security requirement (a missing or unknown token);
//! - 403 where some credential kind is refused (the operation does not list all three
//!   schemes), and on writes a tenant key may make (a suspended tenant's keys change
//!   nothing: `http::credentials`);
//! - 429 where tenant keys or service tokens are accepted (the per-credential rate limit);
//! - 404 where the path has a parameter (unknown, or another tenant's);
//! - 413 and 415 where there is a JSON body (`extract::ApiJson`);
//! - 409 and 422 where `Idempotency-Key` is required (a request with that key running; the
//!   key reused with another request).
//!
//! A handler's own description of a status wins; an error response a handler declares
//! without a body gets the problem schema.

use serde_json::{json, Map, Value};

/// Every `code` the service sends (`crate::error::AppError::code`).
const CODES: &[&str] = &[
    "invalid_request",
    "unauthorized",
    "forbidden",
    "model_not_allowed",
    "not_found",
    "method_not_allowed",
    "conflict",
    "request_in_progress",
    "payload_too_large",
    "unsupported_media_type",
    "idempotency_key_reused",
    "unprocessable",
    "insufficient_funds",
    "spend_limit_exceeded",
    "payment_declined",
    "rate_limited",
    "payment_provider_unavailable",
    "unavailable",
    "internal",
];

const SCHEMES: [&str; 3] = ["admin_token", "api_key", "service_token"];
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
/// Requests by POST that change nothing (a suspended tenant's key may send them).
const READ_ONLY_POSTS: &[&str] = &["/v1/estimates"];

/// Adds the problem schema and error responses to `doc`, and to each operation the
/// statuses the layers in front of its handler can return.
pub fn complete(doc: &mut Value) {
    let components = doc.as_object_mut().expect("an OpenAPI object").entry("components").or_insert_with(|| json!({}));
    components["schemas"]["Problem"] = problem_schema();
    let responses = components.as_object_mut().expect("components").entry("responses").or_insert_with(|| json!({}));
    for (name, description) in RESPONSES {
        responses[*name] = problem_response(description);
    }
    responses["RateLimited"]["headers"] = rate_limit_headers();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        for (method, op) in item.as_object_mut().into_iter().flatten() {
            if METHODS.contains(&method.as_str()) {
                complete_operation(path, method, op);
            }
        }
    }
}

const RESPONSES: &[(&str, &str)] = &[
    ("BadRequest", "`invalid_request`: a malformed path, query, header or body (the `detail` names it)"),
    ("Unauthorized", "`unauthorized`: no bearer token, or one the service does not know"),
    ("Forbidden", "`forbidden`: this kind of credential may not use this route, or the tenant is suspended"),
    ("NotFound", "`not_found`: no such resource, or another tenant's"),
    ("Conflict", "`request_in_progress`: a request with this Idempotency-Key is still running"),
    ("PayloadTooLarge", "`payload_too_large`: the body is over the configured limit"),
    ("UnsupportedMediaType", "`unsupported_media_type`: the body is not `application/json`"),
    ("IdempotencyKeyReused", "`idempotency_key_reused`: this Idempotency-Key was used with another request"),
    ("RateLimited", "`rate_limited`: this credential is over its rate limit; nothing was done"),
    (
        "Unavailable",
        "`unavailable`: the request timed out or the database is busy; retry (with the same Idempotency-Key)",
    ),
];

fn complete_operation(path: &str, method: &str, op: &mut Value) {
    // utoipa writes "no credentials" as `[{}]`; the document says it as `[]`.
    if op["security"] == json!([{}]) {
        op["security"] = json!([]);
    }
    let schemes: Vec<&str> = SCHEMES
        .into_iter()
        .filter(|s| op["security"].as_array().into_iter().flatten().any(|r| r.get(*s).is_some()))
        .collect();
    let secured = !schemes.is_empty();
    let write = method != "get" && !READ_ONLY_POSTS.contains(&path);
    let has_body = op.get("requestBody").is_some();
    let idempotent =
        op["parameters"].as_array().into_iter().flatten().any(|p| {
            p["in"] == "header" && p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"))
        });

    let mut derived = vec![("400", "BadRequest"), ("503", "Unavailable")];
    if secured {
        derived.push(("401", "Unauthorized"));
    }
    if secured && (schemes.len() < SCHEMES.len() || (schemes.contains(&"api_key") && write)) {
        derived.push(("403", "Forbidden"));
    }
    if schemes.contains(&"api_key") || schemes.contains(&"service_token") {
        derived.push(("429", "RateLimited"));
    }
    if path.contains('{') {
        derived.push(("404", "NotFound"));
    }
    if has_body {
        derived.extend([("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType")]);
    }
    if idempotent {
        derived.extend([("409", "Conflict"), ("422", "IdempotencyKeyReused")]);
    }

    let responses = op.as_object_mut().expect("operation").entry("responses").or_insert_with(|| json!({}));
    let responses = responses.as_object_mut().expect("responses");
    for (status, response) in responses.iter_mut() {
        if response.get("$ref").is_some() {
            continue;
        }
        if response["description"].as_str().is_none_or(str::is_empty) {
            response["description"] = json!(default_description(status));
        }
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && response.get("content").is_none() {
            response["content"] = problem_content();
        }
        if status == "429" && response.get("headers").is_none() {
            response["headers"] = rate_limit_headers();
        }
    }
    for (status, name) in derived {
        responses.entry(status).or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
    }
}

/// For a response a handler declared without words: the shared response's, or the reason phrase.
fn default_description(status: &str) -> String {
    let shared = match status {
        "400" => "BadRequest",
        "401" => "Unauthorized",
        "403" => "Forbidden",
        "404" => "NotFound",
        "413" => "PayloadTooLarge",
        "415" => "UnsupportedMediaType",
        "429" => "RateLimited",
        "503" => "Unavailable",
        _ => "",
    };
    if let Some((_, d)) = RESPONSES.iter().find(|(name, _)| *name == shared) {
        return (*d).to_string();
    }
    let reason = status.parse().ok().and_then(|s| axum::http::StatusCode::from_u16(s).ok());
    reason.and_then(|s| s.canonical_reason()).unwrap_or("Success").to_string()
}

fn problem_content() -> Value {
    json!({ "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } })
}

fn problem_response(description: &str) -> Value {
    json!({ "description": description, "content": problem_content() })
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details. Some codes add fields: `insufficient_funds` (`required`, `available`, `shortfall`, `currency`, `auto_top_up`), `spend_limit_exceeded` (`scope`, `api_key_id`, `window`, `limit`, `spent`, `required`, `resets_at`, `currency`), `rate_limited` (`retry_after`).",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": { "type": "string", "description": "A URI naming the code" },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "code": { "type": "string", "enum": CODES, "description": "Stable machine code to switch on" },
        },
        "additionalProperties": true,
    })
}

fn rate_limit_headers() -> Value {
    let int = |description: &str, minimum: u64| json!({ "description": description, "schema": { "type": "integer", "minimum": minimum } });
    let mut h = Map::new();
    h.insert("Retry-After".into(), int("Whole seconds until a request would be allowed", 1));
    h.insert("RateLimit-Limit".into(), int("The credential's burst: requests allowed at once", 0));
    h.insert("RateLimit-Remaining".into(), int("Requests left now", 0));
    h.insert("RateLimit-Reset".into(), int("Seconds until the bucket is full again", 0));
    Value::Object(h)
}
