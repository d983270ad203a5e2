//! Version-checked updates (If-Match through an LWT) and last-write-wins under
//! concurrency.

use futures::future::join_all;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp, problem};
use killrvideo_users::domain::UserEvent;
use killrvideo_users::domain::columns::Column;
use killrvideo_users::domain::projection::replay;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn twenty_concurrent_if_match_puts_have_exactly_one_winner(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let etag = app.etag(&user.token).await;
    let events_before = app.events(user.id).await.len();

    let attempts = (0..20).map(|i| {
        let (app, user, etag) = (&app, &user, &etag);
        async move {
            app.put_me_if_match(
                &user.token,
                etag,
                &json!({"firstname": format!("Writer{i}")}),
            )
            .await
        }
    });
    let responses = join_all(attempts).await;
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::OK => {
                let tag = response.headers()["etag"].to_str().unwrap().to_owned();
                let body: Value = response.json().await.unwrap();
                winners.push((tag, body));
            }
            StatusCode::PRECONDITION_FAILED => {
                let tag = response.headers()["etag"].to_str().unwrap().to_owned();
                let body = problem(response, StatusCode::PRECONDITION_FAILED).await;
                assert_eq!(body["current_etag"], tag.as_str());
                refused.push((tag, body));
            }
            other => panic!(
                "unexpected {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one 200");
    assert_eq!(refused.len(), 19, "nineteen 412s");
    let (winning_etag, winner) = &winners[0];
    assert_ne!(winning_etag, &etag, "a new ETag");

    let events = app.events(user.id).await;
    assert_eq!(events.len(), events_before + 1, "exactly one new event");
    let row = app.row(user.id).await.unwrap();
    assert_eq!(row.firstname(), winner["firstname"].as_str());
    assert_eq!(row.version(), Some(events.last().unwrap().event_id));
    for (tag, body) in &refused {
        assert_eq!(tag, winning_etag, "every 412 carries the winner's version");
        assert_eq!(body["current"]["firstname"], winner["firstname"]);
    }
}

async fn fifty_concurrent_plain_puts_all_land_and_each_column_keeps_its_latest_write(
    backend: Backend,
) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let attempts = (0..50).map(|i| {
        let (app, user) = (&app, &user);
        let body = match i % 3 {
            0 => json!({"firstname": format!("F{i}")}),
            1 => json!({"lastname": format!("L{i}")}),
            _ => json!({"firstname": format!("F{i}"), "lastname": format!("L{i}")}),
        };
        async move { app.put_me(&user.token, &body).await.status() }
    });
    let statuses = join_all(attempts).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    let events = app.events(user.id).await;
    let updates: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.event, UserEvent::ProfileUpdated(_)))
        .collect();
    assert_eq!(updates.len(), 50, "every accepted PUT is in the log");
    let mut written: Vec<String> = updates
        .iter()
        .filter_map(|e| match &e.event {
            UserEvent::ProfileUpdated(p) => p
                .firstname
                .as_ref()
                .or(p.lastname.as_ref())
                .map(|c| c.to.clone()),
            _ => None,
        })
        .collect();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), 50, "each request's own event");

    let row = app.row(user.id).await.unwrap();
    for column in [Column::Firstname, Column::Lastname] {
        let latest = updates
            .iter()
            .filter_map(|e| {
                let UserEvent::ProfileUpdated(p) = &e.event else {
                    return None;
                };
                let change = if column == Column::Firstname {
                    &p.firstname
                } else {
                    &p.lastname
                };
                change.as_ref().map(|c| (e.write_time, c.to.clone()))
            })
            .max()
            .unwrap();
        let cell = if column == Column::Firstname {
            &row.firstname
        } else {
            &row.lastname
        };
        let cell = cell.as_ref().unwrap();
        assert_eq!(
            cell.value, latest.1,
            "{column:?} holds the latest-timestamped write"
        );
        assert_eq!(
            cell.written_at, latest.0,
            "{column:?} carries that event's write time"
        );
    }
    assert_eq!(
        row.version(),
        updates
            .iter()
            .max_by_key(|e| e.write_time)
            .map(|e| e.event_id)
    );
}

