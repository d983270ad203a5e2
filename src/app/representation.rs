//! The user as the outside sees it: the representation of the endpoint document that
//! the API sends (and `history --json` prints), the public profile, and the ETag with
//! the `If-Match` that names it.

use crate::domain::UserRow;
use crate::domain::role::roles_granted_by;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The user object every answer carries: the register answer, `login.user`, GET and
/// PUT `/me`, `GET /{id}`, the search results and the `current` member of a 412.
///
/// It serves two kinds of client at once (docs/decisions.md): the KillrVideo web
/// frontend and its OpenAPI document read camelCase (`firstName`, ..., `roles`), and the
/// endpoint document shows snake_case and lowercase (`firstname`, `account_status`,
/// ...). Both sets of keys are always present, with the same values. Timestamps are
/// RFC 3339 UTC with milliseconds; an unset one is `null`, never omitted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserResponse {
    /// The user id.
    #[serde(rename = "userId")]
    pub user_id: Uuid,
    /// First name (the frontend's key).
    #[serde(rename = "firstName")]
    #[schema(min_length = 1, max_length = 50)]
    pub first_name: String,
    /// Last name (the frontend's key).
    #[serde(rename = "lastName")]
    #[schema(min_length = 1, max_length = 50)]
    pub last_name: String,
    /// Login address. `null` in the public view (`GET /api/v1/users/{id}`): the email
    /// is shown only to its owner and to moderators.
    pub email: Option<String>,
    /// When the account was registered (the frontend's key).
    #[serde(rename = "createdDate")]
    pub created_date_camel: Option<DateTime<Utc>>,
    /// `viewer`, `creator`, `moderator`, `suspended`, ... (the frontend's key).
    #[serde(rename = "accountStatus")]
    pub account_status_camel: String,
    /// When the user last logged in (the frontend's key); `null` until the first login
    /// and in the public view.
    #[serde(rename = "lastLoginDate")]
    pub last_login_date_camel: Option<DateTime<Utc>>,
    /// The roles the stored `account_status` grants (never the token's): `[]` for a
    /// status that grants none, `["viewer", "creator", "moderator"]` for a moderator.
    pub roles: Vec<String>,
    /// First name (the endpoint document's key).
    #[schema(min_length = 1, max_length = 50)]
    pub firstname: String,
    /// Last name (the endpoint document's key).
    #[schema(min_length = 1, max_length = 50)]
    pub lastname: String,
    /// The account status (the endpoint document's key).
    pub account_status: String,
    /// When the account was registered (the endpoint document's key).
    pub created_date: Option<DateTime<Utc>>,
    /// When the user last logged in (the endpoint document's key).
    pub last_login_date: Option<DateTime<Utc>>,
}

impl UserResponse {
    /// The user as its owner, or a moderator, sees it.
    pub fn of(row: &UserRow) -> Self {
        let text = |value: Option<&str>| value.unwrap_or_default().to_owned();
        let status = text(row.account_status());
        let created = row.created_date.as_ref().map(|c| c.value);
        let last_login = row.last_login_date.as_ref().map(|c| c.value);
        Self {
            user_id: row.user_id,
            first_name: text(row.firstname()),
            last_name: text(row.lastname()),
            email: Some(text(row.email())),
            created_date_camel: created,
            account_status_camel: status.clone(),
            last_login_date_camel: last_login,
            roles: roles_granted_by(&status)
                .into_iter()
                .map(|role| role.as_str().to_owned())
                .collect(),
            firstname: text(row.firstname()),
            lastname: text(row.lastname()),
            account_status: status,
            created_date: created,
            last_login_date: last_login,
        }
    }

    /// The user as anyone sees it: the email and the login activity are private
    /// (`null`), the rest as the owner sees it.
    pub fn public(row: &UserRow) -> Self {
        Self {
            email: None,
            last_login_date_camel: None,
            last_login_date: None,
            ..Self::of(row)
        }
    }
}

impl From<&UserRow> for UserResponse {
    fn from(row: &UserRow) -> Self {
        Self::of(row)
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
