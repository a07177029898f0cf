//! Account and transaction-kind vocabularies, spelled as the database spells them.

use crate::vocab::text_enum;

text_enum! {
    /// Tenant-owned accounts (`Paid`, `Bonus`, `Held`) have cached balances that never go
    /// below zero; the others are the system side of each posting and are only summed.
    pub enum Account {
        Paid = "paid", Bonus = "bonus", Held = "held", Clearing = "clearing", Revenue = "revenue",
        Promotions = "promotions", Expired = "expired", Adjustments = "adjustments", Conversion = "conversion",
    }
}

impl Account {
    pub fn is_tenant_owned(self) -> bool {
        matches!(self, Account::Paid | Account::Bonus | Account::Held)
    }
}

text_enum! {
    /// `ledger_transactions.kind`, and the `kind` of the transaction history.
    pub enum TxnKind {
        TopUp = "top_up", TopUpRefund = "top_up_refund", Bonus = "bonus", Signup = "signup", Gift = "gift", Referral = "referral",
        Compensation = "compensation", Adjustment = "adjustment", Conversion = "conversion", Usage = "usage",
        Hold = "hold", HoldRelease = "hold_release", Refund = "refund", Expiry = "expiry",
    }
}
