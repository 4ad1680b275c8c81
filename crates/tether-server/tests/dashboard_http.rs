//! The dashboard's HTTP side over a real loopback socket: the page and its
//! files, and `GET /v1/me`, which the page uses to check a key and to know
//! whether it may send commands.

mod common;

use common::*;
use serde_json::json;
use tether_server::store::ChannelFilter;

#[tokio::test]
async fn the_page_and_its_files_are_served() -> TestResult {
    let t = TestServer::start().await?;
    let (status, page) = http_raw(t.addr, "GET", "/", None, None).await?;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Tether dashboard</title>"), "{page}");
    for file in [
        "/assets/app.js",
        "/assets/app.css",
        "/assets/account.css",
        "/assets/vendor/uPlot.iife.min.js",
        "/assets/vendor/uPlot.min.css",
        "/assets/icon.svg",
        "/manifest.webmanifest",
    ] {
        let (status, body) = http_raw(t.addr, "GET", file, None, None).await?;
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
        assert!(page.contains(file), "the page does not load {file}");
    }
    // The icon (binary: the browser tests fetch it) is linked.
    assert!(page.contains("href=\"/favicon.ico\""));
    // The account pages, each with its script.
    for (path, title) in [
        ("/claim", "<title>Add your device · Tether</title>"),
        ("/invite", "<title>Join · Tether</title>"),
        ("/people", "<title>People · Tether</title>"),
    ] {
        let (status, page) = http_raw(t.addr, "GET", path, None, None).await?;
        assert_eq!(status, 200, "{path}");
        assert!(page.contains(title), "{path}: {page}");
        assert!(page.contains("/assets/account.js"), "{path}");
    }
    for file in ["/assets/account.js", "/assets/session.js"] {
        let (status, body) = http_raw(t.addr, "GET", file, None, None).await?;
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
    }
    let (_, manifest) = http(t.addr, "GET", "/manifest.webmanifest", None, None).await?;
    assert_eq!(manifest["name"], "Tether");
    assert_eq!(manifest["start_url"], "/");
    let (status, _) = http_raw(t.addr, "GET", "/assets/nope.js", None, None).await?;
    assert_eq!(status, 404);
    let (status, _) = http_raw(t.addr, "GET", "/assets/claim.html", None, None).await?;
    assert_eq!(status, 404);
    let (status, text) = http_raw(t.addr, "GET", "/status", None, None).await?;
    assert_eq!(status, 200);
    assert!(text.contains("tether relay server"), "{text}");
    Ok(())
}

#[tokio::test]
async fn me_tells_what_a_key_may_do() -> TestResult {
    let t = TestServer::start().await?;
    let (status, me) = http(t.addr, "GET", "/v1/me", Some(&t.key), None).await?;
    assert_eq!(status, 200);
    assert_eq!(me["can_command"], true);
    assert_eq!(me["channels"], json!(null));
    assert!(me["tenant_id"].as_i64().is_some());

    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let read_only = admin.add_key(
        tenant,
        &ChannelFilter::only(vec!["sensors/*".into(), "door".into()]),
        false,
        Some("wall display"),
    )?;
    let (status, me) = http(t.addr, "GET", "/v1/me", Some(&read_only.key), None).await?;
    assert_eq!(status, 200);
    assert_eq!(me["can_command"], false);
    assert_eq!(me["channels"], json!(["sensors/*", "door"]));

    let wrong = format!("tk_{}", "0".repeat(64));
    let (status, error) = http(t.addr, "GET", "/v1/me", Some(&wrong), None).await?;
    assert_eq!(status, 401);
    assert_eq!(error["error"]["code"], "unauthorized");
    let (status, error) = http(t.addr, "GET", "/v1/me", None, None).await?;
    assert_eq!(status, 401);
    assert_eq!(error["error"]["code"], "unauthorized");
    Ok(())
}
