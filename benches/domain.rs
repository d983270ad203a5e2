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

/// What sealing costs per event: a `ProfileUpdated` with both names (four values: two
/// `from`, two `to`) sealed and opened with the user's data key, and one data key
/// unwrapped (a cache miss).
fn sealing(c: &mut Criterion) {
    use killrvideo_users::store::sealing::{DataKey, Kek, KeyRing};
    let key = DataKey::random();
    let event = Uuid::now_v1(&[1; 6]);
    let values = [
        ("firstname.from", "Jane"),
        ("firstname.to", "Janet"),
        ("lastname.from", "Smith"),
        ("lastname.to", "Smith-Jones"),
    ];
    c.bench_function("sealing: seal a ProfileUpdated (4 values)", |b| {
        b.iter(|| {
            for (field, plain) in values {
                black_box(key.seal(event, field, black_box(plain)));
            }
        })
    });
    let sealed: Vec<(&str, String)> = values
        .iter()
        .map(|(field, plain)| (*field, key.seal(event, field, plain)))
        .collect();
    c.bench_function("sealing: open a ProfileUpdated (4 values)", |b| {
        b.iter(|| {
            for (field, value) in &sealed {
                black_box(key.open(event, field, black_box(value)).unwrap());
            }
        })
    });
    let ring = KeyRing::new(Kek::random(), vec![]);
    let user = Uuid::new_v4();
    let (_, wrapped) = ring.new_data_key(user);
    c.bench_function("sealing: unwrap a data key", |b| {
        b.iter(|| black_box(ring.unwrap(user, black_box(&wrapped)).unwrap()))
    });
}

criterion_group!(benches, domain_path, jwt, sealing);
criterion_main!(benches);
