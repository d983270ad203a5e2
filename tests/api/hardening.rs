//! The hostile-client probe's findings, each reproduced: parallel password guessing,
//! slow and silent connections, oversized keys and ids, ambiguous requests, and the
//! metrics that show an operator all of it.

use futures::future::join_all;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, PASSWORD, TestApp, problem, unique_email};
use killrvideo_users::domain::login::{MAX_FAILURES, MAX_GUESSES_PER_ACCOUNT};
use killrvideo_users::http::Limits;
use reqwest::StatusCode;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Logins all sent at once: every request is opened first, then they are released
/// together, as the probe did. Returns the statuses in order.
async fn at_once(app: &TestApp, logins: Vec<(reqwest::Client, String, String)>) -> Vec<StatusCode> {
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(logins.len()));
    let requests = logins.into_iter().map(|(client, email, password)| {
        let (gate, url) = (std::sync::Arc::clone(&gate), app.url("/api/v1/users/login"));
        async move {
            let request = client
                .post(url)
                .json(&json!({"email": email, "password": password}));
            gate.wait().await;
            request.send().await.expect("POST").status()
        }
    });
    join_all(requests).await
}

/// 120 guesses for one account from one address, released together, with the right
/// password at position 70: at most the threshold's number are ever checked, on one
/// instance or on two sharing the store. Before the fix all 120 were checked (the
/// count was read before the argon2 wait) and the right one got in.
async fn parallel_guesses_from_one_address_are_evaluated_at_most_the_threshold(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let victim = app.register_user().await;
    let beside = match backend {
        Backend::Cassandra => Some(TestApp::on(Backend::Cassandra).beside(&app).spawn().await),
        Backend::Embedded => None,
    };
    let before: u64 =
        app.passwords.verifications() + beside.as_ref().map_or(0, |b| b.passwords.verifications());
    let logins: Vec<_> = (0..120)
        .map(|i| {
            let password = if i == 70 {
                PASSWORD.to_owned()
            } else {
                format!("wrong guess {i}")
            };
            (app.client.clone(), victim.email.clone(), password)
        })
        .collect();
    // With two instances, each gets every other guess.
    let statuses = match &beside {
        None => at_once(&app, logins).await,
        Some(other) => {
            let (even, odd): (Vec<_>, Vec<_>) = logins
                .into_iter()
                .enumerate()
                .partition(|(i, _)| i % 2 == 0);
            let strip = |v: Vec<(usize, (reqwest::Client, String, String))>| {
                v.into_iter().map(|(_, l)| l).collect::<Vec<_>>()
            };
            let (a, b) = futures::join!(at_once(&app, strip(even)), at_once(other, strip(odd)));
            a.into_iter().chain(b).collect()
        }
    };
    let evaluated = app.passwords.verifications()
        + beside.as_ref().map_or(0, |b| b.passwords.verifications())
        - before;
    assert!(
        evaluated <= u64::from(MAX_FAILURES),
        "{evaluated} guesses were checked; the budget is {MAX_FAILURES}"
    );
    assert!(evaluated >= 1, "some guesses are checked");
    let successes = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    // Two instances racing for one budget's lightweight transaction can lose a Paxos
    // round past the contention timeout: that guess is answered 503, unchecked.
    let unavailable = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(successes + refused + unavailable, 120, "{statuses:?}");
    assert!(unavailable <= 12, "a few at most: {statuses:?}");
    assert!(successes <= 1);
}

/// Guesses from many addresses are bounded by the account's own ceiling. They come in
/// bursts of sixteen, each from addresses of its own: a whole ceiling's worth at once
/// would also overflow the hash queue, whose 503s give their guesses back.
async fn a_distributed_guesser_meets_the_account_ceiling(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let victim = app.register_user().await;
    let before = app.passwords.verifications();
    let addresses = u8::try_from(MAX_GUESSES_PER_ACCOUNT + 30).unwrap();
    let mut statuses = Vec::new();
    for burst in (0..addresses).collect::<Vec<_>>().chunks(16) {
        let logins: Vec<_> = burst
            .iter()
            .map(|n| {
                (
                    app.client_from([127, 0, 1, n + 1]),
                    victim.email.clone(),
                    format!("wrong guess {n}"),
                )
            })
            .collect();
        statuses.extend(at_once(&app, logins).await);
    }
    // On Cassandra, sixteen logins racing for one account's budget can lose a Paxos
    // round past the contention timeout on a loaded machine: that guess is answered
    // 503, unchecked, and the spare addresses still reach the ceiling. The embedded
    // store has no such race, so it is held to none.
    let unavailable = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(refused + unavailable, statuses.len(), "{statuses:?}");
    let contention_allowance = if backend == Backend::Cassandra { 12 } else { 0 };
    assert!(unavailable <= contention_allowance, "{statuses:?}");
    let evaluated = app.passwords.verifications() - before;
    assert_eq!(
        evaluated,
        u64::from(MAX_GUESSES_PER_ACCOUNT),
        "the account's ceiling, exactly: each address guessed once"
    );
    // The owner, from an address of their own, is throttled too: the price of a
    // ceiling (docs/security.md).
    let owner = app
        .login_from([127, 0, 2, 1], &victim.email, PASSWORD)
        .await;
    problem(owner, StatusCode::UNAUTHORIZED).await;
}

