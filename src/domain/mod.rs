//! The pure domain: validation, decisions and the projection. Nothing in here does I/O,
//! knows about axum or about a database driver, so every rule is unit-tested directly.
//!
//! The shape follows command → events → state:
//! - [`profile`] and [`registration`] turn raw request fields into validated commands;
//! - [`decide`] turns a command plus the current state into the events to record;
//! - [`projection`] turns an event into column writes and folds them into a row. The
//!   live write path, the history replay and the rebuild jobs all call it;
//! - [`columns`] is the users row's shape, which the row ([`user`]), the projection and
//!   both stores' schemas read.

pub mod audit;
pub mod columns;
pub mod decide;
pub mod email;
pub mod events;
pub mod fields;
pub mod login;
pub mod names;
pub mod password;
pub mod profile;
pub mod projection;
pub mod registration;
pub mod role;
pub mod search;
pub mod user;
pub mod verify;

pub use events::{Actor, EventEnvelope, FieldChange, UserEvent};
pub use fields::FieldError;
pub use user::UserRow;
