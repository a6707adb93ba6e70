//! RELIABILITY.md §a rows A1–A25: hostile layers against `extract_layer`.
//!
//! Every test extracts into a fresh root beside a sentinel directory (`probe`) and checks
//! that nothing outside the root changed (paths, bytes, modes, owners, inodes, mtimes),
//! then what the root holds. Malicious archives are assembled block by block at run time.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use strata_archive::{
    ArchiveError, ExtractOptions, LayerReader, Ownership, TargetPolicy, Threading, WhiteoutMode,
    decompress, extract_layer,
};
use strata_spec::{Algorithm, Digest, LayerCompression};

fn err_text(e: &ArchiveError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn probe_rel(sb: &Sandbox) -> String {
    sb.probe_str().trim_start_matches('/').to_string()
}

#[test]
fn a1_dotdot_entry_is_refused() {
    for name in [
        "../../probe/x",
        "../probe/victim",
        "a/../../probe/x",
        "./../probe/y",
    ] {
        let sb = Sandbox::new();
        let tar = RawTar::new().file("ok", b"fine").file(name, b"pwned").end();
        let err = sb.extract(&tar).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Entry { entry, .. } if entry == name),
            "{name}: {err}"
        );
        assert!(err_text(&err).contains(".."), "{err}");
        sb.assert_outside_untouched();
        assert_eq!(fs::read(sb.path("ok")).unwrap(), b"fine");
    }
}

#[test]
fn a2_absolute_entry_is_rooted() {
    let sb = Sandbox::new();
    let name = format!("/etc/strata-a2-{}", std::process::id());
    let tar = RawTar::new().file(&name, b"rooted").end();
    sb.extract(&tar).unwrap();
    assert_eq!(fs::read(sb.root.join(&name[1..])).unwrap(), b"rooted");
    assert!(!Path::new(&name).exists(), "host {name} was written");
    sb.assert_outside_untouched();
}

#[test]
fn a3_symlink_then_file_through_it() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("l", &sb.probe_str())
        .file("l/pwn", b"inside")
        .end();
    sb.extract(&tar).unwrap();
    sb.assert_outside_untouched();
    // Resolved with the root as "/": the write lands under <root><probe path>.
    assert_eq!(
        fs::read(sb.root.join(probe_rel(&sb)).join("pwn")).unwrap(),
        b"inside"
    );
    assert!(
        fs::symlink_metadata(sb.path("l"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(sb.path("l")).unwrap(), sb.probe);
}

#[test]
fn a4_relative_climbing_symlink_then_file() {
    // In one layer.
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("l", "../../../../..")
        .file("l/pwn", b"x")
        .symlink("m", "../probe")
        .file("m/pwn2", b"y")
        .end();
    sb.extract(&tar).unwrap();
    sb.assert_outside_untouched();
    assert_eq!(fs::read(sb.path("pwn")).unwrap(), b"x");
    assert_eq!(fs::read(sb.path("probe/pwn2")).unwrap(), b"y");
    // Across two layers.
    let sb = Sandbox::new();
    sb.extract(&RawTar::new().symlink("l", "../../../../..").end())
        .unwrap();
    sb.extract(
        &RawTar::new()
            .file("l/pwn", b"z")
            .file("l/probe/victim", b"w")
            .end(),
    )
    .unwrap();
    sb.assert_outside_untouched();
    assert_eq!(fs::read(sb.path("pwn")).unwrap(), b"z");
    assert_eq!(fs::read(sb.path("probe/victim")).unwrap(), b"w");
}

#[test]
fn a5_symlink_named_root_is_refused() {
    for name in [".", "./", "/", "//", "./."] {
        let sb = Sandbox::new();
        let tar = RawTar::new()
            .symlink(name, &sb.probe_str())
            .file("after", b"x")
            .end();
        let err = sb.extract(&tar).unwrap_err();
        assert!(err_text(&err).contains("root"), "{name}: {err}");
        assert!(fs::symlink_metadata(&sb.root).unwrap().is_dir(), "{name}");
        sb.assert_outside_untouched();
    }
}

#[test]
fn a6_hardlinks_never_reach_host_inodes() {
    let host = fs::metadata("/etc/passwd").unwrap();
    let sb = Sandbox::new();
    for (target, expect_err) in [
        ("/etc/passwd", true),
        ("../../etc/passwd", true),
        ("l/passwd", true),
    ] {
        let tar = RawTar::new()
            .symlink("l", "/etc")
            .hardlink("h", target)
            .end();
        let err = sb.extract(&tar).unwrap_err();
        assert!(expect_err, "{target}");
        assert!(
            matches!(&err, ArchiveError::Entry { entry, .. }
                | ArchiveError::HardLinkTarget { entry, .. } if entry == "h"),
            "{target}: {err}"
        );
    }
    // With an /etc/passwd inside the root, links resolve to it, never to the host's.
    let tar = RawTar::new()
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .symlink("l", "/etc")
        .hardlink("h1", "/etc/passwd")
        .hardlink("h2", "l/passwd")
        .end();
    sb.extract(&tar).unwrap();
    let inner = fs::metadata(sb.path("etc/passwd")).unwrap();
    for h in ["h1", "h2"] {
        let md = fs::metadata(sb.path(h)).unwrap();
        assert_eq!((md.dev(), md.ino()), (inner.dev(), inner.ino()), "{h}");
        assert_ne!((md.dev(), md.ino()), (host.dev(), host.ino()), "{h}");
    }
    // A link to the probe (outside) through an absolute symlink resolves inside too.
    let tar = RawTar::new()
        .symlink("p", &sb.probe_str())
        .hardlink("h3", "p/victim")
        .end();
    assert!(sb.extract(&tar).is_err());
    sb.assert_outside_untouched();
}

#[test]
fn a7_symlink_then_regular_file_replaces_the_link() {
    let sb = Sandbox::new();
    let victim = sb.probe.join("victim").display().to_string();
    let tar = RawTar::new().symlink("f", &victim).file("f", b"new").end();
    sb.extract(&tar).unwrap();
    let md = fs::symlink_metadata(sb.path("f")).unwrap();
    assert!(md.is_file());
    assert_eq!(fs::read(sb.path("f")).unwrap(), b"new");
    sb.assert_outside_untouched();
    // Across layers, and with a relative link.
    let sb = Sandbox::new();
    sb.extract(&RawTar::new().symlink("g", "../probe/victim").end())
        .unwrap();
    sb.extract(&RawTar::new().file_mode("g", b"again", 0o4755).end())
        .unwrap();
    assert_eq!(fs::read(sb.path("g")).unwrap(), b"again");
    sb.assert_outside_untouched();
}

#[test]
fn a8_dir_entry_over_symlink_never_chmods_outside() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("d", &sb.probe_str())
        .dir("d", 0o777)
        .symlink("e", "../probe")
        .dir("e/", 0o1777)
        .end();
    sb.extract(&tar).unwrap();
    sb.assert_outside_untouched();
    for (d, mode) in [("d", 0o777), ("e", 0o1777)] {
        let md = fs::symlink_metadata(sb.path(d)).unwrap();
        assert!(md.is_dir(), "{d}");
        assert_eq!(md.mode() & 0o7777, mode, "{d}");
    }
}

