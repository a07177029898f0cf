//! A local fake of Stripe's API, in the test process (an axum app on 127.0.0.1): the
//! endpoints Tally uses, checked and answered as Stripe documents them.
//!
//! What it checks on every request (a breach is recorded in `violations` and answered 400,
//! so a test fails both ways): `Authorization: Bearer <secret key>`, the pinned
//! `Stripe-Version`; on every POST a form-encoded body and an `Idempotency-Key`; creating a
//! PaymentIntent names `customer`, `payment_method` (attached to that customer), a whole
//! `amount` in cents, a lower-case `currency`, `confirm=false` and
//! `metadata[tally_top_up_id]`; confirming one sends `off_session=true`.
//!
//! What it plays back: Stripe's objects and errors (`card_error` 402 with `decline_code`,
//! `authentication_required` for `pm_card_authenticationRequired`), test PaymentMethods
//! (`pm_card_visa`, `pm_card_chargeDeclined`, `pm_card_authenticationRequired`: attaching
//! one makes a new `pm_…` attached to the customer, as Stripe's test mode does), and
//! idempotency as Stripe keeps it: the first answer to a key is stored — a 500 included —
//! and replayed with `Idempotent-Replayed: true`; the same key with other parameters is a
//! 400 `idempotency_error`; a 429 is not stored.
//!
//! Faults are scripted per endpoint ([`Fault`]): a 500 before or after the work, a 429, or
//! an answer that arrives only after a delay (the work done and stored first).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub const SECRET_KEY: &str = "sk_test_fake_0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_fake_0123456789";
const VERSION: &str = "2024-06-20";

/// The endpoints a fault can be put on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateCustomer,
    Attach,
    CreateIntent,
    Confirm,
    RetrieveIntent,
    ListIntents,
    CreateRefund,
    ListRefunds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers 500 without doing anything (stored for the key, as Stripe does).
    ErrorBeforeWork,
    /// Does the work, then answers 500 (stored for the key: the work is never reported).
    ErrorAfterWork,
    /// Answers 429 without doing anything (not stored).
    RateLimit,
    /// Does the work and stores its answer, then waits this long before answering.
    Delay(Duration),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub op: Option<Op>,
    pub path: String,
    pub key: Option<String>,
    pub form: Vec<(String, String)>,
    pub status: u16,
    pub replayed: bool,
}

impl Logged {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    Succeeds,
    Declines,
    NeedsAuthentication,
}

#[derive(Default)]
struct FakeState {
    seq: u64,
    customers: BTreeMap<String, Value>,
    methods: BTreeMap<String, (Value, Card)>,
    intents: BTreeMap<String, Value>,
    refunds: BTreeMap<String, Value>,
    /// Idempotency key → (fingerprint, status, body).
    keys: HashMap<String, (String, u16, Value)>,
    faults: Vec<(Op, Fault, u32)>,
    log: Vec<Logged>,
    violations: Vec<String>,
}

impl FakeState {
    fn next(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_fake{:06}", self.seq)
    }
}

