//! RELIABILITY rows B4–B7 (hostile images and steps), teardown (kill-on-exit, Ctrl-C) and
//! foreign-architecture steps.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use common::*;
use strata_sandbox::{Access, MountSpec, Rootfs, RunSpec, SandboxError};
use strata_testkit::processes_with;

#[test]
fn b4_only_std_fds_reach_the_step() {
    let f = Fixture::new();
    // pid 1 is the step's shell: list its descriptors from a child (`ls` holds one on the
    // directory it reads, in its own table).
    let o = f.run("ls /proc/1/fd; readlink /proc/1/fd/0");
    assert!(o.success(), "{o:?}");
    assert_eq!(o.output_tail, ["0", "1", "2", "/dev/null"]);
    // Exec form: the program starts with 0-2 only (`ls` opens 3 on the directory it lists;
    // `readlink` opens nothing).
    let o = run_ok(&RunSpec::new(
        f.rootfs(),
        vec!["ls".into(), "/proc/self/fd".into()],
    ));
    assert_eq!(o.output_tail, ["0", "1", "2", "3"]);
    let o = run_ok(&RunSpec::new(
        f.rootfs(),
        vec!["readlink".into(), "/proc/self/fd/3".into()],
    ));
    assert_eq!(o.status, strata_sandbox::StepStatus::Exited(1), "{o:?}");
}

#[test]
fn b4_workdir_through_proc_fd_magic_links_is_refused() {
    let f = Fixture::new();
    for cwd in [
        "/proc/self/fd/7",
        "/proc/self/cwd",
        "/proc/1/root/etc",
        "/proc/self/fd/3/x",
    ] {
        let mut spec = f.spec("pwd; ls");
        spec.cwd = cwd.into();
        match run_err(&spec) {
            SandboxError::Workdir { workdir, .. } => assert!(workdir.starts_with(cwd), "{workdir}"),
            e => panic!("WORKDIR {cwd}: {e:?}"),
        }
    }
    // A symlink inside the image is fine: resolved inside the root.
    std::os::unix::fs::symlink("/etc", f.lower.join("etc-link")).unwrap();
    let mut spec = f.spec("pwd -P");
    spec.cwd = "/etc-link".into();
    assert_eq!(run_ok(&spec).output_tail, ["/etc"]);
}

#[test]
fn b5_writing_proc_exe_leaves_the_host_binary_unchanged() {
    let f = Fixture::new();
    let helper_before = std::fs::read(HELPER).unwrap();
    let busybox_before = std::fs::read(f.lower.join("bin/busybox")).unwrap();
    let o = f.run(
        "for p in /proc/self/exe /proc/1/exe /proc/[0-9]*/exe; do \
           (echo x > $p) 2>/dev/null && echo wrote $p; \
           (cat /bin/true > $p) 2>/dev/null && echo overwrote $p; done; \
         readlink /proc/1/exe; true",
    );
    assert!(o.success(), "{o:?}");
    // pid 1 is the step's own shell: no strata binary is visible in the container.
    assert_eq!(
        o.output_tail.last().map(String::as_str),
        Some("/bin/busybox"),
        "{o:?}"
    );
    assert!(
        std::fs::read(HELPER).unwrap() == helper_before,
        "the helper binary changed"
    );
    assert!(
        std::fs::read(f.lower.join("bin/busybox")).unwrap() == busybox_before,
        "the lower layer changed"
    );
}

