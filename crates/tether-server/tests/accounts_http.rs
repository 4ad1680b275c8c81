//! Accounts over the real HTTP API and receiver WebSocket (loopback, the
//! server in-process, its SQLite database in a temporary directory): the
//! session cookie and its attributes, CSRF on every state-changing request
//! and on WebSocket upgrades, sign-out ending the session on the server,
//! the sign-in rate limits with their metrics, roles (a read-only member
//! cannot command or claim, over HTTP or WebSocket), removal ending a
//! member's sessions and sockets, and tenant isolation of every new path.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::net::SocketAddr;

use common::accounts::*;
use common::*;
use serde_json::{Value, json};
use tether_server::accounts::{SIGN_IN_FAILURES_PER_ACCOUNT, SIGN_IN_FAILURES_PER_ADDRESS};

/// A new customer: an account made with a claim code of a new device.
async fn customer(t: &TestServer, email: &str, device: &str) -> Result<Person, BoxError> {
    let code = t
        .admin()?
        .add_device(None, Some(device), true)?
        .claim_code
        .ok_or("no claim code")?;
    Person::create(t.addr, email, json!({"claim_code": code})).await
}

async fn sign_in(addr: SocketAddr, email: &str, password: &str) -> Result<Answer, BoxError> {
    send(
        addr,
        "POST",
        "/v1/session",
        &[("Origin", origin(addr))],
        Some(&json!({"email": email, "password": password})),
    )
    .await
}

