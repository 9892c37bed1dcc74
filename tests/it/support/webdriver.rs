//! A small WebDriver client for the browser tests: starts Debian's
//! `chromedriver` on a free loopback port and drives headless Chromium
//! with the W3C WebDriver protocol over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Set to 1 (CI does) to fail instead of skipping when no browser is
/// installed.
pub const REQUIRE_ENV: &str = "LLM_AUDIT_PROXY_REQUIRE_BROWSER_TEST";

/// A running chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Clone)]
pub struct Element(String);

/// The chromium and chromedriver binaries, or why the tests skip.
pub fn find_binaries() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        names.iter().find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    };
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("no chromium on PATH (Debian: apt-get install chromium)")?;
    let driver = find(&["chromedriver"])
        .ok_or("no chromedriver on PATH (Debian: apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// Whether a missing browser fails the test rather than skipping it.
pub fn browser_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

impl Browser {
    /// Starts chromedriver and a headless browser session whose
    /// performance log records every network request.
    pub async fn start(chromium: &Path, driver: &Path) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver: child,
            http,
            base,
            _profile: profile,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await;
            if let Ok(r) = ready {
                let body: Value = r.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"performance": "ALL"}
        }}});
        let session = browser.call("POST", "/session", Some(caps)).await;
        let id = session["sessionId"].as_str().unwrap().to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let r = req.send().await.unwrap();
        let status = r.status();
        let value: Value = r.json().await.unwrap();
        if status.is_success() {
            Ok(value["value"].clone())
        } else {
            Err(value)
        }
    }

    /// Polls (bounded: 10 s) until the element matching `css` exists and
    /// `attribute` (or its text, for `None`) passes `ok`; a page still
    /// loading after a click is simply read again.
    pub async fn wait_for(
        &self,
        css: &str,
        attribute: Option<&str>,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            let found = self
                .try_call(
                    "POST",
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Ok(found) = found {
                let id = found[ELEMENT].as_str().unwrap_or_default().to_owned();
                let path = match attribute {
                    Some(name) => format!("/element/{id}/attribute/{name}"),
                    None => format!("/element/{id}/text"),
                };
                if let Ok(value) = self.try_call("GET", &path, None).await {
                    last = value.as_str().unwrap_or_default().to_owned();
                    if ok(&last) {
                        return last;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} {attribute:?}: last seen {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls (bounded: 10 s) until the current URL passes `ok`.
    pub async fn wait_url(&self, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if ok(&url) {
                return url;
            }
            assert!(tokio::time::Instant::now() < deadline, "stayed at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Element {
        self.find_by("css selector", css).await
    }

    pub async fn find_xpath(&self, xpath: &str) -> Element {
        self.find_by("xpath", xpath).await
    }

    async fn find_by(&self, using: &str, value: &str) -> Element {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": using, "value": value})),
            )
            .await;
        Element(
            found[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("{using} {value}: {found}"))
                .to_owned(),
        )
    }

    /// How many elements match a CSS selector.
    pub async fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    pub async fn click(&self, element: &Element) {
        self.call("POST", &format!("/element/{}/click", element.0), None)
            .await;
    }

    pub async fn type_into(&self, element: &Element, text: &str) {
        self.call("POST", &format!("/element/{}/clear", element.0), None)
            .await;
        self.call(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn source(&self) -> String {
        self.call("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Presses Tab, as a keyboard user moving to the next control.
    pub async fn press_tab(&self) {
        let tab = "\u{E004}";
        self.call(
            "POST",
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": tab}, {"type": "keyUp", "value": tab}]}]}),
            ),
        )
        .await;
    }

    /// The focused element's attribute and its on-screen rectangle
    /// (x, y, width, height).
    pub async fn focused(&self, attribute: &str) -> (Option<String>, [f64; 4]) {
        let active = self.call("GET", "/element/active", None).await;
        let element = Element(active[ELEMENT].as_str().unwrap().to_owned());
        let value = self.attribute(&element, attribute).await;
        let rect = self
            .call("GET", &format!("/element/{}/rect", element.0), None)
            .await;
        let n = |k: &str| rect[k].as_f64().unwrap_or(-1.0);
        (value, [n("x"), n("y"), n("width"), n("height")])
    }

    /// A cookie's value, HttpOnly ones included.
    pub async fn cookie(&self, name: &str) -> String {
        self.call("GET", &format!("/cookie/{name}"), None).await["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Saves a PNG of the viewport to `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        let data = self.call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Every URL the browser requested since the session started, from
    /// its performance log.
    pub async fn requested_urls(&self) -> Vec<String> {
        let entries = self
            .call("POST", "/se/log", Some(json!({"type": "performance"})))
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|m| {
                m["message"]["params"]["request"]["url"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Ends the session and the driver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test must not leave the driver (and its browser) behind.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
