//! The fleet admin and the offline commands over the central store: two
//! proxies (two pods in two namespaces) ship into one database, which is
//! then queried, exported and verified across sources, and verified again
//! after a row was altered and after rows were deleted.

use std::collections::BTreeSet;
use std::path::Path;

use llm_audit_proxy::config::{self, FlagValues};
use llm_audit_proxy::fleet::{self, RunningFleet};
use serde_json::Value;

use crate::binary::command;
use crate::central::{calls, local_rows, shipping_env, until_caught_up};
use crate::support::postgres::PgCluster;
use crate::support::{output_ok, MockUpstream, TestProxy};

/// A proxy shipping as `pod` in `namespace`.
async fn start_as(
    mock: &MockUpstream,
    dir: &Path,
    dsn: &str,
    pod: &str,
    namespace: &str,
) -> TestProxy {
    let mut env = shipping_env(dsn);
    env.retain(|(k, _)| !k.starts_with("LLM_AUDIT_PROXY_POD_"));
    env.push(("LLM_AUDIT_PROXY_POD_NAME", pod.into()));
    env.push(("LLM_AUDIT_PROXY_POD_NAMESPACE", namespace.into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestProxy::start_in(&mock.url(), dir, &pairs).await
}

/// The fleet admin on the database, in-process.
async fn start_fleet(dsn: &str) -> RunningFleet {
    let env: std::collections::HashMap<String, String> = [
        ("LLM_AUDIT_PROXY_ADMIN_LISTEN", "127.0.0.1:0"),
        ("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", dsn),
        ("LLM_AUDIT_PROXY_LOG_FORMAT", "text"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = config::load(None, &env, &FlagValues::new()).unwrap();
    fleet::start(config).await.unwrap()
}

struct Admin {
    url: String,
    http: reqwest::Client,
}

impl Admin {
    async fn send(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.send(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        let r = self.send(path).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Every event the query selects, page by page (`limit` each), as
    /// (source_id, seq).
    async fn all_pages(&self, query: &str, limit: usize) -> Vec<(String, i64)> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/api/events?limit={limit}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "{body}");
            for e in body["events"].as_array().unwrap() {
                seen.push((
                    e["source_id"].as_str().unwrap().to_owned(),
                    e["seq"].as_i64().unwrap(),
                ));
            }
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return seen,
            }
        }
        panic!("paging did not end");
    }
}

/// The number of rows the console's events page shows.
fn row_count(page: &str) -> usize {
    let start = page.find("id=\"row-count\">").expect("a row count") + "id=\"row-count\">".len();
    let end = start + page[start..].find('<').unwrap();
    page[start..end].parse().unwrap()
}

/// Runs verify from the console's integrity page (its form and CSRF
/// token) and returns the page it lands on.
async fn console_verify(admin: &Admin) -> String {
    let page = admin.text("/ui/integrity").await;
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF field") + marker.len();
    let csrf = &page[start..start + page[start..].find('"').unwrap()];
    let r = admin
        .http
        .post(format!("{}/ui/verify", admin.url))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_fleet_admin_queries_exports_and_verifies_across_sources() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let dsn = pg.dsn();
    let mock = MockUpstream::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_as(&mock, dir_a.path(), &dsn, "pod-a", "team-x").await;
    let b = start_as(&mock, dir_b.path(), &dsn, "pod-b", "team-y").await;
    calls(&a, "alpha", 4).await;
    calls(&b, "beta", 3).await;
    until_caught_up(&a).await;
    until_caught_up(&b).await;

    // On a local store the origin filters name the store itself.
    let (_, own) = a.admin_get("/api/stats").await;
    assert!(own["total_events"].as_u64() > Some(0));
    let (id_a, local_a) = local_rows(dir_a.path()).await;
    for (query, matches) in [
        (format!("source={id_a}"), true),
        ("source=another-source".to_owned(), false),
        ("pod=pod-a&namespace=team-x".to_owned(), true),
        ("pod=pod-b".to_owned(), false),
    ] {
        let (status, body) = a.admin_get(&format!("/api/events?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let n = body["events"].as_array().unwrap().len();
        assert_eq!(n > 0, matches, "{query}: {n} events");
    }
    let (status, body) = a.admin_get("/api/events?pod=").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "pod", "{body}");

    a.stop().await;
    b.stop().await;
    let (id_a2, local_a) = (id_a, {
        let (_, rows) = local_rows(dir_a.path()).await;
        assert!(rows.len() >= local_a.len());
        rows
    });
    let (id_b, local_b) = local_rows(dir_b.path()).await;
    let id_a = id_a2;
    let total = local_a.len() + local_b.len();

    let fleet = start_fleet(&dsn).await;
    let admin = Admin {
        url: format!("http://{}", fleet.admin_addr),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    };

    // Every event of both sources, newest first, each page continuing
    // where the last ended, none twice.
    let all = admin.all_pages("", 5).await;
    assert_eq!(all.len(), total);
    let distinct: BTreeSet<&(String, i64)> = all.iter().collect();
    assert_eq!(distinct.len(), total, "an event was paged twice");
    let (_, page) = admin.get("/api/events?limit=1").await;
    let newest = &page["events"][0];
    assert!(newest["pod"].is_string() && newest["namespace"].is_string());
    let (status, one) = admin
        .get(&format!("/api/events/{}", newest["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["hash"], newest["hash"]);

    // Origin filters, alone and with the other filters.
    let of_a = admin.all_pages("&pod=pod-a", 1000).await;
    assert_eq!(of_a.len(), local_a.len());
    assert!(of_a.iter().all(|(s, _)| *s == id_a));
    let of_b = admin.all_pages("&namespace=team-y", 7).await;
    assert_eq!(of_b.len(), local_b.len());
    assert!(of_b.iter().all(|(s, _)| *s == id_b));
    let by_source = admin.all_pages(&format!("&source={id_b}"), 1000).await;
    assert_eq!(by_source, of_b);
    let responses_a = admin
        .all_pages("&pod=pod-a&event_type=RESPONSE", 1000)
        .await;
    assert_eq!(responses_a.len(), 4);
    assert!(admin.all_pages("&pod=pod-c", 10).await.is_empty());
    assert!(admin
        .all_pages("&pod=pod-a&namespace=team-y", 10)
        .await
        .is_empty());

    // Exports across sources, and of one.
    let ndjson = admin.text("/api/export?format=ndjson").await;
    assert_eq!(ndjson.lines().count(), total);
    let ndjson_b = admin.text("/api/export?format=ndjson&pod=pod-b").await;
    let seqs: Vec<i64> = ndjson_b
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs.len(), local_b.len());

    let (_, stats) = admin.get("/api/stats").await;
    assert_eq!(stats["store"], "postgres");
    assert_eq!(stats["total_events"], total as u64);

    // The console over the same store: origin filters, and the pod of
    // each row.
    let page = admin.text("/ui/events?pod=pod-a").await;
    assert_eq!(row_count(&page), local_a.len().min(50), "{page}");
    assert!(page.contains("<th scope=\"col\">Pod</th>"), "{page}");
    assert!(page.contains("id=\"pod\""), "the pod filter is offered");
    assert!(!page.contains(">pod-b<"), "{page}");
    let page = admin
        .text(&format!("/ui/events?source={id_b}&type=RESPONSE"))
        .await;
    assert_eq!(row_count(&page), 3, "{page}");
    assert!(page.contains(">pod-b<"), "{page}");
    assert_eq!(
        row_count(&admin.text("/ui/events?namespace=team-z").await),
        0
    );
    let call = admin.text("/ui/calls/beta-1").await;
    assert!(call.contains("beta-1"), "{call}");
    let overview = admin.text("/ui/overview?range=24h").await;
    assert!(overview.contains("<svg"), "{overview}");
    let integrity = console_verify(&admin).await;
    assert!(
        integrity.contains("data-state=\"ok\""),
        "every source intact: {integrity}"
    );

    // Both chains verify, each on its own.
    let (status, report) = admin.get("/api/verify").await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["sources_checked"], 2);
    assert_eq!(report["events_checked"], total as u64);

    // A central row altered: tampering, named by source and seq.
    let client = pg.client().await;
    client
        .execute(
            "UPDATE audit_events SET message = 'forged' WHERE source_id = $1 AND seq = 5",
            &[&id_a],
        )
        .await
        .unwrap();
    // Rows deleted from the other source: a missing range, not tampering.
    client
        .execute(
            "DELETE FROM audit_events WHERE source_id = $1 AND seq BETWEEN 3 AND 4",
            &[&id_b],
        )
        .await
        .unwrap();
    let (_, report) = admin.get("/api/verify").await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["intact"], false);
    assert_eq!(report["complete"], false);
    let tampered = report["tampered"].as_array().unwrap();
    assert_eq!(tampered.len(), 1, "{report}");
    assert_eq!(tampered[0]["source_id"], id_a.as_str());
    assert_eq!(tampered[0]["seq"], 5);
    assert_eq!(tampered[0]["fault"], "edited");
    let missing = report["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["source_id"], id_b.as_str());
    assert_eq!(missing[0]["first_seq"], 3);
    assert_eq!(missing[0]["last_seq"], 4);
    let integrity = console_verify(&admin).await;
    assert!(integrity.contains("data-state=\"broken\""), "{integrity}");
    assert!(
        integrity.contains("3..=4"),
        "the missing range: {integrity}"
    );
    let source_b = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source_id"] == id_b.as_str())
        .unwrap();
    assert_eq!(source_b["intact"], true, "{source_b}");
    assert_eq!(source_b["pod"], "pod-b");
    fleet.stop().await;

    // The offline commands read the central store too.
    let work = tempfile::tempdir().unwrap();
    let dsn_file = work.path().join("dsn");
    std::fs::write(&dsn_file, &dsn).unwrap();
    let dsn_flag = dsn_file.display().to_string();
    let out = output_ok(
        command()
            .args(["events", "--postgres-dsn-file", &dsn_flag, "--json"])
            .args(["--pod", "pod-b", "--limit", "1000"]),
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        local_b.len() - 2,
        "two of pod-b's rows were deleted"
    );
    let out = command()
        .args(["events", "--postgres-dsn-file", &dsn_flag])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("POD"));

    let export = work.path().join("fleet.ndjson");
    output_ok(
        command()
            .args([
                "export",
                "--postgres-dsn-file",
                &dsn_flag,
                "--format",
                "ndjson",
            ])
            .args(["--namespace", "team-x", "--out"])
            .arg(&export),
    );
    let lines = std::fs::read_to_string(&export).unwrap();
    assert_eq!(lines.lines().count(), local_a.len());

    let out = command()
        .args(["verify", "--central"])
        .env("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE", &dsn_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("(edited) in source {id_a} at seq 5")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("source {id_b} misses seq 3..=4")),
        "{stderr}"
    );

    let out = command().args(["verify", "--central"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "no DSN configured");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shipping.postgres_dsn"), "{stderr}");
}
