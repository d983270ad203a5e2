//! The projection jobs: rebuild reproduces the live table, order does not matter, verify
//! names the drift and repair heals it, an interrupted rebuild resumes. Each test has a
//! store of its own (a fresh keyspace on Cassandra): the jobs scan whole tables.

use futures::future::join_all;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp, TestUser};
use killrvideo_users::domain::{EventEnvelope, UserRow};
use killrvideo_users::store::USERS_TABLE;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Every row of a table, keyed by user.
async fn table(app: &TestApp, name: &str) -> BTreeMap<Uuid, UserRow> {
    let rows = app.scanned_rows(name, 16).await;
    rows.into_iter().map(|row| (row.user_id, row)).collect()
}

/// Users under a concurrent mix of plain and version-checked updates, logins and a
/// role change.
async fn mixed_workload(app: &TestApp) -> Vec<TestUser> {
    let users = join_all((0..6).map(|_| app.register_user())).await;
    let writes = users.iter().enumerate().flat_map(|(u, user)| {
        (0..6).map(move |i| async move {
            let body = match i % 3 {
                0 => json!({"firstname": format!("F{u}-{i}")}),
                1 => json!({"lastname": format!("L{u}-{i}")}),
                _ => json!({"firstname": format!("F{u}-{i}"), "lastname": format!("L{u}-{i}")}),
            };
            if i % 2 == 0 {
                let etag = app.etag(&user.token).await;
                app.put_me_if_match(&user.token, &etag, &body)
                    .await
                    .status()
            } else {
                app.put_me(&user.token, &body).await.status()
            }
        })
    });
    let statuses = join_all(writes).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::PRECONDITION_FAILED),
        "{statuses:?}"
    );
    assert_eq!(
        app.login(&users[0].email, killrvideo_test_support::PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    app.set_role(users[1].id, "creator");
    users
}

async fn rebuilding_into_an_empty_table_reproduces_the_live_table_exactly(backend: Backend) {
    let app = TestApp::on(backend).isolated().spawn().await;
    mixed_workload(&app).await;
    let (code, output) = app.cli_text(&["rebuild", "--into", "users_rebuilt", "--parallel", "4"]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("rebuild into users_rebuilt"), "{output}");

    let live = table(&app, USERS_TABLE).await;
    let rebuilt = table(&app, "users_rebuilt").await;
    assert_eq!(live.len(), 6);
    // UserRow equality covers every value and every write time.
    assert_eq!(rebuilt, live);

    let (code, output) = app.cli_text(&["verify"]);
    assert_eq!(code, 0, "the live table is clean: {output}");
    app.drop_keyspace().await;
}

async fn replaying_in_reverse_or_shuffled_order_gives_the_same_table(backend: Backend) {
    let app = TestApp::on(backend).isolated().spawn().await;
    mixed_workload(&app).await;
    let mut events = app.scanned_events(16).await;
    let live = table(&app, USERS_TABLE).await;

    events.reverse();
    app.jobs.prepare_table("users_reversed").await.unwrap();
    for event in &events {
        app.jobs
            .project_into("users_reversed", event)
            .await
            .unwrap();
    }
    // A deterministic shuffle: order by a hash of the event id.
    events.sort_by_key(|e| {
        let bytes = e.event_id.as_bytes();
        bytes[15] as u32 * 7919 + bytes[9] as u32
    });
    app.jobs.prepare_table("users_shuffled").await.unwrap();
    for event in &events {
        app.jobs
            .project_into("users_shuffled", event)
            .await
            .unwrap();
    }
    assert_eq!(table(&app, "users_reversed").await, live);
    assert_eq!(table(&app, "users_shuffled").await, live);
    app.drop_keyspace().await;
}

async fn verify_names_the_drift_and_repair_heals_it(backend: Backend) {
    let app = TestApp::on(backend).isolated().spawn().await;
    let users = mixed_workload(&app).await;
    let (changed, deleted, behind) = (&users[2], &users[3], &users[4]);
    let before_changed = app.row(changed.id).await.unwrap();
    let before_deleted = app.row(deleted.id).await.unwrap();
    let stray = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp_micros();

    // A changed value, a deleted row and an extra row, written behind the service's back.
    app.raw_statement(
        &format!(
            "UPDATE {{ks}}.users SET firstname = 'Hacked' WHERE userid = {}",
            changed.id
        ),
        &format!(
            "UPDATE users SET firstname = 'Hacked', firstname_wt = {now} WHERE userid = '{}'",
            changed.id
        ),
    )
    .await;
    app.raw_statement(
        &format!("DELETE FROM {{ks}}.users WHERE userid = {}", deleted.id),
        &format!("DELETE FROM users WHERE userid = '{}'", deleted.id),
    )
    .await;
    app.raw_statement(
        &format!("INSERT INTO {{ks}}.users (userid, firstname) VALUES ({stray}, 'Ghost')"),
        &format!(
            "INSERT INTO users (userid, firstname, firstname_wt) VALUES ('{stray}', 'Ghost', {now})"
        ),
    )
    .await;
    // And a projection behind its log: an event that was never projected.
    let unprojected = EventEnvelope::new(
        behind.id,
        killrvideo_users::clock::EventClock::new().next_event_id(),
        killrvideo_users::domain::Actor::User(behind.id),
        None,
        killrvideo_users::domain::UserEvent::ProfileUpdated(
            killrvideo_users::domain::events::ProfileUpdated {
                firstname: None,
                lastname: Some(killrvideo_users::domain::FieldChange {
                    from: None,
                    to: "Unprojected".into(),
                }),
            },
        ),
    );
    let payload = unprojected.event.payload_json().replace('\'', "''");
    app.raw_statement(
        &format!(
            "INSERT INTO {{ks}}.user_events (userid, event_id, event_type, schema_version, payload, actor, head) \
             VALUES ({}, {}, 'ProfileUpdated', 1, '{payload}', 'user:{}', {}) USING TIMESTAMP {}",
            behind.id, unprojected.event_id, behind.id, unprojected.event_id, unprojected.write_time
        ),
        &format!(
            "INSERT INTO user_events (userid, event_time, event_id, event_type, schema_version, payload, actor) \
             VALUES ('{}', {}, '{}', 'ProfileUpdated', 1, '{payload}', 'user:{}')",
            behind.id, unprojected.write_time, unprojected.event_id, behind.id
        ),
    )
    .await;

    let (code, output) = app.cli_text(&["verify"]);
    assert_eq!(code, 1, "drift makes verify fail: {output}");
    let line = |user: Uuid, kind: &str| {
        output
            .lines()
            .any(|l| l.contains(&user.to_string()) && l.contains(kind))
    };
    assert!(
        line(changed.id, "orphan change (no event) in firstname"),
        "{output}"
    );
    assert!(line(deleted.id, "missing row"), "{output}");
    assert!(line(stray, "orphan row"), "{output}");
    assert!(
        line(behind.id, "projection behind the log in lastname"),
        "{output}"
    );
    assert!(output.contains("4 drifting users"), "{output}");
    for clean in [&users[0], &users[1], &users[5]] {
        assert!(
            !output.contains(&clean.id.to_string()),
            "{} is clean: {output}",
            clean.id
        );
    }

    let (code, output) = app.cli_text(&["verify", "--repair"]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("repaired 4 users; 0 drifts remain"),
        "{output}"
    );
    let (code, output) = app.cli_text(&["verify"]);
    assert_eq!(code, 0, "clean after repair: {output}");

    let healed = app.row(changed.id).await.unwrap();
    assert_eq!(healed.firstname(), before_changed.firstname());
    assert_eq!(
        healed.lastname, before_changed.lastname,
        "untouched cells keep their write times"
    );
    let restored = app.row(deleted.id).await.unwrap();
    assert_eq!(restored.firstname(), before_deleted.firstname());
    assert_eq!(restored.email(), before_deleted.email());
    assert_eq!(
        app.get_me(&deleted.token).await.status(),
        StatusCode::OK,
        "the user can sign in again"
    );
    assert_eq!(app.row(stray).await, None, "the extra row is gone");
    assert_eq!(
        app.row(behind.id).await.unwrap().lastname(),
        Some("Unprojected")
    );
    // The repair is itself in the log, so the history shows who restated what.
    let types: Vec<&str> = app
        .events(changed.id)
        .await
        .iter()
        .map(|e| e.event.event_type())
        .collect();
    assert_eq!(types.last(), Some(&"ProjectionRepaired"));
    app.drop_keyspace().await;
}

async fn an_interrupted_rebuild_resumes_to_the_same_result(backend: Backend) {
    let app = TestApp::on(backend).isolated().spawn().await;
    mixed_workload(&app).await;
    let (code, output) = app.cli_text(&[
        "rebuild",
        "--into",
        "users_resumed",
        "--parallel",
        "1",
        "--stop-after-ranges",
        "5",
    ]);
    assert_eq!(code, 1, "an interruption is a failure: {output}");
    assert!(output.contains("--resume"), "{output}");
    app.jobs.prepare_table(USERS_TABLE).await.unwrap();
    let partial = app
        .jobs
        .finished_ranges("rebuild:users_resumed")
        .await
        .unwrap();
    assert_eq!(partial.len(), 5, "five ranges checkpointed");

    let (code, output) = app.cli_text(&["rebuild", "--into", "users_resumed", "--resume"]);
    assert_eq!(code, 0, "{output}");
    let total = app
        .jobs
        .scan_ranges(killrvideo_users::app::jobs::DEFAULT_SPLITS)
        .len();
    assert!(
        output.contains(&format!("5 of {total} ranges skipped")),
        "{output}"
    );
    assert_eq!(
        table(&app, "users_resumed").await,
        table(&app, USERS_TABLE).await
    );
    app.drop_keyspace().await;
}

backend_tests!(
    rebuilding_into_an_empty_table_reproduces_the_live_table_exactly,
    replaying_in_reverse_or_shuffled_order_gives_the_same_table,
    verify_names_the_drift_and_repair_heals_it,
    an_interrupted_rebuild_resumes_to_the_same_result,
);
