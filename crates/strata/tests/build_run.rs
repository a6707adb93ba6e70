//! `strata build` with RUN steps from the command line: podman runs the result, live output
//! in plain mode, errors with file:line and exit code, secrets, `--no-cache-filter`, a
//! multi-platform build through qemu-user, the strata binary unharmed by
//! `/proc/self/exe` writes, and Ctrl-C leaving no process, mount or directory behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, run};
use strata_testkit::{busybox_index, processes_with};

/// A context with `containerfile` and a busybox base (amd64 + arm64 index) in a layout.
fn setup(env: &Env, containerfile: &str) -> PathBuf {
    let base = env.path("base");
    busybox_index()
        .write_oci_layout(&base, "multi")
        .expect("layout");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    let text = containerfile.replace("BASE", &format!("oci:{}:multi", base.display()));
    std::fs::write(ctx.join("Containerfile"), text).expect("write");
    ctx
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn run_steps_build_an_image_podman_runs() {
    let env = Env::new();
    let ctx = setup(
        &env,
        "FROM BASE\nRUN echo built by strata > /hello && echo step output\nCMD [\"cat\", \"/hello\"]\n",
    );
    // Plain progress (stderr is not a terminal) carries the step's output lines.
    let out = env.output(&["build", "-t", "localhost/run:1", s(&ctx)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("STEP 1| step output"), "{stderr}");
    strata_testkit::schema::assert_layout_valid(&env.path("data/strata"));
    // podman names images after the layout path, which must then be lowercase.
    let lower = std::env::temp_dir().join(format!("strata-run-podman-{}", std::process::id()));
    env.ok(&[
        "copy",
        "-q",
        "localhost/run:1",
        &format!("oci:{}:run", lower.display()),
    ]);
    let shown = run(
        "podman",
        &[
            "run",
            "--rm",
            "--network=none",
            &format!("oci:{}:run", lower.display()),
        ],
    );
    let _ = run(
        "podman",
        &["rmi", "-f", &format!("localhost{}:latest", lower.display())],
    );
    let _ = std::fs::remove_dir_all(&lower);
    assert_eq!(shown, "built by strata\n");
}

#[test]
fn a_failing_step_names_its_line_code_and_output() {
    let env = Env::new();
    let ctx = setup(&env, "FROM BASE\nRUN echo about to fail && exit 3\n");
    let err = env.fails(&["build", s(&ctx)]);
    for want in [
        "Containerfile:2",
        "RUN echo about to fail && exit 3",
        "exited with code 3",
        "about to fail",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let env = Env::new();
    let ctx2 = setup(
        &env,
        "FROM BASE\nRUN --mount=type=secret,id=file --mount=type=secret,id=e,env=TOKEN \
         test \"$(wc -c < /run/secrets/file)\" = 12 && test \"${#TOKEN}\" = 11 && echo ok > /ok\n",
    );
    let secret = env.path("secret.txt");
    std::fs::write(&secret, "file-value-1").expect("write");
    let out_dir = env.path("out");
    let result = env
        .strata()
        .env("MY_TOKEN", "env-value-2")
        .args([
            "build",
            "--secret",
            &format!("id=file,src={}", secret.display()),
            "--secret",
            "id=e,env=MY_TOKEN",
            "-o",
            &format!("oci:{}:s", out_dir.display()),
            s(&ctx2),
        ])
        .output()
        .expect("run strata");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    for f in files(&out_dir) {
        let bytes = gunzipped(&std::fs::read(&f).expect("read"));
        for needle in [b"file-value-1".as_slice(), b"env-value-2".as_slice()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "secret in {}",
                f.display()
            );
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let md = std::fs::symlink_metadata(e.path()).expect("stat");
        if md.is_dir() {
            out.extend(files(&e.path()));
        } else if md.is_file() {
            out.push(e.path());
        }
    }
    out
}

fn gunzipped(bytes: &[u8]) -> Vec<u8> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return bytes.to_vec();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("x.gz");
    std::fs::write(&p, bytes).expect("write");
    let out = std::process::Command::new("gzip")
        .args(["-dc", s(&p)])
        .output()
        .expect("gzip");
    out.stdout
}

#[test]
fn multi_platform_run_through_qemu_makes_one_index() {
    let env = Env::new();
    let ctx = setup(&env, "FROM BASE\nRUN uname -m > /arch\n");
    let out = env.path("out");
    let result = env.json(&[
        "build",
        "--format",
        "json",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("oci:{}:m", out.display()),
        s(&ctx),
    ]);
    assert_eq!(
        result["media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let images = result["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    let last = |i: usize| {
        images[i]["layers"]
            .as_array()
            .expect("layers")
            .last()
            .expect("layer")["digest"]
            .clone()
    };
    assert_ne!(last(0), last(1), "each platform its own RUN layer");
    for (arch, uname) in [("amd64", "x86_64\n"), ("arm64", "aarch64\n")] {
        let one = env.path(&format!("one-{arch}"));
        env.ok(&[
            "copy",
            "-q",
            "--platform",
            &format!("linux/{arch}"),
            &format!("oci:{}:m", out.display()),
            &format!("oci:{}:x", one.display()),
        ]);
        let bundle = env.path(&format!("bundle-{arch}"));
        run(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:x", one.display()),
                s(&bundle),
            ],
        );
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/arch")).expect("arch"),
            uname
        );
    }
}

#[test]
fn no_cache_filter_rebuilds_only_the_named_stage() {
    let env = Env::new();
    let ctx = setup(
        &env,
        "FROM BASE AS one\nRUN echo one > /one\nFROM BASE AS two\nRUN echo two > /two\n",
    );
    let out = env.path("out");
    let dest = format!("oci:{}:t", out.display());
    env.ok(&["build", "-q", "--target", "one", "-o", &dest, s(&ctx)]);
    env.ok(&["build", "-q", "--target", "two", "-o", &dest, s(&ctx)]);
    let build = |filter: &str, target: &str| {
        let o = env.output(&[
            "build",
            "--no-cache-filter",
            filter,
            "--target",
            target,
            "-o",
            &dest,
            s(&ctx),
        ]);
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let log = build("one", "one");
    assert!(!log.contains(": cached"), "{log}");
    let log = build("one", "two");
    assert!(log.contains(": cached"), "{log}");
}

fn sha256_of_file(p: &Path) -> String {
    common::sha256_hex(&std::fs::read(p).expect("read"))
}

#[test]
fn b5_the_strata_binary_survives_writes_to_proc_self_exe() {
    let env = Env::new();
    let ctx = setup(
        &env,
        "FROM BASE\nRUN echo x > /proc/self/exe; echo x > /proc/1/exe; true\n",
    );
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let before = sha256_of_file(&binary);
    env.ok(&["build", "-q", s(&ctx)]);
    assert_eq!(sha256_of_file(&binary), before);
}

#[test]
fn ctrl_c_stops_the_step_and_leaves_nothing_behind() {
    let env = Env::new();
    let marker = format!("1000.{}7", std::process::id());
    let ctx = setup(
        &env,
        &format!(
            "FROM BASE\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t echo started; sleep {marker}\n"
        ),
    );
    let out = env.path("out");
    let mut child = env
        .strata()
        .args(["build", "-o", &format!("oci:{}:t", out.display()), s(&ctx)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn strata");
    // Wait for the step to run (polling for its process, no timing assertion).
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "strata exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(processes_with(&marker), Vec::<String>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = env.dir.path().display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&root)),
        "a mount under {root} is left"
    );
    for tmp in [".strata/build-cache/tmp", ".strata/rootfs-layers/root/tmp"] {
        let left: Vec<_> = std::fs::read_dir(out.join(tmp))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{tmp}: {left:?}");
    }
    // Nothing was tagged.
    assert!(common::layout_tags(&out).is_empty());
}

#[test]
fn network_none_isolates_steps_that_do_not_name_a_network() {
    let env = Env::new();
    // The first step counts its interfaces (only `lo` under --network none); the second asks
    // for the host's network explicitly, which wins over the build-wide default.
    let ctx = setup(
        &env,
        "FROM BASE\nRUN ls /sys/class/net > /isolated\nRUN --network=host ls /sys/class/net > /host\n",
    );
    let out = env.path("out");
    env.ok(&[
        "build",
        "-q",
        "--network",
        "none",
        "--platform",
        "linux/amd64",
        "-o",
        &format!("oci:{}:n", out.display()),
        s(&ctx),
    ]);
    let bundle = env.path("bundle");
    env.ok(&[
        "unpack",
        "-q",
        &format!("oci:{}:n", out.display()),
        s(&bundle),
    ]);
    let isolated = std::fs::read_to_string(bundle.join("rootfs/isolated")).expect("isolated");
    assert_eq!(isolated, "lo\n");
    let host = std::fs::read_to_string(bundle.join("rootfs/host")).expect("host");
    let host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for i in &host_ifaces {
        assert!(host.lines().any(|l| l == i), "{i} missing from {host:?}");
    }
    // The network is part of the step's key: the same build without --network none runs the
    // first step again and sees the host's interfaces.
    env.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64",
        "-o",
        &format!("oci:{}:h", out.display()),
        s(&ctx),
    ]);
    let bundle2 = env.path("bundle2");
    env.ok(&[
        "unpack",
        "-q",
        &format!("oci:{}:h", out.display()),
        s(&bundle2),
    ]);
    let again = std::fs::read_to_string(bundle2.join("rootfs/isolated")).expect("isolated");
    assert_eq!(again.lines().count(), host_ifaces.len(), "{again}");
}
