//! # killrvideo-users
//!
//! The users service of the KillrVideo reference app: register, log in, read and update
//! a profile, with every change recorded first as an event and the `users` table
//! derived from that log.
//!
//! ## Layout
//!
//! Four layers, each naming only those below it, as `architecture_tests.rs` checks
//! (its table is the rule; docs/architecture.md draws it):
//!
//! - [`domain`]: pure rules, no I/O. Validation (`names`, `email`, `password`,
//!   `profile`, `registration`), decisions (`decide`, and `role` for the moderators'
//!   rules), events (`events`), the users row (`user`, `columns`), the projection
//!   (`projection`) that the live path, replay and the jobs share, the audit view
//!   (`audit`), drift (`verify`), search terms (`search`), the login budgets (`login`).
//! - [`store`]: the storage ports ([`store::ports`]: one trait per responsibility) and
//!   their two backends, [`store::embedded`] (SQLite) and [`store::cassandra`].
//!   [`store::codec`] is where an event becomes bytes, sealed by [`store::sealing`]
//!   with the keys of [`store::keys`].
//! - [`app`]: the use cases that HTTP and the command line share: register, login,
//!   profile (the PUT), audit trail, roles, search, export, erasure, the jobs, and the
//!   user's representation ([`app::representation`]).
//! - The edges: [`http`] (axum) and [`cli`] (one file per subcommand).
//!   `main.rs` only calls [`cli::main`].
//!
//! Beside them: [`auth`] (JWTs, argon2id), [`clock`] (event ids), [`secret`] (a type
//! for secrets that `Debug` cannot leak), [`telemetry`] (logs and metrics), and the
//! wiring, [`config`] (settings) and [`startup`] (the server).
//!
//! The PUT path: [`http::users::put_me`] (auth, body, `If-Match`) →
//! [`app::profile::update_profile`] (decide with `domain::decide`, record, refetch) →
//! [`store::EventLog::append_and_refetch`] on either backend.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod secret;
pub mod startup;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod architecture_tests;
