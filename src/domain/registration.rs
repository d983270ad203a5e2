//! The bodies of `POST /register` and `POST /login`.

use super::email::{Email, MAX_EMAIL_LEN};
use super::fields::{BodyFields, FieldError};
use super::names::PersonName;
use super::password::{MAX_PASSWORD_BYTES, Password};
use serde_json::{Map, Value};

/// A validated registration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The login identifier.
    pub email: Email,
    /// Meets the password policy; hashed before it goes anywhere.
    pub password: Password,
    /// First name.
    pub firstname: PersonName,
    /// Last name.
    pub lastname: PersonName,
}

fn unknown(member: &str) -> String {
    format!("unknown field `{member}`")
}

impl Registration {
    /// Validates a registration body, reporting every bad field at once.
    pub fn from_json(body: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut fields = BodyFields::new(body);
        let email =
            fields
                .required_string("email", None)
                .and_then(|(field, raw)| match Email::parse(&raw) {
                    Ok(email) => Some(email),
                    Err(message) => {
                        fields.reject(&field, message);
                        None
                    }
                });
        let password = fields
            .required_string("password", None)
            .and_then(|(field, raw)| match Password::parse(raw) {
                Ok(password) => Some(password),
                Err(message) => {
                    fields.reject(&field, message);
                    None
                }
            });
        let name = |fields: &mut BodyFields, key: &str, alias: &str| {
            let (field, raw) = fields.required_string(key, Some(alias))?;
            PersonName::parse(&raw)
                .map_err(|err| fields.reject(&field, err.to_string()))
                .ok()
        };
        let firstname = name(&mut fields, "firstname", "firstName");
        let lastname = name(&mut fields, "lastname", "lastName");
        fields.finish(unknown)?;
        match (email, password, firstname, lastname) {
            (Some(email), Some(password), Some(firstname), Some(lastname)) => Ok(Self {
                email,
                password,
                firstname,
                lastname,
            }),
            // finish() returned Ok only if nothing was rejected, and every None above
            // rejected something.
            _ => Err(vec![FieldError::new("", "invalid registration")]),
        }
    }
}

/// A login attempt. The email is not validated beyond being a string no longer than a
/// registrable address: a malformed address simply matches no account, and gets the
/// same 401 as a wrong password. A longer one is refused (422) before anything is
/// stored for it: failed logins are counted per email key.
#[derive(Clone)]
pub struct LoginAttempt {
    /// As typed; matched by its lowercased, trimmed form.
    pub email: String,
    /// Compared with the stored argon2id hash; never logged.
    pub password: String,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl LoginAttempt {
    /// Reads `{email, password}`.
    pub fn from_json(body: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut fields = BodyFields::new(body);
        let email = fields.required_string("email", None);
        if let Some((field, email)) = &email
            && email.trim().len() > MAX_EMAIL_LEN
        {
            fields.reject(field, format!("must be at most {MAX_EMAIL_LEN} characters"));
        }
        let password = fields.required_string("password", None);
        if let Some((field, password)) = &password
            && password.len() > MAX_PASSWORD_BYTES
        {
            fields.reject(field, format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
        }
        fields.finish(unknown)?;
        match (email, password) {
            (Some((_, email)), Some((_, password))) => Ok(Self { email, password }),
            _ => Err(vec![FieldError::new("", "invalid login")]),
        }
    }

    /// The uniqueness key the email would have: trimmed and lowercased.
    pub fn email_key(&self) -> String {
        self.email.trim().to_ascii_lowercase()
    }
}

/// The body of an account deletion: `{password}`, the current password, which a
/// stolen token does not carry.
#[derive(Clone)]
pub struct AccountDeletion {
    /// Checked against the stored hash; never logged.
    pub password: String,
}

impl std::fmt::Debug for AccountDeletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountDeletion { password: <redacted> }")
    }
}

impl AccountDeletion {
    /// Reads `{password}`.
    pub fn from_json(body: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut fields = BodyFields::new(body);
        let password = fields.required_string("password", None);
        if let Some((field, password)) = &password
            && password.len() > MAX_PASSWORD_BYTES
        {
            fields.reject(field, format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
        }
        fields.finish(unknown)?;
        match password {
            Some((_, password)) => Ok(Self { password }),
            None => Err(vec![FieldError::new("password", "is required")]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_valid_registration_parses() {
        let r = Registration::from_json(object(json!({
            "email": " Ann@Example.com", "password": "correct horse", "firstName": "Ann", "lastname": "Lee"
        })))
        .unwrap();
        assert_eq!(r.email.as_str(), "Ann@example.com");
        assert_eq!(r.firstname.as_str(), "Ann");
    }

    #[test]
    fn login_fields_are_bounded_before_anything_is_stored() {
        let long = format!("{}@example.com", "a".repeat(250));
        let errors =
            LoginAttempt::from_json(object(json!({"email": long, "password": "x".repeat(200)})))
                .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["/email", "/password"]);
        assert!(
            LoginAttempt::from_json(object(json!({"email": "a@b.io", "password": "x"}))).is_ok()
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = Registration::from_json(object(json!({
            "email": "nope", "password": "short", "lastname": "", "role": "moderator"
        })))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["/email", "/password", "/firstname", "/lastname", "/role"]
        );
    }
}
