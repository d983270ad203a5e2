//! # killrvideo-users
//!
//! The users service of the KillrVideo reference app: register, log in, read and update
//! a profile, with every change recorded first as an event and the `users` table
//! derived from that log.
//!
//! ## Layout
//!
//! - [`domain`]: pure rules. Validation (`names`, `email`, `profile`), decisions
//!   (`decide`), events (`events`) and the projection (`projection`) shared by the live
//!   path, replay and the jobs. No I/O.
//! - [`store`]: the storage ports ([`store::ports`], bundled as [`store::UserStore`])
//!   and their two backends,
//!   [`store::embedded`] (SQLite) and [`store::cassandra`] (with its migrations).
//! - [`http`]: the axum edge. The PUT path is [`http::users::put_me`]: auth extractor
//!   ([`http::auth`]) → body ([`http::extract`]) → `domain::profile` →
//!   `domain::decide` → [`store::EventLog::append_and_refetch`].
//! - [`auth`]: JWTs and argon2id.
//! - [`config`], [`cli`], [`startup`], [`telemetry`]: settings, subcommands, wiring and
//!   logs. `main.rs` only calls [`cli::main`].

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod startup;
pub mod store;
pub mod telemetry;
