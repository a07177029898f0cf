//! Top-ups through the Stripe provider, against the local fake Stripe (`stripe_fake`): for
//! each outcome — success, decline, authentication required, 429, a 500 after the work, a
//! timeout, a success known only from the webhook — the card is charged at most once per
//! attempt (succeeded PaymentIntents counted in the fake), the tenant is credited exactly
//! once, and the attempt ends in the right state. Also customer binding and amounts
//! Stripe cannot charge.

use std::time::Duration;

use serde_json::{json, Value};
use tally::config::{Config, StripeConfig};
use uuid::Uuid;

use crate::helpers::*;
use crate::stripe_fake::{FakeStripe, Fault, Op, SECRET_KEY, WEBHOOK_SECRET};
use crate::top_ups::{count_type, events_of, fast, set_card, top_up, top_ups_of, wait_until};

/// A service whose payment provider is Stripe at `fake`. A Stripe request waits at most
/// a third of the 3 s payment timeout.
pub async fn stripe_app(fake: &FakeStripe, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let base = fake.base.clone();
    TestApp::spawn_with(move |c| {
        fast(c);
        c.payment_timeout = Duration::from_millis(3000);
        c.payment_provider = "stripe".into();
        c.stripe =
            Some(StripeConfig { secret_key: SECRET_KEY.into(), webhook_secret: WEBHOOK_SECRET.into(), api_base: base });
        tweak(c);
    })
    .await
}

