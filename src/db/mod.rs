//! Database access: the connection pool, migrations and the embedded server.
pub mod embedded;
pub mod pool;
pub mod rows;

pub use pool::{connect, migrations_current, MIGRATOR};
pub use rows::Rows;
