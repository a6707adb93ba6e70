//! `strata unpack`, `strata repack`, `strata mount`/`umount` as a user runs them, judged by
//! runc, umoci and skopeo. Root-only cases say so and return early when not root (CI runs
//! as root).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::{Env, run};
use serde_json::Value;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn layout_of(env: &Env, image: &strata_testkit::TestImage, tag: &str) -> String {
    let p = env.path("layout");
    image.write_oci_layout(&p, tag).unwrap();
    format!("oci:{}:{tag}", p.display())
}

fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    data: &[u8],
    mode: u32,
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// Type, mode, owner, size, link target and content hash of every path (not dir mtimes).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                let data = std::fs::read(&p).unwrap();
                format!("{} {}", data.len(), common::sha256_hex(&data))
            };
            out.insert(
                p.strip_prefix(root).unwrap().display().to_string(),
                format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
            );
        }
    }
    out
}

/// `strata unpack IMAGE BUNDLE` under `strace -e INJECT` (fault injection: a signal at a
/// chosen system call), in the test's environment.
fn unpack_under_strace(env: &Env, inject: &str, image: &str, bundle: &Path) -> Output {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", inject])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["unpack", image, bundle.to_str().expect("utf-8 path")])
        .env("HOME", env.path("home"))
        .env("XDG_DATA_HOME", env.path("data"))
        // `cargo test` lists build-script and toolchain directories here; the dynamic loader
        // then probes each for every library, 100+ openat calls before main that would use up
        // the `when=` counts of the injected faults.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("strace is installed (scripts/install-deps.sh)")
}

