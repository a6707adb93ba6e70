//! TLS per host and the clients built from it. Whether certificates are verified comes from
//! the flags, strata's configuration and registries.conf; extra CA roots and a client
//! certificate from certs.d or `--cert-dir` ([`crate::config::CertDirs`]). Every connection
//! to a host — reqwest's pooled client, its HTTP/1.1 blob client and the direct blob GETs
//! ([`crate::direct`]) — verifies certificates the same way, from one
//! [`rustls::ClientConfig`] built here:
//!
//! - verified: the platform's roots (as reqwest uses them: `rustls-platform-verifier`), plus
//!   the host's CA files;
//! - insecure: any certificate is accepted; the handshake signature is still checked against
//!   the certificate presented (the peer holds its key).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use strata_spec::DOCKER_HUB_REGISTRY;

use crate::config::ClientCert;
use crate::{RegistryError, RegistryOptions, TlsMode};

/// ALPN of connections that carry manifests, tokens and pings (many small requests).
const ALPN_POOLED: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of blob connections: HTTP/1.1 only, one connection per blob in flight, so each
/// transfer decrypts on the task (and core) that consumes it instead of all sharing one
/// HTTP/2 connection task.
const ALPN_BLOB: &[&[u8]] = &[b"http/1.1"];

/// Docker Hub's API host, whose settings are those of `docker.io`.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// How one host (`host[:port]`) is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTls {
    /// No certificate checks; plain HTTP allowed.
    pub insecure: bool,
    /// PEM files of CA certificates trusted for this host besides the system's.
    pub ca_certs: Vec<std::path::PathBuf>,
    pub client_cert: Option<ClientCert>,
}

/// The name a host's settings are filed under (`registry-1.docker.io` is `docker.io`).
pub(crate) fn config_host(host: &str) -> &str {
    if host == DOCKER_HUB_API_HOST {
        DOCKER_HUB_REGISTRY
    } else {
        host
    }
}

/// Is `host` reached without TLS verification? Flags first ([`TlsMode`]), then the
/// configuration in [`RegistryOptions::registries`].
pub fn host_insecure(options: &RegistryOptions, host: &str) -> bool {
    match options.tls {
        TlsMode::Insecure => true,
        TlsMode::VerifyAlways => false,
        TlsMode::Verify => options
            .registries
            .insecure_host(config_host(host))
            .is_some(),
    }
}

/// Everything that decides how `host` is reached.
pub fn host_tls(options: &RegistryOptions, host: &str) -> Result<HostTls, RegistryError> {
    let certs = options.cert_dirs.host_certs(config_host(host))?;
    Ok(HostTls {
        insecure: host_insecure(options, host),
        ca_certs: certs.ca_certs,
        client_cert: certs.client_cert,
    })
}

/// The clients of one host's TLS settings.
pub(crate) struct HostClients {
    /// Pings, tokens, manifests, tags, upload sessions: HTTP/2 when the registry offers it.
    pub(crate) pooled: reqwest::Client,
    /// Blob bodies (uploads, and GETs the direct path does not take): HTTP/1.1 only, so
    /// every blob in flight has a connection of its own.
    pub(crate) blob: reqwest::Client,
    /// The TLS configuration of direct blob GETs (the blob client's, `http/1.1` only).
    pub(crate) blob_tls: Arc<rustls::ClientConfig>,
}

/// The clients for hosts with `tls`.
pub(crate) fn host_clients(
    options: &RegistryOptions,
    tls: &HostTls,
) -> Result<HostClients, RegistryError> {
    let (pooled_tls, blob_tls) = configs(tls)?;
    let builder = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(options.user_agent.clone())
            .read_timeout(options.read_timeout)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
    };
    let built = |b: reqwest::ClientBuilder| {
        b.build()
            .map_err(|e| RegistryError::config(None, format!("cannot build the HTTP client: {e}")))
    };
    Ok(HostClients {
        pooled: built(
            builder()
                .http2_adaptive_window(true)
                .tls_backend_preconfigured(pooled_tls),
        )?,
        blob: built(
            builder()
                .http1_only()
                .tls_backend_preconfigured((*blob_tls).clone()),
        )?,
        blob_tls,
    })
}

/// The pooled and the blob TLS configurations for `tls`.
fn configs(
    tls: &HostTls,
) -> Result<(rustls::ClientConfig, Arc<rustls::ClientConfig>), RegistryError> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut roots = Vec::new();
    for path in &tls.ca_certs {
        roots.extend(read_certs(path)?);
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::config(None, format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure {
        Arc::new(AnyCertificate(provider.clone()))
    } else {
        let v = if roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
        };
        Arc::new(v.map_err(|e| {
            RegistryError::config(
                tls.ca_certs.first().cloned(),
                format!("cannot load the trusted certificates: {e}"),
            )
        })?)
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut pooled = match &tls.client_cert {
        Some(c) => {
            let (chain, key) = read_client_cert(c)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                RegistryError::config(Some(c.cert.clone()), format!("client certificate: {e}"))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    let mut blob = pooled.clone();
    pooled.alpn_protocols = ALPN_POOLED.iter().map(|p| p.to_vec()).collect();
    blob.alpn_protocols = ALPN_BLOB.iter().map(|p| p.to_vec()).collect();
    Ok((pooled, Arc::new(blob)))
}

fn read_client_cert(
    c: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), RegistryError> {
    let chain = read_certs(&c.cert)?;
    let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| {
        RegistryError::config(Some(c.key.clone()), format!("no usable private key: {e}"))
    })?;
    Ok((chain, key))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RegistryError> {
    let bad = |message: String| RegistryError::config(Some(path.to_path_buf()), message);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// `--tls-verify=false`: any certificate, any name; the handshake signature is still
/// verified with the presented certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "not pem").unwrap();
        let tls = HostTls {
            ca_certs: vec![ca],
            ..HostTls::default()
        };
        let err = configs(&tls).err().unwrap().to_string();
        assert!(
            err.contains("ca.crt") && err.contains("no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn blob_connections_offer_only_http1() {
        let (pooled, blob) = configs(&HostTls::default()).unwrap();
        assert_eq!(blob.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(
            pooled.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
