//! The application layer: use cases that both the HTTP edge and the command line call,
//! written against the storage port. The domain decides; these read what it needs,
//! record what it decided, and bound the work.
//!
//! - [`audit_trail`] — the history's pages and the profile as of an instant;
//! - [`erasure`] — erasing an account (crypto-shredding);
//! - [`export`] — everything held about a user;
//! - [`jobs`] — rebuild, verify and repair;
//! - [`login`] — logging in, with the guess budgets first;
//! - [`profile`] — the PUT path's update, with the refetch;
//! - [`register`] — creating an account;
//! - [`representation`] — the user object the API and `history --json` print, and its
//!   ETag;
//! - [`roles`] — changing a role (`set-role`, and the moderators' assign and revoke);
//! - [`search`] — the moderators' user search;
//! - [`turns`] — one request per key at a time within this process.

pub mod audit_trail;
pub mod erasure;
pub mod export;
pub mod jobs;
pub mod login;
pub mod profile;
pub mod register;
pub mod representation;
pub mod roles;
pub mod search;
pub mod turns;
