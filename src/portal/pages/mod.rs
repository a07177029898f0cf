//! The portal's pages. Each page module holds its handlers and its view; the shared
//! layout lives in [`super::layout`].
//!
//! Invariants: every page is built with maud, which escapes every value it interpolates
//! (a tenant or key named `<script>` is shown as text), the server-drawn SVG charts
//! included; no markup is assembled from strings. No page has a script.

pub use super::layout::{bare, csrf, notice, page, read_only, table_wrap, Nav, Tone};

pub mod api_keys;
pub mod key_limits;
pub mod overview;
pub mod settings;
pub mod spend_limits;
pub mod top_up_refunds;
pub mod top_ups;
pub mod transactions;
pub mod usage;
