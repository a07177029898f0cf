//! The connection pool and migrations.
//!
//! Every connection carries server-side backstops so that no request can stall a tenant:
//! an abandoned transaction is ended by `idle_in_transaction_session_timeout`, a lock wait
//! by `lock_timeout`, a runaway statement by `statement_timeout`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn connect(opts: PgConnectOptions, size: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(1.min(size))
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "SET idle_in_transaction_session_timeout = '10s'; \
                     SET lock_timeout = '5s'; \
                     SET statement_timeout = '30s'; \
                     SET TIME ZONE 'UTC'",
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
}

/// True when every migration compiled into this binary is applied and none failed.
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations").fetch_all(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| applied.iter().any(|(v, ok)| *v == m.version && *ok)))
}
