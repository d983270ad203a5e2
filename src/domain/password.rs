//! The password policy. Hashing lives in `crate::auth::password`; only the rules are here.

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most bytes a password may have: argon2 would accept more, but an unbounded input is a
/// cheap way to burn the server's CPU.
pub const MAX_PASSWORD_BYTES: usize = 128;

/// A password that satisfies the policy. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// Checks the length rules; the password is not trimmed, spaces are characters.
    pub fn parse(raw: String) -> Result<Self, &'static str> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err("must be at least 8 characters");
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err("must be at most 128 bytes");
        }
        Ok(Self(raw))
    }

    /// The secret, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_both_bounds() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
        // 8 characters but 16 bytes: accepted, the lower bound counts characters.
        assert!(Password::parse("éééééééé".into()).is_ok());
        assert!(
            !format!("{:?}", Password::parse("hunter22hunter".into()).unwrap()).contains("hunter")
        );
    }
}
