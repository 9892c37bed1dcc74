//! The web console over plain HTTP: sign-in, sessions and CSRF, escaping
//! of hostile content, filters and search, a call's page, integrity and
//! export. (The same flows in a real browser: `console_browser`.)

use serde_json::{json, Value};

use crate::support::console::{keygen, ConsoleClient, ADMIN_TOKEN};
use crate::support::{ndjson, MockUpstream};

const OPENAI_KEY: &str = "sk-proj-Zq81Wn5Rt0Yp3Lk7Hd2Fb6Xc9Vm4Ns1Qa";

#[tokio::test]
async fn sign_in_refuses_bad_tokens_records_them_and_keeps_a_strict_cookie() {
    let mock = MockUpstream::start().await;
    let mut console = ConsoleClient::start(&mock.url(), &[]).await;

    // No session: every page sends the reader to sign in.
    for path in [
        "/ui/events",
        "/ui/overview",
        "/ui/integrity",
        "/ui/calls/abc",
        "/ui/export",
    ] {
        let page = console.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(page.location.as_deref(), Some("/ui/login"), "{path}");
    }
    let login = console.get("/ui/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("<label for=\"token\">"));
    assert!(login.csp.unwrap().contains("default-src 'none'"));

    for (token, reason) in [
        ("wrong-token-0123456789", "invalid_token"),
        ("", "missing_token"),
        ("console-writer-token-0123", "insufficient_scope"),
    ] {
        let page = console.sign_in(token).await;
        assert_eq!(page.status, 401, "{reason}");
        assert!(page.set_cookie.is_none(), "{reason}");
        assert!(page.body.contains("role=\"alert\""), "{reason}");
        assert!(
            !page.body.contains(token) || token.is_empty(),
            "the token is not echoed"
        );
    }
    // The first refusal from this client is recorded at once, like a
    // refused API call.
    let refused = console.wait_events("event_type=AUTHENTICATION", 1).await;
    let first = refused
        .iter()
        .find(|e| e["metadata"]["path"] == "/ui/login")
        .expect("an AUTHENTICATION event for the console sign-in");
    assert_eq!(first["metadata"]["reason"], "invalid_token");
    assert_eq!(first["level"], "WARNING");
    assert!(!first.to_string().contains("wrong-token"));

    let page = console.sign_in("console-reader-token-0123").await;
    assert_eq!(page.status, 303);
    let cookie = page.set_cookie.unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/ui"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let events = console.get("/ui/events").await;
    assert_eq!(events.status, 200);
    assert!(events.body.contains("<table class=\"events\">"));

    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = console
        .http
        .post(console.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // A made-up session id is no session.
    console.cookie = Some("audit_console=00ff".to_owned());
    assert_eq!(console.get("/ui/events").await.status, 303);
    console.proxy.stop().await;
}

