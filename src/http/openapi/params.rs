//! Path and header parameters shared by many operations, declared once so each handler's
//! `#[utoipa::path]` names them instead of spelling them out.

use utoipa::IntoParams;
use uuid::Uuid;

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant's id.
    pub tenant_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The tenant's id.
    pub tenant_id: Uuid,
    /// The API key's id.
    pub key_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TopUpPath {
    /// The tenant's id.
    pub tenant_id: Uuid,
    /// The top-up's id.
    pub top_up_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChargePath {
    /// The charge's id.
    pub charge_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HoldPath {
    /// The hold's id.
    pub hold_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The service token's id.
    pub token_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelPath {
    /// The model's name, as charges and estimates name it: letters, digits and `-._:/@`
    /// (a `/` percent-encoded), not starting or ending with `/`.
    #[param(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._:@-]([A-Za-z0-9._:/@-]*[A-Za-z0-9._:@-])?$")]
    pub model: String,
}

/// `Idempotency-Key`, required on every request that moves money: 1-255 printable ASCII
/// characters, without leading or trailing spaces (HTTP strips those).
#[derive(IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
pub struct IdempotencyKeyHeader(
    #[param(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$")] pub String,
);
