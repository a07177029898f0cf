//! A ledger transaction before it is posted, with builders for the common legs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Account, Funding, TxnKind};
use crate::ids::new_id;
use crate::money::Money;

#[derive(Debug, Clone)]
pub struct Entry {
    pub account: Account,
    /// Signed: a credit to the account is positive.
    pub amount: Money,
    pub lot: Option<Uuid>,
}

/// A bonus lot created by the posting that credits it.
#[derive(Debug, Clone)]
pub struct NewLot {
    pub id: Uuid,
    pub source: TxnKind,
    pub amount: Money,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Draft {
    pub id: Uuid,
    pub kind: TxnKind,
    pub description: Option<String>,
    pub reference: Value,
    pub actor: Option<String>,
    pub corrects: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub entries: Vec<Entry>,
    pub new_lots: Vec<NewLot>,
}

impl Draft {
    pub fn new(kind: TxnKind, created_at: DateTime<Utc>) -> Draft {
        Draft {
            id: new_id(),
            kind,
            description: None,
            reference: Value::Object(Default::default()),
            actor: None,
            corrects: None,
            api_key_id: None,
            created_at,
            entries: Vec::new(),
            new_lots: Vec::new(),
        }
    }

    pub fn description(mut self, d: Option<String>) -> Draft {
        self.description = d;
        self
    }
    pub fn reference(mut self, r: Value) -> Draft {
        self.reference = r;
        self
    }
    pub fn actor(mut self, a: impl Into<String>) -> Draft {
        self.actor = Some(a.into());
        self
    }
    pub fn api_key(mut self, k: Option<Uuid>) -> Draft {
        self.api_key_id = k;
        self
    }

    /// Adds a signed entry; zero amounts are skipped (the database refuses them).
    pub fn entry(mut self, account: Account, amount: Money) -> Draft {
        debug_assert!(account != Account::Bonus, "bonus entries name their lot");
        if !amount.is_zero() {
            self.entries.push(Entry { account, amount, lot: None });
        }
        self
    }

    /// Takes a funding out of the tenant's lots and paid credit.
    pub fn debit_funding(mut self, f: &Funding) -> Draft {
        for p in &f.lots {
            self.entries.push(Entry { account: Account::Bonus, amount: -p.amount, lot: Some(p.lot) });
        }
        self.entry(Account::Paid, -f.paid)
    }

    /// Gives a funding back to the lots and paid credit it came from.
    pub fn credit_funding(mut self, f: &Funding) -> Draft {
        for p in &f.lots {
            self.entries.push(Entry { account: Account::Bonus, amount: p.amount, lot: Some(p.lot) });
        }
        self.entry(Account::Paid, f.paid)
    }

    /// Credits a new bonus lot from `from` (promotions, usually).
    pub fn grant_lot(
        mut self,
        from: Account,
        source: TxnKind,
        amount: Money,
        expires_at: Option<DateTime<Utc>>,
    ) -> Draft {
        let id = new_id();
        self.new_lots.push(NewLot { id, source, amount, expires_at });
        self.entries.push(Entry { account: Account::Bonus, amount, lot: Some(id) });
        self.entry(from, -amount)
    }

    /// Net change of the tenant's total (paid + bonus + held).
    pub fn tenant_delta(&self) -> Money {
        Money::checked_sum(self.entries.iter().filter(|e| e.account.is_tenant_owned()).map(|e| e.amount))
            .expect("entries are valid amounts")
    }
}
