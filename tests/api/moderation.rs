//! The moderators' endpoints: the user search (fragments, case, accents, paging, the
//! search projection under concurrent writes, rebuild and verify) and assigning and
//! revoking the moderator role.

use crate::contract::{View, assert_user_object};
use futures::future::join_all;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp, TestUser, problem, succeeded};
use killrvideo_users::domain::projection::replay;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const SEARCH: &str = "/api/v1/moderation/users";

/// Eight random lowercase letters: makes names unique to a test in a shared keyspace.
fn tag() -> String {
    Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .map(|c| char::from(b'a' + (c.to_digit(16).unwrap() as u8 % 26)))
        .take(8)
        .collect()
}

/// A logged-in moderator.
async fn moderator(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    app.set_role(user.id, "moderator");
    user
}

/// Searches as `token`; returns the status, the body and the Link header.
async fn search(app: &TestApp, token: &str, query: &str) -> (StatusCode, Value, Option<String>) {
    let response = app
        .client
        .get(app.url(SEARCH))
        .query(&[("q", query)])
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    let status = response.status();
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.expect("JSON"), link)
}

/// The ids in a search answer, checking each object on the way.
fn ids(body: &Value) -> Vec<Uuid> {
    body.as_array()
        .unwrap_or_else(|| panic!("an array: {body}"))
        .iter()
        .map(|user| {
            assert_user_object(user, View::Owner, "search result");
            Uuid::parse_str(user["userId"].as_str().unwrap()).unwrap()
        })
        .collect()
}

async fn search_matches_fragments_of_each_field_ignoring_case_and_accents(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let moderator = moderator(&app).await;
    let tag = tag();
    let email = format!("mail-{tag}@example.com");
    let johnny = app
        .seed_user(&email, &format!("Jöhnny{tag}"), &format!("Ångström{tag}"))
        .await;
    let other = app
        .seed_user(
            &format!("other-{tag}@example.com"),
            &format!("Jonah{tag}"),
            "Smith",
        )
        .await;
    let found = |query: String| {
        let (app, token) = (&app, &moderator.token);
        async move {
            let (status, body, _) = search(app, token, &query).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            let mut ids = ids(&body);
            ids.sort();
            ids
        }
    };
    // A fragment of each field, in the middle of the value.
    assert_eq!(found(format!("hnny{tag}")).await, [johnny]);
    assert_eq!(found(format!("gström{tag}")).await, [johnny]);
    assert_eq!(found(format!("il-{tag}@exa")).await, [johnny]);
    // Case, accents and surrounding whitespace do not matter.
    assert_eq!(
        found(format!("  JOHNNY{} ", tag.to_uppercase())).await,
        [johnny]
    );
    assert_eq!(found(format!("angstrom{tag}")).await, [johnny]);
    assert_eq!(found(format!("Jo\u{308}hnny{tag}")).await, [johnny]);
    // The tag alone is in both users' names.
    let mut both = vec![johnny, other];
    both.sort();
    assert_eq!(found(tag.clone()).await, both);
    // Every trigram of the fragment is among the value's, but not in one run: the
    // store's candidate is checked against the fragment itself and dropped.
    let last = tag.chars().last().unwrap();
    app.seed_user(
        &format!("near-{tag}@example.com"),
        "Near",
        &format!("{tag}q-{last}qz"),
    )
    .await;
    assert!(found(format!("{tag}qz")).await.is_empty());
}

async fn blank_queries_answer_an_empty_array_and_short_ones_422(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let moderator = moderator(&app).await;
    for blank in ["", "   "] {
        let (status, body, link) = search(&app, &moderator.token, blank).await;
        assert_eq!((status, body, link), (StatusCode::OK, json!([]), None));
    }
    let absent = app.get_with_token(SEARCH, &moderator.token).await;
    assert_eq!(absent.status(), StatusCode::OK);
    assert_eq!(absent.json::<Value>().await.unwrap(), json!([]));
    let short = app
        .get_with_token(&format!("{SEARCH}?q=%20jo%20"), &moderator.token)
        .await;
    let body = problem(short, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("q: must have at least 3 characters"),
        "{body}"
    );
}

