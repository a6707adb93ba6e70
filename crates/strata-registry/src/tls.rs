//! The TLS configuration every connection to a registry uses: reqwest's pooled client, its
//! HTTP/1.1 blob client and the direct blob GETs ([`crate::direct`]) all verify certificates
//! the same way, from one [`rustls::ClientConfig`] built here.
//!
//! - [`TlsMode::Verify`]: the platform's roots (as reqwest uses them:
//!   `rustls-platform-verifier`), plus the `*.crt` files of [`RegistryOptions::cert_dir`].
//! - [`TlsMode::Insecure`]: any certificate is accepted; the handshake signature is still
//!   checked against the certificate presented (the peer holds its key).
//! - A `*.cert` file with the `*.key` of the same name in the certificate directory is a
//!   client certificate (mutual TLS), as in skopeo's `--cert-dir`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{RegistryError, RegistryOptions, TlsMode};

/// ALPN of connections that carry manifests, tokens and pings (many small requests).
const ALPN_POOLED: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of blob connections: HTTP/1.1 only, one connection per blob in flight, so each
/// transfer decrypts on the task (and core) that consumes it instead of all sharing one
/// HTTP/2 connection task.
const ALPN_BLOB: &[&[u8]] = &[b"http/1.1"];

/// The two client configurations of a [`crate::Client`].
pub(crate) struct TlsConfigs {
    pub(crate) pooled: rustls::ClientConfig,
    pub(crate) blob: Arc<rustls::ClientConfig>,
}

pub(crate) fn configs(options: &RegistryOptions) -> Result<TlsConfigs, RegistryError> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let material = match &options.cert_dir {
        Some(dir) => read_cert_dir(dir)?,
        None => CertDir::default(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::config(None, format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match options.tls {
        TlsMode::Insecure => Arc::new(AnyCertificate(provider.clone())),
        TlsMode::Verify => {
            let v = if material.roots.is_empty() {
                rustls_platform_verifier::Verifier::new(provider.clone())
            } else {
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    material.roots,
                    provider.clone(),
                )
            };
            Arc::new(v.map_err(|e| {
                RegistryError::config(
                    options.cert_dir.clone(),
                    format!("cannot load the trusted certificates: {e}"),
                )
            })?)
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut pooled = match material.client {
        Some((chain, key, path)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| RegistryError::config(Some(path), format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    let mut blob = pooled.clone();
    pooled.alpn_protocols = ALPN_POOLED.iter().map(|p| p.to_vec()).collect();
    blob.alpn_protocols = ALPN_BLOB.iter().map(|p| p.to_vec()).collect();
    Ok(TlsConfigs {
        pooled,
        blob: Arc::new(blob),
    })
}

#[derive(Default)]
struct CertDir {
    roots: Vec<CertificateDer<'static>>,
    /// Chain, key and the `.cert` file they came from.
    client: Option<(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
    )>,
}

/// `*.crt`: trusted CA certificates; `NAME.cert` + `NAME.key`: a client certificate
/// (containers-certs.d(5), the layout of skopeo's `--cert-dir` and `/etc/docker/certs.d`).
fn read_cert_dir(dir: &Path) -> Result<CertDir, RegistryError> {
    let bad =
        |path: &Path, message: String| RegistryError::config(Some(path.to_path_buf()), message);
    let entries = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, format!("cannot read the certificate directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out = CertDir::default();
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let certs = read_certs(path)?;
                out.roots.extend(certs);
            }
            Some("cert") => {
                let key_path = path.with_extension("key");
                if !key_path.is_file() {
                    return Err(bad(
                        path,
                        format!("client certificate without its key {}", key_path.display()),
                    ));
                }
                if out.client.is_some() {
                    return Err(bad(path, "more than one client certificate".into()));
                }
                let chain = read_certs(path)?;
                let key = PrivateKeyDer::from_pem_file(&key_path)
                    .map_err(|e| bad(&key_path, format!("no usable private key: {e}")))?;
                out.client = Some((chain, key, path.clone()));
            }
            Some("key") if !path.with_extension("cert").is_file() => {
                return Err(bad(
                    path,
                    format!(
                        "private key without its client certificate {}",
                        path.with_extension("cert").display()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
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
    fn cert_dir_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let err = read_cert_dir(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("ca.crt") && err.contains("no PEM certificate"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.key"), "x").unwrap();
        let err = read_cert_dir(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("client.key") && err.contains("client.cert"),
            "{err}"
        );

        let missing = dir.path().join("nope");
        let err = read_cert_dir(&missing).err().unwrap().to_string();
        assert!(
            err.contains("nope") && err.contains("certificate directory"),
            "{err}"
        );
    }

    #[test]
    fn blob_connections_offer_only_http1() {
        let c = configs(&RegistryOptions::default()).unwrap();
        assert_eq!(c.blob.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(
            c.pooled.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
