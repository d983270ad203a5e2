//! E-mail addresses as login identifiers.

/// A syntactically valid address: trimmed, with the domain lowercased. The local part
/// keeps its case for display, but uniqueness is case-insensitive ([`Email::key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// Longest address SMTP can carry (RFC 5321 §4.5.3.1.3).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

impl Email {
    /// Parses an address. Deliberately a practical subset of RFC 5322: one `@`, a
    /// non-empty local part of printable ASCII without spaces or quotes, and a domain of
    /// at least two dot-separated LDH labels.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty");
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err("must be at most 254 characters");
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or("must be an e-mail address like name@example.com")?;
        let local_ok = !local.is_empty()
            && local.len() <= MAX_LOCAL_LEN
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| {
                c.is_ascii_graphic()
                    && !matches!(
                        c,
                        '@' | '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']'
                    )
            });
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err("must be an e-mail address like name@example.com");
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    /// The address as the user typed it, domain lowercased.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness key: the whole address lowercased, so `Jane@x.io` and `jane@x.io`
    /// are one account.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases_the_domain_only() {
        let email = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Jane.Doe@example.com");
        assert_eq!(email.key(), "jane.doe@example.com");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa_mple.com",
            "a@-x.com",
            ".a@x.com",
            "a..b@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
