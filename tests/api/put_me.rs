//! PUT /api/v1/users/me: the contract of the endpoint document.

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp, problem};
use killrvideo_users::domain::UserEvent;
use killrvideo_users::domain::events::{AccountStatusChanged, FieldChange};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn document_case_successful_update(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
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
    let app = TestApp::on(backend).spawn().await;
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
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let before = app.row(user.id).await.unwrap();
    let events_before = app.events(user.id).await.len();
    let response = app.put_me(&user.token, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["firstname"], "John");
    app.assert_untouched(user.id, &before, events_before).await;
}

async fn names_are_trimmed_normalised_and_aliases_accepted(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
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

async fn n_sequential_updates_leave_n_events_in_order(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
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
    let app = TestApp::on(backend).spawn().await;
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
    app.assert_untouched(user.id, &before, events_before).await;
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
    n_sequential_updates_leave_n_events_in_order,
    roles_come_from_the_row_not_the_token,
);
