//! The checks run after every scenario, against the service and directly in the database.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::Admin;
use crate::load::Outcome;
use crate::BoxError;

/// What a scenario must end with, beyond the checks every scenario gets.
pub enum Expect {
    /// Every response should carry this label (`"201"`, `"200"`); others are reported.
    All(&'static str),
    /// `requests` charges of `amount` against exactly `funded`: as many succeed as fit,
    /// every other one gets 402 `insufficient_funds`, and the balance ends at zero.
    Exhaustion { funded: Decimal, amount: Decimal, requests: u64 },
    /// `requests` charges of `amount` naming `key`, whose spend limit is `limit` (the
    /// balance covers them all): as many succeed as the limit allows, every other one gets
    /// 402 `spend_limit_exceeded`, and the key's window has spent exactly what succeeded.
    LimitExhaustion { tenant: Uuid, key: Uuid, limit: Decimal, amount: Decimal, requests: u64 },
}

/// The scenario's tenants' charges and balances at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    charges: i64,
    charged: Decimal,
    balance: Decimal,
}

impl Snapshot {
    pub async fn take(db: &PgPool, tenants: &[Uuid]) -> Result<Snapshot, BoxError> {
        let (charges, charged, balance): (i64, Decimal, Decimal) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM charges WHERE tenant_id = ANY($1)), \
                    (SELECT COALESCE(sum(amount), 0) FROM charges WHERE tenant_id = ANY($1)), \
                    (SELECT COALESCE(sum(paid + bonus + held), 0) FROM balances WHERE tenant_id = ANY($1))",
        )
        .bind(tenants)
        .fetch_one(db)
        .await?;
        Ok(Snapshot { charges, charged, balance })
    }
}

/// The result of the checks: `problems` fail the run, `notes` are worth reading.
#[derive(Default)]
pub struct Verdict {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// How long the service's ledger check took.
    pub ledger_check: Duration,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    fn require(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }
}

/// Everything a scenario is checked for.
pub struct Check<'a> {
    pub db: &'a PgPool,
    pub admin: &'a Admin,
    pub tenants: &'a [Uuid],
    pub amount: Decimal,
    pub before: Snapshot,
    pub expect: Expect,
}