async fn results_are_paged_by_fifty_with_a_link_to_the_next_page(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let moderator = moderator(&app).await;
    let tag = tag();
    let seeded: Vec<Uuid> = join_all((0..57).map(|i| {
        let (app, tag) = (&app, &tag);
        async move {
            app.seed_user(
                &format!("page-{i}-{}@example.com", Uuid::new_v4().simple()),
                &format!("Page{tag}"),
                &format!("Number{i}"),
            )
            .await
        }
    }))
    .await;
    let (status, first, link) = search(&app, &moderator.token, &format!("page{tag}")).await;
    assert_eq!(status, StatusCode::OK);
    let first = ids(&first);
    assert_eq!(first.len(), 50);
    let link = link.expect("a Link to the next page");
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.split_once(">; rel=\"next\""))
        .map(|(url, _)| url.to_owned())
        .unwrap_or_else(|| panic!("a next link: {link}"));
    assert!(next.starts_with(SEARCH), "{next}");
    let response = app.get_with_token(&next, &moderator.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("link").is_none(), "the last page");
    let second = ids(&response.json().await.unwrap());
    let mut all: Vec<Uuid> = first.iter().chain(&second).copied().collect();
    all.sort();
    let mut expected = seeded.clone();
    expected.sort();
    assert_eq!(all, expected, "every user once, across the pages");

    let bad = app
        .get_with_token(&format!("{SEARCH}?q=abc&cursor=nope"), &moderator.token)
        .await;
    problem(bad, StatusCode::BAD_REQUEST).await;
}

async fn concurrent_first_and_last_name_changes_are_both_found(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let moderator = moderator(&app).await;
    for round in 0..3 {
        let user = app.register_user().await;
        let (first, last) = (format!("Firstly{}", tag()), format!("Lastly{}", tag()));
        let (first_body, last_body) = (json!({"firstname": first}), json!({"lastname": last}));
        let (a, b) = futures::join!(
            app.put_me(&user.token, &first_body),
            app.put_me(&user.token, &last_body),
        );
        assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
        for name in [&first, &last] {
            let (status, body, _) = search(&app, &moderator.token, name).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(ids(&body), [user.id], "round {round}: {name}");
        }
        // The old names no longer find the user.
        let (_, body, _) = search(&app, &moderator.token, "John").await;
        assert!(!ids(&body).contains(&user.id), "round {round}");
        // The search projection is exactly what the log implies.
        let events = app.events(user.id).await;
        assert_eq!(
            app.full_row(user.id).await.unwrap(),
            replay(user.id, &events)
        );
    }
}

