//! `strata build` on hostile Containerfiles and contexts (RELIABILITY.md): values that grow
//! without bound, very long files, relative contexts with bind mounts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Env, run};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `strata ARGS…` that must end within `limit` (a hang detector for quadratic or
/// unbounded work, not a timing assertion: the limit is far above the expected time).
fn strata_within(env: &Env, args: &[&str], limit: Duration) -> std::process::Output {
    let child = env
        .strata()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let pid = rustix::process::Pid::from_child(&child);
    // Collected on another thread: a full pipe must not stall the child.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("strata {args:?} did not finish within {limit:?}");
        }
    }
}

fn write_containerfile(env: &Env, text: &str) -> std::path::PathBuf {
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Containerfile"), text).expect("write");
    ctx
}

/// Build `containerfile` into a layout; it must fail (exit 1) within `limit`. Its stderr.
fn build_fails_within(env: &Env, containerfile: &str, limit: Duration) -> String {
    let ctx = write_containerfile(env, containerfile);
    let out = format!("oci:{}", s(&env.path("out")));
    let output = strata_within(env, &["build", "-o", &out, s(&ctx)], limit);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{err}");
    err
}

/// `ENV A=${A}${A}` on every line: a 429-byte file once made a 400 MB config and aborted
/// on allocation; the expansion that passes the cap is an error naming its line.
#[test]
fn a_value_doubling_itself_fails_at_the_line_that_passes_the_cap() {
    let env = Env::new();
    let mut text = String::from("FROM scratch\nENV A=x\n");
    while text.len() < 429 - "ENV A=${A}${A}\n".len() {
        text.push_str("ENV A=${A}${A}\n");
    }
    assert!(text.len() <= 429);
    let err = build_fails_within(&env, &text, Duration::from_secs(120));
    // 2^20 bytes after 20 doublings: the 21st (line 23) passes the 1 MiB cap.
    assert!(err.contains("Containerfile:23:"), "{err}");
    assert!(err.contains("expands to more than 1048576 bytes"), "{err}");
    assert!(err.contains("${A}${A}"), "{err}");
}

/// Values under the word cap that together pass the 4 MiB config limit: an error naming
/// the line, before anything is written.
#[test]
fn values_that_together_pass_the_config_limit_fail_at_their_line() {
    let env = Env::new();
    let mut text = String::from("FROM scratch\nENV A=x\n");
    for _ in 0..19 {
        text.push_str("ENV A=${A}${A}\n");
    }
    // A is 512 KiB: eight copies (and a ninth) pass 4 MiB.
    for i in 0..9 {
        text.push_str(&format!("LABEL copy{i}=${{A}}\n"));
    }
    let err = build_fails_within(&env, &text, Duration::from_secs(120));
    assert!(err.contains("Containerfile:28:"), "{err}");
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
}

/// 100,000 LABEL lines took quadratic time (the whole config serialized at every step).
/// Now the build ends quickly, at the line where the config passes the 4 MiB limit.
#[test]
fn a_hundred_thousand_label_lines_end_quickly_at_the_config_limit() {
    let env = Env::new();
    let mut text = String::from("FROM scratch\n");
    for i in 0..100_000 {
        text.push_str(&format!("LABEL key{i}=value{i}\n"));
    }
    let err = build_fails_within(&env, &text, Duration::from_secs(300));
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
    let line: usize = err
        .split("Containerfile:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line in {err}"));
    assert!((30_000..60_000).contains(&line), "{err}");
}

/// Many ENV and LABEL lines (keys set again and again) give exactly the config a short
/// file with the final values gives: env in first-set order, last value wins.
#[test]
fn many_env_and_label_lines_give_the_final_values_in_order() {
    let env = Env::new();
    let mut text = String::from("FROM scratch\n");
    for i in 0..6_000 {
        text.push_str(&format!("ENV E{}=v{i}\nLABEL l{}=v{i}\n", i % 500, i % 700));
    }
    text.push_str("ENV PATH=/opt:$PATH E7=$E7-last\n");
    let ctx = write_containerfile(&env, &text);
    let layout = env.path("out");
    env.ok(&[
        "build",
        "-q",
        "-t",
        "many",
        "-o",
        &format!("oci:{}", s(&layout)),
        s(&ctx),
    ]);
    let config: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &["inspect", "--config", &format!("oci:{}:many", s(&layout))],
    ))
    .expect("config json");
    let got: Vec<&str> = config["config"]["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    let mut want =
        vec!["PATH=/opt:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    for k in 0..500 {
        let last = (0..6_000).rev().find(|i| i % 500 == k).expect("set");
        if k == 7 {
            want.push(format!("E7=v{last}-last"));
        } else {
            want.push(format!("E{k}=v{last}"));
        }
    }
    assert_eq!(got, want);
    let labels = config["config"]["Labels"].as_object().expect("Labels");
    assert_eq!(labels.len(), 700);
    assert_eq!(labels["l3"], "v5603");
    // One entry per step, and one for the empty layer an image of metadata only gets.
    assert_eq!(config["history"].as_array().expect("history").len(), 12_002);
}