/// Posts a webhook delivery (raw bytes, optional signature header).
pub async fn deliver(app: &TestApp, payload: Vec<u8>, signature: Option<&str>) -> Resp {
    let mut rb = app.client.post(format!("{}/v1/providers/stripe/webhook", app.base)).body(payload);
    if let Some(s) = signature {
        rb = rb.header("Stripe-Signature", s);
    }
    let r = rb.send().await.expect("request");
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap_or_default();
    Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

/// A tenant with a Stripe card (`pm_card_*`) on file.
pub async fn tenant_with_card(app: &TestApp, card: &str) -> Uuid {
    let t = app.create_tenant("stripe-tenant").await;
    set_card(app, t, card).await.assert(200);
    t
}

/// The top-up (the only one of the tenant) as the API shows it.
async fn the_top_up(app: &TestApp, t: Uuid) -> Value {
    let ups = top_ups_of(app, t).await;
    assert_eq!(ups.len(), 1, "one attempt: {ups:?}");
    ups[0].clone()
}

/// Every request to `op` for attempt `id` used one of the attempt's own keys.
fn keys_of(fake: &FakeStripe, op: Op) -> Vec<String> {
    fake.requests(op).into_iter().filter_map(|l| l.key).collect()
}

fn assert_clean(fake: &FakeStripe) {
    assert_eq!(fake.violations(), Vec::<String>::new(), "requests Stripe would refuse");
}

#[tokio::test]
async fn a_top_up_confirms_one_payment_intent_on_the_tenants_own_customer() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.top_up_bonus_percent = "10".parse().unwrap()).await;
    let t = app.create_tenant("a").await;
    let pm = set_card(&app, t, "pm_card_visa").await;
    pm.assert(200);
    assert_eq!((pm.str("brand"), pm.str("last4")), ("visa".into(), "4242".into()));
    assert!(pm.str("token_prefix").starts_with("pm_fake"), "the attached PaymentMethod is the one charged");
    // One customer per tenant, created once, with the tenant in its metadata.
    set_card(&app, t, "pm_card_visa").await.assert(200);
    assert_eq!(fake.customers().len(), 1);
    assert_eq!(fake.customers()[0]["metadata"]["tally_tenant_id"], t.to_string());
    assert_eq!(keys_of(&fake, Op::CreateCustomer), vec![format!("tally_customer_{t}")]);

    let r = top_up(&app, t, "k1", "50").await;
    r.assert(201);
    let id = r.str("id");
    assert_eq!((r.str("status"), r.body["attempts"].as_i64()), ("succeeded".into(), Some(1)));
    assert!(r.str("provider_ref").starts_with("pi_"), "{}", r.text);
    assert_eq!(r.body["balance"]["available"], "55.00");
    // The requests, as Stripe documents them.
    let create = &fake.requests(Op::CreateIntent)[0];
    let customer = fake.customers()[0]["id"].as_str().unwrap().to_string();
    for (k, v) in [
        ("amount", "5000"),
        ("currency", "usd"),
        ("customer", customer.as_str()),
        ("confirm", "false"),
        ("metadata[tally_top_up_id]", id.as_str()),
        ("metadata[tally_tenant_id]", t.to_string().as_str()),
    ] {
        assert_eq!(create.param(k), Some(v), "create PaymentIntent {k}");
    }
    assert!(create.param("payment_method").unwrap().starts_with("pm_fake"));
    assert_eq!(create.key.as_deref(), Some(format!("tally_top_up_{id}").as_str()));
    let confirm = &fake.requests(Op::Confirm)[0];
    assert_eq!(confirm.path, format!("/v1/payment_intents/{}/confirm", r.str("provider_ref")), "confirmed by id");
    assert_eq!(confirm.param("off_session"), Some("true"));
    assert_eq!(confirm.key.as_deref(), Some(format!("tally_top_up_{id}-confirm-1").as_str()), "a key of its own");
    assert_eq!(fake.succeeded_for(&id), 1);
    assert_eq!(fake.intents_for(&id).len(), 1);

    let replay = top_up(&app, t, "k1", "50").await;
    assert_eq!(
        (replay.text.as_str(), replay.headers["idempotent-replayed"].to_str().unwrap()),
        (r.text.as_str(), "true")
    );
    assert_eq!(fake.requests(Op::Confirm).len(), 1, "a replay calls nobody");
    assert_eq!(app.balance(t).await["paid"], "50.00");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.succeeded"), 1);
    // The mock's simulated dispute does not exist with Stripe.
    app.post("/v1/admin/mock-provider/reversals", ADMIN, json!({ "top_up_id": id }))
        .await
        .assert_error(404, "not_found");
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_declined_card_fails_the_attempt_with_its_decline_code() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |_| {}).await;
    let t = tenant_with_card(&app, "pm_card_chargeDeclined").await;
    let r = top_up(&app, t, "k", "25").await;
    r.assert_error(402, "payment_declined");
    assert_eq!(r.str("decline_code"), "generic_decline");
    let up = the_top_up(&app, t).await;
    assert_eq!((up["status"].as_str(), up["decline_code"].as_str()), (Some("failed"), Some("generic_decline")));
    let id = up["id"].as_str().unwrap();
    assert_eq!((fake.succeeded_for(id), fake.intents_for(id).len()), (0, 1));
    let replay = top_up(&app, t, "k", "25").await;
    assert_eq!((replay.status.as_u16(), replay.text.as_str()), (402, r.text.as_str()));
    assert_eq!(fake.requests(Op::Confirm).len(), 1);
    assert_eq!(app.balance(t).await["total"], "0.00");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.failed"), 1);
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_card_that_needs_authentication_fails_with_authentication_required() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |_| {}).await;
    let t = tenant_with_card(&app, "pm_card_authenticationRequired").await;
    let r = top_up(&app, t, "k", "25").await;
    r.assert_error(402, "payment_declined");
    assert_eq!(r.str("decline_code"), "authentication_required");
    let up = the_top_up(&app, t).await;
    assert_eq!(up["status"], "failed");
    assert!(up["error"].as_str().unwrap().starts_with("authentication_required"), "{up}");
    // The event says so.
    let events = events_of(&app, t).await;
    let failed: Vec<&Value> = events.iter().filter(|e| e["type"] == "top_up.failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["data"]["decline_code"], "authentication_required");
    assert_eq!(fake.succeeded_for(up["id"].as_str().unwrap()), 0);
    assert_eq!(app.balance(t).await["total"], "0.00");
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_429_is_retried_later_and_charges_once() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.worker_interval = Duration::from_secs(3600)).await;
    let t = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::Confirm, Fault::RateLimit, 1);
    top_up(&app, t, "k", "30").await.assert_error(503, "payment_provider_unavailable");
    let up = the_top_up(&app, t).await;
    assert_eq!(up["status"], "pending");
    let unknown: bool = sqlx::query_scalar("SELECT outcome_unknown FROM top_ups WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!unknown, "a 429 is not an unknown outcome: Stripe did not process it");
    let id = up["id"].as_str().unwrap().to_string();
    assert_eq!(fake.succeeded_for(&id), 0);

    // The client's retry: the recorded PaymentIntent, confirmed with this call's key.
    let ok = top_up(&app, t, "k", "30").await;
    ok.assert(201);
    assert_eq!(ok.body["attempts"], 2);
    assert_eq!(keys_of(&fake, Op::CreateIntent), vec![format!("tally_top_up_{id}")], "one PaymentIntent, created once");
    assert_eq!(
        keys_of(&fake, Op::Confirm),
        vec![format!("tally_top_up_{id}-confirm-1"), format!("tally_top_up_{id}-confirm-2")]
    );
    assert_eq!((fake.succeeded_for(&id), fake.intents_for(&id).len()), (1, 1));
    assert_eq!(app.balance(t).await["paid"], "30.00");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.succeeded"), 1);
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_500_after_the_work_is_settled_by_what_stripe_recorded() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.worker_interval = Duration::from_secs(3600)).await;

    // The confirmation charged the card and answered 500: retrieving the PaymentIntent says so.
    let a = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::Confirm, Fault::ErrorAfterWork, 1);
    let r = top_up(&app, a, "k", "40").await;
    r.assert(201);
    let id = r.str("id");
    assert_eq!((fake.succeeded_for(&id), fake.intents_for(&id).len()), (1, 1));
    assert_eq!(fake.requests(Op::RetrieveIntent).len(), 1);
    let confirm = &fake.requests(Op::Confirm)[0];
    assert_eq!(confirm.status, 500, "the card was charged behind a 500");

    // The create made its PaymentIntent and answered 500: the customer's list has it.
    let b = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::CreateIntent, Fault::ErrorAfterWork, 1);
    let r = top_up(&app, b, "k", "40").await;
    r.assert(201);
    let id = r.str("id");
    assert_eq!((fake.succeeded_for(&id), fake.intents_for(&id).len()), (1, 1), "found, not created twice");

    // The create answered 500 before doing anything; its key keeps that 500 for good, so the
    // next key of the chain creates it — once the list shows there is nothing to find.
    let c = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::CreateIntent, Fault::ErrorBeforeWork, 1);
    let r = top_up(&app, c, "k", "40").await;
    r.assert(201);
    let id = r.str("id");
    let keys: Vec<String> = fake
        .requests(Op::CreateIntent)
        .into_iter()
        .filter(|l| l.param("metadata[tally_top_up_id]") == Some(id.as_str()))
        .filter_map(|l| l.key)
        .collect();
    assert_eq!(keys, vec![format!("tally_top_up_{id}"), format!("tally_top_up_{id}-r1")]);
    assert_eq!((fake.succeeded_for(&id), fake.intents_for(&id).len()), (1, 1));

    for t in [a, b, c] {
        assert_eq!(app.balance(t).await["paid"], "40.00", "credited exactly once");
        assert_eq!(count_type(&events_of(&app, t).await, "top_up.succeeded"), 1);
    }
    assert_eq!(fake.succeeded(), 3);
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_timeout_is_settled_by_retrieving_the_payment_intent_never_by_a_second_one() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |_| {}).await;

    // The confirmation's answer never arrives in time: the retrieve right after says succeeded.
    let a = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::Confirm, Fault::Delay(Duration::from_secs(6)), 1);
    let r = top_up(&app, a, "k", "20").await;
    r.assert(201);
    assert_eq!(fake.succeeded_for(&r.str("id")), 1);

    // The retrieve fails too: unknown. The sweep re-drives the attempt (a retrieve, never a
    // second PaymentIntent) until it is credited, and the client's key replays the answer.
    let b = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::Confirm, Fault::Delay(Duration::from_secs(6)), 1);
    fake.fault(Op::RetrieveIntent, Fault::ErrorBeforeWork, 1);
    top_up(&app, b, "k", "20").await.assert_error(503, "payment_provider_unavailable");
    let up = the_top_up(&app, b).await;
    let id = up["id"].as_str().unwrap().to_string();
    assert_eq!(up["status"], "pending");
    assert_eq!(fake.succeeded_for(&id), 1, "Stripe charged; the service does not know yet");
    assert_eq!(app.balance(b).await["paid"], "0.00");
    wait_until("the sweep to credit the attempt", Duration::from_secs(10), || async {
        the_top_up(&app, b).await["status"] == "succeeded"
    })
    .await;
    let answer = top_up(&app, b, "k", "20").await;
    answer.assert(201);
    assert_eq!(answer.headers["idempotent-replayed"], "true");
    assert_eq!((fake.succeeded_for(&id), fake.intents_for(&id).len()), (1, 1));
    assert_eq!(keys_of(&fake, Op::CreateIntent).iter().filter(|k| k.contains(&id)).count(), 1);
    for t in [a, b] {
        assert_eq!(app.balance(t).await["paid"], "20.00", "credited exactly once");
        assert_eq!(count_type(&events_of(&app, t).await, "top_up.succeeded"), 1);
    }
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_success_that_arrives_only_by_webhook_settles_the_attempt_once() {
    let fake = FakeStripe::start().await;
    // No sweep: only the webhook can tell the service.
    let app = stripe_app(&fake, |c| c.worker_interval = Duration::from_secs(3600)).await;
    let t = tenant_with_card(&app, "pm_card_visa").await;
    fake.fault(Op::Confirm, Fault::Delay(Duration::from_secs(6)), 1);
    fake.fault(Op::RetrieveIntent, Fault::ErrorBeforeWork, 1);
    top_up(&app, t, "k", "60").await.assert_error(503, "payment_provider_unavailable");
    let up = the_top_up(&app, t).await;
    let id = up["id"].as_str().unwrap().to_string();
    assert_eq!(up["status"], "pending");
    let intent = fake.intents_for(&id)[0].clone();
    assert_eq!(intent["status"], "succeeded");

    let (payload, sig) = fake.event("evt_success_1", "payment_intent.succeeded", intent.clone());
    let r = deliver(&app, payload.clone(), Some(&sig)).await;
    r.assert(200);
    assert_eq!(r.body["outcome"], "credited");
    let up = the_top_up(&app, t).await;
    assert_eq!((up["status"].as_str(), up["provider_ref"].as_str()), (Some("succeeded"), intent["id"].as_str()));
    assert_eq!(app.balance(t).await["paid"], "60.00");
    // Delivered again: acknowledged, nothing more.
    let again = deliver(&app, payload, Some(&sig)).await;
    again.assert(200);
    assert_eq!(again.body["outcome"], "duplicate");
    // The same news in another event: the attempt is settled already.
    let (payload, sig) = fake.event("evt_success_2", "payment_intent.succeeded", intent);
    assert_eq!(deliver(&app, payload, Some(&sig)).await.body["outcome"], "already_settled");
    // The client's retry gets the answer the webhook stored under its key.
    let answer = top_up(&app, t, "k", "60").await;
    answer.assert(201);
    assert_eq!(answer.headers["idempotent-replayed"], "true");
    assert_eq!(fake.requests(Op::Confirm).len(), 1, "never confirmed again");
    assert_eq!((fake.succeeded_for(&id), fake.intents_for(&id).len()), (1, 1));
    assert_eq!(app.balance(t).await["paid"], "60.00", "credited exactly once");
    assert_eq!(count_type(&events_of(&app, t).await, "top_up.succeeded"), 1);
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_failure_that_arrives_by_webhook_fails_the_attempt() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.worker_interval = Duration::from_secs(3600)).await;
    let t = tenant_with_card(&app, "pm_card_authenticationRequired").await;
    fake.fault(Op::Confirm, Fault::Delay(Duration::from_secs(6)), 1);
    fake.fault(Op::RetrieveIntent, Fault::ErrorBeforeWork, 1);
    top_up(&app, t, "k", "60").await.assert_error(503, "payment_provider_unavailable");
    let id = the_top_up(&app, t).await["id"].as_str().unwrap().to_string();
    let intent = fake.intents_for(&id)[0].clone();
    let (payload, sig) = fake.event("evt_failed_1", "payment_intent.payment_failed", intent);
    assert_eq!(deliver(&app, payload, Some(&sig)).await.body["outcome"], "declined");
    let up = the_top_up(&app, t).await;
    assert_eq!((up["status"].as_str(), up["decline_code"].as_str()), (Some("failed"), Some("authentication_required")));
    let r = top_up(&app, t, "k", "60").await;
    r.assert_error(402, "payment_declined");
    assert_eq!(r.str("decline_code"), "authentication_required");
    assert_eq!(fake.succeeded(), 0);
    assert_eq!(app.balance(t).await["total"], "0.00");
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_card_attached_to_another_customer_is_refused() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |_| {}).await;
    let a = tenant_with_card(&app, "pm_card_visa").await;
    let a_card: String = sqlx::query_scalar("SELECT token FROM payment_methods WHERE tenant_id = $1")
        .bind(a)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let b = app.create_tenant("b").await;
    // Tenant b learned a's PaymentMethod id: refused, and b has no card to top up from.
    set_card(&app, b, &a_card).await.assert_error(422, "unprocessable");
    top_up(&app, b, "k", "10").await.assert_error(422, "unprocessable");
    assert_eq!(fake.customers().len(), 2, "each tenant its own customer");
    // a may set its own card again; unknown or malformed ids are a 400.
    set_card(&app, a, &a_card).await.assert(200);
    set_card(&app, b, "pm_nope").await.assert_error(400, "invalid_request");
    set_card(&app, b, "card_123").await.assert_error(400, "invalid_request");
    set_card(&app, b, "pm_../../v1/refunds").await.assert_error(400, "invalid_request");
    assert!(fake.requests(Op::Attach).iter().all(|l| l.key.is_some()));
    assert_eq!(fake.succeeded(), 0);
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn amounts_stripe_cannot_charge_exactly_are_refused() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |c| c.top_up_whole_dollars = false).await;
    let t = tenant_with_card(&app, "pm_card_visa").await;
    let r = top_up(&app, t, "k", "12.345").await;
    r.assert_error(400, "invalid_request");
    assert!(r.str("detail").contains("whole cents"), "{}", r.text);
    app.put(
        &format!("/v1/tenants/{t}/auto-top-up"),
        ADMIN,
        json!({ "enabled": true, "threshold": "5", "amount": "10.001" }),
    )
    .await
    .assert_error(400, "invalid_request");
    top_up(&app, t, "k", "12.34").await.assert(201);
    assert_eq!(fake.requests(Op::CreateIntent)[0].param("amount"), Some("1234"));
    assert!(top_ups_of(&app, t).await.len() == 1, "the refusal recorded nothing");
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn auto_top_up_charges_through_stripe_once_per_attempt() {
    let fake = FakeStripe::start().await;
    let app = stripe_app(&fake, |_| {}).await;
    let t = tenant_with_card(&app, "pm_card_visa").await;
    app.put(
        &format!("/v1/tenants/{t}/auto-top-up"),
        ADMIN,
        json!({ "enabled": true, "threshold": "10", "amount": "25" }),
    )
    .await
    .assert(200);
    wait_until("the automatic top-up to be credited", Duration::from_secs(10), || async {
        app.balance(t).await["paid"] == "25.00"
    })
    .await;
    let up = the_top_up(&app, t).await;
    assert_eq!((up["source"].as_str(), up["status"].as_str()), (Some("auto"), Some("succeeded")));
    let id = up["id"].as_str().unwrap();
    assert_eq!((fake.succeeded_for(id), fake.intents_for(id).len()), (1, 1));
    assert_eq!(fake.requests(Op::CreateIntent)[0].param("amount"), Some("2500"));
    assert_clean(&fake);
    app.assert_ledger_ok().await;
}
