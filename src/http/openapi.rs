//! The OpenAPI document served at `/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` annotations and completed by [`errors::complete`] with the statuses
//! the layers in front of every handler add.
//!
//! Invariants (checked by `tests/api/openapi.rs` and, in CI, by openapi-spec-validator and
//! schemathesis against the running binary): every `{param}` of a path is declared `in:
//! path`, query parameters `in: query`; every operation names its credentials (`security`,
//! `[]` for public routes) and documents each status it can return with the problem schema.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::extract::JsonResponse;
use super::{admin, limits, money, money_back, money_in, ops, providers, tenants};

pub mod errors;
pub mod params;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally", description = "Multi-tenant prepaid billing on a double-entry ledger. Money is a decimal string; errors are RFC 9457 problem details with a stable `code`."),
    paths(
        tenants::create_tenant, tenants::list_tenants, tenants::get_tenant, tenants::update_tenant,
        tenants::get_balance, tenants::get_breakdown, tenants::list_transactions, tenants::get_usage,
        tenants::create_key, tenants::list_keys, tenants::get_key, tenants::update_key, tenants::delete_key,
        tenants::verify_key,
        limits::get_spend_limits, limits::put_spend_limits,
        money::estimate, money::create_charge, money::get_charge, money::refund_charge,
        money::create_hold, money::get_hold, money::capture_hold, money::release_hold,
        money_in::put_payment_method, money_in::create_top_up, money_in::list_top_ups, money_in::get_top_up,
        money_in::top_up_receipt, money_in::put_auto_top_up, money_in::get_auto_top_up, money_in::delete_auto_top_up,
        money_in::put_webhook, money_in::list_events,
        money_back::refund_top_up, money_back::list_top_up_refunds, money_back::mock_reversal, providers::stripe_webhook,
        admin::create_service_token, admin::list_service_tokens, admin::revoke_service_token, admin::adjust, admin::convert, admin::ledger_check,
        admin::put_price, admin::get_tenant_pricing, admin::put_tenant_pricing, admin::list_prices, admin::price_versions,
        ops::healthz, ops::readyz, ops::metrics, openapi_json,
        crate::portal::api::create_session,
    ),
    components(schemas(crate::ledger::accounts::TxnKind, crate::services::accounts::history::GroupBy)),
    modifiers(&Credentials),
)]
pub struct ApiDoc;

/// The complete document, built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
        errors::complete(&mut doc);
        doc
    })
}

#[utoipa::path(get, path = "/openapi.json", tag = "ops", security(()),
    responses((status = 200, body = Object, description = "This document (OpenAPI 3.1)")))]
pub async fn openapi_json() -> Response {
    JsonResponse(StatusCode::OK, document()).into_response()
}

/// The three bearer credentials; each operation lists those it accepts.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin_token", "The operator's admin token (`TALLY_ADMIN_TOKEN`)"),
            ("api_key", "A tenant's API key: reaches only that tenant's resources"),
            ("service_token", "A service token, for generation backends"),
        ] {
            let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(what)).build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}
