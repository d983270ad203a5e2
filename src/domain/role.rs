//! Account status and the roles derived from it.
//!
//! As in KillrVideo, `account_status` doubles as the role. The role is always read from
//! the users row, never from a token: a token only says who the caller is.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
    AccountStatus::from_stored(account_status).role()
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
    AccountStatus::from_stored(account_status).roles_granted()
}

/// An account's status, as the users row and the events hold it. An operator may set
/// the first four ([`AccountStatus::SETTABLE`]); the others are values a store may hold
/// already (KillrVideo's seed data), kept exactly as they were written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// The default for new accounts.
    Viewer,
    /// See [`Role::Creator`].
    Creator,
    /// See [`Role::Moderator`].
    Moderator,
    /// Blocked: every authenticated request gets 403.
    Suspended,
    /// KillrVideo's seed value for an ordinary account: a viewer.
    Active,
    /// KillrVideo's seed value for a closed account: grants nothing.
    Inactive,
    /// Any other stored value, kept as it was: grants nothing. Made only by
    /// [`AccountStatus::from_stored`], for a value none of the others is.
    Other(String),
}

impl AccountStatus {
    /// The statuses an operator may set, for help texts and parsing.
    pub const SETTABLE: [AccountStatus; 4] = [
        AccountStatus::Viewer,
        AccountStatus::Creator,
        AccountStatus::Moderator,
        AccountStatus::Suspended,
    ];

    /// The value stored in `users.account_status` and in the events.
    pub fn as_str(&self) -> &str {
        match self {
            AccountStatus::Viewer => "viewer",
            AccountStatus::Creator => "creator",
            AccountStatus::Moderator => "moderator",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Active => "active",
            AccountStatus::Inactive => "inactive",
            AccountStatus::Other(raw) => raw,
        }
    }

    /// Parses an operator's input: one of [`AccountStatus::SETTABLE`].
    pub fn parse(raw: &str) -> Option<Self> {
        Self::SETTABLE
            .into_iter()
            .find(|status| status.as_str() == raw)
    }

    /// Reads a stored value, whatever it is: `as_str` gives it back unchanged.
    pub fn from_stored(raw: &str) -> Self {
        match raw {
            "viewer" => AccountStatus::Viewer,
            "creator" => AccountStatus::Creator,
            "moderator" => AccountStatus::Moderator,
            "suspended" => AccountStatus::Suspended,
            "active" => AccountStatus::Active,
            "inactive" => AccountStatus::Inactive,
            other => AccountStatus::Other(other.to_owned()),
        }
    }

    /// The role this status grants, if any.
    pub fn role(&self) -> Option<Role> {
        match self {
            AccountStatus::Viewer | AccountStatus::Active => Some(Role::Viewer),
            AccountStatus::Creator => Some(Role::Creator),
            AccountStatus::Moderator => Some(Role::Moderator),
            AccountStatus::Suspended | AccountStatus::Inactive | AccountStatus::Other(_) => None,
        }
    }

    /// Every role this status grants: its own and the weaker ones.
    pub fn roles_granted(&self) -> Vec<Role> {
        match self.role() {
            Some(top) => Role::ALL.into_iter().filter(|role| *role <= top).collect(),
            None => Vec::new(),
        }
    }
}

impl From<&str> for AccountStatus {
    fn from(raw: &str) -> Self {
        Self::from_stored(raw)
    }
}

impl From<String> for AccountStatus {
    fn from(raw: String) -> Self {
        Self::from_stored(&raw)
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the plain string it has always been in event payloads.
impl Serialize for AccountStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Any string: an unknown status is kept, never refused.
impl<'de> Deserialize<'de> for AccountStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Self::from_stored(&raw))
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
pub fn may_assign_moderator(status: Option<&AccountStatus>) -> Result<(), ModeratorRuleBroken> {
    match status.and_then(AccountStatus::role) {
        Some(_) => Ok(()),
        None => Err(ModeratorRuleBroken::NotEligible(
            status
                .map(AccountStatus::as_str)
                .unwrap_or_default()
                .to_owned(),
        )),
    }
}

/// Whether revoking the moderator role from an account with `status` changes anything:
/// only a moderator has the role to lose; anyone else is left as they are.
pub fn holds_moderator_role(status: Option<&AccountStatus>) -> bool {
    status == Some(&AccountStatus::Moderator)
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
            let status = AccountStatus::from_stored(status);
            assert_eq!(may_assign_moderator(Some(&status)), Ok(()), "{status}");
        }
    }

    #[test]
    fn given_a_suspended_or_unknown_account_when_assigned_moderator_then_it_is_not_eligible() {
        for raw in ["suspended", "inactive", "admin"] {
            assert_eq!(
                may_assign_moderator(Some(&AccountStatus::from_stored(raw))),
                Err(ModeratorRuleBroken::NotEligible(raw.to_owned()))
            );
        }
        assert_eq!(
            may_assign_moderator(None),
            Err(ModeratorRuleBroken::NotEligible(String::new()))
        );
    }

    #[test]
    fn given_an_account_that_is_not_a_moderator_when_revoked_then_there_is_nothing_to_revoke() {
        assert!(holds_moderator_role(Some(&AccountStatus::Moderator)));
        for status in ["viewer", "creator", "suspended", "Moderator"] {
            let status = AccountStatus::from_stored(status);
            assert!(!holds_moderator_role(Some(&status)), "{status}");
        }
        assert!(!holds_moderator_role(None));
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

    #[test]
    fn every_stored_status_reads_back_as_written_and_old_payloads_decode() {
        for raw in [
            "viewer",
            "creator",
            "moderator",
            "suspended",
            "active",
            "inactive",
            "",
            "Moderator",
            "admin",
        ] {
            let status = AccountStatus::from_stored(raw);
            assert_eq!(status.as_str(), raw);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, serde_json::to_string(raw).unwrap());
            assert_eq!(
                serde_json::from_str::<AccountStatus>(&json).unwrap(),
                status
            );
        }
        assert_eq!(AccountStatus::from_stored("admin").role(), None);
        assert_eq!(
            AccountStatus::parse("active"),
            None,
            "not an operator's to set"
        );
        assert_eq!(
            AccountStatus::parse("creator"),
            Some(AccountStatus::Creator)
        );
    }
}