pub struct FakeStripe {
    pub base: String,
    state: Arc<Mutex<FakeState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<FakeState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, FakeState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let state: Shared = Arc::default();
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { base, state, server }
    }

    /// The next `times` requests to `op` meet `fault`.
    pub fn fault(&self, op: Op, fault: Fault, times: u32) {
        lock(&self.state).faults.push((op, fault, times));
    }

    pub fn log(&self) -> Vec<Logged> {
        lock(&self.state).log.clone()
    }

    pub fn requests(&self, op: Op) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.op == Some(op)).collect()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    pub fn customers(&self) -> Vec<Value> {
        lock(&self.state).customers.values().cloned().collect()
    }

    /// The PaymentIntents made for one top-up attempt (by its metadata).
    pub fn intents_for(&self, top_up: &str) -> Vec<Value> {
        let s = lock(&self.state);
        s.intents.values().filter(|p| p["metadata"]["tally_top_up_id"] == top_up).cloned().collect()
    }

    /// How many of them charged the card.
    pub fn succeeded_for(&self, top_up: &str) -> usize {
        self.intents_for(top_up).iter().filter(|p| p["status"] == "succeeded").count()
    }

    /// Every PaymentIntent that charged a card.
    pub fn succeeded(&self) -> usize {
        lock(&self.state).intents.values().filter(|p| p["status"] == "succeeded").count()
    }

    pub fn refunds(&self) -> Vec<Value> {
        lock(&self.state).refunds.values().cloned().collect()
    }

    pub fn intent(&self, id: &str) -> Value {
        lock(&self.state).intents.get(id).cloned().unwrap_or(Value::Null)
    }

    /// A refund made in Stripe's dashboard (not through Tally).
    pub fn refund_at_dashboard(&self, intent: &str, cents: i64) -> Value {
        let mut s = lock(&self.state);
        let id = s.next("re");
        let refund = json!({ "id": id, "object": "refund", "amount": cents, "currency": "usd",
            "payment_intent": intent, "status": "succeeded", "metadata": {} });
        s.refunds.insert(id, refund.clone());
        refund
    }

    /// A webhook delivery as Stripe sends it: the payload and its `Stripe-Signature`.
    pub fn event(&self, id: &str, kind: &str, object: Value) -> (Vec<u8>, String) {
        let payload = serde_json::to_vec(&json!({ "id": id, "object": "event", "type": kind,
            "api_version": VERSION, "data": { "object": object } }))
        .unwrap();
        let t = chrono::Utc::now().timestamp();
        let sig = tally::payments::stripe::webhook::sign(WEBHOOK_SECRET, &payload, t);
        (payload, sig)
    }

    /// The charge of a PaymentIntent as Stripe puts it in `charge.*` events.
    pub fn charge_of(&self, intent: &str) -> Value {
        let pi = self.intent(intent);
        json!({ "id": pi["latest_charge"], "object": "charge", "payment_intent": intent, "amount": pi["amount"],
            "currency": pi["currency"], "refunded": false })
    }
}

fn op_of(method: &Method, parts: &[&str]) -> Option<Op> {
    match (method.as_str(), parts) {
        ("POST", ["v1", "customers"]) => Some(Op::CreateCustomer),
        ("POST", ["v1", "payment_methods", _, "attach"]) => Some(Op::Attach),
        ("POST", ["v1", "payment_intents"]) => Some(Op::CreateIntent),
        ("POST", ["v1", "payment_intents", _, "confirm"]) => Some(Op::Confirm),
        ("GET", ["v1", "payment_intents", _]) => Some(Op::RetrieveIntent),
        ("GET", ["v1", "payment_intents"]) => Some(Op::ListIntents),
        ("POST", ["v1", "refunds"]) => Some(Op::CreateRefund),
        ("GET", ["v1", "refunds"]) => Some(Op::ListRefunds),
        _ => None,
    }
}

fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> (u16, Value) {
    (status, json!({ "error": { "type": kind, "code": code, "message": message } }))
}