async fn a_stale_etag_is_412_and_star_means_exists(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let stale = app.etag(&user.token).await;
    assert_eq!(
        app.put_me(&user.token, &json!({"firstname": "Plain"}))
            .await
            .status(),
        StatusCode::OK
    );
    let events_before = app.events(user.id).await.len();

    let refused = app
        .put_me_if_match(&user.token, &stale, &json!({"firstname": "Stale"}))
        .await;
    let body = problem(refused, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(body["current"]["firstname"], "Plain");
    let garbage = app
        .put_me_if_match(&user.token, "\"not-ours\"", &json!({"firstname": "Stale"}))
        .await;
    problem(garbage, StatusCode::PRECONDITION_FAILED).await;
    let weak = app
        .put_me_if_match(
            &user.token,
            &format!("W/{stale}"),
            &json!({"firstname": "Stale"}),
        )
        .await;
    problem(weak, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(
        app.events(user.id).await.len(),
        events_before,
        "no event for a rejected change"
    );
    assert_eq!(app.row(user.id).await.unwrap().firstname(), Some("Plain"));

    let fresh = body["current_etag"].as_str().unwrap().to_owned();
    let accepted = app
        .put_me_if_match(&user.token, &fresh, &json!({"firstname": "Checked"}))
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let next = accepted.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(next, fresh);
    assert_eq!(
        app.etag(&user.token).await,
        next,
        "GET agrees with the PUT's ETag"
    );
    let star = app
        .put_me_if_match(&user.token, "*", &json!({"lastname": "Star"}))
        .await;
    assert_eq!(star.status(), StatusCode::OK);
    assert_eq!(app.row(user.id).await.unwrap().lastname(), Some("Star"));
}

async fn an_empty_body_still_honours_if_match(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let stale = app.etag(&user.token).await;
    app.put_me(&user.token, &json!({"firstname": "Moved"}))
        .await;
    let response = app.put_me_if_match(&user.token, &stale, &json!({})).await;
    problem(response, StatusCode::PRECONDITION_FAILED).await;
}

/// The same race below HTTP, where nothing (no pre-check against the auth read) can
/// serialise the writers before the store's own check: all twenty carry the same
/// expected version into the LWT (the SQLite transaction).
async fn twenty_concurrent_version_checked_appends_have_exactly_one_winner(backend: Backend) {
    use killrvideo_users::clock::EventClock;
    use killrvideo_users::domain::events::{Actor, EventEnvelope, FieldChange, ProfileUpdated};
    use killrvideo_users::store::{Precondition, StoreError};
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let version = app.row(user.id).await.unwrap().version().unwrap();
    let events_before = app.events(user.id).await.len();
    let clock = EventClock::new();
    let envelopes: Vec<EventEnvelope> = (0..20)
        .map(|i| {
            EventEnvelope::new(
                user.id,
                clock.next_event_id(),
                Actor::User(user.id),
                None,
                UserEvent::ProfileUpdated(ProfileUpdated {
                    firstname: Some(FieldChange {
                        from: None,
                        to: format!("Store{i}"),
                    }),
                    lastname: None,
                }),
            )
        })
        .collect();
    let outcomes = join_all(
        envelopes
            .iter()
            .map(|e| app.store.append(e, Precondition::LatestEvent(version))),
    )
    .await;
    let applied: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_ok())
        .map(|(i, _)| i)
        .collect();
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    assert_eq!(conflicts, 19, "{outcomes:?}");
    let events = app.events(user.id).await;
    assert_eq!(events.len(), events_before + 1);
    assert_eq!(
        events.last().unwrap().event_id,
        envelopes[applied[0]].event_id
    );
    let row = app.row(user.id).await.unwrap();
    assert_eq!(
        row.firstname(),
        Some(format!("Store{}", applied[0]).as_str())
    );
    assert_eq!(row.version(), Some(envelopes[applied[0]].event_id));
}

/// Rounds of version-checked PUTs racing on one ETag, with plain PUTs among them. On
/// Cassandra a Paxos round can complete another writer's unfinished proposal under its
/// own, later ballot, which moves that event's write time in the log after its writer
/// projected it; the table must still be exactly what replaying the log gives, write
/// times included.
async fn racing_version_checked_puts_leave_the_table_equal_to_the_replayed_log(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    for round in 0..20 {
        let etag = app.etag(&user.token).await;
        let checked = (0..8).map(|i| {
            let (app, user, etag) = (&app, &user, &etag);
            async move {
                let body = json!({"firstname": format!("Checked{round}-{i}")});
                app.put_me_if_match(&user.token, etag, &body).await.status()
            }
        });
        let plain = (0..4).map(|i| {
            let (app, user) = (&app, &user);
            async move {
                let body = json!({"lastname": format!("Plain{round}-{i}")});
                app.put_me(&user.token, &body).await.status()
            }
        });
        let (checked, plain) = futures::join!(join_all(checked), join_all(plain));
        assert!(
            checked
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::PRECONDITION_FAILED),
            "{checked:?}"
        );
        assert!(plain.iter().all(|s| *s == StatusCode::OK), "{plain:?}");
    }
    let events = app.events(user.id).await;
    let replayed = replay(user.id, &events);
    // UserRow equality covers every value and every write time, the search terms too.
    assert_eq!(app.full_row(user.id).await.unwrap(), replayed);
}

backend_tests!(
    twenty_concurrent_version_checked_appends_have_exactly_one_winner,
    twenty_concurrent_if_match_puts_have_exactly_one_winner,
    fifty_concurrent_plain_puts_all_land_and_each_column_keeps_its_latest_write,
    a_stale_etag_is_412_and_star_means_exists,
    an_empty_body_still_honours_if_match,
    racing_version_checked_puts_leave_the_table_equal_to_the_replayed_log,
);

