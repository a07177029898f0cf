//! Wiring: database, application state, workers, the HTTP server and its shutdown.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{generate_token, hash_token, AuthCache};
use crate::clock::Clock;
use crate::config::Config;
use crate::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::db::{self, MIGRATOR};
use crate::faults::Faults;
use crate::frame::Frame;
use crate::payments::MockProvider;
use crate::pricing;
use crate::services::accounts::prices::{self, PriceCache};
use crate::services::money_in::MoneyIn;
use crate::services::notify::low_balance::LowBalance;
use crate::services::notify::webhooks;
use crate::services::spend::charger::Charger;
use crate::state::{App, AppState};
use crate::{http, workers};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The database the service uses: the configured one, or the embedded one (kept alive
/// by the returned handle).
pub async fn database(config: &Config) -> Result<(PgPool, Option<EmbeddedPostgres>), BoxError> {
    let (opts, embedded) = match &config.database_url {
        Some(url) => (url.parse()?, None),
        None => {
            let dir = config.data_dir.clone();
            let max_connections = (config.db_pool_size * 4).max(50);
            let pg = tokio::task::spawn_blocking(move || {
                EmbeddedPostgres::start(EmbeddedOptions {
                    dir,
                    ephemeral: false,
                    fsync: true,
                    max_connections,
                    preload: None,
                })
            })
            .await??;
            (pg.ensure_database("tally").await?, Some(pg))
        }
    };
    let pool = db::connect(opts, config.db_pool_size).await?;
    MIGRATOR.run(&pool).await?;
    Ok((pool, embedded))
}

/// The admin token's hash: from `TALLY_ADMIN_TOKEN`, or a development token generated once,
/// kept in the data directory and printed when it is created.
pub fn admin_token_hash(config: &Config) -> Result<[u8; 32], BoxError> {
    if let Some(t) = &config.admin_token {
        return Ok(hash_token(t));
    }
    let path = config.data_dir.join("admin_token");
    if let Ok(t) = fs::read_to_string(&path) {
        tracing::info!("using the development admin token stored in {}", path.display());
        return Ok(hash_token(t.trim()));
    }
    fs::create_dir_all(&config.data_dir)?;
    let token = generate_token("adm");
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(token.as_bytes())?;
    println!("Generated a development admin token (stored in {}):\n  {token}", path.display());
    Ok(hash_token(&token))
}

/// The application state. `mock`: the mock payment provider to use when it is the
/// configured one (tests share one between instances, as replicas share a real provider);
/// `None` makes a fresh one.
pub async fn build_state(config: Config, pool: PgPool, mock: Option<Arc<MockProvider>>) -> Result<AppState, BoxError> {
    let book = match &config.price_book_path {
        Some(p) => pricing::parse_price_book(&fs::read_to_string(p).map_err(|e| format!("TALLY_PRICE_BOOK: {e}"))?)
            .map_err(|e| format!("TALLY_PRICE_BOOK: {e}"))?,
        None => pricing::default_price_book(),
    };
    prices::seed(&pool, book).await.map_err(|e| format!("seeding the price book: {e}"))?;
    let price_cache = PriceCache::default();
    price_cache.reload(&pool).await.map_err(|e| format!("loading the price book: {e}"))?;
    let crate::payments::Selected { provider, mock, stripe } = crate::payments::select(&config, mock)?;
    let webhook_client = webhooks::client(config.webhook_timeout, config.allow_private_webhooks)?;
    let faults = Arc::new(Faults::default());
    let low_balance = Arc::new(LowBalance::default());
    let clock = Clock::system();
    let frame = Frame::new(pool.clone(), clock.clone(), low_balance.clone(), faults.clone());
    let charger = Arc::new(Charger::new(frame.clone(), &config));
    let money_in = MoneyIn {
        frame: frame.clone(),
        provider: provider.clone(),
        low: low_balance.clone(),
        faults: faults.clone(),
        config: Arc::new(config.clone()),
    };
    let app = App {
        admin_token_hash: admin_token_hash(&config)?,
        auth_cache: AuthCache::new(config.auth_cache_ttl),
        prices: price_cache,
        clock,
        frame,
        charger,
        money_in,
        provider,
        mock,
        stripe,
        faults,
        low_balance,
        webhook_client,
        rate_limits: crate::rate_limit::RateLimits::new(config.rate_limit_tenant, config.rate_limit_service),
        pool,
        config,
    };
    Ok(AppState(Arc::new(app)))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and stops workers.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = state.config.run_workers.then(|| workers::spawn(state.clone(), stop_rx));
    let limits = http::server::Limits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_connections,
        drain_limit: state.config.request_timeout + state.config.header_read_timeout,
    };
    raise_open_file_limit(limits.max_connections);
    tracing::info!("listening on {}", listener.local_addr()?);
    let result = http::server::serve(listener, http::router(state), limits, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(w) = worker {
        let _ = w.await;
    }
    result
}

/// Raises the soft open-file limit to the hard one (the soft default, often 1024, is below
/// what `TALLY_MAX_CONNECTIONS` allows), and warns when connections could still run out of it.
fn raise_open_file_limit(max_connections: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
            true
        }
    };
    // Room for the database pool, webhook sends, the listener and files besides the connections.
    let needed = max_connections as u64 + 512;
    if ok && lim.rlim_cur < needed {
        tracing::warn!(
            open_file_limit = lim.rlim_cur,
            "TALLY_MAX_CONNECTIONS={max_connections} needs about {needed} open files: \
             connections beyond the limit will fail to be accepted"
        );
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

pub fn data_dir_note(dir: &Path) -> String {
    format!("data directory: {}", dir.display())
}