/// `RUN --mount=type=bind,source=.` with a relative context (the default `strata build .`,
/// and `sub/ctx`): the bind source is found whatever the sandbox's working directory.
#[test]
fn bind_mounts_of_a_relative_context_work() {
    let env = Env::new();
    let base = env.path("base");
    strata_testkit::busybox_image("amd64")
        .write_oci_layout(&base, "t")
        .expect("layout");
    let ctx = env.path("work/ctx");
    std::fs::create_dir_all(ctx.join("dir")).expect("mkdir");
    std::fs::write(ctx.join("dir/file"), "from the context\n").expect("write");
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            "FROM oci:{}:t\n\
             RUN --mount=type=bind,source=.,target=/ctx cat /ctx/dir/file > /whole\n\
             RUN --mount=type=bind,source=dir,target=/d cat /d/file > /sub\n",
            base.display()
        ),
    )
    .expect("write");
    let layout = env.path("out");
    for (cwd, context) in [(ctx.clone(), "."), (env.path("work"), "ctx")] {
        let out = env
            .strata()
            .current_dir(&cwd)
            .args(["build", "-q", "--no-cache", "-t", "bind", "-o"])
            .arg(format!("oci:{}", layout.display()))
            .arg(context)
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "strata build {context} in {}: {}",
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bundle = env.path(&format!("bundle-{}", context.replace('.', "dot")));
        env.ok(&[
            "unpack",
            "-q",
            &format!("oci:{}:bind", layout.display()),
            s(&bundle),
        ]);
        for name in ["whole", "sub"] {
            assert_eq!(
                std::fs::read_to_string(bundle.join("rootfs").join(name)).expect("read"),
                "from the context\n"
            );
        }
    }
}

/// A raw tar layer of (path, kind, data or link target, mode).
fn tar_layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mtime(1_700_000_000);
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, data).expect("link entry");
            }
            _ => {
                h.set_mode(if *kind == tar::EntryType::Directory {
                    0o755
                } else {
                    0o644
                });
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).expect("entry");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// The two layer rules of docs/architecture.md (Decisions), as containerd and umoci apply
/// them, the same in `strata unpack` and in RUN steps of `strata build`:
/// - a hard link to a file of a lower layer links to that file;
/// - whiteouts and opaque markers under a symlinked directory act on the directory the
///   symlink resolves to inside the root (the symlink stays).
#[test]
fn lower_layer_hard_links_and_whiteouts_under_symlinks_agree_in_build_and_unpack() {
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as L};
    let env = Env::new();
    let layers = [
        strata_testkit::busybox::busybox_rootfs_tar("amd64"),
        tar_layer(&[
            ("real", D, ""),
            ("real/victim", F, "v"),
            ("real/keep", F, "k"),
            ("link", L, "real"),
            ("lower-file", F, "lower bytes"),
        ]),
        tar_layer(&[("link/.wh.victim", F, ""), ("hl", H, "lower-file")]),
        tar_layer(&[("link/.wh..wh..opq", F, ""), ("link/new", F, "n")]),
    ];
    let image = strata_testkit::image_from_layers(
        &layers,
        serde_json::json!({"Env": ["PATH=/bin:/usr/bin"]}),
    );
    let base = env.path("base");
    image.write_oci_layout(&base, "t").expect("layout");

    // unpack: the opaque marker empties what `link` resolves to; the link is kept.
    let unpacked = env.path("unpacked");
    env.ok(&[
        "unpack",
        "-q",
        &format!("oci:{}:t", base.display()),
        s(&unpacked),
    ]);
    let rootfs = unpacked.join("rootfs");
    let mut real: Vec<String> = std::fs::read_dir(rootfs.join("real"))
        .expect("real")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    real.sort();
    assert_eq!(real, ["new"]);
    assert!(
        std::fs::symlink_metadata(rootfs.join("link"))
            .expect("link")
            .is_symlink()
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("hl")).expect("hl").ino(),
        std::fs::metadata(rootfs.join("lower-file"))
            .expect("lower-file")
            .ino()
    );

    // build: a RUN step sees the same tree.
    let ctx = write_containerfile(
        &env,
        &format!(
            "FROM oci:{}:t\n\
             RUN ls -A /real > /seen && test -L /link && echo link-kept >> /seen && cat /hl >> /seen\n",
            base.display()
        ),
    );
    let layout = env.path("out");
    let out = env.output(&[
        "build",
        "-t",
        "seen",
        "-o",
        &format!("oci:{}", s(&layout)),
        s(&ctx),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let bundle = env.path("built");
    env.ok(&[
        "unpack",
        "-q",
        &format!("oci:{}:seen", s(&layout)),
        s(&bundle),
    ]);
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/seen")).expect("seen"),
        "new\nlink-kept\nlower bytes"
    );
}

/// A base layer that inflates past `--max-uncompressed` (a small decompression bomb) stops
/// the RUN step that needs it extracted, naming the layer and the flag; a higher cap builds.
#[test]
fn a_base_layer_past_max_uncompressed_stops_the_build() {
    let env = Env::new();
    let zeros = "\0".repeat(8 << 20);
    let layers = [
        strata_testkit::busybox::busybox_rootfs_tar("amd64"),
        tar_layer(&[("zeros", tar::EntryType::Regular, zeros.as_str())]),
    ];
    let image = strata_testkit::image_from_layers(
        &layers,
        serde_json::json!({"Env": ["PATH=/bin:/usr/bin"]}),
    );
    let bomb_layer = image.layers()[1].digest.to_string();
    let base = env.path("base");
    image.write_oci_layout(&base, "t").expect("layout");
    let ctx = write_containerfile(
        &env,
        &format!(
            "FROM oci:{}:t\nRUN wc -c < /zeros > /size\n",
            base.display()
        ),
    );
    let out = format!("oci:{}", s(&env.path("out")));
    let err = env.fails(&["build", "--max-uncompressed", "4M", "-o", &out, s(&ctx)]);
    assert!(err.contains(&bomb_layer), "{err}");
    assert!(
        err.contains("uncompressed content exceeds 4194304 bytes (--max-uncompressed)"),
        "{err}"
    );
    env.ok(&[
        "build",
        "-q",
        "--max-uncompressed",
        "16M",
        "-t",
        "ok",
        "-o",
        &out,
        s(&ctx),
    ]);
}
