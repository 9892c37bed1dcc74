//! The `http` shipping target: each batch is POSTed to one URL as
//! gzip-compressed NDJSON with a bearer token, and a 2xx answer
//! acknowledges it.
//!
//! Each line is an event as `/api/events` writes it, plus its origin
//! (`source_id`, `pod`, `namespace`, `node`). The `Idempotency-Key` header
//! is `<source_id>:<first seq>-<last seq>`: a batch sent again after a
//! crash or a lost answer carries the same key (the shipper re-reads the
//! same events from its cursor), so the receiver can keep each batch once.
//! Batches may be cut differently after a change of
//! `shipping.batch_size`; each line's (`source_id`, `seq`) is the event's
//! own key for a receiver that deduplicates by event.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use ::http::{HeaderValue, Method, Request};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use serde::Serialize;

use super::{ShipError, ShipTarget, Source};
use crate::config::HttpTarget as HttpTargetConfig;
use crate::event::EventRecord;

/// The target's name (its cursor key and metrics label).
pub const NAME: &str = "http";

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of an error answer kept for the message.
const ERROR_BODY_BYTES: usize = 200;

/// An HTTP endpoint batches are POSTed to.
pub struct HttpTarget {
    url: ::http::Uri,
    /// `Bearer <token>`, marked sensitive so no debug output shows it.
    authorization: HeaderValue,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// One NDJSON line: the event's fields, then its origin.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    record: &'a EventRecord,
    source_id: &'a str,
    pod: Option<&'a str>,
    namespace: Option<&'a str>,
    node: Option<&'a str>,
}

// === impl HttpTarget ===

impl HttpTarget {
    /// A target for the configured URL and token. No connection is made
    /// until the first batch.
    pub fn new(config: &HttpTargetConfig) -> Result<Self, String> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
            .map_err(|_| "shipping.http_token is not a valid header value".to_owned())?;
        authorization.set_sensitive(true);
        Ok(Self {
            url: config.url.clone(),
            authorization,
            timeout: config.timeout,
            client: client(),
        })
    }

    /// The batch as gzip-compressed NDJSON.
    fn body(source: &Source, batch: &[EventRecord]) -> Result<Vec<u8>, ShipError> {
        let encode_error = |e: &dyn std::fmt::Display| ShipError::Write {
            target: NAME,
            message: format!("the batch could not be encoded: {e}"),
        };
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for record in batch {
            let line = Line {
                record,
                source_id: &source.source_id,
                pod: source.pod.as_deref(),
                namespace: source.namespace.as_deref(),
                node: source.node.as_deref(),
            };
            serde_json::to_writer(&mut gzip, &line).map_err(|e| encode_error(&e))?;
            gzip.write_all(b"\n").map_err(|e| encode_error(&e))?;
        }
        gzip.finish().map_err(|e| encode_error(&e))
    }

    async fn post(&self, key: &str, body: Vec<u8>) -> Result<(), ShipError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(CONTENT_ENCODING, "gzip")
            .header(
                USER_AGENT,
                concat!("llm-audit-proxy/", env!("CARGO_PKG_VERSION")),
            )
            .header("idempotency-key", key)
            .header(AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ShipError::Write {
                target: NAME,
                message: format!("the request could not be built: {e}"),
            })?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ShipError::Connect {
                target: NAME,
                message: describe(&e),
            })?;
        let status = response.status();
        // Read to the end, so the connection goes back to the pool (the
        // timeout bounds it); only the start is kept, for the message.
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let room = ERROR_BODY_BYTES.saturating_sub(answer.len());
                answer.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        if status.is_success() {
            return Ok(());
        }
        let shown = String::from_utf8_lossy(&answer).replace(['\n', '\r'], " ");
        Err(ShipError::Write {
            target: NAME,
            message: format!("HTTP {status}: {shown}"),
        })
    }
}

#[async_trait]
impl ShipTarget for HttpTarget {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn write(&self, source: &Source, batch: &[EventRecord]) -> Result<(), ShipError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let key = idempotency_key(&source.source_id, first.seq, last.seq);
        let body = Self::body(source, batch)?;
        tokio::time::timeout(self.timeout, self.post(&key, body))
            .await
            .unwrap_or(Err(ShipError::Timeout {
                target: NAME,
                secs: self.timeout.as_secs(),
            }))
    }
}

/// `<source_id>:<first seq>-<last seq>`.
pub fn idempotency_key(source_id: &str, first: i64, last: i64) -> String {
    format!("{source_id}:{first}-{last}")
}

/// A pooled client over rustls with the web PKI roots.
fn client() -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default versions; this branch is not taken.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// The error and its causes, one line (a URL's path may show; the token
/// never does, since it travels only in a header).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    crate::telemetry::with_causes(error)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::config::Secret;
    use crate::event::{EventType, NewEvent};

    fn config(token: &str) -> HttpTargetConfig {
        HttpTargetConfig {
            url: "http://127.0.0.1:9/ingest".parse().unwrap(),
            token: Secret::new(token),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_batch_is_gzipped_ndjson_with_its_origin() {
        let source = Source {
            source_id: "src-1".into(),
            pod: Some("pod-a".into()),
            namespace: None,
            node: None,
        };
        let batch: Vec<EventRecord> = (1..=3)
            .map(|seq| {
                EventRecord::try_from(NewEvent::new(EventType::Custom, "x").seal(seq, "00"))
                    .unwrap()
            })
            .collect();
        let gz = HttpTarget::body(&source, &batch).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["seq"], 3);
        assert_eq!(lines[0]["source_id"], "src-1");
        assert_eq!(lines[0]["pod"], "pod-a");
        assert_eq!(lines[0]["hash"], batch[0].hash.as_str());
        assert_eq!(idempotency_key("src-1", 1, 3), "src-1:1-3");
    }

    #[test]
    fn the_token_never_shows() {
        let target = HttpTarget::new(&config("tok-s3cret")).unwrap();
        assert!(!format!("{:?}", target.authorization).contains("tok-s3cret"));
        assert!(HttpTarget::new(&config("bad\ntoken")).is_err());
    }
}
