//! Shared helpers for the CLI tests: an isolated environment per test (own store, own HOME, no
//! inherited auth files), running strata and outside judges, small assertions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The busybox amd64 + arm64 index as an OCI layout at `ENV/src`, tag `multi`.
pub fn fixture_layout(env: &Env) -> PathBuf {
    let src = env.path("src");
    strata_testkit::busybox_index()
        .write_oci_layout(&src, "multi")
        .expect("write fixture");
    src
}

/// A random one-layer Windows image with that `os.version`.
pub fn windows_image(os_version: &str, seed: u64) -> strata_testkit::TestImage {
    let mut p = strata_spec::Platform::new("windows", "amd64");
    p.os_version = Some(os_version.into());
    strata_testkit::random_image_for_platform(seed, &[1000], &p)
}

/// Push `image` (with every image of an index) to `dest` through an OCI layout.
pub fn push_image(env: &Env, image: &strata_testkit::TestImage, dest: &str) {
    let dir = env.path(&format!("layout-{}", image.digest().encoded()));
    image.write_oci_layout(&dir, "t").expect("layout");
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--tls-verify=false",
        &format!("oci:{}:t", dir.display()),
        dest,
    ]);
}

/// One test's world: a temp dir holding HOME, XDG dirs and scratch space.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["home", "data", "runtime", "config"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Env { dir }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// `strata ARGS…` in this environment.
    pub fn strata(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("TMPDIR", self.dir.path());
        c
    }
    /// Run strata, panic unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.strata().args(args).output().expect("run strata");
        assert!(
            out.status.success(),
            "strata {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }
    /// Run strata expecting failure with exit code 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.strata().args(args).output().expect("run strata");
        assert_eq!(
            out.status.code(),
            Some(1),
            "strata {args:?} should fail with 1:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }
    pub fn output(&self, args: &[&str]) -> Output {
        self.strata().args(args).output().expect("run strata")
    }
    /// Run strata and parse its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("strata {args:?}: not JSON ({e}):\n{out}"))
    }
}

/// Run an outside tool, panic with its output unless it succeeds; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/install-deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `skopeo inspect --raw` bytes.
pub fn skopeo_raw(reference: &str) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw"];
    if reference.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    args.push(reference);
    run("skopeo", &args).into_bytes()
}

/// `skopeo inspect` (the JSON summary).
pub fn skopeo_info(reference: &str) -> Value {
    let mut args = vec!["inspect"];
    if reference.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    args.push(reference);
    serde_json::from_str(&run("skopeo", &args)).expect("skopeo json")
}

/// Digest of the document a layout tag points at.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// The tags in a layout's index.json.
pub fn layout_tags(layout: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(layout.join("index.json")) else {
        return Vec::new();
    };
    let index: Value = serde_json::from_slice(&bytes).expect("json");
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    tags.sort();
    tags
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    strata_spec::Digest::sha256_of(bytes).to_string()
}
