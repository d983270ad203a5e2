//! Reading a JSON object field by field, so that every bad field gets its own precise
//! message instead of the first serde error.

use serde_json::{Map, Value};

/// One refused field of a request body, reported in a 422's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON pointer to the field, e.g. `/firstname`.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl FieldError {
    /// An error for the top-level member `name`.
    pub fn new(name: &str, message: impl Into<String>) -> Self {
        Self {
            field: format!("/{}", name.replace('~', "~0").replace('/', "~1")),
            message: message.into(),
        }
    }
}

/// A request body being taken apart. Each `take_*` removes the member it reads, so
/// whatever is left at [`BodyFields::finish`] was not expected and is reported.
pub struct BodyFields {
    members: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl BodyFields {
    /// Wraps a parsed JSON object.
    pub fn new(members: Map<String, Value>) -> Self {
        Self {
            members,
            errors: Vec::new(),
        }
    }

    /// Removes the member named `name` or its alias; both present is an error, since the
    /// request would be ambiguous.
    fn take_aliased(&mut self, name: &str, alias: Option<&str>) -> Option<(String, Value)> {
        let primary = self.members.remove(name).map(|v| (name.to_owned(), v));
        let aliased = alias.and_then(|a| self.members.remove(a).map(|v| (a.to_owned(), v)));
        match (primary, aliased) {
            (Some(_), Some((alias_name, _))) => {
                self.errors.push(FieldError::new(
                    &alias_name,
                    format!("give either `{name}` or `{alias_name}`, not both"),
                ));
                None
            }
            (one, other) => one.or(other),
        }
    }

    /// An optional string member: absent is `None`; `null` or a non-string is an error.
    pub fn optional_string(&mut self, name: &str, alias: Option<&str>) -> Option<(String, String)> {
        match self.take_aliased(name, alias)? {
            (field, Value::String(s)) => Some((field, s)),
            (field, Value::Null) => {
                self.errors.push(FieldError::new(
                    &field,
                    "must not be null; omit the field to keep the current value",
                ));
                None
            }
            (field, _) => {
                self.errors
                    .push(FieldError::new(&field, "must be a string"));
                None
            }
        }
    }

    /// A required string member.
    pub fn required_string(&mut self, name: &str, alias: Option<&str>) -> Option<(String, String)> {
        let present =
            self.members.contains_key(name) || alias.is_some_and(|a| self.members.contains_key(a));
        if !present {
            self.errors.push(FieldError::new(name, "is required"));
            return None;
        }
        self.optional_string(name, alias)
    }

    /// Records an error found while validating a member's value.
    pub fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Reports every member nobody asked for, then the collected errors if any. `why`
    /// explains, per member name, why it is refused (protected or unknown).
    pub fn finish(mut self, why: impl Fn(&str) -> String) -> Result<(), Vec<FieldError>> {
        let mut leftovers: Vec<String> = self.members.keys().cloned().collect();
        leftovers.sort();
        for name in leftovers {
            let message = why(&name);
            self.errors.push(FieldError::new(&name, message));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}
