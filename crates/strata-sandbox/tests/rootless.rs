//! Rootless steps: the whole sandbox (parent and helper) runs as an unprivileged user in a
//! user namespace. As root (CI), the tests drop to `nobody` with `setpriv`; the
//! subordinate-id case also bind-mounts its own /etc/subuid and /etc/subgid in a private
//! mount namespace (`unshare -m`), so the host's files are never edited. Run as a normal
//! user, the single-id tests run as that user and the subordinate-id test is skipped (it
//! needs root to set up its ranges).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;
use strata_sandbox::{Access, MountSpec, Network, RunSpec};

const NOBODY: u32 = 65534;

/// A world-traversable temp dir owned by the test user, with a busybox lower, upper, work
/// and a copy of the helper (the build tree may not be reachable for `nobody`).
struct RootlessFixture {
    tmp: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    helper: PathBuf,
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

impl RootlessFixture {
    fn new() -> RootlessFixture {
        let tmp = tempfile::Builder::new()
            .prefix("sbx-rootless-")
            .tempdir()
            .unwrap();
        let base = tmp.path();
        let lower = base.join("lower");
        make_rootfs(&lower, Path::new("/bin/busybox"));
        std::fs::create_dir(base.join("upper")).unwrap();
        std::fs::create_dir(base.join("work")).unwrap();
        std::fs::create_dir(base.join("rw")).unwrap();
        let helper = base.join("helper");
        std::fs::copy(HELPER, &helper).unwrap();
        if is_root() {
            chown_tree(base, NOBODY);
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
        RootlessFixture {
            upper: base.join("upper"),
            work: base.join("work"),
            lower,
            helper,
            tmp,
        }
    }

    fn spec(&self, cmd: &str) -> RunSpec {
        RunSpec::shell(
            strata_sandbox::Rootfs::Overlay {
                lower: vec![self.lower.clone()],
                upper: self.upper.clone(),
                work: self.work.clone(),
            },
            cmd,
        )
    }

    /// `helper ARGS…` as the unprivileged user; with `subids`, inside a private mount
    /// namespace where /etc/subuid and /etc/subgid give that user 65536 ids from 200000.
    fn helper(&self, args: &[&str], subids: bool) -> Value {
        let mut cmd = if !is_root() {
            Command::new(&self.helper)
        } else if subids {
            let ranges = self.tmp.path().join("subids");
            std::fs::write(&ranges, "nobody:200000:65536\n").unwrap();
            let script = format!(
                "mount --bind {r} /etc/subuid && mount --bind {r} /etc/subgid && exec setpriv \
                 --reuid={NOBODY} --regid={NOBODY} --clear-groups -- \"$@\"",
                r = ranges.display()
            );
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
            ]);
            c.arg(&self.helper);
            c
        } else {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
            c.arg(&self.helper);
            c
        };
        let out = cmd
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    }

    fn run(&self, spec: &RunSpec, subids: bool) -> Value {
        let path = self.tmp.path().join("spec.json");
        std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        self.helper(&["run", path.to_str().unwrap()], subids)
    }
}

fn tail(v: &Value) -> Vec<String> {
    v["ok"]["output_tail"]
        .as_array()
        .unwrap_or_else(|| panic!("not ok: {v}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn host_uid() -> u32 {
    if is_root() {
        NOBODY
    } else {
        rustix::process::getuid().as_raw()
    }
}

#[test]
fn rootless_single_id_map() {
    if is_root() && has_subids_for("nobody") {
        return; // the host gives nobody ranges: the single-id case cannot be set up here
    }
    let f = RootlessFixture::new();
    let rw = f.tmp.path().join("rw");
    let mut spec = f.spec(
        "id -u; echo made > /made; rm /etc/group; rm -r /usr; mkdir /usr; \
         (chown 1:1 /made) 2>/dev/null || echo chown-failed; \
         ls /proc/1/fd; ls /sys/class/net; \
         echo w > /rw/written; (echo x > /ro/x) 2>/dev/null || echo ro-refused",
    );
    spec.network = Network::None;
    spec.mounts = vec![
        MountSpec::Bind {
            source: rw.clone(),
            target: "/rw".into(),
            access: Access::ReadWrite,
        },
        MountSpec::Bind {
            source: f.lower.join("etc"),
            target: "/ro".into(),
            access: Access::ReadOnly,
        },
    ];
    let v = f.run(&spec, false);
    assert_eq!(
        tail(&v),
        ["0", "chown-failed", "0", "1", "2", "lo", "ro-refused"],
        "{v}"
    );
    assert_eq!(v["ok"]["status"]["Exited"], 0);
    // Everything the step made is owned by the unprivileged user on the host.
    let md = std::fs::metadata(f.upper.join("made")).unwrap();
    assert_eq!((md.uid(), md.gid()), (host_uid(), host_uid()));
    assert!(is_whiteout(&f.upper.join("etc/group")));
    assert_eq!(
        xattr(&f.upper.join("usr"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(std::fs::read_to_string(rw.join("written")).unwrap(), "w\n");

    // Other users do not exist in a single-id namespace.
    let mut spec = f.spec("id");
    spec.user = "nobody".into();
    let v = f.run(&spec, false);
    assert_eq!(v["kind"], "UserNotMapped", "{v}");
    assert!(v["error"].as_str().unwrap().contains("/etc/subuid"), "{v}");

    let v = f.helper(&["probe-overlay", f.tmp.path().to_str().unwrap()], false);
    assert_eq!(v["ok"], "overlay works", "{v}");
}

fn has_subids_for(user: &str) -> bool {
    std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{user}:")))
}

#[test]
fn rootless_subordinate_ids_via_newuidmap() {
    if !is_root() {
        eprintln!(
            "skipped: needs root to give `nobody` subordinate ids in a private mount namespace"
        );
        return;
    }
    let f = RootlessFixture::new();
    let mut spec = f.spec("touch /owned-by-app; chown 1000:1001 /owned-by-app; id -u");
    spec.user = String::new();
    let v = f.run(&spec, true);
    assert_eq!(tail(&v), ["0"], "{v}");
    let md = std::fs::metadata(f.upper.join("owned-by-app")).unwrap();
    // container 0 = nobody, container N = 200000 + N - 1.
    assert_eq!((md.uid(), md.gid()), (200_999, 201_000));

    let mut spec = f.spec("id -u; id -G; touch /tmp/by-nobody");
    spec.user = "nobody".into();
    let v = f.run(&spec, true);
    assert_eq!(tail(&v), ["65534", "65534"], "{v}");
    assert_eq!(
        std::fs::metadata(f.upper.join("tmp/by-nobody"))
            .unwrap()
            .uid(),
        200_000 + 65534 - 1
    );

    let mut spec = f.spec("id -G");
    spec.user = "app".into();
    let v = f.run(&spec, true);
    assert_eq!(tail(&v), ["1000 10 29"], "supplementary groups set: {v}");

    // The upper dir now holds files of ids the user cannot remove alone; `remove` enters the
    // same mapping.
    std::fs::create_dir(f.upper.join("locked")).unwrap();
    std::os::unix::fs::chown(f.upper.join("locked"), Some(200_999), Some(200_999)).unwrap();
    std::fs::write(f.upper.join("locked/f"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        f.upper.join("locked"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let v = f.helper(&["remove", f.upper.to_str().unwrap()], true);
    assert_eq!(v["ok"], "removed", "{v}");
    assert!(!f.upper.exists());
}
