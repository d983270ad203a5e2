//! A person's first or last name as the service stores it.

use unicode_normalization::UnicodeNormalization;

/// Longest accepted name, in Unicode scalar values, after trimming and normalisation.
pub const MAX_NAME_CHARS: usize = 50;

/// A first or last name that passed validation: trimmed, NFC-normalised, 1 to
/// [`MAX_NAME_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

/// Why a name was refused; the message is written for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left after trimming.
    #[error("must not be empty or whitespace only")]
    Empty,
    /// More than [`MAX_NAME_CHARS`] characters.
    #[error("must be at most {MAX_NAME_CHARS} characters (got {0})")]
    TooLong(usize),
    /// A control character such as a newline or NUL.
    #[error("must not contain control characters")]
    ControlCharacter,
    /// Nothing visible: only invisible characters (zero-width spaces, fillers...).
    #[error("must contain a visible character")]
    Invisible,
    /// A bidirectional override or isolate, which can make a name display as
    /// something other than what it is.
    #[error("must not contain bidirectional control characters")]
    BidiControl,
}

/// Characters that render as nothing: zero-width spaces and joiners, word joiners and
/// invisible operators, the byte-order mark, soft hyphen, combining grapheme joiner,
/// Mongolian vowel separator, the Hangul fillers and the Braille blank. A name may
/// contain some (a zero-width joiner is part of some scripts' spelling) but not only
/// these.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

/// Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), and
/// the marks (U+200E, U+200F, U+061C): a name is a plain string, never a layout
/// instruction, and these are how "Trojan Source" text hides what it says.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

impl PersonName {
    /// Parses a raw name. Normalising before counting means that "é" typed as `e` plus a
    /// combining accent counts as one character, as the user sees it.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let normalised: String = raw.trim().nfc().collect();
        if normalised.is_empty() {
            return Err(NameError::Empty);
        }
        if normalised.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        if normalised.chars().any(is_bidi_control) {
            return Err(NameError::BidiControl);
        }
        if normalised
            .chars()
            .all(|c| is_invisible(c) || c.is_whitespace())
        {
            return Err(NameError::Invisible);
        }
        let length = normalised.chars().count();
        if length > MAX_NAME_CHARS {
            return Err(NameError::TooLong(length));
        }
        Ok(Self(normalised))
    }

    /// The validated name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives up the wrapper.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trims_and_accepts_a_plain_name() {
        assert_eq!(PersonName::parse("  Jane ").unwrap().as_str(), "Jane");
    }

    #[test]
    fn refuses_whitespace_only() {
        assert_eq!(PersonName::parse(" \t "), Err(NameError::Empty));
        assert_eq!(PersonName::parse(""), Err(NameError::Empty));
    }

    #[test]
    fn fifty_characters_pass_and_fifty_one_fail() {
        assert!(PersonName::parse(&"a".repeat(50)).is_ok());
        assert_eq!(
            PersonName::parse(&"a".repeat(51)),
            Err(NameError::TooLong(51))
        );
    }

    #[test]
    fn counts_characters_after_nfc() {
        // 50 × ("e" + COMBINING ACUTE ACCENT) is 100 scalars raw, 50 after NFC.
        let decomposed = "e\u{301}".repeat(50);
        let name = PersonName::parse(&decomposed).unwrap();
        assert_eq!(name.as_str(), "é".repeat(50));
    }

    #[test]
    fn refuses_inner_control_characters() {
        assert_eq!(
            PersonName::parse("Ja\u{0}ne"),
            Err(NameError::ControlCharacter)
        );
        assert_eq!(
            PersonName::parse("Ja\nne"),
            Err(NameError::ControlCharacter)
        );
    }

    #[test]
    fn refuses_invisible_only_names_and_bidi_controls() {
        for invisible in [
            "\u{200B}",
            "\u{FEFF}",
            "\u{3164}",
            " \u{200B}\u{200C} ",
            "\u{2800}",
        ] {
            assert_eq!(
                PersonName::parse(invisible),
                Err(NameError::Invisible),
                "{invisible:?}"
            );
        }
        assert_eq!(
            PersonName::parse("Jane\u{202E}eoD"),
            Err(NameError::BidiControl)
        );
        assert_eq!(PersonName::parse("\u{2066}x"), Err(NameError::BidiControl));
        // A zero-width joiner inside a visible name is spelling, not a trick.
        assert!(PersonName::parse("क\u{200D}ष").is_ok());
    }

    proptest! {
        #[test]
        fn accepted_names_satisfy_every_rule(raw in any::<String>()) {
            if let Ok(name) = PersonName::parse(&raw) {
                let s = name.as_str();
                prop_assert_eq!(s, s.trim());
                prop_assert!(!s.is_empty());
                prop_assert!(s.chars().count() <= MAX_NAME_CHARS);
                prop_assert!(!s.chars().any(char::is_control));
                prop_assert!(!s.chars().any(is_bidi_control));
                prop_assert!(s.chars().any(|c| !is_invisible(c) && !c.is_whitespace()));
                let renormalised: String = s.nfc().collect();
                prop_assert_eq!(s, renormalised.as_str());
            }
        }

        #[test]
        fn parsing_is_idempotent(raw in any::<String>()) {
            if let Ok(name) = PersonName::parse(&raw) {
                prop_assert_eq!(PersonName::parse(name.as_str()), Ok(name.clone()));
            }
        }

        #[test]
        fn surrounding_whitespace_never_matters(core in "[A-Za-zÀ-ÿ]{1,50}", pad in "[ \t]{0,5}") {
            let padded = format!("{pad}{core}{pad}");
            prop_assert_eq!(PersonName::parse(&padded), PersonName::parse(&core));
        }

        #[test]
        fn long_names_are_refused(core in "[a-z]{51,80}") {
            prop_assert!(matches!(PersonName::parse(&core), Err(NameError::TooLong(_))));
        }
    }
}
