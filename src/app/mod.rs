//! The application layer: use cases that both the HTTP edge and the command line call,
//! written against the storage port. The domain decides; these read what it needs,
//! record what it decided, and bound the work.
//!
//! - [`login`]: logging in, with the guess budgets first;
//! - [`roles`]: changing a role (`set-role`, and the moderators' assign and revoke);
//! - [`search`]: the moderators' user search.

pub mod login;
pub mod roles;
pub mod search;