#[tokio::test]
async fn sign_out_and_verify_need_the_sessions_csrf_token() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (key_file, key_id) = keygen(keys.path());
    let mut console = ConsoleClient::start(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_SIGNING_KEY_FILE", &key_file),
            ("LLM_AUDIT_PROXY_CHECKPOINT_EVERY_EVENTS", "2"),
        ],
    )
    .await;
    console.sign_in(ADMIN_TOKEN).await;
    console.chat("signed-1", "hello").await;
    console.chat("signed-2", "hello again").await;
    console.wait_events("event_type=CHECKPOINT", 1).await;
    let csrf = console.csrf("/ui/integrity").await;

    for form in [vec![], vec![("csrf", "forged")]] {
        let page = console.post_form("/ui/logout", &form).await;
        assert_eq!(page.status, 403);
        let page = console.post_form("/ui/verify", &form).await;
        assert_eq!(page.status, 403);
    }
    assert_eq!(
        console.get("/ui/events").await.status,
        200,
        "still signed in"
    );
    let page = console.get("/ui/integrity").await;
    assert!(page.body.contains("data-state=\"unknown\""));

    let page = console.post_form("/ui/verify", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    let page = console.get("/ui/integrity").await;
    assert!(page.body.contains("data-state=\"ok\""), "{}", page.body);
    // The latest signed checkpoint, with the id of the key that signed it.
    assert!(
        page.body
            .contains(&format!("<code id=\"key-id\">{key_id}</code>")),
        "{}",
        page.body
    );

    let page = console.post_form("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert!(page.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(console.get("/ui/events").await.status, 303, "signed out");
    console.proxy.stop().await;
}

#[tokio::test]
async fn hostile_event_content_renders_inert() {
    let mock = MockUpstream::start().await;
    let mut console = ConsoleClient::start(&mock.url(), &[]).await;
    console.sign_in(ADMIN_TOKEN).await;
    let hostile = "<script>alert('owned')</script><img src=x onerror=alert(1)>";
    console.chat("hostile-1", hostile).await;
    let r = console
        .http
        .post(console.url("/api/events"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"event_type": "CUSTOM", "message": hostile, "request_id": "hostile-1",
                      "metadata": {"model": "\"><script>alert(2)</script>"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    for path in [
        "/ui/events",
        "/ui/calls/hostile-1",
        "/ui/events?model=%22%3E%3Cscript%3E",
    ] {
        let page = console.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(!page.body.contains("\"><script>"), "{path}");
    }
    let call = console.get("/ui/calls/hostile-1").await;
    assert!(call
        .body
        .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"));
    // The only script a page loads is the console's own.
    assert_eq!(call.body.matches("<script").count(), 1);
    assert!(call
        .body
        .contains("<script src=\"/ui/assets/console.js\" defer></script>"));
    console.proxy.stop().await;
}

#[tokio::test]
async fn filters_search_and_request_ids_select_what_they_say() {
    let mock = MockUpstream::start().await;
    let mut console = ConsoleClient::start(&mock.url(), &[]).await;
    console.sign_in(ADMIN_TOKEN).await;
    console.chat("call-alpha-1", "tell me about pelicans").await;
    console.chat("call-beta-22", "tell me about herons").await;

    let page = console.get("/ui/events?type=REQUEST").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<span id=\"row-count\">2</span>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<td>RESPONSE</td>"));

    let page = console.get("/ui/events?type=RESPONSE&range=1h").await;
    assert!(page.body.contains("<span id=\"row-count\">2</span>"));
    assert!(
        page.body.contains("<option value=\"1h\" selected>"),
        "filter state kept in the form"
    );
    let page = console
        .get("/ui/events?type=RESPONSE&to=2000-01-01T00:00")
        .await;
    assert!(page.body.contains("<span id=\"row-count\">0</span>"));

    // One word that occurs in one prompt.
    let page = console.get("/ui/events?q=pelicans").await;
    assert!(page.body.contains("call-alpha-1"));
    assert!(!page.body.contains("call-beta-22"));
    let page = console.get("/ui/events?q=PELICANS&type=REQUEST").await;
    assert!(page.body.contains("<span id=\"row-count\">1</span>"));

    // A pasted request id opens its call.
    let page = console.get("/ui/events?q=call-beta-22").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/ui/calls/call-beta-22"));

    // Model and outcome live in metadata.
    let page = console
        .get("/ui/events?type=RESPONSE&outcome=completed")
        .await;
    assert!(page.body.contains("<span id=\"row-count\">2</span>"));
    let page = console.get("/ui/events?outcome=timeout").await;
    assert!(page.body.contains("<span id=\"row-count\">0</span>"));

    // Bad input names the parameter.
    for (query, param) in [
        ("type=not%20a%20type", "`type`"),
        ("level=LOUD", "`level`"),
        ("range=2y", "`range`"),
        ("from=yesterday", "`from`"),
        ("request_id=a%20b", "`request_id`"),
    ] {
        let page = console.get(&format!("/ui/events?{query}")).await;
        assert_eq!(page.status, 400, "{query}");
        assert!(page.body.contains(param), "{query}: {}", page.body);
    }
    assert_eq!(console.get("/ui/overview?range=2y").await.status, 400);
    assert_eq!(console.get("/ui/calls/not%20an%20id").await.status, 400);
    assert_eq!(console.get("/ui/calls/never-seen-id").await.status, 404);
    console.proxy.stop().await;
}

#[tokio::test]
async fn cursor_paging_walks_every_event_once() {
    let mock = MockUpstream::start().await;
    let mut console = ConsoleClient::start(&mock.url(), &[]).await;
    console.sign_in(ADMIN_TOKEN).await;
    for i in 0..60 {
        let r = console
            .http
            .post(console.url("/api/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"event_type": "CUSTOM", "message": format!("note {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let first = console.get("/ui/events?type=CUSTOM").await;
    assert!(first.body.contains("<span id=\"row-count\">50</span>"));
    assert!(first.body.contains(">note 59<"), "newest first");
    let marker = "href=\"/ui/events?type=CUSTOM&amp;cursor=";
    let start = first.body.find(marker).unwrap() + marker.len();
    let cursor: String = first.body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let second = console
        .get(&format!("/ui/events?type=CUSTOM&cursor={cursor}"))
        .await;
    assert!(second.body.contains("<span id=\"row-count\">10</span>"));
    assert!(second.body.contains(">note 0<") && !second.body.contains(">note 10<"));
    assert!(!second.body.contains("rel=\"next\""), "the last page");
    console.proxy.stop().await;
}

#[tokio::test]
async fn a_call_page_shows_the_conversation_markers_and_findings() {
    let mock = MockUpstream::start().await;
    let mut console =
        ConsoleClient::start(&mock.url(), &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pci")]).await;
    console.sign_in(ADMIN_TOKEN).await;
    console
        .chat(
            "call-marker-1",
            &format!("my key is {OPENAI_KEY}, keep it safe"),
        )
        .await;
    let page = console.get("/ui/calls/call-marker-1").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<mark>[REDACTED:OPENAI_KEY]</mark>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(OPENAI_KEY));
    for part in [
        "Conversation",
        "Answer",
        "<dt>Model</dt>",
        "<dt>Outcome</dt><dd>completed</dd>",
        "<dt>Latency</dt>",
        "<dt>Finish reason</dt>",
        "Request headers (sanitised)",
        "Compliance findings",
    ] {
        assert!(page.body.contains(part), "{part}");
    }
    // A long prompt is shown in part, the rest behind the raw link.
    let long = format!("{} tail-marker", "word ".repeat(4000));
    console.chat("call-long-1", &long).await;
    let page = console.get("/ui/calls/call-long-1").await;
    assert!(page.body.contains("Load the whole body"));
    assert!(
        !page.body.contains("tail-marker"),
        "cut after 8,000 characters"
    );
    assert!(
        page.body.contains("Load JSON ("),
        "a 20 KB event's JSON loads on demand"
    );

    // A blocked call: its violation and its findings.
    console
        .refused_chat("call-card-1", "card 4111 1111 1111 1111")
        .await;
    let page = console.get("/ui/calls/call-card-1").await;
    assert!(page.body.contains("pci-card-block"));
    assert!(page.body.contains("CREDIT_CARD × 1"));
    assert!(page.body.contains("<dd>blocked</dd>"));

    // Each event's JSON is behind the raw link too.
    let events = console
        .api_events("request_id=call-marker-1&event_type=REQUEST")
        .await;
    let id = events[0]["id"].as_str().unwrap();
    let raw = console.get(&format!("/ui/raw/{id}")).await;
    let value: Value = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(value["request_id"], "call-marker-1");

    let overview = console.get("/ui/overview?range=1h").await;
    assert_eq!(overview.status, 200);
    for id in [
        "chart-calls",
        "chart-policy",
        "chart-severity",
        "chart-tokens",
    ] {
        assert!(overview.body.contains(&format!("<svg id=\"{id}\"")), "{id}");
    }
    assert!(overview.body.contains("href=\"/ui/calls/call-card-1\""));
    // The pci pack blocks the card and would also redact it: two policies.
    assert!(overview.body.contains("<dd id=\"violations\">2</dd>"));
    assert!(overview.body.contains("<title>pci-card-block: 1</title>"));
    console.proxy.stop().await;
}

/// `audit.sqlite_search_index = false`: the store keeps no search index,
/// and the console's search and overview read the events instead.
#[tokio::test]
async fn search_and_overview_work_with_the_search_index_off() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut console = ConsoleClient::start_in(
        &mock.url(),
        dir.path(),
        &[("LLM_AUDIT_PROXY_SQLITE_SEARCH_INDEX", "false")],
    )
    .await;
    console.sign_in(ADMIN_TOKEN).await;
    console.chat("noindex-1", "tell me about kestrels").await;
    console.chat("noindex-2", "tell me about ospreys").await;

    let page = console.get("/ui/events?q=kestrels").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("noindex-1"), "{}", page.body);
    assert!(!page.body.contains("noindex-2"));
    let page = console
        .get("/ui/events?type=RESPONSE&outcome=completed")
        .await;
    assert!(page.body.contains("<span id=\"row-count\">2</span>"));
    let overview = console.get("/ui/overview?range=1h").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("<svg id=\"chart-calls\""));

    // The file holds no index tables.
    let db = dir.path().join("audit.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('events_fts', 'event_facets')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    console.proxy.stop().await;
}

#[tokio::test]
async fn export_holds_exactly_the_filtered_view() {
    let mock = MockUpstream::start().await;
    let mut console = ConsoleClient::start(&mock.url(), &[]).await;
    console.sign_in(ADMIN_TOKEN).await;
    console.chat("exp-1", "first question about otters").await;
    console.chat("exp-2", "second question about badgers").await;

    let export = console.get("/ui/export?type=REQUEST&format=ndjson").await;
    assert_eq!(export.status, 200);
    let rows: Vec<Value> = ndjson(&export.body);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["event_type"] == "REQUEST"));
    assert_eq!(
        rows[0]["request_id"], "exp-1",
        "oldest first, like /api/export"
    );

    let csv = console.get("/ui/export?q=badgers&format=csv").await;
    let mut reader = csv::Reader::from_reader(csv.body.as_bytes());
    let ids: Vec<String> = reader.records().map(|r| r.unwrap()[6].to_owned()).collect();
    assert_eq!(ids, ["exp-2"], "only the event whose prompt holds the word");

    let json = console.get("/ui/export?type=RESPONSE&format=json").await;
    let parsed: Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
    assert_eq!(console.get("/ui/export?format=xml").await.status, 400);
    console.proxy.stop().await;
}

#[tokio::test]
async fn a_streamed_call_shows_its_reassembled_tool_calls_and_errors() {
    let mock = MockUpstream::start().await;
    let mut console = ConsoleClient::start(&mock.url(), &[]).await;
    console.sign_in(ADMIN_TOKEN).await;
    let r = console
        .proxy
        .post_call("/v1/chat/completions", "call-tools-1")
        .json(&json!({"model": "gpt-4o", "stream": true,
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}))
        .send()
        .await
        .unwrap();
    let _ = r.bytes().await;
    console
        .wait_events("request_id=call-tools-1&event_type=REQUEST,RESPONSE", 2)
        .await;
    let page = console.get("/ui/calls/call-tools-1").await;
    assert!(
        page.body.contains("tool call <code>get_weather</code>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("&quot;loc"), "the reassembled arguments");
    assert!(page.body.contains("<dt>Streamed</dt><dd>true</dd>"));
    assert!(page
        .body
        .contains("<dt>Finish reason</dt><dd>tool_calls</dd>"));

    console.proxy.stop().await;

    // An upstream that is not there: the call's ERROR event is shown.
    let dead = crate::support::dead_address().await;
    let mut console = ConsoleClient::start(&dead, &[]).await;
    console.sign_in(ADMIN_TOKEN).await;
    let r = console
        .proxy
        .post_call("/v1/chat/completions", "call-dead-1")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    console
        .wait_events("request_id=call-dead-1&event_type=ERROR", 1)
        .await;
    let page = console.get("/ui/calls/call-dead-1").await;
    assert!(
        page.body.contains("<h2 id=\"err-h\">Errors</h2>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<dd>upstream_error</dd>"));
    console.proxy.stop().await;
}

#[tokio::test]
async fn the_memory_and_file_stores_serve_the_same_pages() {
    let mock = MockUpstream::start().await;
    for storage in ["memory", "file"] {
        let mut console =
            ConsoleClient::start(&mock.url(), &[("LLM_AUDIT_PROXY_STORAGE", storage)]).await;
        console.sign_in(ADMIN_TOKEN).await;
        console.chat("store-1", "a question about lynxes").await;
        console.chat("store-2", "a question about martens").await;

        let page = console.get("/ui/events?q=lynxes").await;
        assert!(
            page.body.contains("store-1") && !page.body.contains("store-2"),
            "{storage}"
        );
        let page = console
            .get("/ui/events?type=RESPONSE&model=gpt-4o-mini-2024-07-18")
            .await;
        assert!(
            page.body.contains("<span id=\"row-count\">2</span>"),
            "{storage}"
        );
        assert_eq!(
            console.get("/ui/calls/store-2").await.status,
            200,
            "{storage}"
        );
        let overview = console.get("/ui/overview?range=1h").await;
        assert!(
            overview.body.contains("<dd id=\"calls\">2</dd>"),
            "{storage}: {}",
            overview.body
        );
        let export = console.get("/ui/export?q=martens&format=ndjson").await;
        assert_eq!(export.body.lines().count(), 1, "{storage}");
        console.proxy.stop().await;
    }
}

#[tokio::test]
async fn without_tokens_the_console_is_open_but_forms_still_need_their_token() {
    let mock = MockUpstream::start().await;
    let console = ConsoleClient::on(crate::support::TestProxy::start(&mock.url()).await);
    assert_eq!(console.get("/ui/events").await.status, 200);
    let login = console.get("/ui/login").await;
    assert_eq!(login.status, 303);
    assert_eq!(login.location.as_deref(), Some("/ui/overview"));
    assert_eq!(
        console
            .post_form("/ui/verify", &[("csrf", "guess")])
            .await
            .status,
        403
    );
    let csrf = console.csrf("/ui/integrity").await;
    assert_eq!(
        console
            .post_form("/ui/verify", &[("csrf", &csrf)])
            .await
            .status,
        303
    );
    let page = console.get("/ui/integrity").await;
    assert!(page.body.contains("data-state=\"ok\""));
    console.proxy.stop().await;
}
