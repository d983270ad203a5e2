//! The audit trail: paging, provenance, as-of replay, authorisation, and the operator
//! commands `set-role` and `history`.

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, JWT_SECRET, TestApp, problem, succeeded};
use killrvideo_users::domain::UserEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

async fn paging_visits_every_event_exactly_once_newest_first(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    for i in 0..9 {
        app.put_me(&user.token, &json!({"firstname": format!("P{i}")}))
            .await;
    }
    let expected: Vec<String> = app
        .events(user.id)
        .await
        .iter()
        .rev()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(expected.len(), 11);

    let mut seen = Vec::new();
    let mut next = Some("/api/v1/users/me/history?limit=3".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = app.get_with_token(&path, &user.token).await;
        assert_eq!(response.status(), StatusCode::OK);
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with("rel=\"next\""), "{link}");
            link[link.find('<').unwrap() + 1..link.find('>').unwrap()].to_owned()
        });
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["next_cursor"].is_null(), next.is_none());
        for event in page["events"].as_array().unwrap() {
            seen.push(event["event_id"].as_str().unwrap().to_owned());
            for member in [
                "type",
                "occurred_at",
                "written_at",
                "actor",
                "request_id",
                "fields",
            ] {
                assert!(event.get(member).is_some(), "{member} missing: {event}");
            }
        }
        pages += 1;
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, expected, "every event once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
}

async fn each_field_shows_from_to_and_whether_it_currently_wins(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    app.put_me(&user.token, &json!({"firstname": "A"})).await;
    app.put_me(&user.token, &json!({"firstname": "B", "lastname": "Z"}))
        .await;
    let page: Value = app
        .get_with_token("/api/v1/users/me/history", &user.token)
        .await
        .json()
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "ProfileUpdated",
            "ProfileUpdated",
            "UserLoggedIn",
            "UserRegistered"
        ]
    );

    let newest = &events[0]["fields"];
    assert_eq!(
        newest["firstname"],
        json!({"from": "A", "to": "B", "winning": true})
    );
    assert_eq!(
        newest["lastname"],
        json!({"from": "Doe", "to": "Z", "winning": true})
    );
    assert_eq!(
        events[1]["fields"]["firstname"],
        json!({"from": "John", "to": "A", "winning": false})
    );
    let registered = &events[3]["fields"];
    assert_eq!(registered["firstname"]["winning"], false);
    assert_eq!(registered["email"]["winning"], true);
    assert_eq!(registered["account_status"]["to"], "viewer");
    assert_eq!(events[3]["actor"], format!("user:{}", user.id));
    assert_eq!(events[0]["request_id"].as_str().map(str::len), Some(36));
}

async fn as_of_each_event_returns_the_state_after_it(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    for name in ["One", "Two", "Three"] {
        app.put_me(&user.token, &json!({"lastname": name})).await;
    }
    let events = app.events(user.id).await;
    let mut expected_lastname = "Doe".to_owned();
    for event in &events {
        if let UserEvent::ProfileUpdated(p) = &event.event {
            expected_lastname = p.lastname.as_ref().unwrap().to.clone();
        }
        let instant = event
            .occurred_at()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let path = format!(
            "/api/v1/users/me/history?as_of={}",
            instant.replace('+', "%2B")
        );
        let response = app.get_with_token(&path, &user.token).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["user"]["lastname"],
            expected_lastname.as_str(),
            "as of {instant}"
        );
        assert_eq!(body["user"]["userId"], user.id.to_string());
    }
    let before = events[0].occurred_at() - chrono::Duration::seconds(1);
    let path = format!(
        "/api/v1/users/me/history?as_of={}",
        before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    problem(
        app.get_with_token(&path, &user.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

async fn only_moderators_read_other_histories_and_set_role_makes_one(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let viewer = app.register_user().await;
    let target = app.register_user().await;
    let path = format!("/api/v1/users/{}/history", target.id);

    problem(
        app.get_with_token(&path, &viewer.token).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // A validly signed token that claims the moderator role changes nothing.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": viewer.id.to_string(), "roles": ["moderator"], "exp": chrono::Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap();
    problem(
        app.get_with_token(&path, &forged).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    let output = app.cli(&["set-role", &viewer.id.to_string(), "moderator"]);
    succeeded(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("viewer -> moderator"));
    let last = app.events(viewer.id).await.pop().unwrap();
    assert_eq!(last.event.event_type(), "AccountStatusChanged");
    assert!(last.actor.encode().starts_with("operator:"));
    assert_eq!(
        app.row(viewer.id).await.unwrap().account_status(),
        Some("moderator")
    );

    let allowed = app.get_with_token(&path, &forged).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let page: Value = allowed.json().await.unwrap();
    assert_eq!(page["userId"], target.id.to_string());
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let unknown = format!("/api/v1/users/{}/history", uuid::Uuid::new_v4());
    problem(
        app.get_with_token(&unknown, &viewer.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get_with_token("/api/v1/users/xyz/history", &viewer.token)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Setting the same status again records nothing; a bad status is a usage error.
    let again = app.cli(&["set-role", &viewer.id.to_string(), "moderator"]);
    assert!(again.status.success());
    assert_eq!(
        app.events(viewer.id).await.last().unwrap().event_id,
        last.event_id
    );
    assert_eq!(
        app.cli(&["set-role", &viewer.id.to_string(), "admin"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        app.cli(&["set-role", &uuid::Uuid::new_v4().to_string(), "viewer"])
            .status
            .code(),
        Some(1)
    );
}

async fn the_history_command_prints_what_the_api_shows(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    app.put_me(&user.token, &json!({"firstname": "Cli"})).await;
    let output = app.cli(&["history", &user.id.to_string(), "--json"]);
    succeeded(&output);
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let api: Value = app
        .get_with_token("/api/v1/users/me/history", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(printed["events"], api["events"]);

    let text = app.cli(&["history", &user.id.to_string()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("ProfileUpdated")
            && text.contains("(current)")
            && text.contains("(overwritten)"),
        "{text}"
    );

    let registered_at = app.events(user.id).await[0]
        .occurred_at()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let as_of = app.cli(&[
        "history",
        &user.id.to_string(),
        "--as-of",
        &registered_at,
        "--json",
    ]);
    let as_of: Value = serde_json::from_slice(&as_of.stdout).unwrap();
    assert_eq!(as_of["user"]["firstname"], "John");
}

backend_tests!(
    paging_visits_every_event_exactly_once_newest_first,
    each_field_shows_from_to_and_whether_it_currently_wins,
    as_of_each_event_returns_the_state_after_it,
    only_moderators_read_other_histories_and_set_role_makes_one,
    the_history_command_prints_what_the_api_shows,
);
