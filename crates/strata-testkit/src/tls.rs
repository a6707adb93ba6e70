//! Certificates for TLS tests: a CA and a server certificate it signed, for `127.0.0.1`
//! and `localhost` (made with `openssl` at start; EC P-256 keys, quick to make).

use std::path::{Path, PathBuf};

use crate::token::openssl;

/// A CA, a server certificate for `127.0.0.1` / `localhost` signed by it, and a directory
/// holding only `ca.crt` (what `--cert-dir` and skopeo's `--cert-dir` read).
pub struct TestCertificates {
    dir: tempfile::TempDir,
}

impl TestCertificates {
    pub fn new() -> TestCertificates {
        let dir = tempfile::Builder::new()
            .prefix("strata-tls-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("ca-dir")).expect("ca dir");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca-dir/ca.crt",
            "-days",
            "3",
            "-subj",
            "/CN=strata-testkit-tls-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(d, &csr);
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext file");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca-dir/ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "3",
                "-extfile",
                "server.ext",
            ],
        );
        TestCertificates { dir }
    }

    /// A directory with `ca.crt` only: pass it as `--cert-dir`.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca-dir")
    }
    /// The CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.crt")
    }
    /// The server certificate (PEM), for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }
    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCertificates {
    fn default() -> Self {
        Self::new()
    }
}