async fn rebuild_restores_the_search_and_verify_watches_it(backend: Backend) {
    let app = TestApp::on(backend).isolated().spawn().await;
    let moderator = moderator(&app).await;
    let tag = tag();
    let users: Vec<TestUser> = join_all((0..4).map(|_| app.register_user())).await;
    for (i, user) in users.iter().enumerate() {
        let response = app
            .put_me(
                &user.token,
                &json!({"firstname": format!("Rebuilt{tag}{i}")}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let query = format!("rebuilt{tag}");
    let (_, before, _) = search(&app, &moderator.token, &query).await;
    let before = ids(&before);
    assert_eq!(before.len(), 4);

    // Empty the table, search projection and all, then rebuild it from the log.
    app.raw_statement(
        "TRUNCATE {ks}.users",
        "DELETE FROM users; DELETE FROM users_search_terms;",
    )
    .await;
    assert_eq!(app.full_row(users[0].id).await, None, "emptied");
    let output = app.cli(&["rebuild"]);
    succeeded(&output);
    let (_, after, _) = search(&app, &moderator.token, &query).await;
    assert_eq!(ids(&after), before, "the same users, in the same order");

    // Damage what the search reads for one user: their first name's terms.
    let victim = users[1].id;
    app.raw_statement(
        &format!("UPDATE {{ks}}.users SET firstname_search = {{'zzq'}} WHERE userid = {victim}"),
        &format!(
            "DELETE FROM users_search_terms WHERE userid = '{victim}' AND field = 'firstname_search';
             INSERT INTO users_search_terms (field, term, userid) VALUES ('firstname_search', 'zzq', '{victim}');"
        ),
    )
    .await;
    let (_, damaged, _) = search(&app, &moderator.token, &query).await;
    assert!(!ids(&damaged).contains(&victim));
    let output = app.cli(&["verify"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&victim.to_string()) && l.contains("firstname_search")),
        "{stdout}"
    );
    assert!(stdout.contains("1 drifting users"), "{stdout}");
    let output = app.cli(&["verify", "--repair"]);
    succeeded(&output);
    let (_, healed, _) = search(&app, &moderator.token, &query).await;
    assert_eq!(ids(&healed), before);
    let (_, stray, _) = search(&app, &moderator.token, "zzq").await;
    assert_eq!(stray, json!([]), "the stray term is gone");
    let output = app.cli(&["verify"]);
    succeeded(&output);
    app.drop_keyspace().await;
}

async fn only_moderators_by_their_stored_role_may_search_or_change_roles(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let viewer = app.register_user().await;
    let target = app.register_user().await;
    // A token that claims the moderator role is still a viewer's token.
    let forged = app
        .jwt
        .issue(viewer.id, "moderator", chrono::Utc::now())
        .unwrap();
    for token in [&viewer.token, &forged] {
        let (status, _, _) = search(&app, token, "john").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        for action in ["assign-moderator", "revoke-moderator"] {
            let response = app
                .post_with_token(&format!("{SEARCH}/{}/{action}", target.id), token)
                .await;
            problem(response, StatusCode::FORBIDDEN).await;
        }
    }
    assert_eq!(
        app.row(target.id).await.unwrap().account_status(),
        Some("viewer")
    );
    let unauthenticated = app.client.get(app.url(SEARCH)).send().await.unwrap();
    problem(unauthenticated, StatusCode::UNAUTHORIZED).await;
}

async fn assign_and_revoke_record_events_by_the_moderator(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let moderator = moderator(&app).await;
    let target = app.register_user().await;
    let assign = format!("{SEARCH}/{}/assign-moderator", target.id);
    let events_before = app.events(target.id).await.len();

    let response = app.post_with_token(&assign, &moderator.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_user_object(&body, View::Owner, "assign answer");
    assert_eq!(body["accountStatus"], "moderator");
    assert!(
        body["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("moderator"))
    );
    let events = app.events(target.id).await;
    assert_eq!(events.len(), events_before + 1);
    let last = events.last().unwrap();
    assert_eq!(last.event.event_type(), "AccountStatusChanged");
    assert_eq!(last.actor.encode(), format!("user:{}", moderator.id));
    assert_eq!(last.request_id.as_deref().map(str::len), Some(36));
    assert_eq!(
        app.row(target.id).await.unwrap().account_status(),
        Some("moderator")
    );
    // The history shows who did it.
    let history: Value = app
        .get_with_token(
            &format!("/api/v1/users/{}/history", target.id),
            &moderator.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["events"][0]["type"], "AccountStatusChanged");
    assert_eq!(
        history["events"][0]["actor"],
        format!("user:{}", moderator.id)
    );

    // Repeating it changes nothing.
    let again = app.post_with_token(&assign, &moderator.token).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(app.events(target.id).await.len(), events_before + 1);

    // The new moderator's very next request can search.
    let (status, _, _) = search(&app, &target.token, "john").await;
    assert_eq!(status, StatusCode::OK);

    let revoke = format!("{SEARCH}/{}/revoke-moderator", target.id);
    let response = app.post_with_token(&revoke, &moderator.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["accountStatus"], &body["roles"]),
        (&json!("viewer"), &json!(["viewer"]))
    );
    assert_eq!(app.events(target.id).await.len(), events_before + 2);
    // The demoted user's next request already sees it.
    let (status, _, _) = search(&app, &target.token, "john").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let again = app.post_with_token(&revoke, &moderator.token).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(app.events(target.id).await.len(), events_before + 2);

    // A suspended account is an operator's to reinstate; unknown and bad ids.
    app.set_role(target.id, "suspended");
    let refused = app.post_with_token(&assign, &moderator.token).await;
    problem(refused, StatusCode::CONFLICT).await;
    assert_eq!(
        app.row(target.id).await.unwrap().account_status(),
        Some("suspended")
    );
    let unknown = format!("{SEARCH}/{}/assign-moderator", Uuid::new_v4());
    problem(
        app.post_with_token(&unknown, &moderator.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let garbage = format!("{SEARCH}/not-a-uuid/revoke-moderator");
    problem(
        app.post_with_token(&garbage, &moderator.token).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

async fn the_last_moderator_cannot_revoke_themself(backend: Backend) {
    // A store of its own: the rule counts every moderator in it.
    let app = TestApp::on(backend).isolated().spawn().await;
    let first = moderator(&app).await;
    let revoke = |user: &TestUser| format!("{SEARCH}/{}/revoke-moderator", user.id);
    let events_before = app.events(first.id).await.len();
    let refused = app.post_with_token(&revoke(&first), &first.token).await;
    let body = problem(refused, StatusCode::CONFLICT).await;
    assert!(
        body["detail"].as_str().unwrap().contains("last moderator"),
        "{body}"
    );
    assert_eq!(
        app.events(first.id).await.len(),
        events_before,
        "nothing recorded"
    );
    assert_eq!(
        app.row(first.id).await.unwrap().account_status(),
        Some("moderator")
    );

    // With a second moderator, the first may step down; the second is then the last.
    let second = app.register_user().await;
    let assign = format!("{SEARCH}/{}/assign-moderator", second.id);
    assert_eq!(
        app.post_with_token(&assign, &first.token).await.status(),
        StatusCode::OK
    );
    let stepped_down = app.post_with_token(&revoke(&first), &first.token).await;
    assert_eq!(stepped_down.status(), StatusCode::OK);
    assert_eq!(
        app.row(first.id).await.unwrap().account_status(),
        Some("viewer")
    );
    let (status, _, _) = search(&app, &first.token, "john").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no longer a moderator");
    problem(
        app.post_with_token(&revoke(&second), &second.token).await,
        StatusCode::CONFLICT,
    )
    .await;

    // Two moderators revoking each other at once: one of them remains.
    let third = app.register_user().await;
    let assign = format!("{SEARCH}/{}/assign-moderator", third.id);
    assert_eq!(
        app.post_with_token(&assign, &second.token).await.status(),
        StatusCode::OK
    );
    let (revoke_third, revoke_second) = (revoke(&third), revoke(&second));
    let (a, b) = futures::join!(
        app.post_with_token(&revoke_third, &second.token),
        app.post_with_token(&revoke_second, &third.token),
    );
    // One goes through. The other is refused: with 409 if it held the lease second,
    // or with 403 if its caller had already been demoted when it was authorised.
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert!(
        statuses == [StatusCode::OK, StatusCode::FORBIDDEN]
            || statuses == [StatusCode::OK, StatusCode::CONFLICT],
        "{statuses:?}"
    );
    let mut moderators = 0;
    for id in [second.id, third.id] {
        if app.row(id).await.unwrap().account_status() == Some("moderator") {
            moderators += 1;
        }
    }
    assert_eq!(moderators, 1, "exactly one moderator remains");
    app.drop_keyspace().await;
}

backend_tests!(
    search_matches_fragments_of_each_field_ignoring_case_and_accents,
    blank_queries_answer_an_empty_array_and_short_ones_422,
    results_are_paged_by_fifty_with_a_link_to_the_next_page,
    concurrent_first_and_last_name_changes_are_both_found,
    rebuild_restores_the_search_and_verify_watches_it,
    only_moderators_by_their_stored_role_may_search_or_change_roles,
    assign_and_revoke_record_events_by_the_moderator,
    the_last_moderator_cannot_revoke_themself,
);
