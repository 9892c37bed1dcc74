//! The pooled HTTP client to upstream: HTTP/1.1 and HTTP/2 over rustls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use http::HeaderValue;

use super::body::UpstreamBody;
use crate::config::Upstream;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("proxy.ca_bundle: cannot read {path}: {message}")]
    CaBundle { path: String, message: String },
    #[error("proxy.ca_bundle: {path} holds no PEM certificate")]
    EmptyCaBundle { path: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Builds the client, trusting the web PKI roots plus `ca_bundle`.
pub fn build(ca_bundle: Option<&Path>) -> Result<UpstreamClient, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_bundle {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientError::CaBundle {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ClientError::EmptyCaBundle { path: shown });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ClientError::CaBundle {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);

    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector))
}

/// The `Host` header of every request to a plain-HTTP `upstream`, as the
/// client would write it from the request's URI when none is set (the
/// host, and the port unless it is the scheme's default). Worked out once,
/// so no call formats it. `None` for HTTPS: a connection there may speak
/// HTTP/2, where the client sends no `Host` header, only `:authority`, so
/// the client is left to decide per connection.
pub fn host_header(upstream: &Upstream) -> Option<HeaderValue> {
    if upstream.scheme != http::uri::Scheme::HTTP {
        return None;
    }
    let uri = upstream.uri_for("/").ok()?;
    let host = uri.host()?;
    let text = match uri.port_u16() {
        Some(80) | None => host.to_owned(),
        Some(port) => format!("{host}:{port}"),
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let uri: http::Uri = url.parse().unwrap();
        let parts = uri.into_parts();
        Upstream {
            scheme: parts.scheme.unwrap(),
            authority: parts.authority.unwrap(),
            path_prefix: String::new(),
        }
    }

    #[test]
    fn host_headers_leave_out_default_ports_only() {
        for (url, host) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://example.com:80", "example.com"),
            ("http://example.com", "example.com"),
            ("http://example.com:443", "example.com:443"),
            ("http://[::1]:11434", "[::1]:11434"),
        ] {
            assert_eq!(host_header(&upstream(url)).unwrap(), host, "{url}");
        }
        // HTTPS is left to the client, which knows the connection's version.
        for url in ["https://example.com", "https://api.openai.com:8443"] {
            assert_eq!(host_header(&upstream(url)), None, "{url}");
        }
    }
}