impl Check<'_> {
    pub async fn run(&self, out: &Outcome) -> Result<Verdict, BoxError> {
        let mut v = Verdict::default();
        self.ledger(&mut v).await?;
        self.acknowledged_once(&mut v, out).await?;
        let after = Snapshot::take(self.db, self.tenants).await?;
        self.nothing_unacknowledged(&mut v, out, &after);
        self.money_conserved(&mut v, &after);
        self.no_negative_balance(&mut v).await?;
        self.expectation(&mut v, out, &after);
        if let Expect::LimitExhaustion { tenant, key, limit, amount, requests } = &self.expect {
            let spent = self.admin.key_spent(*tenant, *key).await?;
            limit_exhaustion(&mut v, out, spent, *limit, *amount, *requests);
        }
        if out.unknown > 0 {
            v.notes.push(format!("{} request(s) with an unknown outcome (transport error or 5xx)", out.unknown));
        }
        Ok(v)
    }

    /// The service's own check: every transaction balances, cached balances match entries…
    async fn ledger(&self, v: &mut Verdict) -> Result<(), BoxError> {
        let started = Instant::now();
        let report = match self.admin.ledger_check().await {
            Ok(r) => r,
            Err(e) => {
                v.problems.push(format!("the ledger check could not run: {e}"));
                return Ok(());
            }
        };
        v.ledger_check = started.elapsed();
        v.require(report.ok, || {
            let first: Vec<_> = report.violations.iter().take(3).cloned().collect();
            format!(
                "ledger check: {} violation(s) in {} transactions, first: {}",
                report.violations.len(),
                report.transactions,
                first.join("; ")
            )
        });
        Ok(())
    }

    /// Every id from a 201 is a distinct charge, stored exactly once.
    async fn acknowledged_once(&self, v: &mut Verdict, out: &Outcome) -> Result<(), BoxError> {
        let acks = out.acked.len() as i64;
        let distinct = out.acked.iter().collect::<HashSet<_>>().len() as i64;
        v.require(distinct == acks, || format!("{acks} acknowledgements carry only {distinct} distinct charge ids"));
        let (rows, ids): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM charges WHERE id = ANY($1)")
                .bind(&out.acked)
                .fetch_one(self.db)
                .await?;
        v.require(rows == distinct && ids == distinct, || {
            format!("{distinct} acknowledged charges, but {ids} found in the database in {rows} rows")
        });
        Ok(())
    }

    /// No charge was recorded without an acknowledgement, except possibly for requests
    /// whose outcome the client never learnt.
    fn nothing_unacknowledged(&self, v: &mut Verdict, out: &Outcome, after: &Snapshot) {
        let recorded = after.charges - self.before.charges;
        let acks = out.acked.len() as i64;
        let unknown = out.unknown as i64;
        v.require(recorded >= acks && recorded <= acks + unknown, || {
            format!(
                "{recorded} charges recorded for the scenario's tenants, {acks} acknowledged, \
                 {unknown} with unknown outcome"
            )
        });
        if recorded > acks {
            v.notes.push(format!("{} charge(s) applied whose response was lost", recorded - acks));
        }
    }

    /// Balance + charged is unchanged (charges only move money out of the balance), and
    /// the new charges are all of the scenario's amount.
    fn money_conserved(&self, v: &mut Verdict, after: &Snapshot) {
        let b = &self.before;
        v.require(after.balance + after.charged == b.balance + b.charged, || {
            format!(
                "money not conserved: balance {} + charged {} before, {} + {} after",
                b.balance, b.charged, after.balance, after.charged
            )
        });
        let count = Decimal::from(after.charges - b.charges);
        v.require(after.charged - b.charged == self.amount * count, || {
            format!("{count} new charges total {}, not {} each", after.charged - b.charged, self.amount)
        });
    }

    async fn no_negative_balance(&self, v: &mut Verdict) -> Result<(), BoxError> {
        let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE paid < 0 OR bonus < 0 OR held < 0")
            .fetch_one(self.db)
            .await?;
        v.require(negative == 0, || format!("{negative} balance(s) below zero"));
        Ok(())
    }

    fn expectation(&self, v: &mut Verdict, out: &Outcome, after: &Snapshot) {
        match &self.expect {
            Expect::All(label) => {
                let others = out.statuses.iter().filter(|(k, _)| k != label);
                let others: Vec<String> = others.map(|(k, n)| format!("{n} × {k}")).collect();
                if !others.is_empty() {
                    v.notes.push(format!("responses other than {label}: {}", others.join(", ")));
                }
            }
            Expect::Exhaustion { funded, amount, requests } => exhaustion(v, out, after, *funded, *amount, *requests),
            Expect::LimitExhaustion { .. } => {}
        }
    }
}

/// Exactly as many charges succeed as the funding allows; every other one is a 402
/// `insufficient_funds`; the balance ends at exactly zero.
fn exhaustion(v: &mut Verdict, out: &Outcome, after: &Snapshot, funded: Decimal, amount: Decimal, requests: u64) {
    let fit = (funded / amount).floor().try_into().unwrap_or(u64::MAX).min(requests);
    let (ok, refused) = (out.count("201"), out.count("402 insufficient_funds"));
    v.require(ok == fit && refused == requests - fit, || {
        let unknown = match out.unknown {
            0 => String::new(),
            n => format!(" ({n} requests got no definite answer)"),
        };
        format!(
            "exhaustion: {ok} × 201 and {refused} × 402 insufficient_funds, expected {fit} and {}{unknown}",
            requests - fit
        )
    });
    let left = funded - amount * Decimal::from(fit);
    v.require(after.balance == left, || format!("exhaustion: balance ends at {}, expected {left}", after.balance));
}

/// Exactly as many charges succeed as the key's limit allows; every other one is a 402
/// `spend_limit_exceeded`; the key's window has spent exactly what succeeded, never more
/// than the limit.
fn limit_exhaustion(v: &mut Verdict, out: &Outcome, spent: Decimal, limit: Decimal, amount: Decimal, requests: u64) {
    let fit = (limit / amount).floor().try_into().unwrap_or(u64::MAX).min(requests);
    let (ok, refused) = (out.count("201"), out.count("402 spend_limit_exceeded"));
    v.require(ok == fit && refused == requests - fit, || {
        format!(
            "limit exhaustion: {ok} × 201 and {refused} × 402 spend_limit_exceeded, expected {fit} and {}",
            requests - fit
        )
    });
    let expected = amount * Decimal::from(ok);
    v.require(spent == expected && spent <= limit, || {
        format!("limit exhaustion: the key's window spent {spent}, expected {expected} (limit {limit})")
    });
}
