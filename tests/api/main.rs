//! End-to-end tests: a real server on port 0 over a real store, each test run once on the
//! embedded store and once on the real Cassandra started by `scripts/cassandra`. The
//! harness is `killrvideo-test-support` (tests/support); the HTTP contract that no store
//! decides is tested without a server, in tests/handlers.rs.

mod auth;
mod concurrency;
mod contract;
mod cors;
mod erasure;
mod export;
mod foundation;
mod hardening;
mod history;
mod jobs;
mod login;
mod moderation;
mod profiles;
mod put_me;
mod register;
mod security;
