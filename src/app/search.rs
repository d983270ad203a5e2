//! The moderators' user search: candidates from the search projection of each field,
//! merged in key order, each checked against the fragment, one bounded page at a time.

use crate::domain::UserRow;
use crate::domain::columns::Column;
use crate::domain::search::SearchFragment;
use crate::store::{CandidateQuery, SearchKey, StoreError, UserSearch};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Users per page.
pub const PAGE_SIZE: usize = 50;
/// Candidates asked of each field per round.
const CANDIDATES_PER_FIELD: usize = 100;
/// Rounds of candidates one page may read before it answers with what it has (and a
/// cursor to go on): a fragment whose trigrams are common but rarely adjacent would
/// otherwise make one request read many candidates.
const MAX_ROUNDS: usize = 5;

/// A page of results, and where the next one starts (`None`: this is the last).
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Registered users whose first name, last name or email contains the fragment, in
    /// key order.
    pub users: Vec<UserRow>,
    /// Pass back as the cursor to get the next page.
    pub next: Option<SearchKey>,
}

/// True when any of the user's searchable fields contains the fragment.
fn matches(fragment: &SearchFragment, row: &UserRow) -> bool {
    [row.firstname(), row.lastname(), row.email()]
        .into_iter()
        .flatten()
        .any(|value| fragment.matches(value))
}

/// One page of the users matching `fragment`, after `after`.
///
/// Each round asks every field for its next candidates. A field that returned a full
/// batch may have more beyond its last key, so only keys up to the smallest such last
/// key are complete in every field: those are merged, checked and taken, and the next
/// round starts from there.
pub async fn search_users(
    store: &dyn UserSearch,
    fragment: &SearchFragment,
    after: Option<SearchKey>,
) -> Result<SearchPage, StoreError> {
    let terms = fragment.probe_terms();
    let mut cursor = after;
    let mut users = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let queries: Vec<CandidateQuery<'_>> = Column::SEARCH
            .iter()
            .map(|(field, _)| CandidateQuery {
                field: *field,
                terms: &terms,
                after: cursor,
                limit: CANDIDATES_PER_FIELD,
            })
            .collect();
        let batches = futures::future::try_join_all(
            queries.iter().map(|query| store.search_candidates(query)),
        )
        .await?;
        let complete_up_to = batches
            .iter()
            .filter(|batch| batch.len() == CANDIDATES_PER_FIELD)
            .filter_map(|batch| batch.last().map(|(key, _)| *key))
            .min();
        let merged: BTreeMap<SearchKey, UserRow> = batches
            .into_iter()
            .flatten()
            .filter(|(key, _)| complete_up_to.is_none_or(|bound| *key <= bound))
            .collect();
        for (key, row) in merged {
            if matches(fragment, &row) {
                users.push(row);
                if users.len() == PAGE_SIZE {
                    return Ok(SearchPage {
                        users,
                        next: Some(key),
                    });
                }
            }
        }
        match complete_up_to {
            None => return Ok(SearchPage { users, next: None }),
            Some(bound) => cursor = Some(bound),
        }
    }
    Ok(SearchPage {
        users,
        next: cursor,
    })
}

/// A cursor as clients see it: the key, base64url, opaque.
pub fn encode_cursor(key: SearchKey) -> String {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&key.token.to_be_bytes());
    bytes.extend_from_slice(key.user_id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a cursor back; `None` if it is not one of ours.
pub fn decode_cursor(cursor: &str) -> Option<SearchKey> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (token, user_id) = bytes.split_at_checked(8)?;
    Some(SearchKey {
        token: i64::from_be_bytes(token.try_into().ok()?),
        user_id: Uuid::from_slice(user_id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = SearchKey {
            token: -42,
            user_id: Uuid::new_v4(),
        };
        assert_eq!(decode_cursor(&encode_cursor(key)), Some(key));
        for bad in ["", "%%", "AAAA", &URL_SAFE_NO_PAD.encode([0u8; 23])] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
