//! PUT /api/v1/users/me: the contract of the endpoint document.

use crate::backend_tests;
use crate::support::{Backend, TestApp, problem, spawn_app};
use killrvideo_users::domain::UserEvent;
use killrvideo_users::domain::events::{AccountStatusChanged, FieldChange};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Asserts that a rejected request changed nothing: same row, same log.
async fn assert_untouched(
    app: &TestApp,
    user: Uuid,
    before_row: &killrvideo_users::domain::UserRow,
    before_events: usize,
) {
    assert_eq!(
        app.row(user).await.as_ref(),
        Some(before_row),
        "row unchanged"
    );
    assert_eq!(
        app.events(user).await.len(),
        before_events,
        "no event appended"
    );
}

async fn document_case_successful_update(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let response = app
        .put_me(&user.token, &json!({"firstname": "NewName"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["firstname"], "NewName");

    let row = app.row(user.id).await.unwrap();
    assert_eq!(row.firstname(), Some("NewName"));
    let events = app.events(user.id).await;
    let last = events.last().unwrap();
    let UserEvent::ProfileUpdated(updated) = &last.event else {
        panic!("last event is {:?}", last.event)
    };
    assert_eq!(
        updated.firstname,
        Some(FieldChange {
            from: Some("John".into()),
            to: "NewName".into()
        })
    );
    assert_eq!(updated.lastname, None, "only the given field is recorded");
    assert_eq!(
        last.request_id.as_deref().map(str::len),
        Some(36),
        "request id recorded"
    );
    // The cell carries the event's timestamp as its write time.
    assert_eq!(
        row.firstname.as_ref().unwrap().written_at,
        last.occurred_micros()
    );
    assert_eq!(row.version(), Some(last.event_id));
    assert_eq!(
        Some(etag),
        killrvideo_users::app::representation::etag(&row)
    );
}

async fn document_case_partial_update_leaves_the_other_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let before = app.row(user.id).await.unwrap();
    let response = app.put_me(&user.token, &json!({"firstname": "Jane"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["firstname"], "Jane");
    assert_eq!(body["lastname"], "Doe");
    let after = app.row(user.id).await.unwrap();
    assert_eq!(
        after.lastname, before.lastname,
        "lastname cell untouched, write time included"
    );
    assert_eq!(after.email, before.email);
    assert_eq!(after.created_date, before.created_date);
    assert_eq!(after.account_status, before.account_status);
}

async fn document_case_empty_update_is_200_without_a_write(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let before = app.row(user.id).await.unwrap();
    let events_before = app.events(user.id).await.len();
    let response = app.put_me(&user.token, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["firstname"], "John");
    assert_untouched(&app, user.id, &before, events_before).await;
}

async fn names_are_trimmed_normalised_and_aliases_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let response = app
        .put_me(
            &user.token,
            &json!({"firstName": "  Jose\u{301}  ", "lastName": "Smith"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let row = app.row(user.id).await.unwrap();
    assert_eq!(
        row.firstname(),
        Some("Jos\u{e9}"),
        "NFC-normalised and trimmed"
    );
    assert_eq!(row.lastname(), Some("Smith"));
}

async fn invalid_names_and_null_are_422_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let before = app.row(user.id).await.unwrap();
    let events_before = app.events(user.id).await.len();
    let fifty_one = "a".repeat(51);
    let cases = [
        (json!({"firstname": fifty_one}), "/firstname"),
        (json!({"lastname": "   "}), "/lastname"),
        (json!({"firstname": null}), "/firstname"),
        (json!({"lastName": null}), "/lastName"),
        (
            json!({"firstname": "Ok", "lastname": "bad\u{7}bell"}),
            "/lastname",
        ),
        (json!({"firstname": 42}), "/firstname"),
    ];
    for (body, field) in cases {
        let response = app.put_me(&user.token, &body).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let errors = problem["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{problem}");
        assert_eq!(errors[0]["field"], field);
        assert!(!errors[0]["message"].as_str().unwrap().is_empty());
    }
    assert_untouched(&app, user.id, &before, events_before).await;
    // Exactly 50 characters is fine.
    let ok = app
        .put_me(&user.token, &json!({"firstname": "b".repeat(50)}))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

async fn protected_and_unknown_fields_are_422_and_never_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let before = app.row(user.id).await.unwrap();
    let events_before = app.events(user.id).await.len();
    for field in [
        "email",
        "account_status",
        "userid",
        "userId",
        "created_date",
        "last_login_date",
        "favourite_colour",
    ] {
        let body = json!({"firstname": "Mallory", field: "moderator@evil.example"});
        let response = app.put_me(&user.token, &body).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [format!("/{field}")]);
    }
    assert_untouched(&app, user.id, &before, events_before).await;
    assert_eq!(
        app.row(user.id).await.unwrap().account_status(),
        Some("viewer")
    );
}

async fn malformed_requests_are_400_415_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let before = app.row(user.id).await.unwrap();
    let events_before = app.events(user.id).await.len();
    let put = || {
        app.client
            .put(app.url("/api/v1/users/me"))
            .bearer_auth(&user.token)
    };

    let bad_json = put()
        .header("content-type", "application/json")
        .body("{\"firstname\": ")
        .send()
        .await
        .unwrap();
    problem(bad_json, StatusCode::BAD_REQUEST).await;
    let not_object = put()
        .header("content-type", "application/json")
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    problem(not_object, StatusCode::UNPROCESSABLE_ENTITY).await;
    let text = put()
        .header("content-type", "text/plain")
        .body("{\"firstname\": \"X\"}")
        .send()
        .await
        .unwrap();
    problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let no_type = put().body("{\"firstname\": \"X\"}").send().await.unwrap();
    problem(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let huge = format!(
        "{{\"firstname\": \"X\", \"pad\": \"{}\"}}",
        "p".repeat(17 * 1024)
    );
    let too_large = put()
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    problem(too_large, StatusCode::PAYLOAD_TOO_LARGE).await;

    assert_untouched(&app, user.id, &before, events_before).await;
}

async fn n_sequential_updates_leave_n_events_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let n = 12;
    for i in 0..n {
        let response = app
            .put_me(&user.token, &json!({"lastname": format!("Name{i}")}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let events = app.events(user.id).await;
    let updates: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            UserEvent::ProfileUpdated(p) => p.lastname.as_ref().map(|c| c.to.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("Name{i}")).collect();
    assert_eq!(updates, expected);
    // Each update saw the previous one.
    let froms: Vec<Option<String>> = events
        .iter()
        .filter_map(|e| match &e.event {
            UserEvent::ProfileUpdated(p) => p.lastname.as_ref().map(|c| c.from.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(froms[0].as_deref(), Some("Doe"));
    assert_eq!(
        froms[n - 1].as_deref(),
        Some(format!("Name{}", n - 2).as_str())
    );
    assert_eq!(
        app.row(user.id).await.unwrap().lastname(),
        Some(format!("Name{}", n - 1).as_str())
    );
}

async fn roles_come_from_the_row_not_the_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let set_status = |to: &str| {
        UserEvent::AccountStatusChanged(AccountStatusChanged {
            account_status: FieldChange {
                from: None,
                to: to.into(),
            },
        })
    };
    // KillrVideo's seed value `active` counts as a viewer.
    app.record(user.id, set_status("active")).await;
    assert_eq!(
        app.put_me(&user.token, &json!({"firstname": "Active"}))
            .await
            .status(),
        StatusCode::OK
    );
    // A suspended account is refused although its token says "viewer".
    app.record(user.id, set_status("suspended")).await;
    let before = app.row(user.id).await.unwrap();
    let events_before = app.events(user.id).await.len();
    let response = app
        .put_me(&user.token, &json!({"firstname": "Suspended"}))
        .await;
    problem(response, StatusCode::FORBIDDEN).await;
    assert_untouched(&app, user.id, &before, events_before).await;
    for status in ["inactive", "moderator"] {
        app.record(user.id, set_status(status)).await;
        let expected = if status == "moderator" {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(app.get_me(&user.token).await.status(), expected, "{status}");
    }
}

backend_tests!(
    document_case_successful_update,
    document_case_partial_update_leaves_the_other_field,
    document_case_empty_update_is_200_without_a_write,
    names_are_trimmed_normalised_and_aliases_accepted,
    invalid_names_and_null_are_422_and_change_nothing,
    protected_and_unknown_fields_are_422_and_never_written,
    malformed_requests_are_400_415_413,
    n_sequential_updates_leave_n_events_in_order,
    roles_come_from_the_row_not_the_token,
);
