//! Account status and the roles derived from it.
//!
//! As in KillrVideo, `account_status` doubles as the role. The role is always read from
//! the users row, never from a token: a token only says who the caller is.

use std::fmt;
use uuid::Uuid;

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

/// Why a moderator's change of another account's role is refused: the rules of the
/// moderation API, decided here without I/O (`app::roles` does the reads and the
/// writes around them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeratorRuleBroken {
    /// The account's status grants no role (suspended, say): promoting it would lift a
    /// suspension, which is an operator's decision.
    #[error("the account's status is `{0}`; only an operator can change it (set-role)")]
    NotEligible(String),
    /// Revoking would leave no moderator.
    #[error("this is the last moderator; make someone else a moderator first")]
    LastModerator,
}

/// Whether a moderator may make the account with `status` a moderator: only if its
/// status grants a role already. No status at all is not eligible either.
pub fn may_assign_moderator(status: Option<&str>) -> Result<(), ModeratorRuleBroken> {
    let status = status.unwrap_or_default();
    match role_for_status(status) {
        Some(_) => Ok(()),
        None => Err(ModeratorRuleBroken::NotEligible(status.to_owned())),
    }
}

/// Whether revoking the moderator role from an account with `status` changes anything:
/// only a moderator has the role to lose; anyone else is left as they are.
pub fn holds_moderator_role(status: Option<&str>) -> bool {
    status == Some(AccountStatus::Moderator.as_str())
}

/// Whether `target` may stop being a moderator, given `moderators`: accounts whose
/// status is moderator (two suffice, read while no other revocation runs). Refused
/// unless one of them is someone else, so that a moderator always remains.
pub fn may_revoke_moderator(target: Uuid, moderators: &[Uuid]) -> Result<(), ModeratorRuleBroken> {
    if moderators.iter().all(|id| *id == target) {
        return Err(ModeratorRuleBroken::LastModerator);
    }
    Ok(())
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

    #[test]
    fn given_an_account_whose_status_grants_a_role_when_assigned_moderator_then_it_may_be() {
        for status in ["viewer", "active", "creator", "moderator"] {
            assert_eq!(may_assign_moderator(Some(status)), Ok(()), "{status}");
        }
    }

    #[test]
    fn given_a_suspended_or_unknown_account_when_assigned_moderator_then_it_is_not_eligible() {
        for status in ["suspended", "inactive", "admin"] {
            assert_eq!(
                may_assign_moderator(Some(status)),
                Err(ModeratorRuleBroken::NotEligible(status.to_owned()))
            );
        }
        assert_eq!(
            may_assign_moderator(None),
            Err(ModeratorRuleBroken::NotEligible(String::new()))
        );
    }

    #[test]
    fn given_an_account_that_is_not_a_moderator_when_revoked_then_there_is_nothing_to_revoke() {
        assert!(holds_moderator_role(Some("moderator")));
        for status in [Some("viewer"), Some("creator"), Some("suspended"), None] {
            assert!(!holds_moderator_role(status), "{status:?}");
        }
    }

    #[test]
    fn given_the_only_moderator_when_revoked_then_it_is_the_last_moderator() {
        let target = Uuid::from_u128(1);
        assert_eq!(
            may_revoke_moderator(target, &[target]),
            Err(ModeratorRuleBroken::LastModerator)
        );
        // None found (the target's own change not visible yet): still none to remain.
        assert_eq!(
            may_revoke_moderator(target, &[]),
            Err(ModeratorRuleBroken::LastModerator)
        );
    }

    #[test]
    fn given_another_moderator_when_one_is_revoked_then_it_may_be() {
        let (target, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(may_revoke_moderator(target, &[target, other]), Ok(()));
        assert_eq!(may_revoke_moderator(target, &[other]), Ok(()));
    }
}
