//! Shared test helpers: busybox root filesystems built at run time from Debian's static
//! busybox (amd64 from the installed busybox-static, arm64 from `apt-get download
//! busybox-static:arm64`), a step runner, and host-side probes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_sandbox::{Rootfs, RunOutcome, RunSpec, Sandbox, SandboxError, StepDirs};

pub const HELPER: &str = env!("CARGO_BIN_EXE_strata-sandbox-helper");

pub fn sandbox() -> Sandbox {
    Sandbox::with_helper(HELPER)
}

/// A busybox root filesystem at `dir` (like bench/make-fixtures.sh's mk_rootfs): bin/busybox
/// plus applet symlinks, /etc/passwd and /etc/group with root, nobody and an `app` user in two
/// supplementary groups, /tmp 1777.
pub fn make_rootfs(dir: &Path, busybox: &Path) {
    for d in [
        "bin", "etc", "root", "tmp", "proc", "sys", "dev", "var/tmp", "usr/bin",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(dir.join("var/tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::fs::set_permissions(
        dir.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for a in strata_testkit::busybox::applets() {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(a));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\naudio:x:29:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

/// Path to the arm64 static busybox scripts/install-deps.sh unpacks from Debian's
/// busybox-static:arm64 (strata-testkit knows where; it panics with the fix when missing).
pub fn arm64_busybox() -> PathBuf {
    strata_testkit::busybox::busybox_binary("arm64")
}

/// A temp dir with a busybox lower layer and a fresh upper/work pair.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub lower: PathBuf,
    pub dirs: StepDirs,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_busybox(Path::new("/bin/busybox"))
    }

    pub fn with_busybox(busybox: &Path) -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("sbx-test-")
            .tempdir()
            .unwrap();
        let lower = tmp.path().join("lower");
        make_rootfs(&lower, busybox);
        let dirs = StepDirs::create(tmp.path()).unwrap();
        Fixture { tmp, lower, dirs }
    }

    pub fn rootfs(&self) -> Rootfs {
        self.dirs.overlay(vec![self.lower.clone()])
    }

    pub fn spec(&self, cmd: &str) -> RunSpec {
        RunSpec::shell(self.rootfs(), cmd)
    }

    pub fn run(&self, cmd: &str) -> RunOutcome {
        run_ok(&self.spec(cmd))
    }

    pub fn upper(&self) -> &Path {
        self.dirs.upper()
    }

    /// Relative paths in the upper dir.
    pub fn upper_entries(&self) -> Vec<String> {
        tree(self.upper()).into_keys().collect()
    }
}

pub fn run_ok(spec: &RunSpec) -> RunOutcome {
    match sandbox().run(spec) {
        Ok(o) => o,
        Err(e) => panic!("run failed: {}", strata_testkit::error_chain(&e)),
    }
}

pub fn run_err(spec: &RunSpec) -> SandboxError {
    match sandbox().run(spec) {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => e,
    }
}

pub fn output(o: &RunOutcome) -> String {
    o.output_tail.join("\n")
}

/// Relative path → (mode, uid, gid, size, rdev, symlink target) of every entry under `root`
/// (symlinks not followed): a fingerprint to prove a directory unchanged.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let link = std::fs::read_link(&p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let content = if md.is_file() && md.len() < 4096 {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned()
            } else {
                String::new()
            };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} {} rdev={} ino={} mtime={} ->{link} {content:?}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.len(),
                    md.rdev(),
                    md.ino(),
                    md.mtime()
                ),
            );
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A sentinel directory outside every root (RELIABILITY's `/tmp/probe`), with known files.
pub struct Probe {
    pub dir: tempfile::TempDir,
    before: BTreeMap<String, String>,
}

impl Probe {
    pub fn new() -> Probe {
        let dir = tempfile::Builder::new()
            .prefix("sbx-probe-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("hosts"), "10.9.9.9 sentinel\n").unwrap();
        std::fs::write(dir.path().join("null"), "not a device\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), "keep\n").unwrap();
        let before = tree(dir.path());
        Probe { dir, before }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn assert_unchanged(&self) {
        let after = tree(self.dir.path());
        assert_eq!(self.before, after, "the host probe dir changed");
        let dir_md = std::fs::metadata(self.dir.path()).unwrap();
        assert!(dir_md.is_dir());
    }
}

/// Read a file's xattr (None when absent).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