#[test]
fn a9_no_directories_created_outside() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("a", &sb.probe_str())
        .file("a/b/c/file", b"deep")
        .symlink("r", "../probe/sub")
        .file("r/x/y/file", b"deep2")
        .end();
    sb.extract(&tar).unwrap();
    sb.assert_outside_untouched();
    assert_eq!(
        fs::read(sb.root.join(probe_rel(&sb)).join("b/c/file")).unwrap(),
        b"deep"
    );
    assert_eq!(fs::read(sb.path("probe/sub/x/y/file")).unwrap(), b"deep2");
}

#[test]
fn a10_whiteouts_through_symlinked_dir_stay_inside() {
    let sb = Sandbox::new();
    sb.extract(&RawTar::new().symlink("etc", &sb.probe_str()).end())
        .unwrap();
    let layer2 = RawTar::new()
        .file("etc/.wh.victim", b"")
        .file("etc/.wh..wh..opq", b"")
        .file("etc/sub/.wh.keep", b"")
        .end();
    sb.extract(&layer2).unwrap();
    sb.assert_outside_untouched();
    assert!(sb.probe.join("victim").exists());
    assert!(sb.probe.join("sub/keep").exists());
}

#[test]
fn a11_bare_whiteouts_are_refused() {
    for name in [".wh.", "d/.wh.", ".wh..", ".wh...", "d/.wh.."] {
        let sb = Sandbox::new();
        sb.extract(
            &RawTar::new()
                .file("d/file", b"lower")
                .file("top", b"t")
                .end(),
        )
        .unwrap();
        let err = sb
            .extract(&RawTar::new().file(name, b"").end())
            .unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Entry { entry, .. } if entry == name),
            "{name}: {err}"
        );
        assert!(err_text(&err).contains("whiteout"), "{err}");
        assert_eq!(fs::read(sb.path("d/file")).unwrap(), b"lower", "{name}");
        assert_eq!(fs::read(sb.path("top")).unwrap(), b"t", "{name}");
        sb.assert_outside_untouched();
    }
}

#[test]
fn a12_opaque_hides_lower_layers_only_in_any_order() {
    let lower = RawTar::new()
        .file("a/old1", b"1")
        .file("a/sub/old2", b"2")
        .file("a/keepdir/old3", b"3")
        .file("b/other", b"o")
        .end();
    let orders = [
        RawTar::new()
            .file("a/new", b"n")
            .file("a/keepdir/new3", b"n3")
            .file("a/.wh..wh..opq", b"")
            .end(),
        RawTar::new()
            .file("a/.wh..wh..opq", b"")
            .file("a/new", b"n")
            .file("a/keepdir/new3", b"n3")
            .end(),
    ];
    for upper in orders {
        let sb = Sandbox::new();
        sb.extract(&lower).unwrap();
        sb.extract(&upper).unwrap();
        assert_eq!(
            listing(&sb.root, false)
                .iter()
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect::<Vec<_>>(),
            ["a", "a/keepdir", "a/keepdir/new3", "a/new", "b", "b/other"]
        );
        sb.assert_outside_untouched();
    }
}

