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

use super::body::UpstreamBody;

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
