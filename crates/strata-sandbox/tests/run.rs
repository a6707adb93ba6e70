//! RUN steps as root over busybox root filesystems: the diff in the upper dir, users, WORKDIR,
//! exit status and output, env, network, mounts, hosts/resolv.conf, Rootfs::Dir.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use strata_sandbox::{
    Access, MountSpec, Network, OutputSink, Rootfs, RunSpec, SandboxError, StepStatus,
};

#[test]
fn changes_land_in_upper_with_whiteouts_and_opaque_dirs() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.lower.join("data/old")).unwrap();
    std::fs::write(f.lower.join("data/old/a"), "a").unwrap();
    std::fs::write(f.lower.join("data/keep"), "keep").unwrap();
    std::fs::write(f.lower.join("data/edit"), "v1").unwrap();
    let lower_before = tree(&f.lower);

    let o = f.run(
        "set -e; echo new > /data/new; echo v2 > /data/edit; rm /data/keep; \
         rm -r /data/old; mkdir /data/old; echo b > /data/old/b; chmod 600 /data/new; \
         ln -s /data/new /data/link",
    );
    assert!(o.success(), "{o:?}");
    let up = f.upper();
    assert_eq!(
        std::fs::read_to_string(up.join("data/new")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::metadata(up.join("data/new")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(up.join("data/edit")).unwrap(),
        "v2\n"
    );
    assert!(is_whiteout(&up.join("data/keep")), "data/keep whiteout");
    let opaque = if is_root() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    };
    assert_eq!(
        xattr(&up.join("data/old"), opaque).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::read_to_string(up.join("data/old/b")).unwrap(),
        "b\n"
    );
    assert!(!up.join("data/old/a").exists());
    assert_eq!(
        std::fs::read_link(up.join("data/link")).unwrap(),
        PathBuf::from("/data/new")
    );
    // Exactly the changes: no mount stubs, no /etc/hosts, nothing else.
    assert_eq!(
        f.upper_entries(),
        [
            "data",
            "data/edit",
            "data/keep",
            "data/link",
            "data/new",
            "data/old",
            "data/old/b"
        ]
    );
    assert_eq!(lower_before, tree(&f.lower), "the lower layer changed");
}

#[test]
fn upper_dir_becomes_a_layer_gnu_tar_reads() {
    let f = Fixture::new();
    let o = f.run("echo hi > /hello && rm /etc/group && rm -r /usr && mkdir /usr && touch /usr/x");
    assert!(o.success(), "{o:?}");
    let layer = f.tmp.path().join("layer.tar");
    let file = std::fs::File::create(&layer).unwrap();
    let mut tar = strata_archive::TarBuilder::new(file, strata_archive::TarOptions::default());
    strata_archive::write_overlay_diff(f.upper(), &mut tar).unwrap();
    tar.finish().unwrap();
    let out = Command::new("tar").arg("-tf").arg(&layer).output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/.wh.group",
            "hello",
            "usr/",
            "usr/.wh..wh..opq",
            "usr/x"
        ]
    );
}

#[test]
fn mount_targets_missing_from_the_image_never_reach_upper() {
    let f = Fixture::new();
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::remove_dir_all(f.lower.join(d)).unwrap();
    }
    std::fs::remove_dir_all(f.lower.join("etc")).unwrap();
    let cache = f.tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let mut spec = f.spec("test -c /dev/null && test -d /proc/self && cat /etc/hosts /etc/resolv.conf && ls /deep/cache /mnt/t");
    spec.hosts = Some("127.0.0.1 localhost\n".into());
    spec.resolv_conf = Some("nameserver 192.0.2.53\n".into());
    spec.mounts = vec![
        MountSpec::Bind {
            source: cache,
            target: "/deep/cache".into(),
            access: Access::ReadOnly,
        },
        MountSpec::Tmpfs {
            target: "/mnt/t".into(),
            size_bytes: Some(1 << 20),
            mode: None,
        },
    ];
    let o = run_ok(&spec);
    assert!(o.success(), "{o:?}");
    assert!(output(&o).contains("nameserver 192.0.2.53"), "{o:?}");
    assert_eq!(
        f.upper_entries(),
        Vec::<String>::new(),
        "stubs leaked into the diff"
    );
}