#[test]
fn a13_whiteout_and_readd_in_one_layer_and_duplicates() {
    let lower = RawTar::new().file("x", b"old").file("d/old", b"old").end();
    for upper in [
        RawTar::new()
            .file(".wh.x", b"")
            .file("x", b"new")
            .file(".wh.d", b"")
            .file("d/new", b"new")
            .end(),
        RawTar::new()
            .file("x", b"new")
            .file(".wh.x", b"")
            .file("d/new", b"new")
            .file(".wh.d", b"")
            .end(),
    ] {
        let sb = Sandbox::new();
        sb.extract(&lower).unwrap();
        sb.extract(&upper).unwrap();
        assert_eq!(fs::read(sb.path("x")).unwrap(), b"new");
        assert_eq!(fs::read(sb.path("d/new")).unwrap(), b"new");
        assert!(
            !sb.path("d/old").exists(),
            "lower d/old survived the whiteout"
        );
    }
    // Duplicate entries: the last one wins (documented in extract.rs).
    let sb = Sandbox::new();
    sb.extract(
        &RawTar::new()
            .file("dup", b"first")
            .file("dup", b"second")
            .end(),
    )
    .unwrap();
    assert_eq!(fs::read(sb.path("dup")).unwrap(), b"second");
}

#[test]
fn a14_file_then_path_below_it() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("x", b"file")
        .file("x/y/z", b"deep")
        .end();
    sb.extract(&tar).unwrap();
    assert!(fs::symlink_metadata(sb.path("x")).unwrap().is_dir());
    assert_eq!(fs::read(sb.path("x/y/z")).unwrap(), b"deep");
    // Across layers, and a FIFO in the way.
    sb.extract(&RawTar::new().node("p", b'6', 0, 0, 0o644).end())
        .unwrap();
    sb.extract(&RawTar::new().file("p/q", b"q").end()).unwrap();
    assert_eq!(fs::read(sb.path("p/q")).unwrap(), b"q");
    sb.assert_outside_untouched();
}

fn device_layer() -> Vec<u8> {
    RawTar::new()
        .node("dev/null", b'3', 1, 3, 0o666)
        .node("dev/loop0", b'4', 7, 0, 0o660)
        .node("run/fifo", b'6', 0, 0, 0o620)
        .file("after", b"x")
        .end()
}