fn hostile_rootfs(f: &Fixture, probe: &Probe) {
    // /dev -> the probe dir (absolute host path), /etc/hosts -> a host file, /proc -> ../../probe.
    for d in ["dev", "proc"] {
        std::fs::remove_dir_all(f.lower.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(probe.path(), f.lower.join("dev")).unwrap();
    let rel: String = "../".repeat(12) + probe.path().strip_prefix("/").unwrap().to_str().unwrap();
    std::os::unix::fs::symlink(&rel, f.lower.join("proc")).unwrap();
    std::os::unix::fs::symlink(probe.path().join("hosts"), f.lower.join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink(probe.path().join("sub"), f.lower.join("etc/resolv.conf")).unwrap();
}

#[test]
fn b6_dev_proc_and_hosts_symlinked_to_host_paths_are_not_followed() {
    let probe = Probe::new();
    let f = Fixture::new();
    hostile_rootfs(&f, &probe);
    let lower_before = tree(&f.lower);
    let mut spec = f.spec(
        "echo x > /dev/null; chmod 000 /dev/null 2>/dev/null; test -c /dev/zero && echo dev-ok; \
         ls /proc/self >/dev/null && echo proc-ok; cat /etc/hosts; echo y >> /etc/hosts; \
         cat /etc/resolv.conf; ls /dev | grep -c sentinel",
    );
    spec.hosts = Some("127.0.0.1 localhost\n".into());
    spec.resolv_conf = Some("nameserver 192.0.2.1\n".into());
    let o = run_ok(&spec);
    assert_eq!(
        o.output_tail,
        [
            "dev-ok",
            "proc-ok",
            "127.0.0.1 localhost",
            "nameserver 192.0.2.1",
            "0"
        ],
        "{o:?}"
    );
    probe.assert_unchanged();
    let host_null = std::fs::metadata("/dev/null").unwrap();
    assert_eq!(
        host_null.mode() & 0o777,
        0o666,
        "the host's /dev/null was chmodded"
    );
    assert_eq!(
        lower_before,
        tree(&f.lower),
        "the image's symlinks were rewritten"
    );
    assert_eq!(
        f.upper_entries(),
        Vec::<String>::new(),
        "stubs or replacements in the diff"
    );

    // Without the stub layer (plain directory root) the symlinks are refused, not followed.
    let probe = Probe::new();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_rootfs(&root, Path::new("/bin/busybox"));
    std::fs::remove_dir(root.join("dev")).unwrap();
    std::os::unix::fs::symlink(probe.path(), root.join("dev")).unwrap();
    match run_err(&RunSpec::shell(Rootfs::Dir(root.clone()), "true")) {
        SandboxError::MountTarget { target, reason } => {
            assert_eq!(target, "/dev");
            assert!(reason.contains("symlink"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    probe.assert_unchanged();
}

#[test]
fn b7_mount_target_symlinked_out_of_the_root_is_confined() {
    let probe = Probe::new();
    let f = Fixture::new();
    // The image's mount target points at the host probe; the cache must be mounted inside
    // the root instead, and the step must not be able to swap the target afterwards.
    std::os::unix::fs::symlink(probe.path(), f.lower.join("cache")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", f.lower.join("up")).unwrap();
    let cache = f.tmp.path().join("cache-src");
    std::fs::create_dir(&cache).unwrap();
    let mut spec = f.spec(
        "echo data > /cache/item; ls /cache; \
         (umount /cache) 2>/dev/null || echo umount-refused; \
         (rm -rf /cache) 2>/dev/null; (ln -sfn /etc /cache) 2>/dev/null; \
         echo sneaky > /up/tmp/escaped; ls /up",
    );
    spec.mounts = vec![
        MountSpec::Bind {
            source: cache.clone(),
            target: "/cache".into(),
            access: Access::ReadWrite,
        },
        MountSpec::Tmpfs {
            target: "/up/tmp/t".into(),
            size_bytes: None,
            mode: None,
        },
    ];
    let o = run_ok(&spec);
    assert!(o.output_tail.contains(&"item".to_string()), "{o:?}");
    assert!(
        o.output_tail.contains(&"umount-refused".to_string()),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(cache.join("item")).unwrap(),
        "data\n"
    );
    probe.assert_unchanged();
    // /up resolves to the root inside the container: the write landed in the diff.
    assert_eq!(
        std::fs::read_to_string(f.upper().join("tmp/escaped")).unwrap(),
        "sneaky\n"
    );
    assert!(!f.upper().join("tmp/t").exists(), "mount stub in the diff");
}

#[test]
fn kill_on_exit_leaves_no_process_behind() {
    let f = Fixture::new();
    let marker = format!("1000.{}", std::process::id());
    let o = f.run(&format!("sleep {marker} & sleep {marker} </dev/null >/dev/null 2>&1 & setsid sleep {marker} & echo started"));
    assert!(o.success(), "{o:?}");
    assert_eq!(
        processes_with(&marker),
        Vec::<String>::new(),
        "processes survived the step"
    );
}

/// Runs `sleep MARKER & echo started; sleep MARKER` in a separate process, as strata does
/// (the helper binary's `run SPEC.json`), and returns it once the step has printed `started`,
/// with its stderr still open (keep it alive while the step runs).
fn spawn_sleeping_step(
    f: &Fixture,
    marker: &str,
    stdout: Stdio,
) -> (Child, BufReader<ChildStderr>) {
    let spec_path = f.tmp.path().join("spec.json");
    let spec = f.spec(&format!("sleep {marker} & echo started; sleep {marker}"));
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut child = Command::new(HELPER)
        .arg("run")
        .arg(&spec_path)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    (child, stderr)
}

#[test]
fn ctrl_c_kills_the_step_and_leaves_nothing() {
    let f = Fixture::new();
    let marker = format!("1000.{}7", std::process::id());
    let (child, _stderr) = spawn_sleeping_step(&f, &marker, Stdio::piped());
    assert_eq!(processes_with(&marker).len(), 2, "the step is running");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "Interrupted", "{report}");
    assert_eq!(
        processes_with(&marker),
        Vec::<String>::new(),
        "processes survived Ctrl-C"
    );
    // Nothing of the sandbox stays mounted anywhere: the upper/work pair can be removed and a
    // new step can use the same layer at once.
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(f.dirs.base().to_str().unwrap())
    );
    sandbox().remove(f.dirs.base()).unwrap();
    let g = Fixture::new();
    assert!(g.run("true").success());
}

#[test]
fn foreign_arch_step_runs_under_qemu() {
    if strata_sandbox::host_arch() != "amd64" {
        return; // the fixture below is an arm64 image on an amd64 host
    }
    let f = Fixture::with_busybox(&arm64_busybox());
    let mut spec = f.spec("uname -m; echo hi > /made-on-arm64");
    spec.platform_arch = Some("arm64".into());
    let o = run_ok(&spec);
    assert_eq!(o.output_tail, ["aarch64"], "{o:?}");
    assert!(f.upper().join("made-on-arm64").exists());
}

#[test]
fn foreign_arch_without_emulator_names_the_fix() {
    let f = Fixture::new();
    // An architecture with no handler registered on this host.
    let candidates = [
        ("riscv64", "riscv64"),
        ("s390x", "s390x"),
        ("ppc64le", "ppc64le"),
        ("loong64", "loongarch64"),
    ];
    let Some((arch, qemu)) = candidates
        .into_iter()
        .find(|(_, q)| !Path::new(&format!("/proc/sys/fs/binfmt_misc/qemu-{q}")).exists())
    else {
        panic!("every candidate architecture has a binfmt handler; extend the list");
    };
    let mut spec = f.spec("true");
    spec.platform_arch = Some(arch.into());
    match run_err(&spec) {
        SandboxError::ForeignArch {
            arch: a,
            fix,
            problem,
            ..
        } => {
            assert_eq!(a, arch);
            assert!(problem.contains("no binfmt_misc handler"), "{problem}");
            assert!(fix.contains("apt-get install qemu-user-static"), "{fix}");
            assert!(
                fix.contains(&format!("/usr/lib/binfmt.d/qemu-{qemu}.conf")),
                "{fix}"
            );
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn strata_killed_outright_takes_the_step_with_it() {
    // No signal handling at all (SIGKILL): the helper's parent-death signal stops the step.
    let f = Fixture::new();
    let marker = format!("1000.{}9", std::process::id());
    let (mut child, _stderr) = spawn_sleeping_step(&f, &marker, Stdio::null());
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel delivers the parent-death signals asynchronously: poll (bounded, generous).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !processes_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "step survived: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