fn reply(status: u16, body: &Value, replayed: bool) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body.clone())).into_response();
    if replayed {
        r.headers_mut().insert("Idempotent-Replayed", "true".parse().unwrap());
    }
    r
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let op = op_of(&method, &parts);
    let form: Vec<(String, String)> = if method == Method::POST {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut log = Logged { op, path: path.clone(), key: key.clone(), form: form.clone(), status: 0, replayed: false };
    let (status, body, replayed, delay) = {
        let mut s = lock(&state);
        let answer = answer(&mut s, &method, &parts, op, &headers, &form, key.as_deref(), &body);
        log.status = answer.0;
        log.replayed = answer.2;
        s.log.push(log);
        answer
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    reply(status, &body, replayed)
}

/// Checks, idempotency and faults around the work. Returns (status, body, replayed, delay).
#[allow(clippy::too_many_arguments)]
fn answer(
    s: &mut FakeState,
    method: &Method,
    parts: &[&str],
    op: Option<Op>,
    headers: &HeaderMap,
    form: &[(String, String)],
    key: Option<&str>,
    raw: &[u8],
) -> (u16, Value, bool, Option<Duration>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut breach = Vec::new();
    if header("authorization") != format!("Bearer {SECRET_KEY}") {
        breach.push("Authorization is not Bearer <secret key>".to_string());
    }
    if header("stripe-version") != VERSION {
        breach.push(format!("Stripe-Version is {:?}", header("stripe-version")));
    }
    if *method == Method::POST {
        if header("content-type") != "application/x-www-form-urlencoded" {
            breach.push(format!("Content-Type is {:?}", header("content-type")));
        }
        if key.is_none_or(str::is_empty) {
            breach.push("POST without an Idempotency-Key".into());
        }
    }
    if !breach.is_empty() {
        let what = format!("{method} /{}: {}", parts.join("/"), breach.join("; "));
        s.violations.push(what.clone());
        let (st, b) = error(400, "invalid_request_error", None, &what);
        return (st, b, false, None);
    }
    let fingerprint = format!("{method} /{} {}", parts.join("/"), String::from_utf8_lossy(raw));
    if let (Some(k), true) = (key, *method == Method::POST) {
        if let Some((fp, st, b)) = s.keys.get(k) {
            if *fp != fingerprint {
                let (st, b) = error(
                    400,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                );
                return (st, b, false, None);
            }
            return (*st, b.clone(), true, None);
        }
    }
    let fault = op.and_then(|op| {
        let i = s.faults.iter().position(|(o, _, n)| *o == op && *n > 0)?;
        s.faults[i].2 -= 1;
        Some(s.faults[i].1)
    });
    let (st, b, delay) = match fault {
        Some(Fault::RateLimit) => {
            let (st, b) = error(429, "rate_limit_error", Some("rate_limit"), "Too many requests.");
            return (st, b, false, None);
        }
        Some(Fault::ErrorBeforeWork) => {
            let (st, b) = error(500, "api_error", None, "An unknown error occurred (before the work).");
            (st, b, None)
        }
        Some(Fault::ErrorAfterWork) => {
            let _ = work(s, method, parts, form);
            let (st, b) = error(500, "api_error", None, "An unknown error occurred (after the work).");
            (st, b, None)
        }
        Some(Fault::Delay(d)) => {
            let (st, b) = work(s, method, parts, form);
            (st, b, Some(d))
        }
        None => {
            let (st, b) = work(s, method, parts, form);
            (st, b, None)
        }
    };
    if let (Some(k), true) = (key, *method == Method::POST) {
        s.keys.insert(k.to_string(), (fingerprint, st, b.clone()));
    }
    (st, b, false, delay)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn metadata(form: &[(String, String)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in form {
        if let Some(name) = k.strip_prefix("metadata[").and_then(|r| r.strip_suffix(']')) {
            m.insert(name.to_string(), Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

/// The test PaymentMethods Stripe's test mode understands.
fn test_method(id: &str) -> Option<(&'static str, &'static str, Card)> {
    match id {
        "pm_card_visa" => Some(("visa", "4242", Card::Succeeds)),
        "pm_card_chargeDeclined" => Some(("visa", "0002", Card::Declines)),
        "pm_card_authenticationRequired" => Some(("visa", "3184", Card::NeedsAuthentication)),
        _ => None,
    }
}

fn method_object(id: &str, brand: &str, last4: &str, customer: Option<&str>) -> Value {
    json!({ "id": id, "object": "payment_method", "type": "card", "customer": customer,
        "card": { "brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034 } })
}

/// The work of one request, as Stripe would do it.
fn work(s: &mut FakeState, method: &Method, parts: &[&str], form: &[(String, String)]) -> (u16, Value) {
    let violation = |s: &mut FakeState, what: String| {
        s.violations.push(what.clone());
        error(400, "invalid_request_error", Some("parameter_invalid"), &what)
    };
    match (method.as_str(), parts) {
        ("POST", ["v1", "customers"]) => {
            let id = s.next("cus");
            let c = json!({ "id": id, "object": "customer", "description": param(form, "description"), "metadata": metadata(form) });
            s.customers.insert(id, c.clone());
            (200, c)
        }
        ("GET", ["v1", "payment_methods", id]) => match (s.methods.get(*id), test_method(id)) {
            (Some((pm, _)), _) => (200, pm.clone()),
            (None, Some((brand, last4, _))) => (200, method_object(id, brand, last4, None)),
            _ => {
                error(404, "invalid_request_error", Some("resource_missing"), &format!("No such PaymentMethod: '{id}'"))
            }
        },
        ("POST", ["v1", "payment_methods", id, "attach"]) => {
            let Some(customer) = param(form, "customer").filter(|c| s.customers.contains_key(*c)) else {
                return error(400, "invalid_request_error", Some("resource_missing"), "No such customer");
            };
            if let Some((brand, last4, card)) = test_method(id) {
                // A test token makes a new PaymentMethod each time it is attached.
                let new = s.next("pm");
                let pm = method_object(&new, brand, last4, Some(customer));
                s.methods.insert(new, (pm.clone(), card));
                return (200, pm);
            }
            match s.methods.get_mut(*id) {
                None => error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such PaymentMethod: '{id}'"),
                ),
                Some((pm, _)) if pm["customer"].is_string() && pm["customer"] != customer => error(
                    400,
                    "invalid_request_error",
                    None,
                    "The payment method you provided has already been attached to a customer.",
                ),
                Some((pm, _)) => {
                    pm["customer"] = json!(customer);
                    (200, pm.clone())
                }
            }
        }
        ("POST", ["v1", "payment_intents"]) => {
            let amount = param(form, "amount").and_then(|a| a.parse::<i64>().ok()).filter(|a| *a > 0);
            let currency =
                param(form, "currency").filter(|c| c.len() == 3 && c.chars().all(|x| x.is_ascii_lowercase()));
            let customer = param(form, "customer").filter(|c| s.customers.contains_key(*c));
            let pm = param(form, "payment_method");
            let attached = pm.and_then(|pm| s.methods.get(pm)).map(|(m, _)| m["customer"].as_str() == customer);
            let (Some(amount), Some(currency), Some(customer), Some(pm), Some(true)) =
                (amount, currency, customer, pm, attached)
            else {
                return violation(s, format!("create PaymentIntent: amount (cents), lower-case currency, customer and its attached payment_method are required: {form:?}"));
            };
            if param(form, "confirm") != Some("false") || param(form, "off_session").is_some() {
                return violation(
                    s,
                    format!(
                        "create PaymentIntent: expected confirm=false (and no off_session before confirming): {form:?}"
                    ),
                );
            }
            let meta = metadata(form);
            if !meta["tally_top_up_id"].is_string() {
                return violation(s, "create PaymentIntent: metadata[tally_top_up_id] is missing".into());
            }
            let id = s.next("pi");
            let created = s.seq;
            let pi = json!({ "id": id, "object": "payment_intent", "amount": amount, "currency": currency,
                "customer": customer, "payment_method": pm, "status": "requires_confirmation", "metadata": meta,
                "description": param(form, "description"), "latest_charge": null, "last_payment_error": null,
                "created": created });
            s.intents.insert(id, pi.clone());
            (200, pi)
        }
        ("POST", ["v1", "payment_intents", id, "confirm"]) => {
            if param(form, "off_session") != Some("true") {
                return violation(s, format!("confirm PaymentIntent: off_session=true expected: {form:?}"));
            }
            let Some(pi) = s.intents.get(*id).cloned() else {
                return error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such payment_intent: '{id}'"),
                );
            };
            if pi["status"] != "requires_confirmation" {
                let mut e = error(
                    400,
                    "invalid_request_error",
                    Some("payment_intent_unexpected_state"),
                    &format!("This PaymentIntent's status is {}", pi["status"]),
                );
                e.1["error"]["payment_intent"] = pi;
                return e;
            }
            let card = s.methods.get(pi["payment_method"].as_str().unwrap_or_default()).map(|(_, c)| *c);
            let charge = s.next("ch");
            let pi = s.intents.get_mut(*id).unwrap();
            let failure = match card {
                Some(Card::Succeeds) => {
                    pi["status"] = json!("succeeded");
                    pi["amount_received"] = pi["amount"].clone();
                    pi["latest_charge"] = json!(charge);
                    return (200, pi.clone());
                }
                Some(Card::Declines) | None => json!({ "type": "card_error", "code": "card_declined",
                    "decline_code": "generic_decline", "message": "Your card was declined." }),
                Some(Card::NeedsAuthentication) => json!({ "type": "card_error", "code": "authentication_required",
                    "decline_code": "authentication_required",
                    "message": "Your card was declined. This transaction requires authentication." }),
            };
            pi["status"] = json!("requires_payment_method");
            pi["last_payment_error"] = failure.clone();
            let mut e = failure;
            e["payment_intent"] = pi.clone();
            (402, json!({ "error": e }))
        }
        ("GET", ["v1", "payment_intents", id]) => match s.intents.get(*id) {
            Some(pi) => (200, pi.clone()),
            None => error(
                404,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such payment_intent: '{id}'"),
            ),
        },
        ("GET", ["v1", "payment_intents"]) => {
            let customer = param(form, "customer");
            let limit = param(form, "limit").and_then(|l| l.parse().ok()).unwrap_or(10usize);
            let after = param(form, "starting_after");
            let mut all: Vec<&Value> =
                s.intents.values().filter(|p| customer.is_none() || p["customer"].as_str() == customer).collect();
            all.reverse(); // newest first
            let start = after.and_then(|a| all.iter().position(|p| p["id"] == a).map(|i| i + 1)).unwrap_or(0);
            let page: Vec<Value> = all.iter().skip(start).take(limit).map(|v| (*v).clone()).collect();
            let has_more = all.len() > start + page.len();
            (200, json!({ "object": "list", "data": page, "has_more": has_more, "url": "/v1/payment_intents" }))
        }
        ("POST", ["v1", "refunds"]) => {
            let pi_id = param(form, "payment_intent").unwrap_or_default();
            let Some(pi) = s.intents.get(pi_id).cloned() else {
                return error(400, "invalid_request_error", Some("resource_missing"), "No such payment_intent");
            };
            if pi["status"] != "succeeded" {
                return error(
                    400,
                    "invalid_request_error",
                    Some("charge_not_refundable"),
                    "This PaymentIntent has no charge to refund.",
                );
            }
            let refunded: i64 =
                s.refunds.values().filter(|r| r["payment_intent"] == pi_id).filter_map(|r| r["amount"].as_i64()).sum();
            let amount = param(form, "amount")
                .and_then(|a| a.parse::<i64>().ok())
                .unwrap_or(pi["amount"].as_i64().unwrap() - refunded);
            if amount <= 0 || refunded + amount > pi["amount"].as_i64().unwrap() {
                return error(
                    400,
                    "invalid_request_error",
                    Some("amount_too_large"),
                    "Refund amount is greater than unrefunded amount on charge",
                );
            }
            let id = s.next("re");
            let r = json!({ "id": id, "object": "refund", "amount": amount, "currency": pi["currency"],
                "payment_intent": pi_id, "charge": pi["latest_charge"], "status": "succeeded",
                "reason": param(form, "reason"), "metadata": metadata(form) });
            s.refunds.insert(id, r.clone());
            (200, r)
        }
        ("GET", ["v1", "refunds"]) => {
            let pi = param(form, "payment_intent");
            let mut data: Vec<Value> =
                s.refunds.values().filter(|r| pi.is_none() || r["payment_intent"].as_str() == pi).cloned().collect();
            data.reverse();
            (200, json!({ "object": "list", "data": data, "has_more": false, "url": "/v1/refunds" }))
        }
        _ => error(
            404,
            "invalid_request_error",
            None,
            &format!("Unrecognized request URL ({method} /{})", parts.join("/")),
        ),
    }
}