fn device_ids(answer: &Answer) -> Vec<String> {
    answer.body["devices"]
        .as_array()
        .map(|devices| {
            devices
                .iter()
                .filter_map(|device| device["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_from_a_label_signs_in_with_a_cookie_and_csrf() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    let code = t
        .admin()?
        .add_device(None, Some("kitchen-1"), true)?
        .claim_code
        .ok_or("no claim code")?;

    // A new account with the label's code: signed in at once.
    let answer = send(
        addr,
        "POST",
        "/v1/accounts",
        &[("Origin", origin(addr))],
        Some(&json!({"email": " Ada@Example.com ", "password": PASSWORD, "claim_code": code.to_lowercase()})),
    )
    .await?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["device"], "kitchen-1");
    assert_eq!(answer.body["email"], "ada@example.com");
    assert_eq!(answer.body["role"], "owner");
    assert_eq!(answer.body["can_command"], true);
    let set_cookie = answer.header("set-cookie").ok_or("no cookie")?;
    assert!(set_cookie.starts_with("tether_session=ts_"), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=1209600"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    // Plain HTTP: not Secure (a browser would drop it); TLS is tested below.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let ada = Person::from_answer(addr, &answer).await?;

    // The cookie is accepted like a key.
    let devices = ada.get("/v1/devices").await?;
    assert_eq!(device_ids(&devices), ["kitchen-1"]);
    let me = ada.get("/v1/me").await?;
    assert_eq!(me.body["can_command"], true);
    let session = ada.get("/v1/session").await?;
    assert_eq!(session.body["csrf_token"], json!(ada.csrf));
    assert_eq!(session.header("cache-control"), Some("no-store"));
    // Without the cookie: nobody.
    let nobody = send(addr, "GET", "/v1/session", &[], None).await?;
    assert_eq!(nobody.status, 401);

    // Every state-changing request with the cookie needs the page's own
    // origin and the CSRF token.
    let other = t
        .admin()?
        .add_device(None, Some("kitchen-2"), true)?
        .claim_code
        .ok_or("no claim code")?;
    let claim = json!({"claim_code": other});
    let cookie = ("Cookie", ada.cookie.clone());
    let own = ("Origin", origin(addr));
    let token = ("X-CSRF-Token", ada.csrf.clone());
    let refusals = [
        vec![cookie.clone(), own.clone()],
        vec![cookie.clone(), token.clone()],
        vec![
            cookie.clone(),
            own.clone(),
            ("X-CSRF-Token", "0".repeat(64)),
        ],
        vec![
            cookie.clone(),
            ("Origin", "http://evil.example".to_owned()),
            token.clone(),
        ],
    ];
    for headers in &refusals {
        let answer = send(addr, "POST", "/v1/claim", headers, Some(&claim)).await?;
        assert_eq!(answer.status, 403, "{headers:?}: {answer:?}");
    }
    for (method, path, body) in [
        ("POST", "/v1/invitations", Some(json!({"role": "member"}))),
        ("DELETE", "/v1/session", None),
        (
            "POST",
            "/v1/devices/kitchen-1/commands",
            Some(json!({"channel": "led", "payload": true})),
        ),
        ("PATCH", "/v1/members/1", Some(json!({"role": "member"}))),
        ("DELETE", "/v1/members/1", None),
        ("DELETE", "/v1/invitations/1", None),
    ] {
        let answer = send(
            addr,
            method,
            path,
            &[cookie.clone(), own.clone()],
            body.as_ref(),
        )
        .await?;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
    }
    metric(&t, "tether_rejected_total{kind=\"csrf\"}")
        .await?
        .parse::<u64>()
        .map_err(|_| "csrf refusals are counted")?;
    // With both: claimed.
    let claimed = ada.change("POST", "/v1/claim", Some(&claim)).await?;
    assert_eq!(claimed.body["device"], "kitchen-2", "{claimed:?}");

    // The WebSocket: cookie + own origin + CSRF subprotocol, or refused.
    for (origin_header, csrf) in [
        (
            Some("http://evil.example".to_owned()),
            Some(ada.csrf.clone()),
        ),
        (None, Some(ada.csrf.clone())),
        (Some(origin(addr)), Some("0".repeat(64))),
    ] {
        let refused = ada.websocket_with(origin_header.clone(), csrf).await;
        let status = match &refused {
            Err(error) => error
                .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                .and_then(http_status),
            Ok(_) => None,
        };
        assert_eq!(status, Some(403), "{origin_header:?}");
    }
    let mut live = ada.websocket().await?;
    let subscribed = live.subscribe("sensors/kitchen", Some(1)).await?;
    assert_eq!(subscribed["next_offset"], 1);
    // Without the CSRF subprotocol the cookie is not used: the socket
    // waits for an `auth` message like any keyless one.
    let mut keyless = ada.websocket_with(Some(origin(addr)), None).await?;
    keyless
        .send_json(&json!({"v": 1, "subscribe": {"channel": "sensors/kitchen"}}))
        .await?;
    let refused = keyless.recv().await?;
    assert_eq!(refused["error"]["code"], 5, "{refused}");

    // Signing in again: a second session, same rights.
    let again = sign_in(addr, "ADA@example.com", PASSWORD).await?;
    assert_eq!(again.status, 200, "{again:?}");
    let second = Person::from_answer(addr, &again).await?;
    assert_ne!(second.cookie, ada.cookie);

    // Sign-out ends the session on the server: the cookie no longer works
    // (even if a browser kept it), and its socket closes.
    let out = ada.change("DELETE", "/v1/session", None).await?;
    assert_eq!(out.status, 200);
    assert!(
        out.header("set-cookie")
            .is_some_and(|cookie| cookie.contains("Max-Age=0"))
    );
    assert_eq!(close_code(&mut live.ws).await?, 4005);
    assert_eq!(ada.get("/v1/devices").await?.status, 401);
    assert_eq!(ada.get("/v1/session").await?.status, 401);
    // The other session is untouched.
    assert_eq!(device_ids(&second.get("/v1/devices").await?).len(), 2);

    // Keys keep working for programs and scripts.
    let (status, devices) = http(addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(status, 200);
    assert_eq!(devices["devices"], json!([]));
    // Creating a session from another site's page is refused (login CSRF).
    let foreign = send(
        addr,
        "POST",
        "/v1/session",
        &[("Origin", "http://evil.example".to_owned())],
        Some(&json!({"email": "ada@example.com", "password": PASSWORD})),
    )
    .await?;
    assert_eq!(foreign.status, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_creation_refuses_what_it_cannot_use() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    let ada = customer(&t, "ada@example.com", "kitchen-1").await?;
    let code = t
        .admin()?
        .add_device(None, Some("kitchen-2"), true)?
        .claim_code
        .ok_or("no claim code")?;
    let create = |body: Value| async move {
        send(
            addr,
            "POST",
            "/v1/accounts",
            &[("Origin", origin(addr))],
            Some(&body),
        )
        .await
    };
    for (body, status, code_name) in [
        (
            json!({"email": "ada@example.com", "password": PASSWORD, "claim_code": code}),
            409,
            "account_exists",
        ),
        (
            json!({"email": "bob@example.com", "password": "short", "claim_code": code}),
            400,
            "invalid_field",
        ),
        (
            json!({"email": "not an email", "password": PASSWORD, "claim_code": code}),
            400,
            "invalid_field",
        ),
        (
            json!({"email": "bob@example.com", "password": PASSWORD, "claim_code": "ABCD-EFGH-JKMN"}),
            404,
            "unknown_claim_code",
        ),
        (
            json!({"email": "bob@example.com", "password": PASSWORD, "invitation": "ti_nope"}),
            404,
            "unknown_invitation",
        ),
        (
            json!({"email": "bob@example.com", "password": PASSWORD}),
            400,
            "invalid_field",
        ),
    ] {
        let answer = create(body.clone()).await?;
        assert_eq!(answer.status, status, "{body}: {answer:?}");
        assert_eq!(answer.code(), code_name, "{body}");
        assert!(answer.header("set-cookie").is_none());
    }
    // Nothing was made: the code still works, Ada still has one device.
    assert_eq!(device_ids(&ada.get("/v1/devices").await?), ["kitchen-1"]);
    let bob = Person::create(addr, "bob@example.com", json!({"claim_code": code})).await?;
    assert_eq!(device_ids(&bob.get("/v1/devices").await?), ["kitchen-2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_limited_per_account_with_metrics() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    customer(&t, "ada@example.com", "kitchen-1").await?;
    for attempt in 0..SIGN_IN_FAILURES_PER_ACCOUNT {
        let answer = sign_in(addr, "ada@example.com", "wrong password").await?;
        assert_eq!(answer.status, 401, "attempt {attempt}");
        assert_eq!(answer.code(), "wrong_password");
        assert!(answer.header("set-cookie").is_none());
    }
    // Locked for the window, even with the right password.
    let locked = sign_in(addr, "ada@example.com", PASSWORD).await?;
    assert_eq!(locked.status, 429, "{locked:?}");
    assert_eq!(locked.code(), "rate_limited");
    assert_eq!(locked.header("retry-after"), Some("900"));
    assert!(
        locked.body["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("this account") && text.contains("15 minutes"))
    );
    // An email without an account is counted the same way (the limit does
    // not tell which emails exist).
    for _ in 0..SIGN_IN_FAILURES_PER_ACCOUNT {
        assert_eq!(
            sign_in(addr, "nobody@example.com", PASSWORD).await?.status,
            401
        );
    }
    assert_eq!(
        sign_in(addr, "nobody@example.com", PASSWORD).await?.status,
        429
    );
    let failures = u64::from(SIGN_IN_FAILURES_PER_ACCOUNT) * 2;
    wait_metric(
        &t,
        "tether_sign_ins_total{outcome=\"wrong_password\"}",
        &failures.to_string(),
    )
    .await?;
    wait_metric(
        &t,
        "tether_sign_ins_total{outcome=\"rate_limited_account\"}",
        "2",
    )
    .await?;
    wait_metric(&t, "tether_rejected_total{kind=\"sign_in_account\"}", "2").await?;
    wait_metric(
        &t,
        "tether_auth_failures_total{kind=\"password\"}",
        &failures.to_string(),
    )
    .await?;
    // Another account is not affected.
    customer(&t, "bob@example.com", "kitchen-2").await?;
    let bob = sign_in(addr, "bob@example.com", PASSWORD).await?;
    assert_eq!(bob.status, 200, "{bob:?}");
    wait_metric(&t, "tether_sign_ins_total{outcome=\"ok\"}", "1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_limited_per_address_with_metrics() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    customer(&t, "ada@example.com", "kitchen-1").await?;
    // Spraying one password over many emails from one address.
    for n in 0..SIGN_IN_FAILURES_PER_ADDRESS {
        let answer = sign_in(addr, &format!("user{n}@example.com"), PASSWORD).await?;
        assert_eq!(answer.status, 401, "attempt {n}");
    }
    let limited = sign_in(addr, "ada@example.com", PASSWORD).await?;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(
        limited.body["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("your network"))
    );
    wait_metric(
        &t,
        "tether_sign_ins_total{outcome=\"rate_limited_address\"}",
        "1",
    )
    .await?;
    wait_metric(&t, "tether_rejected_total{kind=\"sign_in_address\"}", "1").await?;
    Ok(())
}

/// Sends a command over the member's WebSocket; returns the answer.
async fn ws_command(receiver: &mut Receiver, device: &str) -> Result<Value, BoxError> {
    receiver
        .send_json(&json!({"v": 1, "send_command": {
            "request_id": 7, "device": device, "channel": "led", "payload": true
        }}))
        .await?;
    receiver.recv().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_members_cannot_command_and_removed_members_are_signed_out() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    let owner = customer(&t, "ada@example.com", "kitchen-1").await?;
    let member = Person::create(
        addr,
        "max@example.com",
        json!({"invitation": owner.invite("member").await?}),
    )
    .await?;
    let viewer = Person::create(
        addr,
        "vic@example.com",
        json!({"invitation": owner.invite("read_only").await?}),
    )
    .await?;
    assert_eq!(viewer.get("/v1/session").await?.body["role"], "read_only");
    assert_eq!(viewer.get("/v1/me").await?.body["can_command"], false);
    // Everyone reads the same devices.
    for person in [&owner, &member, &viewer] {
        assert_eq!(device_ids(&person.get("/v1/devices").await?), ["kitchen-1"]);
    }

    // HTTP: the member's command reaches the (offline) device; the
    // read-only one's is refused before. Claims alike.
    let command = json!({"channel": "led", "payload": true});
    let path = "/v1/devices/kitchen-1/commands";
    let answer = member.change("POST", path, Some(&command)).await?;
    assert_eq!(answer.code(), "device_offline", "{answer:?}");
    let answer = viewer.change("POST", path, Some(&command)).await?;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.code(), "forbidden");
    let code = t
        .admin()?
        .add_device(None, Some("kitchen-2"), true)?
        .claim_code
        .ok_or("no claim code")?;
    let claim = json!({"claim_code": code});
    let answer = viewer.change("POST", "/v1/claim", Some(&claim)).await?;
    assert_eq!(answer.status, 403, "{answer:?}");
    // Only the owner manages people.
    for person in [&member, &viewer] {
        let answer = person
            .change("POST", "/v1/invitations", Some(&json!({"role": "member"})))
            .await?;
        assert_eq!(answer.status, 403, "{answer:?}");
        let answer = person
            .change("DELETE", &format!("/v1/members/{}", owner.account_id), None)
            .await?;
        assert_eq!(answer.status, 403, "{answer:?}");
    }

    // WebSocket: the same rule.
    let mut viewer_ws = viewer.websocket().await?;
    let refused = ws_command(&mut viewer_ws, "kitchen-1").await?;
    assert_eq!(refused["error"]["code"], 6, "{refused}");
    assert_eq!(refused["error"]["request_id"], 7);
    let mut member_ws = member.websocket().await?;
    let offline = ws_command(&mut member_ws, "kitchen-1").await?;
    assert_eq!(offline["error"]["code"], 10, "device offline: {offline}");

    // The owner makes the member read-only: the member's socket closes
    // (it was opened with command rights), and from then on the member is
    // refused over both.
    let answer = owner
        .change(
            "PATCH",
            &format!("/v1/members/{}", member.account_id),
            Some(&json!({"role": "read_only"})),
        )
        .await?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(close_code(&mut member_ws.ws).await?, 4005);
    let answer = member.change("POST", path, Some(&command)).await?;
    assert_eq!(answer.status, 403, "{answer:?}");
    let mut member_ws = member.websocket().await?;
    let refused = ws_command(&mut member_ws, "kitchen-1").await?;
    assert_eq!(refused["error"]["code"], 6, "{refused}");
    // The owner's role cannot be changed, nor an owner made.
    let answer = owner
        .change(
            "PATCH",
            &format!("/v1/members/{}", owner.account_id),
            Some(&json!({"role": "read_only"})),
        )
        .await?;
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = owner
        .change(
            "PATCH",
            &format!("/v1/members/{}", viewer.account_id),
            Some(&json!({"role": "owner"})),
        )
        .await?;
    assert_eq!(answer.status, 400, "{answer:?}");

    // Removed: every session of the member ends, and its sockets close.
    let second =
        Person::from_answer(addr, &sign_in(addr, "max@example.com", PASSWORD).await?).await?;
    let answer = owner
        .change(
            "DELETE",
            &format!("/v1/members/{}", member.account_id),
            None,
        )
        .await?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(close_code(&mut member_ws.ws).await?, 4005);
    for session in [&member, &second] {
        assert_eq!(session.get("/v1/devices").await?.status, 401);
    }
    assert_eq!(
        sign_in(addr, "max@example.com", PASSWORD).await?.status,
        401
    );
    let members = owner.get("/v1/members").await?;
    let emails: Vec<&str> = members.body["members"]
        .as_array()
        .ok_or("members")?
        .iter()
        .filter_map(|member| member["email"].as_str())
        .collect();
    assert_eq!(emails, ["ada@example.com", "vic@example.com"]);
    // The viewer is still in.
    assert_eq!(viewer.get("/v1/devices").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_of_tenant_a_reaches_nothing_of_tenant_b() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    let ada = customer(&t, "ada@a.example", "a-1").await?;
    let bea = customer(&t, "bea@b.example", "b-1").await?;
    let mia = Person::create(
        addr,
        "mia@b.example",
        json!({"invitation": bea.invite("member").await?}),
    )
    .await?;
    let invitations = bea.get("/v1/members").await?;
    let b_invitation = bea
        .change(
            "POST",
            "/v1/invitations",
            Some(&json!({"role": "read_only"})),
        )
        .await?
        .body["id"]
        .as_i64()
        .ok_or("an invitation id")?;
    assert_eq!(invitations.status, 200);
    // Tenant B's device publishes on its channel.
    let token_b = t.admin()?.rotate_token("b-1")?;
    let mut device = Device::connect(addr, &token_b).await?;
    device.hello("b-1", 1).await?;
    device.publish(1, "secret/b", "{\"pin\":1234}").await?;
    device.wait_ack(1).await?;

    // Reads: only A's.
    assert_eq!(device_ids(&ada.get("/v1/devices").await?), ["a-1"]);
    assert_eq!(ada.get("/v1/channels").await?.body["channels"], json!([]));
    let messages = ada.get("/v1/messages?channel=secret/b&from=1").await?;
    assert_eq!(messages.body["messages"], json!([]));
    let members = ada.get("/v1/members").await?;
    assert_eq!(
        members.body["members"].as_array().map(Vec::len),
        Some(1),
        "{members:?}"
    );
    assert_eq!(members.body["invitations"], json!([]));
    // Changes to B's people, invitations and devices: as if missing.
    for (method, path, body, status) in [
        (
            "PATCH",
            format!("/v1/members/{}", mia.account_id),
            Some(json!({"role": "read_only"})),
            404,
        ),
        (
            "DELETE",
            format!("/v1/members/{}", mia.account_id),
            None,
            404,
        ),
        (
            "DELETE",
            format!("/v1/members/{}", bea.account_id),
            None,
            404,
        ),
        (
            "DELETE",
            format!("/v1/invitations/{b_invitation}"),
            None,
            404,
        ),
        (
            "POST",
            "/v1/devices/b-1/commands".to_owned(),
            Some(json!({"channel": "led", "payload": true})),
            404,
        ),
    ] {
        let answer = ada.change(method, &path, body.as_ref()).await?;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
    }
    // The readings paths (descriptions, series, export): B's channel is
    // empty for A, and not for B's member.
    let series = "/v1/series?channel=secret/b";
    let export = "/v1/export?channel=secret/b";
    let descriptions = "/v1/descriptions?channel=secret/b";
    for (person, sees) in [(&ada, false), (&mia, true)] {
        let answer = person.get(series).await?;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body.to_string().contains("b-1"), sees, "{answer:?}");
        let answer = person.get(descriptions).await?;
        assert_eq!(answer.status, 200, "{answer:?}");
        let (status, csv) = person.get_text(export).await?;
        assert_eq!(status, 200, "{csv}");
        assert_eq!(csv.contains("1234"), sees, "{csv}");
    }
    // The WebSocket: B's channel is empty for A.
    let mut live = ada.websocket().await?;
    let subscribed = live.subscribe("secret/b", Some(1)).await?;
    assert_eq!(subscribed["next_offset"], 1, "{subscribed}");
    // B is untouched.
    assert_eq!(mia.get("/v1/session").await?.body["role"], "member");
    let b_members = bea.get("/v1/members").await?;
    assert_eq!(
        b_members.body["invitations"].as_array().map(Vec::len),
        Some(1)
    );
    let b_messages = mia.get("/v1/messages?channel=secret/b&from=1").await?;
    assert_eq!(
        b_messages.body["messages"].as_array().map(Vec::len),
        Some(1)
    );
    // A receiver key is not a person: the people endpoints want a sign-in.
    let (status, _) = http(addr, "GET", "/v1/members", Some(&t.key), None).await?;
    assert_eq!(status, 401);
    Ok(())
}

/// Behind TLS (here: a `public_url` of `https://…`, as behind a
/// TLS-terminating proxy) the cookie is `Secure` with the `__Host-` name
/// prefix, and is read under that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_tls_the_cookie_is_secure_and_host_only() -> TestResult {
    let t = TestServer::start_with(|mut config| {
        config.public_url = Some("https://relay.example.com".to_owned());
        config
    })
    .await?;
    let code = t
        .admin()?
        .add_device(None, Some("kitchen-1"), true)?
        .claim_code
        .ok_or("no claim code")?;
    let answer = send(
        t.addr,
        "POST",
        "/v1/accounts",
        &[("Origin", origin(t.addr))],
        Some(&json!({"email": "ada@example.com", "password": PASSWORD, "claim_code": code})),
    )
    .await?;
    let set_cookie = answer.header("set-cookie").ok_or("no cookie")?;
    assert!(
        set_cookie.starts_with("__Host-tether_session=ts_"),
        "{set_cookie}"
    );
    for attribute in ["; Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");
    let ada = Person::from_answer(t.addr, &answer).await?;
    assert_eq!(device_ids(&ada.get("/v1/devices").await?), ["kitchen-1"]);
    // The plain name is not read over HTTPS (it could be set by another
    // host of the domain).
    let token = ada
        .cookie
        .split_once('=')
        .map(|(_, token)| token.to_owned())
        .ok_or("cookie value")?;
    let plain = send(
        t.addr,
        "GET",
        "/v1/session",
        &[("Cookie", format!("tether_session={token}"))],
        None,
    )
    .await?;
    assert_eq!(plain.status, 401);
    Ok(())
}
