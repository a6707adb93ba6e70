//! Test harness for strata: real parts, not mocks.
//!
//! - [`TestRegistry`]: the CNCF distribution registry (`/usr/bin/docker-registry`, Debian
//!   package `docker-registry`) on a free loopback port with storage in a temp dir, optionally
//!   with htpasswd Basic auth or real Bearer token auth against a [`TokenServer`]; killed by
//!   PID on drop; [`TestRegistry::start_tls`] serves HTTPS with a [`TestCertificates`]
//!   certificate. A missing binary is a panic, not a skip: tests must fail in CI.
//! - [`TokenServer`]: a token endpoint that signs JWTs (RS256, `x5c` chain) with a key and
//!   certificate made by `openssl` at start, which the registry verifies through its
//!   `rootcertbundle` — the same protocol as Docker Hub's auth service.
//! - [`FaultProxy`]: an HTTP/1.1 proxy in front of a registry that injects scripted faults
//!   (status codes with `Retry-After`, resets after K body bytes, truncated, corrupted or
//!   extended bodies, dropped request bodies, redirects to another host name, slow bodies,
//!   challenges) matched by method + path regex + occurrence, and records every request
//!   (method, path, host, auth *scheme*, `Range`, lengths, status) — never a secret.
//! - [`fixtures`]: small deterministic OCI images (real gzip tars) from a seed;
//!   [`busybox`]: runnable busybox images (amd64, arm64) from Debian's static busybox.
//! - [`error_chain`]: an error with all its sources, for failure messages.
//! - [`processes_with`]: processes still running whose command line carries a marker.
//! - [`schema`]: validation against the OCI image-spec JSON schemas (vendored).
//!
//! ```no_run
//! let registry = strata_testkit::TestRegistry::start();
//! # let rt = tokio::runtime::Runtime::new().unwrap();
//! # rt.block_on(async {
//! let proxy = strata_testkit::FaultProxy::start(&registry.host()).await;
//! proxy.add(strata_testkit::Rule::new("GET", "/blobs/", strata_testkit::Fault::status(503)));
//! # });
//! ```

pub mod busybox;
mod errors;
pub mod fixtures;
pub mod memory;
mod processes;
mod proxy;
mod registry;
pub mod schema;
mod tls;
mod token;

pub use busybox::{busybox_image, busybox_index};
pub use errors::error_chain;
pub use fixtures::{
    TestImage, image_from_layers, index_of, random_image, random_image_for_platform, random_index,
};
pub use processes::processes_with;

/// A loopback port nothing listens on (bound, then closed): connecting is refused.
pub fn closed_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}
pub use proxy::{Fault, FaultProxy, RecordedRequest, Rule};
pub use registry::{TestRegistry, push_image_raw};
pub use tls::TestCertificates;
pub use token::{TokenRequest, TokenServer};
