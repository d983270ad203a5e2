//! The application layer: use cases that both the HTTP edge and the command line call,
//! written against the storage port. The domain decides; these read what it needs,
//! record what it decided, and bound the work.
//!
//! - [`roles`]: changing a role (`set-role`, and the moderators' assign and revoke);
//! - [`search`]: the moderators' user search.

pub mod roles;
pub mod search;
