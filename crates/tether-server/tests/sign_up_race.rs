//! Sign-ups of one email at once, over the real HTTP API: one account is
//! made (200 with a session) and every other answer is 409
//! `account_exists`, never a 500. On SQLite (one writer orders them) and
//! on PostgreSQL with two nodes on one database, whose writers check the
//! email in transactions of their own: the one whose insert meets the
//! other's committed row breaks the unique constraint and must still
//! answer "taken". The losers' claim codes stay unused.
//!
//! The servers hash passwords at `PasswordCost::TESTS_ONLY`: what is
//! tested is the email's uniqueness, and at the standard cost (two hashes
//! at a time, tens of milliseconds each) the sign-ups reached the store
//! in pairs, spread out, instead of together.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::net::SocketAddr;

use common::accounts::{Answer, PASSWORD, Person, origin, send};
use common::{BoxError, TestResult, TestServer, test_limits};
use serde_json::json;
use tether_cluster_test::Postgres;
use tether_server::accounts::password::PasswordCost;
use tether_server::store::PgAdmin;
use tether_server::{Config, Server};

/// Sign-ups of each email at once.
const AT_ONCE: usize = 6;
/// Emails signed up that way, one after the other.
const ROUNDS: usize = 4;

/// Sends one sign-up per claim code at once, spread over `nodes`, all
/// with `email`.
async fn sign_up_together(
    nodes: &[SocketAddr],
    email: &str,
    codes: Vec<String>,
) -> Result<Vec<Answer>, BoxError> {
    let mut sign_ups = tokio::task::JoinSet::new();
    for (i, code) in codes.into_iter().enumerate() {
        let addr = nodes[i % nodes.len()];
        let body = json!({"email": email, "password": PASSWORD, "claim_code": code});
        sign_ups.spawn(async move {
            send(
                addr,
                "POST",
                "/v1/accounts",
                &[("Origin", origin(addr))],
                Some(&body),
            )
            .await
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = sign_ups.join_next().await {
        answers.push(answer??);
    }
    Ok(answers)
}

/// One answer made the account, every other one is `account_exists`.
fn one_made_the_rest_taken(email: &str, answers: &[Answer]) {
    let made = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(made, 1, "{email}: one account made: {answers:?}");
    for answer in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(answer.status, 409, "{email}: {answer:?}");
        assert_eq!(answer.code(), "account_exists", "{email}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_email_signed_up_at_once_on_sqlite_makes_one_account() -> TestResult {
    let t = TestServer::start_with(|config| config.with_password_cost(PasswordCost::TESTS_ONLY))
        .await?;
    for round in 0..ROUNDS {
        let email = format!("ada-{round}@example.com");
        let mut codes = Vec::new();
        for i in 0..AT_ONCE {
            let added = t
                .admin()?
                .add_device(None, Some(&format!("d-{round}-{i}")), true)?;
            codes.push(added.claim_code.ok_or("no claim code")?);
        }
        let answers = sign_up_together(&[t.addr], &email, codes.clone()).await?;
        one_made_the_rest_taken(&email, &answers);
        // A refused sign-up used nothing: every other code still works.
        let unused = codes.len() - 1;
        let mut worked = 0;
        for (i, code) in codes.into_iter().enumerate() {
            let other = format!("bob-{round}-{i}@example.com");
            if Person::create(t.addr, &other, json!({"claim_code": code}))
                .await
                .is_ok()
            {
                worked += 1;
            }
        }
        assert_eq!(worked, unused, "{email}: the losers' codes are unused");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_email_signed_up_at_once_on_two_postgres_nodes_makes_one_account() -> TestResult {
    let postgres = tokio::task::block_in_place(Postgres::start)?;
    let url = tokio::task::block_in_place(|| postgres.create_database("sign_up_race"))?;
    let first = TestServer::start_with(|config| {
        config
            .with_cluster(url.clone(), None)
            .with_password_cost(PasswordCost::TESTS_ONLY)
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?)
        .with_limits(test_limits())
        .with_cluster(url.clone(), None)
        .with_password_cost(PasswordCost::TESTS_ONLY);
    config.node_name = Some("node-b".to_owned());
    let second = Server::start(config).await?;
    let nodes = [first.addr, second.local_addr()];
    let admin = PgAdmin::connect(&url).await?;
    for round in 0..ROUNDS {
        let email = format!("ada-{round}@example.com");
        let mut codes = Vec::new();
        for i in 0..AT_ONCE {
            let added = admin
                .add_device(None, Some(&format!("d-{round}-{i}")), true, None)
                .await?;
            codes.push(added.claim_code.ok_or("no claim code")?);
        }
        let answers = sign_up_together(&nodes, &email, codes.clone()).await?;
        one_made_the_rest_taken(&email, &answers);
        let unused = codes.len() - 1;
        let mut worked = 0;
        for (i, code) in codes.into_iter().enumerate() {
            let other = format!("bob-{round}-{i}@example.com");
            if Person::create(nodes[i % 2], &other, json!({"claim_code": code}))
                .await
                .is_ok()
            {
                worked += 1;
            }
        }
        assert_eq!(worked, unused, "{email}: the losers' codes are unused");
    }
    second.shutdown().await;
    Ok(())
}
