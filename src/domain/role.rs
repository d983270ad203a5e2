//! Account status and the roles derived from it.
//!
//! As in KillrVideo, `account_status` doubles as the role. The role is always read from
//! the users row, never from a token: a token only says who the caller is.

use std::fmt;

/// What a caller may do, in increasing order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// May read and edit their own profile.
    Viewer,
    /// A viewer who may publish videos (other services).
    Creator,
    /// May also read other users' audit history.
    Moderator,
}

/// The role an account status grants, if any. `active` is KillrVideo's seed value for an
/// ordinary account and counts as a viewer; `inactive`, `suspended` and anything unknown
/// grant nothing.
pub fn role_for_status(account_status: &str) -> Option<Role> {
    match account_status {
        "viewer" | "active" => Some(Role::Viewer),
        "creator" => Some(Role::Creator),
        "moderator" => Some(Role::Moderator),
        _ => None,
    }
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Creator, Role::Moderator];

    /// The name clients see in `roles`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Creator => "creator",
            Role::Moderator => "moderator",
        }
    }
}

/// Every role an account status grants: its own and the weaker ones, since a
/// moderator may do whatever a creator or a viewer may. Empty for a status that grants
/// nothing (suspended, inactive, unknown).
pub fn roles_granted_by(account_status: &str) -> Vec<Role> {
    match role_for_status(account_status) {
        Some(top) => Role::ALL.into_iter().filter(|role| *role <= top).collect(),
        None => Vec::new(),
    }
}

/// The statuses an operator may set with `set-role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// The default for new accounts.
    Viewer,
    /// See [`Role::Creator`].
    Creator,
    /// See [`Role::Moderator`].
    Moderator,
    /// Blocked: every authenticated request gets 403.
    Suspended,
}

impl AccountStatus {
    /// Every settable status, for help texts and parsing.
    pub const ALL: [AccountStatus; 4] = [
        AccountStatus::Viewer,
        AccountStatus::Creator,
        AccountStatus::Moderator,
        AccountStatus::Suspended,
    ];

    /// The value stored in `users.account_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Viewer => "viewer",
            AccountStatus::Creator => "creator",
            AccountStatus::Moderator => "moderator",
            AccountStatus::Suspended => "suspended",
        }
    }

    /// Parses an operator's input.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == raw)
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_is_a_viewer_and_others_grant_nothing() {
        assert_eq!(role_for_status("active"), Some(Role::Viewer));
        assert_eq!(role_for_status("viewer"), Some(Role::Viewer));
        assert_eq!(role_for_status("moderator"), Some(Role::Moderator));
        for status in ["inactive", "suspended", "", "Moderator", "admin"] {
            assert_eq!(role_for_status(status), None, "{status}");
        }
        assert!(Role::Moderator > Role::Creator && Role::Creator > Role::Viewer);
    }

    #[test]
    fn a_status_grants_its_role_and_the_weaker_ones() {
        assert_eq!(
            roles_granted_by("moderator"),
            [Role::Viewer, Role::Creator, Role::Moderator]
        );
        assert_eq!(roles_granted_by("active"), [Role::Viewer]);
        assert_eq!(roles_granted_by("creator"), [Role::Viewer, Role::Creator]);
        assert!(roles_granted_by("suspended").is_empty());
    }
}
