//! The real distribution registry on a free loopback port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::TestImage;
use crate::{TestCertificates, TokenServer};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long the registry may take to answer `/v2/` after start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Port conflicts (another process took the port between our probe and the registry's bind)
/// are retried this many times with a new port.
const START_TRIES: usize = 5;

/// A running `docker-registry serve`, killed (by PID) on drop.
pub struct TestRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

/// `storage.delete.enabled` in the registry's config.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deletion {
    Enabled,
    Disabled,
}

enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Token(&'a TokenServer),
}

impl TestRegistry {
    /// A registry without auth.
    pub fn start() -> TestRegistry {
        Self::start_with(Auth::None, Deletion::Enabled, None)
    }

    /// A registry without auth whose manifest DELETE answers 405 `UNSUPPORTED`, the
    /// distribution registry's default (`storage.delete.enabled: false`).
    pub fn start_with_delete_disabled() -> TestRegistry {
        Self::start_with(Auth::None, Deletion::Disabled, None)
    }

    /// A registry without auth serving HTTPS with this PEM certificate and key (its
    /// [`TestRegistry::url`] is then `https://`); with `client_ca`, clients must present a
    /// certificate signed by it.
    pub fn start_with_tls(
        certificate: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> TestRegistry {
        Self::start_with(
            Auth::None,
            Deletion::Enabled,
            Some((certificate, key, client_ca)),
        )
    }

    /// A registry without auth serving HTTPS only (HTTP/2 and HTTP/1.1 offered by ALPN, as
    /// Go's server does) with the server certificate of `certificates`.
    pub fn start_tls(certificates: &TestCertificates) -> TestRegistry {
        Self::start_with_tls(
            &certificates.server_cert(),
            &certificates.server_key(),
            None,
        )
    }

    /// A registry with htpasswd Basic auth for one user.
    pub fn start_with_basic_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_with(Auth::Basic(user, password), Deletion::Enabled, None)
    }

    /// A registry with Bearer token auth delegated to `tokens` (real JWT verification).
    pub fn start_with_token_auth(tokens: &TokenServer) -> TestRegistry {
        Self::start_with(Auth::Token(tokens), Deletion::Enabled, None)
    }

    fn start_with(
        auth: Auth<'_>,
        deletion: Deletion,
        tls: Option<(&Path, &Path, Option<&Path>)>,
    ) -> TestRegistry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install the Debian package docker-registry (scripts/install-deps.sh)"
        );
        let htpasswd = match auth {
            Auth::Basic(user, password) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (Debian package apache2-utils) must be installed");
                assert!(out.status.success(), "htpasswd failed");
                Some(out.stdout)
            }
            _ => None,
        };
        let mut last = String::new();
        for _ in 0..START_TRIES {
            let dir = tempfile::Builder::new()
                .prefix("strata-registry-")
                .tempdir()
                .expect("temp dir for the registry");
            let auth_yaml = match (&auth, &htpasswd) {
                (Auth::Basic(..), Some(line)) => {
                    let path = dir.path().join("htpasswd");
                    std::fs::write(&path, line).expect("write htpasswd");
                    format!(
                        "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                        path.display()
                    )
                }
                (Auth::Token(t), _) => format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    t.realm(),
                    t.service(),
                    t.issuer(),
                    t.root_cert().display()
                ),
                _ => String::new(),
            };
            let port = free_port();
            let tls_yaml = match tls {
                Some((cert, key, client_ca)) => format!(
                    "  tls:\n    certificate: {}\n    key: {}\n{}",
                    cert.display(),
                    key.display(),
                    client_ca
                        .map(|ca| format!("    clientcas:\n      - {}\n", ca.display()))
                        .unwrap_or_default()
                ),
                None => String::new(),
            };
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: {delete}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: strata-testkit-secret\n{tls_yaml}{auth_yaml}",
                root = dir.path().join("data").display(),
                delete = deletion == Deletion::Enabled,
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut reg = TestRegistry {
                child,
                port,
                dir,
                tls: tls.is_some(),
            };
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(e) => {
                    last = format!("{e}; log:\n{}", reg.log());
                    drop(reg.stop());
                }
            }
        }
        panic!("registry did not start after {START_TRIES} tries: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("registry exited with {status}"));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut buf = [0u8; 16];
                if let Ok(n) = s.read(&mut buf)
                    && n >= 12
                    && buf.starts_with(b"HTTP/1.")
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("registry did not answer /v2/ in time".into())
    }

    fn stop(mut self) -> TestRegistry {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:PORT` (`https://` for [`TestRegistry::start_with_tls`] and [`TestRegistry::start_tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }
    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// Everything the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
    /// Is the blob stored in the registry's backend (anywhere)?
    pub fn has_blob(&self, digest: &str) -> bool {
        let Some((alg, hex)) = digest.split_once(':') else {
            return false;
        };
        self.storage()
            .join("docker/registry/v2/blobs")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
            .join("data")
            .exists()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // Only our own child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the registry's config can't say `:0`).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Push `image` to `host/repository:tag` with plain HTTP (monolithic uploads, no auth or
/// Basic auth): a client independent of strata's, to prepare content for pull tests.
pub async fn push_image_raw(
    host: &str,
    repository: &str,
    tag: &str,
    image: &TestImage,
    basic: Option<(&str, &str)>,
) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let auth = |rb: reqwest::RequestBuilder| match basic {
        Some((u, p)) => rb.basic_auth(u, Some(p)),
        None => rb,
    };
    for (descriptor, bytes) in image.blobs() {
        let post = auth(http.post(format!("http://{host}/v2/{repository}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(
            post.status().as_u16(),
            202,
            "POST upload: {}",
            post.status()
        );
        let loc = post
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("Location")
            .to_string();
        let base = reqwest::Url::parse(&format!("http://{host}/")).expect("url");
        let mut url = base.join(&loc).expect("location url");
        url.query_pairs_mut()
            .append_pair("digest", &descriptor.digest.to_string());
        let put = auth(http.put(url))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT blob");
        assert_eq!(put.status().as_u16(), 201, "PUT blob: {}", put.status());
    }
    for (media_type, bytes, reference) in image.manifests_to_push(tag) {
        let put = auth(http.put(format!(
            "http://{host}/v2/{repository}/manifests/{reference}"
        )))
        .header("content-type", media_type)
        .body(bytes)
        .send()
        .await
        .expect("PUT manifest");
        assert_eq!(put.status().as_u16(), 201, "PUT manifest: {}", put.status());
    }
}
