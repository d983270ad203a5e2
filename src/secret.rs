//! Secrets with a type: a value that a `Debug` print cannot leak.
//!
//! A small newtype rather than the `secrecy` crate: `zeroize` (which `secrecy` wraps)
//! is already a dependency, settings need the secret to be `Clone` (`secrecy` asks
//! for a marker trait per type for that), and this prints exactly `[redacted]`.

use zeroize::Zeroize;

/// A secret (a token-signing key, a key-encryption key as configured): `Debug` prints
/// `[redacted]`, the value is read only through [`Secret::expose`], and it is zeroed
/// when dropped.
#[derive(Clone)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What a flag or an environment variable gives (clap parses flags with it).
impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new(String::from("hunter2-hunter2"));
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }
}
