//! The OpenAPI 3 document, generated from the handlers' annotations.

use super::users::{
    AccountDeletionRequest, LoginRequest, LoginResponse, ProfileUpdateRequest, RegisterRequest,
};
use crate::app::representation::UserResponse;
use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Adds the bearer scheme the secured paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Describes every error answer as what it is: an RFC 9457 problem document
/// (`application/problem+json`), with the members this service adds. One place, for
/// every operation, so no error response can go undescribed.
struct ProblemDetails;

impl Modify for ProblemDetails {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr};
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let field_error = ObjectBuilder::new()
            .property(
                "field",
                text("JSON pointer to the member, or a query parameter's name"),
            )
            .property("message", text("what is wrong with it"))
            .required("field")
            .required("message");
        let problem = ObjectBuilder::new()
            .description(Some("An RFC 9457 problem document"))
            .property("type", text("`urn:killrvideo:problem:<kind>`"))
            .property("title", text("the status's reason phrase"))
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(400))
                    .maximum(Some(599)),
            )
            .property(
                "detail",
                text("what went wrong, for a person; a 422 names each field"),
            )
            .property("instance", text("the request path"))
            .property(
                "request_id",
                text("the request's `x-request-id`, as logged"),
            )
            .property(
                "errors",
                ArrayBuilder::new()
                    .items(field_error)
                    .max_items(Some(super::error::MAX_LISTED_ERRORS))
                    .description(Some("422 only: one entry per refused field")),
            )
            .property(
                "errors_omitted",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .description(Some("422 only: refused fields beyond those listed")),
            )
            .property("current_etag", text("412 only: the user's current ETag"))
            .property("current", Ref::from_schema_name("UserResponse"))
            .required("type")
            .required("title")
            .required("status")
            .required("detail");
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert("Problem".into(), RefOr::T(problem.into()));
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if status.as_str() >= "400" {
                        response.content.insert(
                            "application/problem+json".into(),
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        );
                    }
                }
            }
        }
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "killrvideo-users", description = "The users service of the KillrVideo reference app"),
    paths(
        super::users::register,
        super::users::login,
        super::users::get_me,
        super::users::put_me,
        super::users::delete_me,
        super::users::get_user,
        super::audit_trail::my_history,
        super::export::export_me,
        super::audit_trail::user_history,
        super::moderation::search_users,
        super::moderation::assign_moderator,
        super::moderation::revoke_moderator,
        super::health::healthz,
        super::health::readyz,
    ),
    components(schemas(crate::app::audit_trail::HistoryPage, crate::app::audit_trail::AuditedEvent, crate::app::audit_trail::FieldView, super::audit_trail::ProfileAsOf, super::audit_trail::HistoryResponse, super::export::ExportResponse, super::export::HeldCredentials, super::export::HeldLoginBudget, UserResponse, LoginResponse, RegisterRequest, LoginRequest, ProfileUpdateRequest, AccountDeletionRequest)),
    modifiers(&BearerAuth, &ProblemDetails),
)]
pub struct ApiDoc;

/// `/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldError;
    use crate::domain::profile::ProfileChanges;
    use crate::domain::registration::{AccountDeletion, LoginAttempt, Registration};
    use serde_json::{Map, Value, json};

    type Parser = fn(Map<String, Value>) -> Result<(), Vec<FieldError>>;

    /// A valid value for each member a body schema names.
    fn example(member: &str) -> Value {
        match member {
            "email" => json!("jane@example.com"),
            "password" => json!("correct horse battery"),
            _ => json!("Jane"),
        }
    }

    /// Every `oneOf` whose branches are plain types, and every `$ref` reached through
    /// one: returns the pairs of branches one value could satisfy at once.
    fn ambiguous_one_ofs(node: &Value, at: &str, found: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Array(branches)) = map.get("oneOf") {
                    let mut types: Vec<&Value> = branches
                        .iter()
                        .filter_map(|branch| branch.get("type"))
                        .collect();
                    let before = types.len();
                    types.sort_by_key(|t| t.to_string());
                    types.dedup();
                    if types.len() != before {
                        found.push(at.to_owned());
                    }
                }
                for (key, child) in map {
                    ambiguous_one_ofs(child, &format!("{at}/{key}"), found);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    ambiguous_one_ofs(child, &format!("{at}/{index}"), found);
                }
            }
            _ => {}
        }
    }

    /// A `oneOf` of two branches of the same type (say a text and a date-time string)
    /// makes every value that fits both invalid, so schema checkers reject real
    /// responses. Schemathesis found one in the history's field values.
    #[test]
    fn no_one_of_has_two_branches_of_the_same_type() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        ambiguous_one_ofs(&document, "", &mut found);
        assert_eq!(found, Vec::<String>::new());
    }

    /// The request bodies the document describes are the ones the parsers take: every
    /// member the schema lists is accepted, every required one is required, and
    /// nothing else is (the schema says `additionalProperties: false`).
    #[test]
    fn body_schemas_agree_with_the_parsers() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let parsers: [(&str, Parser); 4] = [
            ("RegisterRequest", |m| {
                Registration::from_json(m).map(|_| ())
            }),
            ("LoginRequest", |m| LoginAttempt::from_json(m).map(|_| ())),
            ("ProfileUpdateRequest", |m| {
                ProfileChanges::from_json(m).map(|_| ())
            }),
            ("AccountDeletionRequest", |m| {
                AccountDeletion::from_json(m).map(|_| ())
            }),
        ];
        for (name, parse) in parsers {
            let schema = &document["components"]["schemas"][name];
            assert_eq!(schema["additionalProperties"], json!(false), "{name}");
            let members: Vec<String> = schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name} has properties"))
                .keys()
                .cloned()
                .collect();
            let required: Vec<String> = schema["required"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let full: Map<String, Value> =
                members.iter().map(|m| (m.clone(), example(m))).collect();
            assert_eq!(
                parse(full.clone()),
                Ok(()),
                "{name}: every documented member"
            );
            for member in &required {
                let mut without = full.clone();
                without.remove(member);
                let errors = parse(without).expect_err(member);
                assert!(
                    errors.iter().any(|e| e.field == format!("/{member}")),
                    "{name}: {member} is required: {errors:?}"
                );
            }
            for member in members.iter().filter(|m| !required.contains(m)) {
                let mut without = full.clone();
                without.remove(member);
                assert_eq!(parse(without), Ok(()), "{name}: {member} is optional");
            }
            let mut extra = full;
            extra.insert("undocumented".into(), json!(1));
            assert!(
                parse(extra).is_err(),
                "{name}: undocumented members are refused"
            );
        }
    }
}
