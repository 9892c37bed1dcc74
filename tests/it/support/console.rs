//! A console reader over plain HTTP: signs in, keeps the session cookie,
//! and reads pages without following redirects.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use super::{output_ok, TestProxy};

pub const ADMIN_TOKEN: &str = "console-admin-token-0123456789";

/// The proxy, started with an admin token, and a client that keeps no
/// cookies of its own.
pub struct ConsoleClient {
    pub proxy: TestProxy,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
}

/// A page as read: status, `Location`, `Set-Cookie`, CSP and body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub csp: Option<String>,
    pub body: String,
}

impl ConsoleClient {
    /// The proxy with `ADMIN_TOKEN` (both scopes), a read-only and a
    /// write-only token, and `extra` configuration.
    pub async fn start(upstream: &str, extra: &[(&str, &str)]) -> Self {
        let env = Self::env(extra);
        let proxy = TestProxy::start_with(upstream, &env).await;
        Self::on(proxy)
    }

    /// As [`start`](Self::start), on the store folder `dir`.
    pub async fn start_in(upstream: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Self {
        let env = Self::env(extra);
        let proxy = TestProxy::start_in(upstream, dir, &env).await;
        Self::on(proxy)
    }

    fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("LLM_AUDIT_PROXY_ADMIN_TOKEN", ADMIN_TOKEN),
            (
                "LLM_AUDIT_PROXY_ADMIN_READ_TOKENS",
                "console-reader-token-0123",
            ),
            (
                "LLM_AUDIT_PROXY_ADMIN_WRITE_TOKENS",
                "console-writer-token-0123",
            ),
        ];
        env.extend_from_slice(extra);
        env
    }

    pub fn on(proxy: TestProxy) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            proxy,
            http,
            cookie: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.admin_url)
    }

    /// Posts the sign-in form; keeps the cookie when one is set.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let page = self.post_form("/ui/login", &[("token", token)]).await;
        if let Some(cookie) = &page.set_cookie {
            self.cookie = cookie.split(';').next().map(str::to_owned);
        }
        page
    }

    pub async fn get(&self, path: &str) -> Page {
        let mut req = self.http.get(self.url(path));
        if let Some(cookie) = &self.cookie {
            req = req.header(COOKIE, cookie);
        }
        Page::read(req.send().await.unwrap()).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = &self.cookie {
            req = req.header(COOKIE, cookie);
        }
        Page::read(req.send().await.unwrap()).await
    }

    /// The CSRF token of the signed-in page at `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        let marker = "name=\"csrf\" value=\"";
        let start = page.body.find(marker).unwrap() + marker.len();
        let end = start + page.body[start..].find('"').unwrap();
        page.body[start..end].to_owned()
    }

    /// Events through the admin API, with the admin token.
    pub async fn api_events(&self, query: &str) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(self.url(&format!("/api/events?limit=1000&{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (bounded: 10 s) until `query` matches at least `n` events.
    pub async fn wait_events(&self, query: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events = self.api_events(query).await;
            if events.len() >= n || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn post_chat(&self, request_id: &str, content: &str) -> reqwest::Response {
        self.proxy
            .post_call("/v1/chat/completions", request_id)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}))
            .send()
            .await
            .unwrap()
    }

    /// One chat call through the proxy with `content` as the prompt;
    /// waits until its REQUEST and RESPONSE are stored.
    pub async fn chat(&self, request_id: &str, content: &str) {
        let r = self.post_chat(request_id, content).await;
        let _ = r.bytes().await;
        self.wait_events(
            &format!("request_id={request_id}&event_type=REQUEST,RESPONSE"),
            2,
        )
        .await;
    }

    /// One chat call that a policy refuses with 400; waits until its
    /// RESPONSE is stored.
    pub async fn refused_chat(&self, request_id: &str, content: &str) {
        let r = self.post_chat(request_id, content).await;
        assert_eq!(r.status(), 400);
        self.wait_events(&format!("request_id={request_id}&event_type=RESPONSE"), 1)
            .await;
    }
}

impl Page {
    async fn read(r: reqwest::Response) -> Self {
        let header = |name| {
            r.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = r.status().as_u16();
        let location = header(LOCATION);
        let set_cookie = header(SET_COOKIE);
        let csp = header(reqwest::header::CONTENT_SECURITY_POLICY);
        let body = r.text().await.unwrap();
        Self {
            status,
            location,
            set_cookie,
            csp,
            body,
        }
    }
}

/// A fresh checkpoint signing key in `dir` from `keygen`; returns the
/// private key file and the key id.
pub fn keygen(dir: &std::path::Path) -> (String, String) {
    let path = dir.join("console-signing.key");
    let out = output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_llm-audit-proxy")).args([
            "keygen",
            "--out",
            path.to_str().unwrap(),
        ]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        report["private_key_file"].as_str().unwrap().to_owned(),
        report["key_id"].as_str().unwrap().to_owned(),
    )
}
