//! TLS settings per host: whether certificates are verified (flags, strata's configuration,
//! registries.conf) and which extra CA roots and client certificate are used (certs.d), and
//! the HTTP client built from them.

use std::path::Path;
use std::time::Duration;

use strata_spec::DOCKER_HUB_REGISTRY;

use crate::config::ClientCert;
use crate::{RegistryError, RegistryOptions, TlsMode};

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

fn read_pem(path: &Path) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| RegistryError::io(format!("reading {}", path.display()), e))
}

/// An HTTP client for hosts with `tls`.
pub(crate) fn http_client(
    options: &RegistryOptions,
    tls: &HostTls,
) -> Result<reqwest::Client, RegistryError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(options.user_agent.clone())
        .read_timeout(options.read_timeout)
        .connect_timeout(options.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_adaptive_window(true)
        .tcp_nodelay(true);
    if tls.insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    let mut roots = Vec::new();
    for path in &tls.ca_certs {
        let certs = reqwest::Certificate::from_pem_bundle(&read_pem(path)?).map_err(|e| {
            RegistryError::config(Some(path.clone()), format!("not a PEM CA certificate: {e}"))
        })?;
        if certs.is_empty() {
            return Err(RegistryError::config(
                Some(path.clone()),
                "holds no PEM certificate",
            ));
        }
        roots.extend(certs);
    }
    if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    if let Some(c) = &tls.client_cert {
        let mut pem = read_pem(&c.cert)?;
        pem.push(b'\n');
        pem.extend(read_pem(&c.key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            RegistryError::config(
                Some(c.cert.clone()),
                format!(
                    "client certificate with key {} is unusable: {e}",
                    c.key.display()
                ),
            )
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| RegistryError::config(None, format!("cannot build the HTTP client: {e}")))
}