#[test]
fn a15_devices_as_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let sb = Sandbox::new();
    sb.extract(&device_layer()).unwrap();
    let null = fs::symlink_metadata(sb.path("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc_major(null.rdev()), libc_minor(null.rdev())), (1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = fs::symlink_metadata(sb.path("dev/loop0")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!((libc_major(lp.rdev()), libc_minor(lp.rdev())), (7, 0));
    assert_eq!(lp.mode() & 0o7777, 0o660);
    let fifo = fs::symlink_metadata(sb.path("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    sb.assert_outside_untouched();
}

#[test]
fn a15_devices_rootless_become_empty_files_fifos_kept() {
    let sb = Sandbox::new();
    let options = ExtractOptions {
        ownership: Ownership::Rootless,
        ..ExtractOptions::default()
    };
    let stats = sb.extract_with(&device_layer(), &options).unwrap();
    for d in ["dev/null", "dev/loop0"] {
        let md = fs::symlink_metadata(sb.path(d)).unwrap();
        assert!(md.is_file() && md.len() == 0, "{d}");
    }
    assert!(
        fs::symlink_metadata(sb.path("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(stats.devices_skipped, 2);
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("dev/null") && w.contains("rootless"))
    );
    sb.assert_outside_untouched();
}

/// `security.capability` v2 blob for cap_net_bind_service (effective + permitted).
fn file_capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | EFFECTIVE
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted low: CAP_NET_BIND_SERVICE
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable low
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted high
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable high
    v
}

fn xattr_layer() -> Vec<u8> {
    let cap = file_capability();
    let mut h = tar::Header::from_byte_slice(&header(b"bin/suid", b'0', 4, b"", 0o4755)).clone();
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_cksum();
    let mut g = tar::Header::from_byte_slice(&header(b"bin/sgid", b'0', 4, b"", 0o2711)).clone();
    g.set_gid(50);
    g.set_cksum();
    RawTar::new()
        .block(*h.as_bytes())
        .data(b"suid")
        .block(*g.as_bytes())
        .data(b"sgid")
        .pax(&[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.user.note", b"kept"),
        ])
        .file_mode("bin/ping", b"ping", 0o755)
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .dir("odir", 0o755)
        .end()
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn a16_setuid_caps_and_overlay_xattrs_as_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let sb = Sandbox::new();
    let stats = sb.extract(&xattr_layer()).unwrap();
    let suid = fs::symlink_metadata(sb.path("bin/suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1000));
    let sgid = fs::symlink_metadata(sb.path("bin/sgid")).unwrap();
    assert_eq!(sgid.mode() & 0o7777, 0o2711);
    assert_eq!(sgid.gid(), 50);
    assert_eq!(
        get_xattr(&sb.path("bin/ping"), "security.capability"),
        Some(file_capability())
    );
    assert_eq!(
        get_xattr(&sb.path("bin/ping"), "user.note"),
        Some(b"kept".to_vec())
    );
    assert_eq!(get_xattr(&sb.path("odir"), "trusted.overlay.opaque"), None);
    assert_eq!(
        get_xattr(&sb.path("odir"), "trusted.overlay.redirect"),
        None
    );
    assert_eq!(stats.xattrs_ignored, 2);
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("trusted.overlay.opaque"))
    );
    sb.assert_outside_untouched();
}

/// Tests that must run without privileges re-run this test binary as nobody.
fn run_unprivileged(test: &str) {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody");
        return;
    }
    // The test binary may live where nobody cannot read it: run a copy.
    let dir = tempfile::Builder::new()
        .prefix("strata-bin-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("t");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&exe)
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STRATA_UNPRIVILEGED_CHILD", "1")
        .env("TMPDIR", "/tmp")
        .output()
        .expect("setpriv (util-linux) is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "unprivileged run failed:\n{text}");
    assert!(text.contains("1 passed"), "child test did not run:\n{text}");
}

fn unprivileged_child() -> bool {
    std::env::var_os("STRATA_UNPRIVILEGED_CHILD").is_some() && !is_root()
}

#[test]
fn a16_rootless_really_unprivileged() {
    run_unprivileged("child_rootless_unprivileged");
}

#[test]
#[ignore = "run by a16_rootless_really_unprivileged as nobody"]
fn child_rootless_unprivileged() {
    if !unprivileged_child() {
        return;
    }
    let sb = Sandbox::new();
    let options = ExtractOptions {
        ownership: Ownership::Rootless,
        ..ExtractOptions::default()
    };
    // Devices, FIFOs, setuid, capabilities, owners, and a read-only directory that a later
    // layer writes into.
    let mut all = device_layer();
    all.truncate(all.len() - 1024);
    let mut x = xattr_layer();
    x.truncate(x.len() - 1024);
    all.extend(x);
    let all = RawTar { bytes: all }
        .dir("ro", 0o555)
        .file("ro/f", b"f")
        .end();
    let stats = sb.extract_with(&all, &options).unwrap();
    assert!(
        fs::symlink_metadata(sb.path("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(fs::symlink_metadata(sb.path("dev/null")).unwrap().is_file());
    assert_eq!(
        fs::symlink_metadata(sb.path("bin/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    // uid/gid 1000 recorded like umoci does.
    assert_eq!(
        get_xattr(&sb.path("bin/suid"), "user.rootlesscontainers"),
        Some(vec![0x08, 0xe8, 0x07, 0x10, 0xe8, 0x07])
    );
    // security.capability cannot be set by nobody: a warning, not a failure.
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("security.capability")),
        "{:?}",
        stats.warnings
    );
    assert_eq!(
        fs::symlink_metadata(sb.path("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    // A second layer writes into and deletes from the read-only directory.
    let layer2 = RawTar::new().file("ro/g", b"g").file("ro/.wh.f", b"").end();
    let options2 = ExtractOptions {
        target: TargetPolicy::MayExist,
        ..options
    };
    sb.extract_with(&layer2, &options2).unwrap();
    assert_eq!(fs::read(sb.path("ro/g")).unwrap(), b"g");
    assert!(!sb.path("ro/f").exists());
    assert_eq!(
        fs::symlink_metadata(sb.path("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    sb.assert_outside_untouched();
    // Make the tree removable for TempDir's cleanup.
    fs::set_permissions(sb.path("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Entries (name, size) as GNU `tar -tvf` lists them, or None when it fails.
fn gnu_list(archive: &[u8]) -> Option<Vec<(String, u64)>> {
    let (ok, out, _err) = gnu_tar(&["-tvf", "-"], archive);
    if !ok {
        return None;
    }
    Some(
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let name = f[5..].join(" ");
                let name = name.split(" -> ").next().unwrap().to_string();
                let name = name.split(" link to ").next().unwrap().to_string();
                (name, f[2].parse().unwrap())
            })
            .collect(),
    )
}

fn our_list(archive: &[u8]) -> Result<Vec<(String, u64)>, ArchiveError> {
    let mut r = strata_archive::TarReader::new(archive);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        out.push((String::from_utf8_lossy(&e.path).into_owned(), e.size));
    }
    r.finish()?;
    Ok(out)
}

#[derive(Debug, PartialEq)]
enum Expect {
    /// We list exactly what GNU tar lists (and GNU tar succeeds).
    Same,
    /// We refuse the archive (readers disagree on it, or it is malformed).
    Refused,
}

#[test]
fn a17_pax_size_disagreement_matches_gnu_tar() {
    // A header hidden inside 512 bytes of "data".
    let hidden = header(b"hidden", b'0', 0, b"", 0o644);
    let mut cases: Vec<(&str, Vec<u8>, Expect)> = Vec::new();
    cases.push((
        "ustar size 0 + PAX size 512",
        RawTar::new()
            .pax(&[("size", b"512")])
            .block(header(b"f", b'0', 0, b"", 0o644))
            .block(hidden)
            .file("after", b"a")
            .end(),
        Expect::Same,
    ));
    cases.push((
        "PAX size smaller than header size",
        RawTar::new()
            .pax(&[("size", b"0")])
            .block(header(b"f", b'0', 512, b"", 0o644))
            .block(hidden)
            .file("after", b"a")
            .end(),
        Expect::Same,
    ));
    cases.push((
        "PAX size larger than header size",
        RawTar::new()
            .pax(&[("size", b"1024")])
            .block(header(b"f", b'0', 512, b"", 0o644))
            .block(hidden)
            .block(header(b"hidden2", b'0', 0, b"", 0o644))
            .file("after", b"a")
            .end(),
        Expect::Same,
    ));
    cases.push((
        "PAX path and size on one entry",
        RawTar::new()
            .pax(&[("path", b"renamed"), ("size", b"3")])
            .block(header(b"f", b'0', 0, b"", 0o644))
            .data(b"abc")
            .end(),
        Expect::Same,
    ));
    cases.push((
        "PAX size not a number",
        RawTar::new()
            .pax(&[("size", b"12x")])
            .block(header(b"f", b'0', 0, b"", 0o644))
            .end(),
        Expect::Refused,
    ));
    cases.push((
        "symlink carrying data (Go ignores the size, GNU skips it)",
        RawTar::new()
            .block(header(b"l", b'2', 512, b"t", 0o777))
            .block(hidden)
            .end(),
        Expect::Refused,
    ));
    cases.push((
        "two PAX headers for one entry",
        RawTar::new()
            .pax(&[("size", b"0")])
            .pax(&[("size", b"512")])
            .block(header(b"f", b'0', 0, b"", 0o644))
            .block(hidden)
            .end(),
        Expect::Refused,
    ));
    cases.push((
        "global PAX header sets size",
        RawTar::new()
            .block(header(b"g", b'g', 12, b"", 0o644))
            .data(b"12 size=512\n")
            .block(header(b"f", b'0', 0, b"", 0o644))
            .block(hidden)
            .end(),
        Expect::Refused,
    ));
    cases.push((
        "lone zero block then entries",
        RawTar::new()
            .file("a", b"a")
            .data(&[0u8; 512])
            .file("b", b"b")
            .end(),
        Expect::Refused,
    ));
    for (what, archive, expect) in cases {
        let ours = our_list(&archive);
        let gnu = gnu_list(&archive);
        match expect {
            Expect::Same => {
                let gnu = gnu.unwrap_or_else(|| panic!("{what}: GNU tar failed"));
                assert_eq!(
                    ours.unwrap_or_else(|e| panic!("{what}: {e}")),
                    gnu,
                    "{what}"
                );
            }
            Expect::Refused => {
                assert!(ours.is_err(), "{what}: accepted: {ours:?} (GNU: {gnu:?})");
            }
        }
        // Extraction agrees with the listing.
        let sb = Sandbox::new();
        let extracted = sb.extract(&archive);
        assert_eq!(extracted.is_ok(), expect == Expect::Same, "{what}");
        sb.assert_outside_untouched();
    }
}

/// A reader producing `len` bytes of `byte` without holding them.
struct Repeat {
    byte: u8,
    left: u64,
}

impl Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        buf[..n].fill(self.byte);
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a18_huge_records_deep_paths_nul_many_entries() {
    // 1 GiB PAX record: refused from its header, nothing allocated or read.
    let sb = Sandbox::new();
    let head = header(b"PaxHeaders.0/x", b'x', 1 << 30, b"", 0o644);
    let stream = io::Cursor::new(head.to_vec()).chain(Repeat {
        byte: b'1',
        left: 1 << 30,
    });
    let err = extract_layer(stream, &sb.root, &layer_options()).unwrap_err();
    assert!(matches!(err, ArchiveError::Limit { .. }), "{err}");
    // 100 MB GNU long name.
    let head = header(b"././@LongLink", b'L', 100 << 20, b"", 0o644);
    let stream = io::Cursor::new(head.to_vec()).chain(Repeat {
        byte: b'a',
        left: 100 << 20,
    });
    let err = extract_layer(stream, &sb.root, &layer_options()).unwrap_err();
    assert!(matches!(err, ArchiveError::Limit { .. }), "{err}");
    // 4096-deep path.
    let deep = vec!["a"; 4096].join("/") + "/f";
    let tar = RawTar::new()
        .pax(&[("path", deep.as_bytes())])
        .block(header(b"placeholder", b'0', 0, b"", 0o644))
        .end();
    let err = sb.extract(&tar).unwrap_err();
    assert!(
        err_text(&err).to_lowercase().contains("too long"),
        "{}",
        err_text(&err)
    );
    // NUL inside a PAX path.
    let tar = RawTar::new()
        .pax(&[("path", b"a\0/../../probe/x")])
        .block(header(b"placeholder", b'0', 0, b"", 0o644))
        .end();
    assert!(sb.extract(&tar).is_err());
    sb.assert_outside_untouched();
    // 1e6 entries stream through the reader one at a time.
    struct Entries {
        one: Vec<u8>,
        left: u64,
        offset: usize,
    }
    impl Read for Entries {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.offset == self.one.len() {
                if self.left == 0 {
                    return Ok(0);
                }
                self.left -= 1;
                self.offset = 0;
            }
            let n = buf.len().min(self.one.len() - self.offset);
            buf[..n].copy_from_slice(&self.one[self.offset..self.offset + n]);
            self.offset += n;
            Ok(n)
        }
    }
    let one = RawTar::new().file("d/f", b"").bytes;
    let offset = one.len();
    let mut reader = strata_archive::TarReader::new(Entries {
        one,
        left: 1_000_000,
        offset,
    });
    let mut count = 0u64;
    while reader.next_entry().unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 1_000_000);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn a19_gzip_bomb_stops_at_the_cap() {
    // 64 MiB of zeros in one file compress to ~64 KiB.
    let mut tar = header(b"bomb", b'0', 64 << 20, b"", 0o644).to_vec();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    tar.clear();
    enc.write_all(&[0u8; 1024]).unwrap();
    let blob = enc.finish().unwrap();
    assert!(blob.len() < 1 << 20);
    let sb = Sandbox::new();
    let options = ExtractOptions {
        max_uncompressed: Some(16 << 20),
        ..layer_options()
    };
    let decoded = decompress(&blob[..], LayerCompression::Gzip).unwrap();
    let err = extract_layer(decoded, &sb.root, &options).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    assert!(fs::metadata(sb.path("bomb")).unwrap().len() <= 16 << 20);
    sb.assert_outside_untouched();
}

#[test]
fn a20_multi_member_gzip_layer() {
    let tar = RawTar::new()
        .file("one", &vec![1u8; 300_000])
        .file("two", &vec![2u8; 300_000])
        .file("three", b"3")
        .end();
    let mut blob = Vec::new();
    for part in tar.chunks(200_000) {
        blob.extend(gzip(part));
    }
    let reader = LayerReader::new(
        io::Cursor::new(blob.clone()),
        LayerCompression::Gzip,
        Algorithm::Sha256,
        Threading::DecoderThread,
    )
    .unwrap();
    let sb = Sandbox::new();
    let mut reader = reader;
    extract_layer(&mut reader, &sb.root, &layer_options()).unwrap();
    let digests = reader.finish().unwrap();
    assert_eq!(digests.diff_id.0, Digest::sha256_of(&tar));
    assert_eq!(digests.digest, Digest::sha256_of(&blob));
    assert_eq!(digests.uncompressed_size, tar.len() as u64);
    assert_eq!(fs::read(sb.path("two")).unwrap(), vec![2u8; 300_000]);
    assert_eq!(fs::read(sb.path("three")).unwrap(), b"3");
}

#[test]
fn a21_trailing_data_policy() {
    // After the tar's end blocks: ignored, counted, warned about, and covered by digests.
    let mut tar = RawTar::new().file("f", b"x").end();
    tar.extend(b"garbage after the end");
    let blob = gzip(&tar);
    let sb = Sandbox::new();
    let mut reader = LayerReader::new(
        io::Cursor::new(blob.clone()),
        LayerCompression::Gzip,
        Algorithm::Sha256,
        Threading::SameThread,
    )
    .unwrap();
    let stats = extract_layer(&mut reader, &sb.root, &layer_options()).unwrap();
    assert_eq!(stats.trailing_bytes, 21);
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    assert!(stats.warnings.iter().any(|w| w.contains("after the end")));
    let digests = reader.finish().unwrap();
    assert_eq!(digests.diff_id.0, Digest::sha256_of(&tar));
    assert_eq!(digests.digest, Digest::sha256_of(&blob));
    // After the gzip trailer: an error, as in Go's gzip reader.
    let mut bad = gzip(&RawTar::new().file("f", b"x").end());
    bad.extend(b"not gzip");
    let sb = Sandbox::new();
    let decoded = decompress(&bad[..], LayerCompression::Gzip).unwrap();
    assert!(extract_layer(decoded, &sb.root, &layer_options()).is_err());
}

#[test]
fn a22_zstd_window_cap() {
    // Frame header declaring a 2 GiB window (window log 31), then one raw block.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (31 - 10) << 3];
    frame.extend([0x09, 0x00, 0x00, b'x']);
    let mut out = Vec::new();
    let err = decompress(&frame[..], LayerCompression::Zstd)
        .and_then(|mut d| d.read_to_end(&mut out))
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("memory"), "{err}");
    // The same frame with a small window decodes.
    let mut ok = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (20 - 10) << 3];
    ok.extend([0x09, 0x00, 0x00, b'x']);
    let mut out = Vec::new();
    decompress(&ok[..], LayerCompression::Zstd)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, b"x");
}

#[test]
fn a23_truncated_tar_errors_without_hanging_the_decoder() {
    let tar = RawTar::new()
        .file("a", &vec![7u8; 100_000])
        .file("b", &vec![8u8; 100_000])
        .end();
    // Tar truncated mid-entry (stream itself well-formed), through the decoder thread.
    let blob = gzip(&tar[..150_000]);
    let sb = Sandbox::new();
    let mut reader = LayerReader::new(
        io::Cursor::new(blob),
        LayerCompression::Gzip,
        Algorithm::Sha256,
        Threading::DecoderThread,
    )
    .unwrap();
    let err = extract_layer(&mut reader, &sb.root, &layer_options()).unwrap_err();
    assert!(err_text(&err).contains("truncated"), "{}", err_text(&err));
    drop(reader); // joins the decoder thread
    // Compressed stream cut short.
    let blob = gzip(&tar);
    let cut = blob[..blob.len() / 2].to_vec();
    let mut reader = LayerReader::new(
        io::Cursor::new(cut),
        LayerCompression::Gzip,
        Algorithm::Sha256,
        Threading::DecoderThread,
    )
    .unwrap();
    let sb = Sandbox::new();
    assert!(extract_layer(&mut reader, &sb.root, &layer_options()).is_err());
    drop(reader);
    // The consumer fails first while the decoder has 64 MiB more to produce.
    let mut big = RawTar::new().file("../x", b"").bytes;
    big.extend(header(b"big", b'0', 64 << 20, b"", 0o644));
    big.resize(big.len() + (64 << 20), 5);
    let blob = gzip(&RawTar { bytes: big }.end());
    let mut reader = LayerReader::new(
        io::Cursor::new(blob),
        LayerCompression::Gzip,
        Algorithm::Sha256,
        Threading::DecoderThread,
    )
    .unwrap();
    let sb = Sandbox::new();
    assert!(extract_layer(&mut reader, &sb.root, &layer_options()).is_err());
    drop(reader);
}

#[test]
fn a24_target_policy() {
    let sb = Sandbox::new();
    fs::write(sb.path("existing"), b"e").unwrap();
    let tar = RawTar::new().file("f", b"x").end();
    let fresh = ExtractOptions::default();
    assert_eq!(fresh.target, TargetPolicy::MustBeEmpty);
    let err = extract_layer(&tar[..], &sb.root, &fresh).unwrap_err();
    assert!(matches!(err, ArchiveError::Target { .. }), "{err}");
    assert!(!sb.path("f").exists());
    extract_layer(&tar[..], &sb.root, &layer_options()).unwrap();
    assert!(sb.path("f").exists());
    // A symlink as the target is refused whatever the policy, and never followed.
    let link = sb.dir.path().join("link");
    std::os::unix::fs::symlink(&sb.probe, &link).unwrap();
    for options in [fresh.clone(), layer_options()] {
        let err = extract_layer(&tar[..], &link, &options).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Target { reason, .. } if reason.contains("symlink")),
            "{err}"
        );
    }
    fs::remove_file(&link).unwrap();
    let err = extract_layer(&tar[..], &sb.path("existing"), &layer_options()).unwrap_err();
    assert!(matches!(err, ArchiveError::Target { .. }), "{err}");
    sb.assert_outside_untouched();
}

#[test]
fn a25_race_dir_symlink_swaps_never_write_outside() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.path("d/sub")).unwrap();
    let probe = sb.probe_str();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let root = sb.root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let targets = [
                probe.clone(),
                "../probe".to_string(),
                "../../../../..".into(),
            ];
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for d in ["d", "d/sub"] {
                    let p = root.join(d);
                    let tmp = root.join(format!("{d}.tmp").replace('/', "_"));
                    if fs::rename(&p, &tmp).is_ok() {
                        let _ = std::os::unix::fs::symlink(&targets[i % targets.len()], &p);
                        std::thread::yield_now();
                        let _ = fs::remove_file(&p);
                        let _ = fs::rename(&tmp, &p);
                    }
                    i += 1;
                }
            }
            i
        })
    };
    let tar = RawTar::new()
        .dir("d/", 0o755)
        .file("d/f1", b"1")
        .dir("d/sub/", 0o700)
        .file("d/sub/f2", b"2")
        .file("d/sub/deeper/f3", b"3")
        .symlink("d/link", "/etc")
        .hardlink("d/hl", "d/f1")
        .file("d/.wh.gone", b"")
        .file("d/sub/.wh..wh..opq", b"")
        .dir("d/sub", 0o777)
        .end();
    let mut failures = 0;
    for _ in 0..2000 {
        if sb.extract(&tar).is_err() {
            failures += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    eprintln!("2000 extractions, {failures} failed under {swaps} swaps");
    sb.assert_outside_untouched();
}

/// Layers with whiteouts for the Apply vs OverlayConvert comparison.
fn overlay_layers() -> Vec<Vec<u8>> {
    vec![
        RawTar::new()
            .file("a/old", b"1")
            .file("a/sub/old2", b"2")
            .file("b/x", b"x")
            .file("c/y", b"y")
            .file("keep", b"k")
            .end(),
        RawTar::new()
            .file("a/.wh..wh..opq", b"")
            .file("a/new", b"n")
            .file("b/.wh.x", b"")
            .file(".wh.c", b"")
            .file("c/fresh", b"f")
            .end(),
    ]
}

#[test]
fn overlay_convert_writes_overlay_whiteouts() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let layers = overlay_layers();
    let convert = ExtractOptions {
        whiteouts: WhiteoutMode::OverlayConvert,
        ..ExtractOptions::default()
    };
    let sb = Sandbox::new();
    extract_layer(&layers[1][..], &sb.root, &convert).unwrap();
    let wh = fs::symlink_metadata(sb.path("b/x")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        get_xattr(&sb.path("a"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    // c was whited out and re-created in the same layer: opaque, with its new file.
    assert_eq!(
        get_xattr(&sb.path("c"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert_eq!(fs::read(sb.path("c/fresh")).unwrap(), b"f");
    assert_eq!(fs::read(sb.path("a/new")).unwrap(), b"n");
    // Rootless flavour uses user.overlay.opaque.
    let sb = Sandbox::new();
    let rootless = ExtractOptions {
        ownership: Ownership::Rootless,
        ..convert.clone()
    };
    extract_layer(&layers[1][..], &sb.root, &rootless).unwrap();
    assert_eq!(
        get_xattr(&sb.path("a"), "user.overlay.opaque"),
        Some(b"y".to_vec())
    );
}

#[test]
fn overlay_convert_mounted_equals_applied() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let layers = overlay_layers();
    let applied = Sandbox::new();
    for (i, l) in layers.iter().enumerate() {
        let o = if i == 0 {
            ExtractOptions::default()
        } else {
            layer_options()
        };
        extract_layer(&l[..], &applied.root, &o).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let mut lowers = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let dir = work.path().join(format!("l{i}"));
        fs::create_dir(&dir).unwrap();
        let o = ExtractOptions {
            whiteouts: WhiteoutMode::OverlayConvert,
            ..ExtractOptions::default()
        };
        extract_layer(&l[..], &dir, &o).unwrap();
        lowers.push(dir);
    }
    let merged = work.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lowerdir = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lowerdir}"))
        .arg(&merged)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("skipped: overlay mount not available");
        return;
    }
    // Unmounted even when listing panics (the temp dir could not be removed otherwise).
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let mounted = Unmount(&merged);
    let seen = listing(&merged, true);
    drop(mounted);
    assert_eq!(seen, listing(&applied.root, true));
}

/// Decisions (docs/architecture.md): whiteouts and opaque markers under a symlinked
/// directory act on the directory it resolves to inside the root; the symlink stays, and
/// what this layer writes through it survives. A hard link may join a lower layer's file.
#[test]
fn opaque_and_whiteouts_under_a_symlinked_dir_act_on_its_target_inside_the_root() {
    let sb = Sandbox::new();
    sb.extract(
        &RawTar::new()
            .file("real/victim", b"v")
            .file("real/keep", b"k")
            .symlink("link", "real")
            .file("lower-file", b"lower")
            .end(),
    )
    .unwrap();
    let stats = sb
        .extract(
            &RawTar::new()
                .file("link/.wh.victim", b"")
                .hardlink("hl", "lower-file")
                .end(),
        )
        .unwrap();
    assert_eq!(
        stats.whiteouts_under_undeclared_dirs, 0,
        "counted in overlay mode only"
    );
    sb.extract(
        &RawTar::new()
            .file("link/new", b"n")
            .file("link/.wh..wh..opq", b"")
            .end(),
    )
    .unwrap();
    let mut real: Vec<String> = fs::read_dir(sb.path("real"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    real.sort();
    assert_eq!(real, ["new"]);
    assert!(fs::symlink_metadata(sb.path("link")).unwrap().is_symlink());
    assert_eq!(
        fs::metadata(sb.path("hl")).unwrap().ino(),
        fs::metadata(sb.path("lower-file")).unwrap().ino()
    );
    sb.assert_outside_untouched();
}

/// In overlay form a layer is extracted on its own: a whiteout under a directory it does
/// not declare is counted (the build then applies the layer onto its lower layers), and a
/// hard link to a file it does not hold names the missing target.
#[test]
fn overlay_form_reports_what_needs_the_lower_layers() {
    if !is_root() {
        eprintln!("skipped: needs root (overlay whiteouts are devices)");
        return;
    }
    let convert = ExtractOptions {
        whiteouts: WhiteoutMode::OverlayConvert,
        ..ExtractOptions::default()
    };
    let sb = Sandbox::new();
    let stats = sb
        .extract_with(
            &RawTar::new()
                .dir("declared/", 0o755)
                .file("declared/.wh.x", b"")
                .file("link/.wh.victim", b"")
                .end(),
            &convert,
        )
        .unwrap();
    assert_eq!(stats.whiteouts_under_undeclared_dirs, 1);
    let sb = Sandbox::new();
    let err = sb
        .extract_with(&RawTar::new().hardlink("hl", "lower-file").end(), &convert)
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::HardLinkTarget { entry, target } if entry == "hl" && target == "lower-file"),
        "{err}"
    );
}
