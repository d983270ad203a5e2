//! What the API sends: the user representation of the endpoint document, the public
//! profile, and the ETag.

use crate::domain::UserRow;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The user, exactly as the endpoint document shows it. Timestamps are RFC 3339 UTC,
/// `null` where unset.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserResponse {
    /// The user id.
    #[serde(rename = "userId")]
    pub user_id: Uuid,
    /// First name.
    pub firstname: Option<String>,
    /// Last name.
    pub lastname: Option<String>,
    /// Login address; only ever shown to its owner.
    pub email: Option<String>,
    /// `viewer`, `creator`, `moderator`, ...
    pub account_status: Option<String>,
    /// When the account was registered.
    pub created_date: Option<DateTime<Utc>>,
    /// When the user last logged in.
    pub last_login_date: Option<DateTime<Utc>>,
}

impl From<&UserRow> for UserResponse {
    fn from(row: &UserRow) -> Self {
        Self {
            user_id: row.user_id,
            firstname: row.firstname().map(str::to_owned),
            lastname: row.lastname().map(str::to_owned),
            email: row.email().map(str::to_owned),
            account_status: row.account_status().map(str::to_owned),
            created_date: row.created_date.as_ref().map(|c| c.value),
            last_login_date: row.last_login_date.as_ref().map(|c| c.value),
        }
    }
}

/// What anyone may see of a user. The email is the owner's alone (the document treats
/// it so), and login activity is private too: docs/api.md.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublicProfile {
    /// The user id.
    #[serde(rename = "userId")]
    pub user_id: Uuid,
    /// First name.
    pub firstname: Option<String>,
    /// Last name.
    pub lastname: Option<String>,
    /// When the account was registered.
    pub created_date: Option<DateTime<Utc>>,
}

impl From<&UserRow> for PublicProfile {
    fn from(row: &UserRow) -> Self {
        Self {
            user_id: row.user_id,
            firstname: row.firstname().map(str::to_owned),
            lastname: row.lastname().map(str::to_owned),
            created_date: row.created_date.as_ref().map(|c| c.value),
        }
    }
}

/// The strong ETag of a row: its newest event id, base64url-encoded and quoted. Opaque to
/// clients; `None` only for a row no event has touched (which cannot be a user).
pub fn etag(row: &UserRow) -> Option<String> {
    row.version().map(etag_of)
}

/// The ETag for a version.
pub fn etag_of(version: Uuid) -> String {
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(version.as_bytes()))
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the user must exist, which authentication already established.
    Any,
    /// A list of strong ETags, decoded to versions; tags that are weak or not ours
    /// decode to nothing and can never match.
    Versions(Vec<Uuid>),
}

/// Parses an `If-Match` header value (RFC 9110 §13.1.1).
pub fn parse_if_match(raw: &str) -> IfMatch {
    if raw.trim() == "*" {
        return IfMatch::Any;
    }
    let versions = raw
        .split(',')
        .map(str::trim)
        .filter_map(|tag| tag.strip_prefix('"')?.strip_suffix('"'))
        .filter_map(|opaque| URL_SAFE_NO_PAD.decode(opaque).ok())
        .filter_map(|bytes| Uuid::from_slice(&bytes).ok())
        .collect();
    IfMatch::Versions(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip_through_if_match() {
        let version = Uuid::new_v4();
        let tag = etag_of(version);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        assert_eq!(parse_if_match(&tag), IfMatch::Versions(vec![version]));
        assert_eq!(
            parse_if_match(&format!("\"x\", {tag}")),
            IfMatch::Versions(vec![version])
        );
        assert_eq!(parse_if_match("*"), IfMatch::Any);
        assert_eq!(
            parse_if_match(&format!("W/{tag}")),
            IfMatch::Versions(vec![])
        );
        assert_eq!(parse_if_match("garbage"), IfMatch::Versions(vec![]));
    }
}
