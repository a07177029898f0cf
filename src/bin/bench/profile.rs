//! What the database did during a scenario: WAL bytes written (always), and with
//! `--profile-db` the top statements from `pg_stat_statements`, with how often each was
//! planned (the cluster is started with
//! it preloaded), per batch: a batch is a `COMMIT`.

use sqlx::PgPool;

use crate::BoxError;

/// The WAL insert position, in bytes.
pub async fn wal_position(db: &PgPool) -> Result<i64, BoxError> {
    Ok(sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8").fetch_one(db).await?)
}

/// Makes the statistics available in the benchmark database, nested statements included
/// (the foreign-key checks that triggers run show up on their own lines; their time is
/// also counted in the statement that ran them).
pub async fn enable(db: &PgPool) -> Result<(), BoxError> {
    // One statement each: ALTER SYSTEM may not run in the implicit transaction of a batch.
    for sql in [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "ALTER SYSTEM SET pg_stat_statements.track = 'all'",
        "ALTER SYSTEM SET pg_stat_statements.track_planning = on",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::raw_sql(sql).execute(db).await?;
    }
    Ok(())
}

pub async fn reset(db: &PgPool) -> Result<(), BoxError> {
    sqlx::query("SELECT pg_stat_statements_reset()").execute(db).await?;
    Ok(())
}

/// The statements that took the most time since the last [`reset`], with their calls per
/// transaction (`COMMIT`s) and per acknowledged charge.
pub async fn print_top(db: &PgPool, charges: usize, n: i64) -> Result<(), BoxError> {
    let rows: Vec<(i64, f64, f64, i64, String)> = sqlx::query_as(
        "SELECT calls, total_exec_time + total_plan_time, total_plan_time, plans, \
                left(regexp_replace(query, '\\s+', ' ', 'g'), 100) \
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND query NOT LIKE '%pg_stat_statements%' ORDER BY 2 DESC LIMIT $1",
    )
    .bind(n)
    .fetch_all(db)
    .await?;
    let commits: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(calls), 0)::int8 FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND upper(query) = 'COMMIT'",
    )
    .fetch_one(db)
    .await?;
    let per = |calls: i64, of: f64| if of > 0.0 { calls as f64 / of } else { 0.0 };
    println!(
        "  [db] {commits} commits, {:.1} charges per commit; top statements by time planning and executing:",
        per(charges as i64, commits as f64)
    );
    println!(
        "  [db] {:>9} {:>8} {:>8} {:>8} {:>6} {:>8}  statement",
        "total ms", "calls", "/commit", "/charge", "plans", "plan ms"
    );
    for (calls, total, planning, plans, query) in rows {
        println!(
            "  [db] {total:>9.0} {calls:>8} {:>8.2} {:>8.3} {plans:>6} {planning:>8.0}  {query}",
            per(calls, commits as f64),
            per(calls, charges as f64)
        );
    }
    Ok(())
}
