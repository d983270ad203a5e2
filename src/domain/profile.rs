//! The body of `PUT /api/v1/users/me`: a partial update of the caller's names.

use super::fields::{BodyFields, FieldError};
use super::names::PersonName;
use serde_json::{Map, Value};

/// Fields the document lists as protected: present in the user, never writable here.
const PROTECTED_FIELDS: [&str; 7] = [
    "userid",
    "userId",
    "email",
    "account_status",
    "accountStatus",
    "created_date",
    "last_login_date",
];

/// A validated partial profile update. `None` means "leave as is".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileChanges {
    /// New first name, if given.
    pub firstname: Option<PersonName>,
    /// New last name, if given.
    pub lastname: Option<PersonName>,
}

impl ProfileChanges {
    /// True for `{}`: nothing to write, nothing to record.
    pub fn is_empty(&self) -> bool {
        self.firstname.is_none() && self.lastname.is_none()
    }

    /// Validates a PUT body. Accepts `firstname`/`lastname` and their camelCase aliases;
    /// every other member, protected or unknown, is refused by name.
    pub fn from_json(body: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut fields = BodyFields::new(body);
        let name = |fields: &mut BodyFields, key: &str, alias: &str| {
            let (field, raw) = fields.optional_string(key, Some(alias))?;
            match PersonName::parse(&raw) {
                Ok(name) => Some(name),
                Err(err) => {
                    fields.reject(&field, err.to_string());
                    None
                }
            }
        };
        let firstname = name(&mut fields, "firstname", "firstName");
        let lastname = name(&mut fields, "lastname", "lastName");
        fields.finish(|member| {
            if PROTECTED_FIELDS.contains(&member) {
                format!("`{member}` cannot be changed through this endpoint")
            } else {
                format!("unknown field `{member}`; only firstname and lastname may be updated")
            }
        })?;
        Ok(Self {
            firstname,
            lastname,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ProfileChanges, Vec<FieldError>> {
        match value {
            Value::Object(map) => ProfileChanges::from_json(map),
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn empty_object_is_an_empty_change() {
        assert!(parse(json!({})).unwrap().is_empty());
    }

    #[test]
    fn camel_case_aliases_are_accepted() {
        let changes = parse(json!({"firstName": " Jane ", "lastName": "Smith"})).unwrap();
        assert_eq!(changes.firstname.unwrap().as_str(), "Jane");
        assert_eq!(changes.lastname.unwrap().as_str(), "Smith");
    }

    #[test]
    fn null_is_refused_by_field() {
        let errors = parse(json!({"firstname": null})).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "/firstname");
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = parse(json!({
            "firstname": "   ",
            "lastname": 7,
            "email": "x@y.z",
            "account_status": "moderator",
            "shoe_size": 44
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "/firstname",
                "/lastname",
                "/account_status",
                "/email",
                "/shoe_size"
            ]
        );
        assert!(errors[2].message.contains("cannot be changed"));
        assert!(errors[4].message.contains("unknown field"));
    }

    #[test]
    fn a_name_and_its_alias_together_are_ambiguous() {
        let errors = parse(json!({"firstname": "A", "firstName": "B"})).unwrap_err();
        assert_eq!(errors[0].field, "/firstName");
    }
}
