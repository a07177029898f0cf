//! Setup and checks through the service's admin API (not measured).

use futures::{stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::service::ADMIN_TOKEN;
use crate::BoxError;

pub struct Admin {
    http: reqwest::Client,
    base: String,
}

/// The service's ledger check.
pub struct LedgerCheck {
    pub ok: bool,
    pub transactions: i64,
    pub violations: Vec<String>,
}

impl Admin {
    pub fn new(base: &str) -> Result<Admin, BoxError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Admin { http, base: base.to_string() })
    }

    async fn send(&self, req: reqwest::RequestBuilder, expect: StatusCode, what: &str) -> Result<Value, BoxError> {
        let resp = req.bearer_auth(ADMIN_TOKEN).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if status != expect {
            return Err(format!("{what}: expected {expect}, got {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text)?)
    }

    async fn post(&self, path: &str, body: Value, idem: Option<&str>) -> Result<Value, BoxError> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = idem {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req, StatusCode::CREATED, path).await
    }

    /// A service token, the credential generation backends charge with.
    pub async fn service_token(&self, name: &str) -> Result<String, BoxError> {
        let body = self.post("/v1/admin/service-tokens", json!({ "name": name }), None).await?;
        Ok(body["token"].as_str().ok_or("no token in the response")?.to_string())
    }

    pub async fn create_tenant(&self, name: &str) -> Result<Uuid, BoxError> {
        let body = self.post("/v1/tenants", json!({ "name": name }), None).await?;
        Ok(body["id"].as_str().ok_or("no tenant id")?.parse()?)
    }

    /// Adds paid credit with an admin adjustment.
    pub async fn fund(&self, tenant: Uuid, amount: &str) -> Result<(), BoxError> {
        let key = Uuid::new_v4().to_string();
        let body = json!({ "amount": amount, "kind": "adjustment", "reason": "bench" });
        let path = format!("/v1/admin/tenants/{tenant}/adjustments");
        self.post(&path, body, Some(&key)).await?;
        Ok(())
    }

    pub async fn funded_tenant(&self, name: &str, amount: &str) -> Result<Uuid, BoxError> {
        let tenant = self.create_tenant(name).await?;
        self.fund(tenant, amount).await?;
        Ok(tenant)
    }

    /// `n` tenants, each funded with `amount`, created `concurrency` at a time.
    pub async fn funded_tenants(&self, n: usize, amount: &str, concurrency: usize) -> Result<Vec<Uuid>, BoxError> {
        stream::iter(0..n)
            .map(|i| async move { self.funded_tenant(&format!("bench-{i}"), amount).await })
            .buffer_unordered(concurrency)
            .try_collect()
            .await
    }

    /// A tenant API key; with `limit`, limited to `(amount, window)`.
    pub async fn api_key(&self, tenant: Uuid, limit: Option<(&str, &str)>) -> Result<Uuid, BoxError> {
        let spend_limit = limit.map(|(amount, window)| json!({ "amount": amount, "window": window }));
        let body = json!({ "name": "bench", "spend_limit": spend_limit });
        let key = self.post(&format!("/v1/tenants/{tenant}/api-keys"), body, None).await?;
        Ok(key["id"].as_str().ok_or("no key id")?.parse()?)
    }

    /// What the key's limit has spent in its current window, as the service reports it.
    pub async fn key_spent(&self, tenant: Uuid, key: Uuid) -> Result<Decimal, BoxError> {
        let req = self.http.get(format!("{}/v1/tenants/{tenant}/api-keys/{key}", self.base));
        let body = self.send(req, StatusCode::OK, "api key").await?;
        Ok(body["spent_in_window"].as_str().ok_or("no spent_in_window")?.parse()?)
    }

    pub async fn ledger_check(&self) -> Result<LedgerCheck, BoxError> {
        let req = self.http.get(format!("{}/v1/admin/ledger/check", self.base));
        let body = self.send(req, StatusCode::OK, "ledger check").await?;
        let violations =
            body["violations"].as_array().map(|v| v.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
        Ok(LedgerCheck {
            ok: body["ok"] == json!(true),
            transactions: body["transactions_checked"].as_i64().unwrap_or(-1),
            violations,
        })
    }
}
