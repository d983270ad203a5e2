//! Finding users by a fragment of their name or email: the folding both the stored
//! terms and the query go through, the terms a value is indexed under, and what a
//! query must look like.
//!
//! A value is indexed under its trigrams (every run of three characters) after folding
//! case, accents and whitespace. A fragment of three or more characters then has all
//! of its own trigrams among those of any value that contains it, so the store can find
//! candidates by exact term equality (Cassandra's SAI `CONTAINS` on a `set<text>`, an
//! index table on SQLite) without reading the table; [`SearchFragment::matches`] then
//! keeps only the values that really contain the fragment.

use std::collections::BTreeSet;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Fewest characters a search fragment may have after folding: shorter fragments have
/// no trigram, so they could only be answered by reading every row.
pub const MIN_FRAGMENT_CHARS: usize = 3;

/// Most characters a fragment may have after folding: nothing indexed is longer (an
/// email is at most 254).
pub const MAX_FRAGMENT_CHARS: usize = 254;

/// Length of an indexed term, in characters.
const TERM_CHARS: usize = 3;

/// Most terms a query asks the store for. Every term of a fragment must be among a
/// match's terms, so a few spread over the fragment narrow the candidates as well as
/// all of them would, and the fragment itself is checked on each candidate anyway.
pub const MAX_PROBE_TERMS: usize = 4;

/// Case, accents and surrounding whitespace folded away, inner whitespace runs made one
/// space: "  Jöhnny  Ångström " becomes "johnny angstrom". Compatibility decomposition
/// (NFKD) splits "ö" into "o" and a combining diaeresis, which is dropped, and turns
/// ligatures and full-width forms into plain letters.
pub fn fold(raw: &str) -> String {
    let decomposed: String = raw
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    decomposed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The trigrams of a folded value, in order, repeats included.
fn trigrams(folded: &str) -> Vec<String> {
    let chars: Vec<char> = folded.chars().collect();
    chars
        .windows(TERM_CHARS)
        .map(|window| window.iter().collect())
        .collect()
}

/// The terms a stored value is found by: the trigrams of its folded form. A value of
/// fewer than three characters has none.
pub fn terms(value: &str) -> BTreeSet<String> {
    trigrams(&fold(value)).into_iter().collect()
}

/// Why a fragment was refused; the message is written for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// Fewer than [`MIN_FRAGMENT_CHARS`] characters after folding.
    #[error("must have at least {MIN_FRAGMENT_CHARS} characters (got {0})")]
    TooShort(usize),
    /// More than [`MAX_FRAGMENT_CHARS`] characters after folding.
    #[error("must be at most {MAX_FRAGMENT_CHARS} characters (got {0})")]
    TooLong(usize),
}

/// A validated search fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFragment {
    folded: String,
}

impl SearchFragment {
    /// Parses a query. `Ok(None)` for an absent or blank one, which matches nobody.
    pub fn parse(raw: &str) -> Result<Option<Self>, FragmentError> {
        let folded = fold(raw);
        let length = folded.chars().count();
        match length {
            0 => Ok(None),
            n if n < MIN_FRAGMENT_CHARS => Err(FragmentError::TooShort(n)),
            n if n > MAX_FRAGMENT_CHARS => Err(FragmentError::TooLong(n)),
            _ => Ok(Some(Self { folded })),
        }
    }

    /// The folded fragment.
    pub fn as_str(&self) -> &str {
        &self.folded
    }

    /// The terms the store is asked for: at most [`MAX_PROBE_TERMS`] distinct trigrams
    /// of the fragment, the first and the last among them, the rest evenly between.
    pub fn probe_terms(&self) -> Vec<String> {
        let all = trigrams(&self.folded);
        let mut picked: Vec<String> = Vec::with_capacity(MAX_PROBE_TERMS);
        let last = all.len() - 1;
        for step in 0..MAX_PROBE_TERMS.min(all.len()) {
            let index = if MAX_PROBE_TERMS >= all.len() {
                step
            } else {
                step * last / (MAX_PROBE_TERMS - 1)
            };
            if !picked.contains(&all[index]) {
                picked.push(all[index].clone());
            }
        }
        picked
    }

    /// True when the folded `value` contains the fragment.
    pub fn matches(&self, value: &str) -> bool {
        fold(value).contains(&self.folded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn folding_drops_case_accents_and_surrounding_whitespace() {
        assert_eq!(fold("  Jöhnny  Ångström "), "johnny angstrom");
        assert_eq!(fold("ÉLODIE"), "elodie");
        assert_eq!(fold("Jose\u{301}"), "jose");
        assert_eq!(fold("ﬁona"), "fiona", "ligatures are split");
    }

    #[test]
    fn a_value_is_indexed_under_its_trigrams() {
        let expected: BTreeSet<String> = ["joh", "ohn", "hnn", "nny"].map(String::from).into();
        assert_eq!(terms("Jöhnny"), expected);
        assert!(terms("Li").is_empty(), "too short for a trigram");
    }

    #[test]
    fn fragments_are_bounded() {
        assert_eq!(SearchFragment::parse("   "), Ok(None));
        assert_eq!(SearchFragment::parse(""), Ok(None));
        assert_eq!(
            SearchFragment::parse(" jo "),
            Err(FragmentError::TooShort(2))
        );
        assert_eq!(
            SearchFragment::parse(&"x".repeat(255)),
            Err(FragmentError::TooLong(255))
        );
        let fragment = SearchFragment::parse(" JÖH ").unwrap().unwrap();
        assert_eq!(fragment.as_str(), "joh");
        assert!(fragment.matches("Jöhnny"));
        assert!(!fragment.matches("Jonah"));
    }

    #[test]
    fn probe_terms_span_the_fragment() {
        let fragment = SearchFragment::parse("angstrom").unwrap().unwrap();
        let probe = fragment.probe_terms();
        assert_eq!(probe.len(), MAX_PROBE_TERMS);
        assert_eq!(probe.first().map(String::as_str), Some("ang"));
        assert_eq!(probe.last().map(String::as_str), Some("rom"));
        let short = SearchFragment::parse("joh").unwrap().unwrap();
        assert_eq!(short.probe_terms(), ["joh"]);
        let repeated = SearchFragment::parse("aaaaaa").unwrap().unwrap();
        assert_eq!(repeated.probe_terms(), ["aaa"]);
    }

    proptest! {
        /// The property the store relies on: whenever a value contains a fragment, every
        /// probe term of the fragment is among the value's terms, so a candidate search by
        /// terms never misses a match.
        #[test]
        fn a_value_containing_a_fragment_has_all_its_probe_terms(
            value in "[ a-zA-Zéöå\u{301}]{0,30}",
            start in 0usize..30,
            length in 3usize..12,
        ) {
            let folded: Vec<char> = fold(&value).chars().collect();
            prop_assume!(start + length <= folded.len());
            let raw: String = folded[start..start + length].iter().collect();
            if let Ok(Some(fragment)) = SearchFragment::parse(&raw) {
                prop_assert!(fragment.matches(&value));
                let indexed = terms(&value);
                for term in fragment.probe_terms() {
                    prop_assert!(indexed.contains(&term), "{term:?} of {raw:?} in {value:?}");
                }
            }
        }
    }
}