fn with_args(bundle: &Path, args: &[&str]) {
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!(args);
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

#[test]
fn unpack_busybox_runs_with_runc() {
    if !is_root() {
        eprintln!("skipped: runc needs root here");
        return;
    }
    let env = Env::new();
    let image = layout_of(&env, &strata_testkit::busybox_image("amd64"), "latest");
    let bundle = env.path("bundle");
    let out = env.ok(&["unpack", &image, bundle.to_str().unwrap()]);
    assert!(out.contains("unpacked"), "{out}");
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(spec["hostname"], "strata");
    with_args(
        &bundle,
        &["sh", "-c", "echo hello from $(hostname) as $(id -u)"],
    );
    let id = format!("strata-test-{}", std::process::id());
    let out = run("runc", &["run", "-b", bundle.to_str().unwrap(), &id]);
    assert_eq!(out.trim(), "hello from strata as 0");
}

#[test]
fn repack_round_trip_judged_by_umoci_and_skopeo() {
    let env = Env::new();
    let image = layout_of(&env, &strata_testkit::busybox_image("amd64"), "v1");
    let layout = env.path("layout");
    let bundle = env.path("bundle");
    env.ok(&["unpack", "-q", &image, bundle.to_str().unwrap()]);
    let r = bundle.join("rootfs");
    std::fs::write(r.join("created"), "new file").unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::set_permissions(r.join("etc/group"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(r.join("bin/ls")).unwrap();
    std::fs::remove_dir_all(r.join("var")).unwrap();
    std::fs::remove_dir_all(r.join("usr/bin")).unwrap();
    std::fs::write(r.join("usr/bin"), "dir replaced by a file").unwrap();
    std::fs::hard_link(r.join("created"), r.join("created-link")).unwrap();
    let target = format!("oci:{}:v2", layout.display());
    let out = env.ok(&["repack", &bundle.to_string_lossy(), &target]);
    assert!(out.contains("repacked"), "{out}");

    let info = common::skopeo_info(&target);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2, "{info}");
    let want = snapshot(&r);
    // strata reads it back…
    let again = env.path("again");
    env.ok(&["unpack", "-q", &target, again.to_str().unwrap()]);
    assert_eq!(snapshot(&again.join("rootfs")), want);
    // …and so does umoci.
    let umoci_bundle = env.path("umoci");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:v2", layout.display()),
            umoci_bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(snapshot(&umoci_bundle.join("rootfs")), want);
    let a = std::fs::metadata(umoci_bundle.join("rootfs/created")).unwrap();
    let b = std::fs::metadata(umoci_bundle.join("rootfs/created-link")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept");
}

#[test]
fn a24_unpack_refuses_non_empty_and_symlinked_targets() {
    let env = Env::new();
    let image = layout_of(&env, &strata_testkit::random_image(1, &[1000]), "t");
    let full = env.path("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("mine"), "x").unwrap();
    let err = env.fails(&["unpack", &image, full.to_str().unwrap()]);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(full.join("mine")).unwrap(), "x");

    let probe = env.path("probe");
    std::fs::create_dir(&probe).unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&probe, &link).unwrap();
    let err = env.fails(&["unpack", &image, link.to_str().unwrap()]);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(
        std::fs::read_dir(&probe).unwrap().count(),
        0,
        "never followed"
    );

    env.ok(&["unpack", "--force", &image, full.to_str().unwrap()]);
    assert!(!full.join("mine").exists());
    assert!(full.join("rootfs/file-0").is_file());
}

#[test]
fn a19_max_uncompressed_stops_and_removes_the_partial_rootfs() {
    let env = Env::new();
    let image = layout_of(
        &env,
        &strata_testkit::random_image(2, &[64 << 10, 4 << 20]),
        "t",
    );
    let bundle = env.path("bundle");
    let err = env.fails(&[
        "unpack",
        "--max-uncompressed",
        "1M",
        &image,
        bundle.to_str().unwrap(),
    ]);
    assert!(err.contains("max-uncompressed"), "{err}");
    assert!(!bundle.exists(), "partial bundle removed");
    env.ok(&[
        "unpack",
        "--max-uncompressed",
        "8M",
        &image,
        bundle.to_str().unwrap(),
    ]);
    assert!(bundle.join("strata.json").is_file());
}

#[test]
fn m7_wrong_diff_ids_fail_with_the_layer_named() {
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "f", tar::EntryType::Regular, b"data", 0o644);
    let layer = b.into_inner().unwrap();
    let mut image = strata_testkit::image_from_layers(&[layer], serde_json::json!({}));
    let (_, config) = image.blob_list[0].clone();
    let mut c: Value = serde_json::from_slice(&config).unwrap();
    c["rootfs"]["diff_ids"][0] = format!("sha256:{}", "cd".repeat(32)).into();
    let bytes = serde_json::to_vec(&c).unwrap();
    let d = strata_spec::Descriptor::of_bytes(strata_spec::MediaType::OCI_CONFIG, &bytes);
    let mut m: Value = serde_json::from_slice(&image.manifest).unwrap();
    m["config"] = serde_json::to_value(&d).unwrap();
    image.manifest = serde_json::to_vec(&m).unwrap();
    image.blob_list[0] = (d, bytes);
    let name = layout_of(&env, &image, "t");
    let bundle = env.path("bundle");
    let err = env.fails(&["unpack", &name, bundle.to_str().unwrap()]);
    assert!(
        err.contains("layer 0") && err.contains("the config says"),
        "{err}"
    );
    assert!(!bundle.exists());
}

#[test]
fn a10_symlinked_dir_then_whiteouts_leave_the_probe_alone() {
    let env = Env::new();
    let probe = env.path("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::write(probe.join("victim"), "v").unwrap();
    let mut b1 = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b1.append_link(&mut h, "etc", &probe).unwrap();
    let mut b2 = tar::Builder::new(Vec::new());
    tar_entry(
        &mut b2,
        "etc/.wh.victim",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    tar_entry(
        &mut b2,
        "etc/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    let image = strata_testkit::image_from_layers(
        &[b1.into_inner().unwrap(), b2.into_inner().unwrap()],
        serde_json::json!({}),
    );
    let name = layout_of(&env, &image, "t");
    let _ = env.output(&["unpack", &name, env.path("bundle").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(probe.join("victim")).unwrap(), "v");
}

#[test]
fn a16_unprivileged_rootless_unpack_warns_for_devices_and_security_xattrs() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "su", tar::EntryType::Regular, b"su", 0o4755);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_mode(0o666);
    h.set_size(0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "null", std::io::empty()).unwrap();
    let cap: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    b.append_pax_extensions([("SCHILY.xattr.security.capability", cap)])
        .unwrap();
    tar_entry(&mut b, "ping", tar::EntryType::Regular, b"ping", 0o755);
    let image =
        strata_testkit::image_from_layers(&[b.into_inner().unwrap()], serde_json::json!({}));
    let name = layout_of(&env, &image, "t");
    let work = env.path("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    let bundle = work.join("bundle");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["unpack", &name, bundle.to_str().unwrap()])
        .env("HOME", &work)
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rootless"), "{stderr}");
    assert!(
        stderr.contains("null: device replaced by an empty file"),
        "{stderr}"
    );
    assert!(stderr.contains("security.capability"), "{stderr}");
    let null = std::fs::symlink_metadata(bundle.join("rootfs/null")).unwrap();
    assert!(null.file_type().is_file() && null.len() == 0);
    assert_eq!(null.uid(), 65534);
    let su = std::fs::metadata(bundle.join("rootfs/su")).unwrap();
    assert_eq!(
        su.mode() & 0o7777,
        0o4755,
        "setuid bit kept on the user's own file"
    );
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 65534);
}

#[test]
fn f17_killed_before_the_marker_leaves_an_incomplete_bundle_and_rerun_works() {
    let env = Env::new();
    let image = layout_of(&env, &strata_testkit::busybox_image("amd64"), "t");
    let bundle = env.path("bundle");
    // SIGKILL at the first rename: the one that would publish strata.json.
    let out = unpack_under_strace(
        &env,
        "inject=rename,renameat,renameat2:signal=KILL",
        &image,
        &bundle,
    );
    assert!(!out.status.success());
    assert!(
        bundle.join("rootfs/bin/busybox").exists(),
        "killed late, after the layers"
    );
    assert!(bundle.join("strata.partial").exists());
    assert!(!bundle.join("strata.json").exists(), "never looks complete");
    let err = env.fails(&["repack", bundle.to_str().unwrap(), &image]);
    assert!(err.contains("did not complete"), "{err}");
    // The rerun clears the leftover without --force.
    env.ok(&["unpack", &image, bundle.to_str().unwrap()]);
    assert!(bundle.join("strata.json").exists());
    assert!(!bundle.join("strata.partial").exists());
}

#[test]
fn interrupt_removes_the_partial_bundle() {
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..400 {
        tar_entry(
            &mut b,
            &format!("f{i}"),
            tar::EntryType::Regular,
            b"x",
            0o644,
        );
    }
    let image =
        strata_testkit::image_from_layers(&[b.into_inner().unwrap()], serde_json::json!({}));
    let image = layout_of(&env, &image, "t");
    let bundle = env.path("bundle");
    // SIGINT while the layer is being written (at the 120th file opened).
    let out = unpack_under_strace(&env, "inject=openat:signal=INT:when=120", &image, &bundle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!bundle.exists(), "partial bundle removed");
}

#[test]
fn mount_and_umount_a_read_only_view() {
    if !is_root() {
        let env = Env::new();
        let image = layout_of(&env, &strata_testkit::busybox_image("amd64"), "t");
        let err = env.fails(&["mount", &image, env.path("m").to_str().unwrap()]);
        assert!(err.contains("needs root"), "{err}");
        return;
    }
    let env = Env::new();
    let image = layout_of(&env, &strata_testkit::random_image(3, &[1000, 2000]), "t");
    let mnt = env.path("mnt");
    let out = env.ok(&["mount", &image, mnt.to_str().unwrap()]);
    assert!(out.contains("2 extracted"), "{out}");
    assert_eq!(std::fs::metadata(mnt.join("file-0")).unwrap().len(), 1000);
    assert_eq!(std::fs::metadata(mnt.join("file-1")).unwrap().len(), 2000);
    let write = std::fs::write(mnt.join("new"), "x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(30), "read-only (EROFS): {write}");
    // The same layers again come from the cache.
    let mnt2 = env.path("mnt2");
    let out = env.ok(&["mount", &image, mnt2.to_str().unwrap()]);
    assert!(out.contains("0 extracted, 2 from the cache"), "{out}");
    env.ok(&["umount", mnt.to_str().unwrap()]);
    env.ok(&["umount", mnt2.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    let err = env.fails(&["umount", mnt.to_str().unwrap()]);
    assert!(err.contains("not a strata mount"), "{err}");
    let cache = env.path("data/strata/overlay/layers");
    assert_eq!(std::fs::read_dir(cache).unwrap().count(), 2);
}

#[test]
fn unpack_picks_the_platform_of_an_index() {
    let env = Env::new();
    let image = layout_of(&env, &strata_testkit::busybox_index(), "multi");
    let bundle = env.path("bundle");
    let out = env.json(&[
        "unpack",
        "--platform",
        "linux/arm64",
        "--format",
        "json",
        &image,
        bundle.to_str().unwrap(),
    ]);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("strata.json")).unwrap()).unwrap();
    assert_eq!(out["digest"], meta["manifest_digest"]);
    assert_eq!(meta["config"]["architecture"], "arm64");
    // ELF e_machine 0xb7 = AArch64.
    let elf = std::fs::read(bundle.join("rootfs/bin/busybox")).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 0xb7);
    let err = env.fails(&[
        "unpack",
        "--platform",
        "linux/s390x",
        &image,
        env.path("other").to_str().unwrap(),
    ]);
    assert!(err.contains("no image for platform"), "{err}");
    assert!(!env.path("other").exists());
}

/// As an unprivileged user: unpack busybox (read-only /proc and /sys, 0700 /root), repack a
/// change, and replace the bundle with --force (read-only directories must be removable).
#[test]
fn unprivileged_unpack_repack_and_force_replace() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = env.path("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    let layout = work.join("layout");
    strata_testkit::busybox_image("amd64")
        .write_oci_layout(&layout, "v1")
        .unwrap();
    run("chown", &["-R", "65534:65534", layout.to_str().unwrap()]);
    let bundle = work.join("bundle");
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("HOME", &work)
            .env("XDG_DATA_HOME", work.join("data"))
            .output()
            .expect("setpriv (util-linux)");
        assert!(
            out.status.success(),
            "strata {args:?} as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let image = format!("oci:{}:v1", layout.display());
    as_nobody(&["unpack", &image, bundle.to_str().unwrap()]);
    let proc_dir = std::fs::metadata(bundle.join("rootfs/proc")).unwrap();
    assert_eq!(proc_dir.mode() & 0o777, 0o555);
    assert_eq!(proc_dir.uid(), 65534);
    std::fs::write(bundle.join("rootfs/root/note"), "hi").unwrap();
    std::os::unix::fs::chown(bundle.join("rootfs/root/note"), Some(65534), Some(65534)).unwrap();
    let target = format!("oci:{}:v2", layout.display());
    as_nobody(&["repack", bundle.to_str().unwrap(), &target]);
    // umoci (as root) sees the change with the image's owners: root, not nobody.
    let check = env.path("check");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:v2", layout.display()),
            check.to_str().unwrap(),
        ],
    );
    let note = std::fs::metadata(check.join("rootfs/root/note")).unwrap();
    assert_eq!((note.uid(), note.gid()), (0, 0));
    assert_eq!(
        std::fs::read_to_string(check.join("rootfs/root/note")).unwrap(),
        "hi"
    );
    as_nobody(&["unpack", "--force", &target, bundle.to_str().unwrap()]);
    assert!(bundle.join("rootfs/root/note").exists());
    assert!(bundle.join("strata.json").exists());
}
