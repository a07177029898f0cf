//! Identifiers: UUIDv7, generated in Rust so they are time-ordered across replicas
//! and usable as pagination cursors.
use uuid::Uuid;

pub fn new_id() -> Uuid {
    Uuid::now_v7()
}