/// Crash points that only exist on Cassandra, where a version-checked write is two
/// steps (the embedded store does both in one transaction).
mod cassandra_crash_points {
    use killrvideo_test_support::{Api, Backend, Raw, TEST_KEYSPACE, TestApp, TestUser, problem};
    use killrvideo_users::clock::EventClock;
    use killrvideo_users::domain::events::{event_id_at, event_micros};
    use killrvideo_users::store::cassandra::CassandraStore;
    use reqwest::StatusCode;
    use scylla::value::CqlTimeuuid;
    use serde_json::json;
    use uuid::Uuid;

    /// A registered user on Cassandra, with their ETag and the version it names.
    async fn registered_user() -> (TestApp, TestUser, String, Uuid) {
        let app = TestApp::on(Backend::Cassandra).spawn().await;
        let user = app.register_user().await;
        let etag = app.etag(&user.token).await;
        let version = app.row(user.id).await.unwrap().version().unwrap();
        (app, user, etag, version)
    }

    /// The app's store, to write the log behind the service's back.
    fn cassandra(app: &TestApp) -> &CassandraStore {
        let Raw::Cassandra(store) = &app.raw else {
            unreachable!("the app runs on Cassandra")
        };
        store
    }

    /// The writer died after its LWT appended the event and before it projected it: the
    /// next conflicting writer catches the projection up, and its 412 carries the version
    /// the log really has.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_appended_without_its_projection_is_caught_up_by_the_next_conflict() {
        let (app, user, stale, version) = registered_user().await;
        let store = cassandra(&app);

        // Step 1 of a version-checked write, and nothing after it.
        let orphan = EventClock::new().next_event_id().uuid();
        let payload = r#"{"firstname":{"from":"John","to":"Orphan"}}"#;
        store
            .session()
            .query_unpaged(
                format!(
                    "UPDATE {TEST_KEYSPACE}.user_events SET event_type = 'ProfileUpdated', schema_version = 1, \
                     payload = ?, actor = ?, head = ? WHERE userid = ? AND event_id = ? IF head = ?"
                ),
                (
                    payload,
                    format!("user:{}", user.id),
                    CqlTimeuuid::from(orphan),
                    user.id,
                    CqlTimeuuid::from(orphan),
                    CqlTimeuuid::from(version),
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            app.row(user.id).await.unwrap().firstname(),
            Some("John"),
            "projection is behind"
        );

        let response = app
            .put_me_if_match(&user.token, &stale, &json!({"firstname": "Late"}))
            .await;
        let body = problem(response, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(
            body["current"]["firstname"], "Orphan",
            "the 412 shows the log's state"
        );
        let row = app.row(user.id).await.unwrap();
        assert_eq!(row.firstname(), Some("Orphan"), "the projection was healed");
        assert_eq!(row.version(), Some(orphan));
        let fresh = body["current_etag"].as_str().unwrap();
        let retried = app
            .put_me_if_match(&user.token, fresh, &json!({"firstname": "Late"}))
            .await;
        assert_eq!(retried.status(), StatusCode::OK);
    }

    /// A writer died between its proposal's accept and its commit, and a later round
    /// completed the proposal under its own ballot: the log now holds an event *older*
    /// than the current version with the highest write time, and `head` names it. The
    /// next conflicting writer projects it (re-projecting only from its own expected
    /// version would miss it, and every retry with the table's ETag would be 412).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_event_completed_under_a_new_ballot_is_projected_by_the_next_conflict() {
        let (app, user, etag, version) = registered_user().await;
        let store = cassandra(&app);

        // What the completion leaves: an event id from before the current version,
        // written (row and head) with a later write time than anything so far.
        let version_micros = event_micros(version).unwrap();
        let completed = event_id_at(version_micros - 1_000, 7, [1, 2, 3, 4, 5, 6]).uuid();
        let ballot_micros = chrono::Utc::now().timestamp_micros();
        store
            .session()
            .query_unpaged(
                format!(
                    "INSERT INTO {TEST_KEYSPACE}.user_events (userid, event_id, event_type, \
                     schema_version, payload, actor, head) VALUES (?, ?, 'ProfileUpdated', 1, ?, ?, ?) \
                     USING TIMESTAMP ?"
                ),
                (
                    user.id,
                    CqlTimeuuid::from(completed),
                    r#"{"firstname":{"from":"John","to":"Completed"}}"#,
                    format!("user:{}", user.id),
                    CqlTimeuuid::from(completed),
                    ballot_micros,
                ),
            )
            .await
            .unwrap();

        let response = app
            .put_me_if_match(&user.token, &etag, &json!({"firstname": "Next"}))
            .await;
        let body = problem(response, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(body["current"]["firstname"], "Completed");
        let row = app.row(user.id).await.unwrap();
        assert_eq!(
            row.version(),
            Some(completed),
            "the head event was projected"
        );
        assert_eq!(row.firstname(), Some("Completed"));
        let fresh = body["current_etag"].as_str().unwrap();
        let retried = app
            .put_me_if_match(&user.token, fresh, &json!({"firstname": "Next"}))
            .await;
        assert_eq!(retried.status(), StatusCode::OK);
        assert_eq!(app.row(user.id).await.unwrap().firstname(), Some("Next"));
    }
}
