//! Account and transaction-kind vocabularies, spelled as the database spells them.

use serde::{Deserialize, Serialize};

/// Tenant-owned accounts (`Paid`, `Bonus`, `Held`) have cached balances that never go
/// below zero; the others are the system side of each posting and are only summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Account {
    Paid,
    Bonus,
    Held,
    Clearing,
    Revenue,
    Promotions,
    Expired,
    Adjustments,
    Conversion,
}

impl Account {
    pub fn as_str(self) -> &'static str {
        match self {
            Account::Paid => "paid",
            Account::Bonus => "bonus",
            Account::Held => "held",
            Account::Clearing => "clearing",
            Account::Revenue => "revenue",
            Account::Promotions => "promotions",
            Account::Expired => "expired",
            Account::Adjustments => "adjustments",
            Account::Conversion => "conversion",
        }
    }
    pub fn is_tenant_owned(self) -> bool {
        matches!(self, Account::Paid | Account::Bonus | Account::Held)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    TopUp,
    Bonus,
    Signup,
    Gift,
    Referral,
    Compensation,
    Adjustment,
    Conversion,
    Usage,
    Hold,
    HoldRelease,
    Refund,
    Expiry,
}

impl TxnKind {
    pub const ALL: [TxnKind; 13] = [
        TxnKind::TopUp,
        TxnKind::Bonus,
        TxnKind::Signup,
        TxnKind::Gift,
        TxnKind::Referral,
        TxnKind::Compensation,
        TxnKind::Adjustment,
        TxnKind::Conversion,
        TxnKind::Usage,
        TxnKind::Hold,
        TxnKind::HoldRelease,
        TxnKind::Refund,
        TxnKind::Expiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TxnKind::TopUp => "top_up",
            TxnKind::Bonus => "bonus",
            TxnKind::Signup => "signup",
            TxnKind::Gift => "gift",
            TxnKind::Referral => "referral",
            TxnKind::Compensation => "compensation",
            TxnKind::Adjustment => "adjustment",
            TxnKind::Conversion => "conversion",
            TxnKind::Usage => "usage",
            TxnKind::Hold => "hold",
            TxnKind::HoldRelease => "hold_release",
            TxnKind::Refund => "refund",
            TxnKind::Expiry => "expiry",
        }
    }

    pub fn parse(s: &str) -> Option<TxnKind> {
        TxnKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}
