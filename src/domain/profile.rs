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

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<String>().prop_map(Value::String),
            "[ a-zA-Z\u{e9}\u{301}\t\n]{0,60}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn body() -> impl proptest::strategy::Strategy<Value = Map<String, Value>> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("firstname".to_owned()),
            Just("lastname".to_owned()),
            Just("firstName".to_owned()),
            Just("lastName".to_owned()),
            Just("email".to_owned()),
            "[a-zA-Z_]{1,12}",
        ];
        proptest::collection::btree_map(key, json_value(), 0..5)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest::proptest! {
        /// Whatever the body, parsing never panics; what it accepts holds only valid
        /// names from allowed keys, and what it refuses names every offending field.
        #[test]
        fn the_body_parser_accepts_only_valid_names_from_allowed_keys(map in body()) {
            let allowed = ["firstname", "lastname", "firstName", "lastName"];
            match ProfileChanges::from_json(map.clone()) {
                Ok(changes) => {
                    proptest::prop_assert!(map.keys().all(|k| allowed.contains(&k.as_str())));
                    for name in [&changes.firstname, &changes.lastname].into_iter().flatten() {
                        let reparsed = PersonName::parse(name.as_str());
                        proptest::prop_assert_eq!(reparsed.as_ref(), Ok(name));
                    }
                    proptest::prop_assert_eq!(changes.is_empty(), map.is_empty());
                }
                Err(errors) => {
                    proptest::prop_assert!(!errors.is_empty());
                    for error in &errors {
                        let key = error.field.trim_start_matches('/');
                        proptest::prop_assert!(map.contains_key(key), "error names a field of the body: {}", error.field);
                        proptest::prop_assert!(!error.message.is_empty());
                    }
                    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
                        proptest::prop_assert!(errors.iter().any(|e| e.field == format!("/{key}")), "{key} reported");
                    }
                }
            }
        }
    }

    #[test]
    fn a_name_and_its_alias_together_are_ambiguous() {
        let errors = parse(json!({"firstname": "A", "firstName": "B"})).unwrap_err();
        assert_eq!(errors[0].field, "/firstName");
    }
}
