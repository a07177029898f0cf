//! Database access: the connection pool, migrations and the embedded server.
pub mod embedded;
pub mod pool;

pub use pool::{connect, migrations_current, MIGRATOR};
