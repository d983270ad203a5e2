//! Micro-benchmarks of the pure request path: validate → decide → project/apply, and
//! JWT verification. `cargo bench --bench domain`.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use killrvideo_users::auth::jwt::JwtKeys;
use killrvideo_users::domain::decide;
use killrvideo_users::domain::events::{
    Actor, EventEnvelope, UserEvent, UserRegistered, event_id_at,
};
use killrvideo_users::domain::profile::ProfileChanges;
use killrvideo_users::domain::projection::{project, replay};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Duration;
use uuid::Uuid;

fn domain_path(c: &mut Criterion) {
    let user = Uuid::new_v4();
    let registered = EventEnvelope::new(
        user,
        event_id_at(1_000_000, 0, [1; 6]),
        Actor::User(user),
        None,
        UserEvent::UserRegistered(UserRegistered {
            email: "jane@example.com".into(),
            firstname: "John".into(),
            lastname: "Doe".into(),
            account_status: "viewer".into(),
        }),
    );
    let row = replay(user, [&registered]);
    let body = r#"{"firstname": "  Jane ", "lastname": "Smith"}"#;

    c.bench_function(
        "put_body: parse + validate + decide + project + apply",
        |b| {
            b.iter(|| {
                let Value::Object(map) = serde_json::from_str::<Value>(black_box(body)).unwrap()
                else {
                    unreachable!()
                };
                let changes = ProfileChanges::from_json(map).unwrap();
                let event = decide::update_profile(&row, changes).unwrap();
                let envelope = EventEnvelope::new(
                    user,
                    event_id_at(2_000_000, 0, [1; 6]),
                    Actor::User(user),
                    None,
                    event,
                );
                let mut next = row.clone();
                next.apply(&project(&envelope));
                black_box(next)
            })
        },
    );

    c.bench_function("validate only: ProfileChanges::from_json", |b| {
        let Value::Object(map) = json!({"firstname": "  Jane ", "lastName": "Smith"}) else {
            unreachable!()
        };
        b.iter(|| black_box(ProfileChanges::from_json(black_box(map.clone())).unwrap()))
    });
}

fn jwt(c: &mut Criterion) {
    let keys = JwtKeys::new(
        b"bench-secret-bench-secret-bench-secret",
        Duration::from_secs(1800),
    );
    let token = keys.issue(Uuid::new_v4(), "viewer", Utc::now()).unwrap();
    c.bench_function("jwt: verify HS256", |b| {
        b.iter(|| black_box(keys.verify(black_box(&token)).unwrap()))
    });
}

criterion_group!(benches, domain_path, jwt);
criterion_main!(benches);
