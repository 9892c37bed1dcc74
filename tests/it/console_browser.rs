//! The web console in a real browser: headless Chromium driven through
//! WebDriver against the real server, a mock upstream and recorded calls.
//!
//! Skips (saying why) where Chromium or chromedriver is missing, unless
//! `LLM_AUDIT_PROXY_REQUIRE_BROWSER_TEST=1` (set by `.ci/run`). With
//! `LLM_AUDIT_PROXY_SCREENSHOT_DIR` set, saves screenshots of the main
//! pages there (README's come from this test).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::console::{keygen, ConsoleClient, ADMIN_TOKEN};
use crate::support::webdriver::{browser_required, find_binaries, Browser, REQUIRE_ENV};
use crate::support::{ndjson, MockUpstream, TestProxy};

const OPENAI_KEY: &str = "sk-proj-Zq81Wn5Rt0Yp3Lk7Hd2Fb6Xc9Vm4Ns1Qa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let (chromium, driver) = match find_binaries() {
        Ok(found) => found,
        Err(why) if !browser_required() => {
            eprintln!(
                "SKIPPED the_console_in_a_real_browser: {why} (set {REQUIRE_ENV}=1 to require it)"
            );
            return;
        }
        Err(why) => panic!("{REQUIRE_ENV}=1 but {why}"),
    };
    let shots = std::env::var_os("LLM_AUDIT_PROXY_SCREENSHOT_DIR").map(PathBuf::from);
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, key_id) = keygen(keys.path());
    let proxy = TestProxy::start_in(
        &mock.url(),
        dir.path(),
        &[
            ("LLM_AUDIT_PROXY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("LLM_AUDIT_PROXY_POLICY_PACKS", "pci"),
            ("LLM_AUDIT_PROXY_SIGNING_KEY_FILE", &key_file),
            ("LLM_AUDIT_PROXY_CHECKPOINT_EVERY_EVENTS", "4"),
        ],
    )
    .await;
    let client = ConsoleClient::on(proxy);
    client
        .chat("br-call-1", "Where do pelicans nest in winter?")
        .await;
    client
        .chat("br-call-2", &format!("Is {OPENAI_KEY} a valid key?"))
        .await;
    client
        .refused_chat("br-card-1", "charge 4111 1111 1111 1111")
        .await;
    let admin = client.proxy.admin_url.clone();
    let b = Browser::start(&chromium, &driver).await;

    // Sign-in: a wrong token is refused, the right one opens the console.
    b.goto(&format!("{admin}/ui/events")).await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    if let Some(dir) = &shots {
        b.screenshot(dir, "console-sign-in").await;
    }
    let token = b.find("#token").await;
    b.type_into(&token, "not-the-token-0123456789").await;
    b.click(&b.find("form.signin button").await).await;
    b.wait_for("#signin-error", None, |t| t.contains("not valid"))
        .await;
    let token = b.find("#token").await;
    b.type_into(&token, ADMIN_TOKEN).await;
    b.click(&b.find("form.signin button").await).await;
    b.wait_url(|u| u.ends_with("/ui/overview")).await;

    // Keyboard: the first Tab lands on the skip link, which then shows on
    // screen; the next ones reach the navigation.
    b.press_tab().await;
    let (href, [x, y, w, h]) = b.focused("href").await;
    assert_eq!(href.as_deref(), Some("#main"));
    assert!(
        x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0,
        "visible: {x} {y} {w} {h}"
    );
    b.press_tab().await;
    let (href, _) = b.focused("href").await;
    assert_eq!(href.as_deref(), Some("/ui/overview"));

    // Overview: charts for a range with violations, each linking its call.
    b.goto(&format!("{admin}/ui/overview?range=1h")).await;
    assert!(b.count("svg#chart-calls rect.bar").await >= 1);
    assert!(b.count("svg#chart-policy rect.bar").await >= 1);
    assert!(b.count("svg#chart-severity rect.bar").await >= 1);
    assert!(b.count("a[href='/ui/calls/br-card-1']").await >= 1);
    if let Some(dir) = &shots {
        b.screenshot(dir, "console-overview").await;
    }

    // Filter by type and time through the form, then read the count.
    b.goto(&format!("{admin}/ui/events")).await;
    b.click(
        &b.find_xpath("//select[@id='type']/option[text()='REQUEST']")
            .await,
    )
    .await;
    b.click(
        &b.find_xpath("//select[@id='range']/option[@value='1h']")
            .await,
    )
    .await;
    b.click(&b.find(".filters .actions button").await).await;
    b.wait_url(|u| u.contains("type=REQUEST") && u.contains("range=1h"))
        .await;
    b.wait_for("#row-count", None, |t| t == "3").await;
    if let Some(dir) = &shots {
        b.screenshot(dir, "console-events").await;
    }
    // The view's export, fetched with the session, holds what it shows.
    let href = b
        .attribute(&b.find("#export-ndjson").await, "href")
        .await
        .unwrap();
    let cookie = b.cookie("audit_console").await;
    let body = client
        .http
        .get(if href.starts_with("http") {
            href.clone()
        } else {
            format!("{admin}{href}")
        })
        .header("cookie", format!("audit_console={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<Value> = ndjson(&body);
    assert_eq!(rows.len(), 3, "{body}");
    assert!(rows.iter().all(|r| r["event_type"] == "REQUEST"));

    // A word from one prompt.
    b.goto(&format!("{admin}/ui/events")).await;
    b.type_into(&b.find("#q").await, "pelicans").await;
    b.click(&b.find(".filters .actions button").await).await;
    b.wait_url(|u| u.contains("q=pelicans")).await;
    b.wait_for("#row-count", None, |t| t == "1").await;
    assert!(b.source().await.contains("br-call-1"));

    // A request id pasted into the search box opens its call, whose
    // redaction marker is highlighted.
    b.type_into(&b.find("#q").await, "br-call-2").await;
    b.click(&b.find(".filters .actions button").await).await;
    b.wait_url(|u| u.ends_with("/ui/calls/br-call-2")).await;
    b.wait_for(".conversation mark", None, |t| t == "[REDACTED:OPENAI_KEY]")
        .await;
    if let Some(dir) = &shots {
        b.screenshot(dir, "console-call").await;
    }

    // Verify: green, then red once a stored row is altered.
    b.goto(&format!("{admin}/ui/integrity")).await;
    b.click(&b.find("#run-verify").await).await;
    b.wait_for("#verify-badge", Some("data-state"), |s| s == "ok")
        .await;
    b.wait_for("#key-id", None, |k| k == key_id).await;
    if let Some(dir) = &shots {
        b.screenshot(dir, "console-integrity").await;
    }
    let db = dir.path().join("audit.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed = conn
        .execute(
            "UPDATE events SET message = 'altered' WHERE request_id = 'br-call-1' AND event_type = 'REQUEST'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    b.click(&b.find("#run-verify").await).await;
    b.wait_for("#verify-badge", Some("data-state"), |s| s == "broken")
        .await;
    b.wait_for("#first-bad-seq", None, |t| t.parse::<i64>().is_ok())
        .await;

    // Nothing any page asked for left the admin listener.
    let urls = b.requested_urls().await;
    assert!(!urls.is_empty());
    assert!(urls.iter().any(|u| u.starts_with(&admin)));
    for url in &urls {
        // Browser-internal pages (chrome://, about:, data:) never touch
        // the network; anything that does must be the admin listener.
        let networked = ["http:", "https:", "ws:", "wss:", "ftp:"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        assert!(!networked || url.starts_with(&admin), "request to {url}");
    }
    b.quit().await;
    client.proxy.stop().await;
}
