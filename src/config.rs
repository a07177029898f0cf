//! Configuration from environment variables (and `.env` when present).
//!
//! Every variable is listed in `.env.example` with its default. A value that does not
//! parse fails start-up with a message naming the variable; nothing falls back silently.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: run the embedded Postgres under `data_dir`.
    pub database_url: Option<String>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub credits_per_usd: Decimal,
    pub payment_provider: String,
    pub log_format: LogFormat,
    pub allow_private_webhooks: bool,
    pub signup_credit: Money,
    pub signup_credit_expires_days: Option<u32>,
    pub db_pool_size: u32,
    pub charge_batching: bool,
    pub charge_batch_max: usize,
    /// Group-commit lanes: batches (of any tenants) committing at once.
    pub charge_lanes: usize,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// A connection whose request headers take longer than this to arrive is closed.
    pub header_read_timeout: Duration,
    /// Open connections at most; one more is closed at once.
    pub max_connections: usize,
    pub price_book_path: Option<PathBuf>,
    pub top_up_min: Money,
    pub top_up_max: Money,
    pub top_up_whole_dollars: bool,
    pub top_up_bonus_percent: Decimal,
    pub top_up_bonus_expires_days: Option<u32>,
    pub worker_interval: Duration,
    pub auth_cache_ttl: Duration,
    pub run_workers: bool,
    /// Longest wait for one payment provider call; no answer by then is treated as unknown.
    pub payment_timeout: Duration,
    /// First delay before re-driving an attempt the provider did not answer (doubles per try).
    pub payment_retry: Duration,
    /// How long `pm_mock_slow` takes to answer.
    pub mock_slow_delay: Duration,
    /// Back-off after the first declined auto top-up (×4 per further decline).
    pub auto_top_up_backoff: Duration,
    pub webhook_timeout: Duration,
    /// Delay before the first webhook retry (×4 per further failure, at most 10 hours).
    pub webhook_backoff: Duration,
    pub webhook_max_attempts: u32,
    /// Webhook sends in flight per replica, in all and per endpoint (tenant).
    pub webhook_max_in_flight: usize,
    pub webhook_endpoint_in_flight: usize,
    /// How long before a bonus lot expires the `credits.expiring` event is sent.
    pub credits_expiring_notice: Duration,
    /// Request rate limits per tenant API key (and per tenant's portal), and per service token.
    pub rate_limit_tenant: crate::rate_limit::Rate,
    pub rate_limit_service: crate::rate_limit::Rate,
    /// The tenant portal: `TALLY_PUBLIC_URL`, link and session lifetimes.
    pub portal: crate::portal::config::PortalConfig,
    /// Stripe's keys and API address, when `TALLY_PAYMENT_PROVIDER=stripe`.
    pub stripe: Option<StripeConfig>,
}

/// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `STRIPE_API_BASE`. Its `Debug` never
/// prints the secrets.
#[derive(Clone)]
pub struct StripeConfig {
    pub secret_key: String,
    pub webhook_secret: String,
    /// `https://api.stripe.com`, or a local fake in tests.
    pub api_base: String,
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            // The mode only (sk_live_, sk_test_): enough to tell which account, nothing to use.
            .field("secret_key", &format!("{}…", self.secret_key.chars().take(8).collect::<String>()))
            .field("webhook_secret", &"…")
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl StripeConfig {
    fn from_lookup(var: &impl Fn(&'static str) -> Option<String>) -> Result<StripeConfig, ConfigError> {
        let err = |var, message: &str| ConfigError { var, message: message.into() };
        let secret_key = var("STRIPE_SECRET_KEY").ok_or_else(|| {
            err("STRIPE_SECRET_KEY", "required with TALLY_PAYMENT_PROVIDER=stripe (sk_live_…, sk_test_… or rk_…)")
        })?;
        if !["sk_", "rk_"].iter().any(|p| secret_key.starts_with(p)) || secret_key.chars().any(char::is_whitespace) {
            return Err(err("STRIPE_SECRET_KEY", "must be a Stripe secret or restricted key (sk_… or rk_…)"));
        }
        let webhook_secret = var("STRIPE_WEBHOOK_SECRET").ok_or_else(|| {
            err(
                "STRIPE_WEBHOOK_SECRET",
                "required with TALLY_PAYMENT_PROVIDER=stripe (whsec_…, from the webhook endpoint)",
            )
        })?;
        if !webhook_secret.starts_with("whsec_") {
            return Err(err("STRIPE_WEBHOOK_SECRET", "must be the endpoint's signing secret (whsec_…)"));
        }
        let api_base = var("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
        let parsed = url::Url::parse(&api_base).map_err(|e| err("STRIPE_API_BASE", &format!("{api_base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
            return Err(err("STRIPE_API_BASE", "must be an http(s) URL"));
        }
        Ok(StripeConfig { secret_key, webhook_secret, api_base: api_base.trim_end_matches('/').to_string() })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl Config {
    /// Reads the process environment (after loading `.env`, if any).
    pub fn from_env() -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get`, so tests can build one without touching the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        Ok(Config {
            database_url: var("DATABASE_URL"),
            addr: parse(&var, "TALLY_ADDR", "127.0.0.1:8080")?,
            data_dir: PathBuf::from(var("TALLY_DATA_DIR").unwrap_or_else(|| "./data".into())),
            admin_token: match var("TALLY_ADMIN_TOKEN") {
                Some(t) if t.len() < 16 => {
                    return Err(ConfigError {
                        var: "TALLY_ADMIN_TOKEN",
                        message: "must be at least 16 characters".into(),
                    })
                }
                t => t,
            },
            credits_per_usd: positive_decimal(&var, "TALLY_CREDITS_PER_USD", "100")?,
            payment_provider: match var("TALLY_PAYMENT_PROVIDER").as_deref().unwrap_or("mock") {
                p @ ("mock" | "stripe") => p.into(),
                other => {
                    return Err(ConfigError {
                        var: "TALLY_PAYMENT_PROVIDER",
                        message: format!("unknown provider {other:?} (known: mock, stripe)"),
                    })
                }
            },
            stripe: match var("TALLY_PAYMENT_PROVIDER").as_deref() {
                Some("stripe") => Some(StripeConfig::from_lookup(&var)?),
                _ => None,
            },
            log_format: match var("TALLY_LOG_FORMAT").as_deref().unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError { var: "TALLY_LOG_FORMAT", message: "must be text or json".into() }),
            },
            allow_private_webhooks: boolean(&var, "TALLY_ALLOW_PRIVATE_WEBHOOKS", false)?,
            signup_credit: money(&var, "TALLY_SIGNUP_CREDIT", "0")?,
            signup_credit_expires_days: optional_days(&var, "TALLY_SIGNUP_CREDIT_EXPIRES_DAYS")?,
            db_pool_size: parse(&var, "TALLY_DB_POOL_SIZE", "16")?,
            charge_batching: boolean(&var, "TALLY_CHARGE_BATCHING", true)?,
            charge_batch_max: parse(&var, "TALLY_CHARGE_BATCH_MAX", "256")?,
            charge_lanes: parse(&var, "TALLY_CHARGE_LANES", "2")?,
            request_timeout: Duration::from_millis(parse(&var, "TALLY_REQUEST_TIMEOUT_MS", "15000")?),
            body_limit_bytes: parse(&var, "TALLY_BODY_LIMIT_BYTES", "65536")?,
            header_read_timeout: Duration::from_millis(parse(&var, "TALLY_HEADER_READ_TIMEOUT_MS", "10000")?),
            max_connections: parse(&var, "TALLY_MAX_CONNECTIONS", "4096")?,
            price_book_path: var("TALLY_PRICE_BOOK").map(PathBuf::from),
            top_up_min: money(&var, "TALLY_TOP_UP_MIN", "5")?,
            top_up_max: money(&var, "TALLY_TOP_UP_MAX", "10000")?,
            top_up_whole_dollars: boolean(&var, "TALLY_TOP_UP_WHOLE_DOLLARS", true)?,
            top_up_bonus_percent: decimal(&var, "TALLY_TOP_UP_BONUS_PERCENT", "0")?,
            top_up_bonus_expires_days: optional_days(&var, "TALLY_TOP_UP_BONUS_EXPIRES_DAYS")?,
            worker_interval: Duration::from_millis(parse(&var, "TALLY_WORKER_INTERVAL_MS", "1000")?),
            auth_cache_ttl: Duration::from_millis(parse(&var, "TALLY_AUTH_CACHE_TTL_MS", "5000")?),
            run_workers: boolean(&var, "TALLY_RUN_WORKERS", true)?,
            payment_timeout: Duration::from_millis(parse(&var, "TALLY_PAYMENT_TIMEOUT_MS", "10000")?),
            payment_retry: Duration::from_millis(parse(&var, "TALLY_PAYMENT_RETRY_MS", "5000")?),
            mock_slow_delay: Duration::from_millis(parse(&var, "TALLY_MOCK_SLOW_MS", "3000")?),
            auto_top_up_backoff: Duration::from_millis(parse(&var, "TALLY_AUTO_TOP_UP_BACKOFF_MS", "30000")?),
            webhook_timeout: Duration::from_millis(parse(&var, "TALLY_WEBHOOK_TIMEOUT_MS", "10000")?),
            webhook_backoff: Duration::from_millis(parse(&var, "TALLY_WEBHOOK_BACKOFF_MS", "5000")?),
            webhook_max_attempts: parse(&var, "TALLY_WEBHOOK_MAX_ATTEMPTS", "10")?,
            webhook_max_in_flight: parse(&var, "TALLY_WEBHOOK_MAX_IN_FLIGHT", "256")?,
            webhook_endpoint_in_flight: parse(&var, "TALLY_WEBHOOK_ENDPOINT_IN_FLIGHT", "4")?,
            credits_expiring_notice: Duration::from_secs(
                parse::<u64>(&var, "TALLY_CREDITS_EXPIRING_DAYS", "7")?.saturating_mul(86_400),
            ),
            rate_limit_tenant: rate(
                &var,
                ("TALLY_RATE_LIMIT_TENANT_RPS", "50"),
                ("TALLY_RATE_LIMIT_TENANT_BURST", "200"),
            )?,
            rate_limit_service: rate(
                &var,
                ("TALLY_RATE_LIMIT_SERVICE_RPS", "0"),
                ("TALLY_RATE_LIMIT_SERVICE_BURST", "0"),
            )?,
            portal: crate::portal::config::PortalConfig::from_lookup(&var)
                .map_err(|message| ConfigError { var: "TALLY_PUBLIC_URL", message })?,
        })
        .and_then(Config::validated)
    }

    fn validated(self) -> Result<Config, ConfigError> {
        let err = |var, message: &str| Err(ConfigError { var, message: message.into() });
        if self.db_pool_size == 0 {
            return err("TALLY_DB_POOL_SIZE", "must be at least 1");
        }
        if self.charge_batch_max == 0 {
            return err("TALLY_CHARGE_BATCH_MAX", "must be at least 1");
        }
        if self.charge_lanes == 0 {
            return err("TALLY_CHARGE_LANES", "must be at least 1");
        }
        if self.signup_credit.is_negative() {
            return err("TALLY_SIGNUP_CREDIT", "must not be negative");
        }
        if !self.top_up_min.is_positive() || self.top_up_max < self.top_up_min {
            return err("TALLY_TOP_UP_MAX", "must be at least TALLY_TOP_UP_MIN, which must be positive");
        }
        if self.payment_timeout.is_zero() || self.payment_timeout >= self.request_timeout {
            // A manual top-up answers within its request: the provider call must end first.
            return err("TALLY_PAYMENT_TIMEOUT_MS", "must be positive and less than TALLY_REQUEST_TIMEOUT_MS");
        }
        if self.webhook_max_in_flight == 0 {
            return err("TALLY_WEBHOOK_MAX_IN_FLIGHT", "must be at least 1");
        }
        if self.webhook_endpoint_in_flight == 0 || self.webhook_endpoint_in_flight > 1000 {
            return err("TALLY_WEBHOOK_ENDPOINT_IN_FLIGHT", "must be between 1 and 1000");
        }
        if self.header_read_timeout.is_zero() {
            return err("TALLY_HEADER_READ_TIMEOUT_MS", "must be positive");
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize {
            return err("TALLY_MAX_CONNECTIONS", "must be at least 1");
        }
        if self.webhook_max_attempts == 0 {
            return err("TALLY_WEBHOOK_MAX_ATTEMPTS", "must be at least 1");
        }
        if self.top_up_bonus_percent < Decimal::ZERO || self.top_up_bonus_percent > Decimal::ONE_HUNDRED {
            return err("TALLY_TOP_UP_BONUS_PERCENT", "must be between 0 and 100");
        }
        Ok(self)
    }
}

fn parse<T: FromStr>(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = var(name).unwrap_or_else(|| default.to_string());
    raw.trim().parse().map_err(|e: T::Err| ConfigError { var: name, message: format!("{raw:?}: {e}") })
}

/// The one parser of boolean variables: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`,
/// in any case (the contract, Running). Anything else names the variable.
fn boolean(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(raw) => parse_bool(&raw).ok_or_else(|| ConfigError {
            var: name,
            message: format!("{raw:?}: must be one of true/false, 1/0, yes/no, on/off"),
        }),
    }
}

pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn decimal(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Decimal, ConfigError> {
    parse(var, name, default)
}

fn positive_decimal(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Decimal, ConfigError> {
    let d = decimal(var, name, default)?;
    if d <= Decimal::ZERO {
        return Err(ConfigError { var: name, message: "must be positive".into() });
    }
    Ok(d)
}

fn money(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Money, ConfigError> {
    parse(var, name, default)
}

/// A rate limit: tokens per second (0: off) and bucket size (0: one second's worth).
fn rate(
    var: &impl Fn(&'static str) -> Option<String>,
    (rps, rps_default): (&'static str, &str),
    (burst, burst_default): (&'static str, &str),
) -> Result<crate::rate_limit::Rate, ConfigError> {
    Ok(crate::rate_limit::Rate { per_second: parse(var, rps, rps_default)?, burst: parse(var, burst, burst_default)? })
}

fn optional_days(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<u32>, ConfigError> {
    match var(name) {
        None => Ok(None),
        Some(_) => parse::<u32>(var, name, "0").map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_sane() {
        let c = with(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert!(c.database_url.is_none() && c.admin_token.is_none() && c.charge_batching);
        assert_eq!(c.rate_limit_tenant, crate::rate_limit::Rate { per_second: 50, burst: 200 });
        assert!(c.rate_limit_service.is_off(), "backends are trusted: off by default");
    }

    #[test]
    fn every_boolean_takes_every_spelling() {
        let flags: [(&str, fn(&Config) -> bool); 4] = [
            ("TALLY_ALLOW_PRIVATE_WEBHOOKS", |c| c.allow_private_webhooks),
            ("TALLY_CHARGE_BATCHING", |c| c.charge_batching),
            ("TALLY_TOP_UP_WHOLE_DOLLARS", |c| c.top_up_whole_dollars),
            ("TALLY_RUN_WORKERS", |c| c.run_workers),
        ];
        for (name, get) in flags {
            for (raw, want) in [
                ("true", true),
                ("TRUE", true),
                ("1", true),
                ("yes", true),
                ("Yes", true),
                ("on", true),
                (" ON ", true),
                ("false", false),
                ("False", false),
                ("0", false),
                ("no", false),
                ("NO", false),
                ("off", false),
                ("Off", false),
            ] {
                let c = with(&[(name, raw)]).unwrap_or_else(|e| panic!("{name}={raw:?}: {e}"));
                assert_eq!(get(&c), want, "{name}={raw:?}");
            }
        }
        assert!(!with(&[]).unwrap().allow_private_webhooks, "off by default");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("TALLY_ADDR", "nope"),
            ("TALLY_CREDITS_PER_USD", "0"),
            ("TALLY_LOG_FORMAT", "xml"),
            ("TALLY_SIGNUP_CREDIT", "1.0000001"),
            ("TALLY_CHARGE_BATCHING", "maybe"),
            ("TALLY_CHARGE_LANES", "0"),
            ("TALLY_ALLOW_PRIVATE_WEBHOOKS", "2"),
            ("TALLY_RUN_WORKERS", "enabled"),
            ("TALLY_TOP_UP_WHOLE_DOLLARS", "y"),
            ("TALLY_ADMIN_TOKEN", "short"),
            ("TALLY_PAYMENT_PROVIDER", "paypal"),
            ("TALLY_PAYMENT_TIMEOUT_MS", "20000"),
            ("TALLY_WEBHOOK_MAX_ATTEMPTS", "0"),
            ("TALLY_HEADER_READ_TIMEOUT_MS", "0"),
            ("TALLY_WEBHOOK_MAX_IN_FLIGHT", "0"),
            ("TALLY_WEBHOOK_ENDPOINT_IN_FLIGHT", "0"),
            ("TALLY_MAX_CONNECTIONS", "0"),
            ("TALLY_AUTO_TOP_UP_BACKOFF_MS", "soon"),
            ("TALLY_RATE_LIMIT_TENANT_RPS", "-1"),
            ("TALLY_RATE_LIMIT_SERVICE_BURST", "lots"),
        ] {
            let e = with(&[(k, v)]).unwrap_err();
            assert_eq!(e.var, k, "{e}");
        }
    }

    #[test]
    fn stripe_needs_its_keys_and_hides_them() {
        let p = ("TALLY_PAYMENT_PROVIDER", "stripe");
        let (sk, wh) = (("STRIPE_SECRET_KEY", "sk_test_abc123"), ("STRIPE_WEBHOOK_SECRET", "whsec_xyz"));
        assert_eq!(with(&[p]).unwrap_err().var, "STRIPE_SECRET_KEY");
        assert_eq!(with(&[p, sk]).unwrap_err().var, "STRIPE_WEBHOOK_SECRET");
        assert_eq!(with(&[p, ("STRIPE_SECRET_KEY", "pk_test_abc"), wh]).unwrap_err().var, "STRIPE_SECRET_KEY");
        assert_eq!(with(&[p, sk, ("STRIPE_WEBHOOK_SECRET", "secret")]).unwrap_err().var, "STRIPE_WEBHOOK_SECRET");
        assert_eq!(with(&[p, sk, wh, ("STRIPE_API_BASE", "ftp://x")]).unwrap_err().var, "STRIPE_API_BASE");
        let c = with(&[p, sk, wh]).unwrap();
        let stripe = c.stripe.as_ref().unwrap();
        assert_eq!(stripe.api_base, "https://api.stripe.com");
        let shown = format!("{c:?}");
        assert!(!shown.contains("abc123") && !shown.contains("whsec_xyz"), "{shown}");
        assert!(with(&[]).unwrap().stripe.is_none(), "the mock needs no keys");
    }
}
