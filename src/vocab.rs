//! Statuses and sources, spelled as the database (a `text` column with a CHECK) and the
//! JSON contract spell them.
//!
//! Every such word is a Rust enum made by [`text_enum!`]: it reads and writes its column
//! through `sqlx::Type` (as plain `text`, so no type lookup per connection), serializes
//! to the same word, and is compared as an enum, never as a string. A word the enum does
//! not know is a decode error, not a silent default.

/// Declares a `Copy` enum whose variants are words of a `text` column.
macro_rules! text_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        // By hand, not derived: utoipa's derive does not see a `serde(rename)` made by a macro,
        // and would document the Rust variant names instead of the words.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                $name::parse(s).ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)).into())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// `tenants.status`.
    pub enum TenantStatus { Active = "active", Suspended = "suspended" }
}

text_enum! {
    /// `holds.status`.
    pub enum HoldStatus { Active = "active", Captured = "captured", Released = "released", Expired = "expired" }
}

text_enum! {
    /// `top_ups.status`.
    pub enum TopUpStatus { Pending = "pending", Succeeded = "succeeded", Failed = "failed" }
}

text_enum! {
    /// `top_ups.source`.
    pub enum TopUpSource { Manual = "manual", Auto = "auto" }
}

text_enum! {
    /// `api_keys.status`.
    pub enum KeyStatus { Enabled = "enabled", Disabled = "disabled" }
}

text_enum! {
    /// `price_rules.source`: seeded from the price-book file, or PUT by an operator.
    pub enum PriceSource { Book = "book", Admin = "admin" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_serde() {
        for s in TopUpStatus::ALL {
            assert_eq!(TopUpStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(HoldStatus::parse("Active"), None);
        assert_eq!(serde_json::from_str::<TenantStatus>("\"suspended\"").unwrap(), TenantStatus::Suspended);
        let schema = serde_json::to_value(<HoldStatus as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["active", "captured", "released", "expired"]));
    }
}