#[test]
fn users_groups_and_home() {
    if !is_root() {
        eprintln!("skipped: other users need root or subordinate ids (see tests/rootless.rs)");
        return;
    }
    let f = Fixture::new();
    // (USER, uid, gid, all groups sorted, HOME, `id -un`)
    let cases = [
        ("", "0", "0", "0", "/root", "root"),
        ("root", "0", "0", "0", "/root", "root"),
        (
            "nobody",
            "65534",
            "65534",
            "65534",
            "/nonexistent",
            "nobody",
        ),
        ("app", "1000", "1000", "10 1000 29", "/home/app", "app"),
        ("1000", "1000", "1000", "10 1000 29", "/home/app", "app"),
        ("app:audio", "1000", "29", "29", "/home/app", "app"),
        ("app:4242", "1000", "4242", "4242", "/home/app", "app"),
        ("4242:4343", "4242", "4343", "4343", "/", "4242"),
    ];
    for (user, uid, gid, groups, home, name) in cases {
        let mut spec = f.spec("id -u; id -g; id -G | tr ' ' '\\n' | sort -u | tr '\\n' ' '; echo; echo $HOME; id -un 2>/dev/null; true");
        spec.user = user.into();
        let o = run_ok(&spec);
        assert!(o.success(), "{user}: {o:?}");
        let got: Vec<&str> = o.output_tail.iter().map(|l| l.trim()).collect();
        assert_eq!(got, [uid, gid, groups, home, name], "USER {user:?}");
    }
    let mut spec = f.spec("id");
    spec.user = "ghost".into();
    match run_err(&spec) {
        SandboxError::User { user, reason } => {
            assert_eq!(user, "ghost");
            assert!(reason.contains("no matching entries in passwd"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn passwd_symlinked_to_a_device_is_refused_not_read() {
    // CVE-2024-9676: /etc/passwd -> /dev/zero must not be read on the host or inside.
    let f = Fixture::new();
    std::fs::remove_file(f.lower.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", f.lower.join("etc/passwd")).unwrap();
    let mut spec = f.spec("id");
    spec.user = "nobody".into();
    match run_err(&spec) {
        SandboxError::User { reason, .. } => {
            assert!(reason.contains("not a regular file"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn workdir_is_created_owned_by_the_user() {
    if !is_root() {
        eprintln!("skipped: other users need root or subordinate ids (see tests/rootless.rs)");
        return;
    }
    let f = Fixture::new();
    let mut spec = f.spec("pwd; touch mine; ls -ln /srv");
    spec.user = "app".into();
    spec.cwd = "/srv/app/data".into();
    let o = run_ok(&spec);
    assert!(o.success(), "{o:?}");
    assert_eq!(o.output_tail[0], "/srv/app/data");
    for d in ["srv", "srv/app", "srv/app/data"] {
        let md = std::fs::metadata(f.upper().join(d)).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1000, 1000, 0o755),
            "{d}"
        );
    }
    assert_eq!(
        std::fs::metadata(f.upper().join("srv/app/data/mine"))
            .unwrap()
            .uid(),
        1000
    );
}

#[test]
fn exit_code_and_output_tail() {
    let f = Fixture::new();
    let mut spec = f.spec(
        "for i in $(seq 1 500); do echo line $i; done; echo to-stderr >&2; printf partial; exit 7",
    );
    spec.output = OutputSink::discard().with_tail_lines(3);
    let o = run_ok(&spec);
    assert_eq!(o.status, StepStatus::Exited(7));
    assert_eq!(o.output_tail, ["line 500", "to-stderr", "partial"]);

    // The callback sees everything, in order.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut spec = f.spec("seq 1 20000");
    spec.output = OutputSink::callback(move |chunk| sink.lock().unwrap().extend_from_slice(chunk));
    let o = run_ok(&spec);
    assert!(o.success());
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        String::from_utf8(seen.lock().unwrap().clone()).unwrap(),
        expected
    );

    // A long line without newline is capped in the tail.
    let o = run_ok(&f.spec("head -c 100000 /dev/zero | tr '\\0' x"));
    assert_eq!(o.output_tail.len(), 1);
    assert_eq!(o.output_tail[0].len(), strata_sandbox::MAX_TAIL_LINE_BYTES);
}

#[test]
fn exec_form_program_not_found_is_an_error() {
    let f = Fixture::new();
    let spec = RunSpec::new(f.rootfs(), vec!["no-such-program".into(), "x".into()]);
    match run_err(&spec) {
        SandboxError::Exec { program, source } => {
            assert_eq!(program, "no-such-program");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("{e:?}"),
    }
    // Found through PATH in exec form.
    let o = run_ok(&RunSpec::new(
        f.rootfs(),
        vec!["echo".into(), "found".into()],
    ));
    assert_eq!(o.output_tail, ["found"]);
}

#[test]
fn env_is_passed_and_defaults_added() {
    let f = Fixture::new();
    let mut spec = f.spec("echo \"$FOO|$EMPTY|$PATH|$HOME\"; env | sort | tr '\\n' ' '");
    spec.env = vec!["FOO=bar baz".into(), "EMPTY=".into()];
    let o = run_ok(&spec);
    assert_eq!(
        o.output_tail[0],
        "bar baz||/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root"
    );
    // Nothing of the caller's environment leaks (the test runner has CARGO_* variables).
    assert!(!o.output_tail[1].contains("CARGO"), "{}", o.output_tail[1]);
    let mut spec = f.spec("echo $PATH");
    spec.env = vec!["PATH=/bin".into()];
    assert_eq!(run_ok(&spec).output_tail, ["/bin"]);
}

#[test]
fn network_none_has_only_loopback_up() {
    let f = Fixture::new();
    let mut spec = f.spec("ls /sys/class/net; cat /sys/class/net/lo/flags; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok");
    spec.network = Network::None;
    let o = run_ok(&spec);
    assert_eq!(o.output_tail, ["lo", "0x9", "ping-ok"], "{o:?}");

    // Host network: the host's interfaces.
    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    let o = run_ok(&f.spec("ls /sys/class/net"));
    assert_eq!(o.output_tail, host);
}

#[test]
fn hostname_hosts_and_resolv_conf_are_not_in_the_layer() {
    let f = Fixture::new();
    std::fs::write(f.lower.join("etc/hosts"), "# image hosts\n").unwrap();
    let mut spec =
        f.spec("hostname; cat /etc/hosts /etc/resolv.conf; echo '1.2.3.4 added' >> /etc/hosts");
    spec.hostname = "builder".into();
    spec.hosts = Some("127.0.0.1 localhost builder\n".into());
    spec.resolv_conf = Some("nameserver 192.0.2.1\n".into());
    let o = run_ok(&spec);
    assert!(o.success(), "{o:?}");
    assert_eq!(
        o.output_tail,
        [
            "builder",
            "127.0.0.1 localhost builder",
            "nameserver 192.0.2.1"
        ]
    );
    assert_eq!(f.upper_entries(), Vec::<String>::new());
    assert_eq!(
        std::fs::read_to_string(f.lower.join("etc/hosts")).unwrap(),
        "# image hosts\n"
    );
    // Without them, the image's files are used.
    let o = run_ok(&f.spec("cat /etc/hosts"));
    assert_eq!(o.output_tail, ["# image hosts"]);
}

#[test]
fn bind_and_tmpfs_mounts() {
    let f = Fixture::new();
    let rw = f.tmp.path().join("rw");
    let ro = f.tmp.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(ro.join("sub")).unwrap();
    std::fs::write(ro.join("sub/data"), "ro-data").unwrap();
    let secret = f.tmp.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let mut spec = f.spec(
        "echo w > /cache/written; cat /ro/sub/data; echo; \
         (echo x > /ro/new) 2>&1; (echo x > /ro/sub/data) 2>&1; \
         (mount -o remount,rw /ro) 2>&1 || echo remount-refused; \
         cat /run/secrets/token; echo; \
         echo t > /scratch/t; grep ' /scratch ' /proc/mounts",
    );
    spec.mounts = vec![
        MountSpec::Bind {
            source: rw.clone(),
            target: "/cache".into(),
            access: Access::ReadWrite,
        },
        MountSpec::Bind {
            source: ro.clone(),
            target: "/ro".into(),
            access: Access::ReadOnly,
        },
        MountSpec::Bind {
            source: secret,
            target: "/run/secrets/token".into(),
            access: Access::ReadOnly,
        },
        MountSpec::Tmpfs {
            target: "/scratch".into(),
            size_bytes: Some(2 << 20),
            mode: Some(0o700),
        },
    ];
    let o = run_ok(&spec);
    let out = output(&o);
    assert!(o.success(), "{out}");
    assert_eq!(std::fs::read_to_string(rw.join("written")).unwrap(), "w\n");
    assert!(out.contains("ro-data"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(out.contains("remount-refused"), "{out}");
    assert!(out.contains("s3cret"), "{out}");
    assert!(
        out.contains("tmpfs /scratch tmpfs rw,nosuid,nodev,relatime,size=2048k,mode=700"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(ro.join("sub/data")).unwrap(),
        "ro-data"
    );
    assert!(!ro.join("new").exists());
    assert_eq!(
        f.upper_entries(),
        Vec::<String>::new(),
        "mount contents or stubs in the diff"
    );
}

#[test]
fn rootfs_dir_is_changed_in_place_and_created_targets_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_rootfs(&root, std::path::Path::new("/bin/busybox"));
    std::fs::remove_dir(root.join("proc")).unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let mut spec = RunSpec::shell(
        Rootfs::Dir(root.clone()),
        "echo hi > /hello; rm /etc/group; ls /proc/self >/dev/null && echo proc-ok",
    );
    spec.mounts = vec![MountSpec::Bind {
        source: cache,
        target: "/var/cache/x".into(),
        access: Access::ReadWrite,
    }];
    spec.resolv_conf = Some("nameserver 192.0.2.1\n".into());
    let o = run_ok(&spec);
    assert_eq!(o.output_tail, ["proc-ok"], "{o:?}");
    assert_eq!(std::fs::read_to_string(root.join("hello")).unwrap(), "hi\n");
    assert!(!root.join("etc/group").exists());
    for created in ["proc", "var/cache/x", "var/cache", "etc/resolv.conf"] {
        assert!(!root.join(created).exists(), "{created} left behind");
    }
    assert!(root.join("var/tmp").is_dir(), "pre-existing dirs kept");
}

#[test]
fn overlay_probe_works_here() {
    let tmp = tempfile::tempdir().unwrap();
    sandbox().probe_overlay(tmp.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "probe dirs left behind"
    );
    let e = sandbox()
        .probe_overlay(&tmp.path().join("missing"))
        .unwrap_err();
    assert!(matches!(e, SandboxError::InvalidSpec { .. }), "{e:?}");
    assert!(!tmp.path().join("missing").exists());
}

#[test]
fn step_dirs_are_removed_with_overlay_leftovers() {
    let f = Fixture::new();
    let o = f.run("mkdir -p /ro/dir && touch /ro/dir/f && chmod 555 /ro/dir && chmod 000 /ro");
    assert!(o.success());
    sandbox().remove(f.dirs.base()).unwrap();
    assert!(!f.dirs.base().exists());
}

#[test]
fn invalid_specs_are_refused_before_starting() {
    let f = Fixture::new();
    let cases: Vec<(RunSpec, &str)> = vec![
        (RunSpec::new(f.rootfs(), vec![]), "args"),
        (
            {
                let mut s = f.spec("true");
                s.cwd = "relative".into();
                s
            },
            "cwd",
        ),
        (
            {
                let mut s = f.spec("true");
                s.env = vec!["NOEQUALS".into()];
                s
            },
            "env",
        ),
        (
            {
                let mut s = f.spec("true");
                s.mounts = vec![MountSpec::Tmpfs {
                    target: "/".into(),
                    size_bytes: None,
                    mode: None,
                }];
                s
            },
            "mounts",
        ),
        (
            RunSpec::shell(Rootfs::Dir("/nonexistent-root".into()), "true"),
            "rootfs",
        ),
        (
            {
                let mut s = f.spec("true");
                s.hostname = "h".repeat(65);
                s
            },
            "hostname",
        ),
    ];
    let mut cases = cases;
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    if let Some(shm) = &shm {
        // upper and work on different filesystems (overlayfs would only say EINVAL).
        let rootfs = Rootfs::Overlay {
            lower: vec![f.lower.clone()],
            upper: shm.path().to_path_buf(),
            work: f.dirs.work().to_path_buf(),
        };
        cases.push((RunSpec::shell(rootfs, "true"), "rootfs.work"));
    }
    for (spec, field) in cases {
        match run_err(&spec) {
            SandboxError::InvalidSpec { field: got, .. } => assert_eq!(got, field),
            e => panic!("{field}: {e:?}"),
        }
    }
}

#[test]
fn many_layers_with_both_lowerdir_syntaxes() {
    // 80 layers: far beyond what one 256-byte `lowerdir=` of /proc/self/fd paths can hold, so
    // the pre-6.8 syntax only works through the short symlink names.
    let f = Fixture::new();
    let mut lower = Vec::new();
    for i in (0..80).rev() {
        let dir = f.tmp.path().join(format!("layer{i}"));
        std::fs::create_dir_all(dir.join("layers")).unwrap();
        std::fs::write(dir.join(format!("layers/{i}")), i.to_string()).unwrap();
        if i == 79 {
            // The top layer deletes a file of the bottom one (an overlay whiteout).
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join("layers/0"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
        }
        lower.push(dir);
    }
    lower.push(f.lower.clone());
    for legacy in [false, true] {
        let dirs = strata_sandbox::StepDirs::create(f.tmp.path()).unwrap();
        let spec = RunSpec::shell(
            dirs.overlay(lower.clone()),
            "ls /layers | wc -l; cat /layers/1 /layers/78; echo; test -e /layers/0 || echo gone",
        );
        let sandbox = if legacy {
            sandbox().force_legacy_overlay_syntax()
        } else {
            sandbox()
        };
        let o = sandbox
            .run(&spec)
            .unwrap_or_else(|e| panic!("legacy={legacy}: {}", strata_testkit::error_chain(&e)));
        assert_eq!(o.output_tail, ["79", "178", "gone"], "legacy={legacy}");
    }
}

#[test]
fn copied_up_parents_keep_the_image_metadata() {
    if !is_root() {
        eprintln!("skipped: needs root to give the image's /etc another owner");
        return;
    }
    // /etc/hosts is missing, so a stub layer with a copy of /etc sits on top of the image;
    // when the step then changes a file in /etc, overlayfs copies /etc up from that stub: it
    // must look exactly like the image's. Once with the stub layer written directly, once
    // through the overlay way (forced by a /dev symlink the direct way does not model).
    for hostile_dev in [false, true] {
        let f = Fixture::new();
        let etc = f.lower.join("etc");
        std::os::unix::fs::chown(&etc, Some(12), Some(34)).unwrap();
        std::fs::set_permissions(&etc, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .unwrap();
        rustix::fs::setxattr(&etc, "user.test", b"abc", rustix::fs::XattrFlags::empty()).unwrap();
        if hostile_dev {
            std::fs::remove_dir(f.lower.join("dev")).unwrap();
            std::os::unix::fs::symlink("/nowhere", f.lower.join("dev")).unwrap();
        }
        let when = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 5,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 7,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &etc, &when, rustix::fs::AtFlags::empty()).unwrap();
        let mut spec = f.spec("echo extra:x:5:5::/:/bin/sh >> /etc/passwd; cat /etc/hosts");
        spec.hosts = Some("127.0.0.1 localhost\n".into());
        let o = run_ok(&spec);
        assert_eq!(o.output_tail, ["127.0.0.1 localhost"], "{o:?}");
        assert_eq!(
            f.upper_entries(),
            ["etc", "etc/passwd"],
            "hostile_dev={hostile_dev}"
        );
        let md = std::fs::symlink_metadata(f.upper().join("etc")).unwrap();
        assert_eq!(
            (
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                md.mtime(),
                md.mtime_nsec()
            ),
            (0o750, 12, 34, 1_000_000_000, 7),
            "hostile_dev={hostile_dev}"
        );
        assert_eq!(
            xattr(&f.upper().join("etc"), "user.test").as_deref(),
            Some(&b"abc"[..])
        );
    }
}

#[test]
fn an_upper_dir_serves_as_the_next_steps_lower() {
    // The build engine can stack step results without extracting the layers it wrote.
    let f = Fixture::new();
    std::fs::create_dir_all(f.lower.join("opt/old")).unwrap();
    std::fs::write(f.lower.join("opt/old/x"), "x").unwrap();
    let o = f.run("rm /etc/group; rm -r /opt; mkdir -p /opt/new; echo 1 > /opt/new/one");
    assert!(o.success(), "{o:?}");
    let second = strata_sandbox::StepDirs::create(f.tmp.path()).unwrap();
    let spec = RunSpec::shell(
        second.overlay(vec![f.upper().to_path_buf(), f.lower.clone()]),
        "ls /opt; cat /opt/new/one; test -e /etc/group || echo no-group; echo 2 > /opt/new/two",
    );
    let o = run_ok(&spec);
    assert_eq!(o.output_tail, ["new", "1", "no-group"], "{o:?}");
    assert_eq!(
        tree(second.upper()).into_keys().collect::<Vec<_>>(),
        ["opt", "opt/new", "opt/new/two"]
    );
}

#[test]
fn the_root_dir_looks_like_the_images_whatever_the_upper_dir_mode() {
    let f = Fixture::new();
    // A caller whose umask made the upper dir 0700 must not hide / from other users.
    std::fs::set_permissions(
        f.upper(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::set_permissions(
        &f.lower,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut spec = f.spec("stat -c %a /; ls /bin/busybox");
    spec.user = if is_root() {
        "nobody".into()
    } else {
        String::new()
    };
    let o = run_ok(&spec);
    assert_eq!(o.output_tail, ["755", "/bin/busybox"], "{o:?}");
}