/// An attacker's failures from one address do not stop the owner on another.
async fn failures_from_one_address_do_not_lock_the_owner_out_elsewhere(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let owner = app.register_user().await;
    for _ in 0..10 {
        let response = app
            .login_from([127, 0, 0, 3], &owner.email, "attacker's guess")
            .await;
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    // The attacker's address is throttled, even with the right password...
    let throttled = app.login_from([127, 0, 0, 3], &owner.email, PASSWORD).await;
    problem(throttled, StatusCode::UNAUTHORIZED).await;
    // ...and the owner, elsewhere, gets in.
    let owner_login = app.login_from([127, 0, 0, 2], &owner.email, PASSWORD).await;
    assert_eq!(owner_login.status(), StatusCode::OK);
}

/// Guess budgets on the embedded store: how many rows there are.
fn budget_rows(app: &TestApp) -> i64 {
    app.sqlite()
        .query_row("SELECT COUNT(*) FROM login_budgets", [], |r| r.get(0))
        .unwrap()
}

/// SQLite's budgets expire like Cassandra's: one whose window has passed is swept
/// away by a later login.
async fn expired_budgets_are_swept_from_the_embedded_store(backend: Backend) {
    if backend == Backend::Cassandra {
        // Cassandra's rows carry a TTL: the database expires them itself.
        return;
    }
    let app = TestApp::on(backend).spawn().await;
    let long_ago = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    app.raw_statement(
        "",
        &format!(
            "INSERT INTO login_budgets (email, scope, used, pending, window_start, expires_at) \
             VALUES ('old@example.com', '*', 3, 0, {long_ago}, {})",
            long_ago + 900_000_000
        ),
    )
    .await;
    assert_eq!(budget_rows(&app), 1);
    app.login(&unique_email(), "a wrong password").await;
    let connection = app.sqlite();
    let old: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM login_budgets WHERE email = 'old@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0, "the expired budget is gone");
}

/// A client's request id is kept only when short and printable; otherwise a fresh one
/// replaces it, in the answer and in the event.
async fn unusable_request_ids_are_replaced(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    for (id, kept) in [
        ("trace-123".to_owned(), true),
        ("x".repeat(128), true),
        ("x".repeat(129), false),
        ("has space".to_owned(), false),
    ] {
        let response = app
            .client
            .put(app.url("/api/v1/users/me"))
            .bearer_auth(&user.token)
            .header("x-request-id", &id)
            .json(&json!({"firstname": "Traced"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let recorded = app
            .events(user.id)
            .await
            .last()
            .unwrap()
            .request_id
            .clone()
            .unwrap();
        assert_eq!(recorded, echoed);
        if kept {
            assert_eq!(echoed, id);
        } else {
            assert_ne!(echoed, id);
            assert!(
                uuid::Uuid::parse_str(&echoed).is_ok(),
                "a generated id: {echoed}"
            );
        }
    }
}

/// Raw HTTP/1.1 to the server, for what a client library will not send.
fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// HTTP/1.1 needs exactly one Host (RFC 9112 §3.2).
async fn http11_without_one_host_is_a_400(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    for request in [
        &b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/users/me HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_exchange(&app, request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let fine = raw_exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

/// Reads until the server closes the connection or `limit` passes; true when it
/// closed it.
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err)
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Slow clients cannot hold connections: an unfinished head, a head trickled a byte
/// at a time, a silent connection and an idle keep-alive connection are all closed
/// once the head read timeout passes (before the fix they were all still open after
/// 70 s). The bound given here is ten times the timeout.
async fn slow_and_silent_connections_are_closed(backend: Backend) {
    let timeout = Duration::from_millis(500);
    let limits = Limits {
        header_read_timeout: timeout,
        ..Limits::default()
    };
    let app = TestApp::on(backend).limits(limits).spawn().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let connect = || TcpStream::connect(&address).unwrap();

    let mut unfinished = connect();
    unfinished
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    assert!(
        closed_by_server(&mut unfinished, timeout * 10),
        "unfinished head"
    );

    let mut trickled = connect();
    let writer = {
        let mut stream = trickled.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Trickle: aaaaaaaaaaaaaaaa" {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    assert!(
        closed_by_server(&mut trickled, timeout * 10),
        "trickled head"
    );
    let _ = writer.join();

    let mut silent = connect();
    assert!(
        closed_by_server(&mut silent, timeout * 10),
        "silent connection"
    );

    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_by_server(&mut idle, timeout * 10), "idle keep-alive");
}

/// A head over the cap is refused early, whatever hyper would have buffered.
async fn oversized_heads_are_refused(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let header = "x".repeat(64 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: {header}\r\n\r\n");
    let answer = raw_exchange(&app, request.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "closed or 431: {}",
        &answer[..answer.len().min(200)]
    );
    let fine = raw_exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "still serving");
}

/// Past the connection cap, a connection is answered 503 and closed at once, and the
/// service answers again as soon as connections close.
async fn connections_past_the_cap_get_a_503_and_are_closed(backend: Backend) {
    let limits = Limits {
        max_connections: 3,
        header_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let app = TestApp::on(backend).limits(limits).spawn().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // Give the server a moment to accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw_exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    drop(held);
    let mut answered = false;
    for _ in 0..50 {
        let fine = raw_exchange(
            &app,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        if fine.starts_with("HTTP/1.1 200") {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the service answers once connections close");
}

/// A login flood past the hash queue is answered 503 with `Retry-After` at once, not
/// after queueing behind the request timeout, and a login afterwards works.
async fn a_login_flood_past_the_hash_queue_is_refused_fast(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let logins = (0..300).map(|i| {
        let (client, url) = (app.client.clone(), app.url("/api/v1/users/login"));
        async move {
            let response = client
                .post(url)
                .json(&json!({"email": format!("flood-{i}@example.com"), "password": "flood password"}))
                .send()
                .await
                .unwrap();
            (response.status(), response.headers().get("retry-after").cloned())
        }
    });
    let answers = join_all(logins).await;
    let busy: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !busy.is_empty(),
        "300 logins at once overflow the hash queue"
    );
    assert!(
        busy.iter().all(|(_, retry)| retry.is_some()),
        "with Retry-After"
    );
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    assert!(
        app.passwords.hashing() <= 2 && app.passwords.waiting() == 0,
        "all work is done"
    );
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// The embedded store acknowledges only what is on disk unless told otherwise.
async fn the_embedded_store_is_durable_by_default(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    if let killrvideo_test_support::Raw::Embedded(store) = &app.raw {
        assert_eq!(store.synchronous().await.unwrap(), 2, "synchronous=FULL");
        let dir = tempfile::tempdir().unwrap();
        let relaxed = killrvideo_users::store::embedded::EmbeddedStore::open_with(
            dir.path(),
            killrvideo_users::store::embedded::SyncMode::Normal,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(relaxed.synchronous().await.unwrap(), 1, "the opt-in");
    }
}

/// `/metrics`, on its own port, counts what an operator needs to see.
async fn metrics_show_requests_refusals_and_hashing(backend: Backend) {
    let app = TestApp::on(backend).metrics().spawn().await;
    let user = app.register_user().await;
    problem(
        app.login(&user.email, "a wrong password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        public.status(),
        StatusCode::NOT_FOUND,
        "not on the public port"
    );
    let url = app.metrics.clone().expect("a metrics listener");
    let text = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "http_requests_total{",
        "route=\"/api/v1/users/login\"",
        "http_request_duration_seconds_bucket{",
        "logins_refused_total{reason=\"wrong_password\"}",
        "password_hash_queue",
        "password_hashes_in_flight",
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
    assert!(
        !text.contains(&user.id.to_string()),
        "no user ids in labels"
    );
}

backend_tests!(
    parallel_guesses_from_one_address_are_evaluated_at_most_the_threshold,
    a_distributed_guesser_meets_the_account_ceiling,
    failures_from_one_address_do_not_lock_the_owner_out_elsewhere,
    expired_budgets_are_swept_from_the_embedded_store,
    unusable_request_ids_are_replaced,
    http11_without_one_host_is_a_400,
    slow_and_silent_connections_are_closed,
    oversized_heads_are_refused,
    connections_past_the_cap_get_a_503_and_are_closed,
    a_login_flood_past_the_hash_queue_is_refused_fast,
    the_embedded_store_is_durable_by_default,
    metrics_show_requests_refusals_and_hashing,
);
