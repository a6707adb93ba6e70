//! The end of an image's life and what failed copies leave: `strata rm` / `delete` on the
//! local store, OCI layouts and the real distribution registry, `strata gc` (blobs, temp
//! files, staging directories of killed archive writers), interrupted and failed copies, and
//! the hand-over of a strata-built image to podman.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Env, fixture_layout, layout_digest, layout_tags, run};
use strata_testkit::{Fault, FaultProxy, Rule, TestImage, TestRegistry, busybox_image};

/// How long a test waits for a copy to reach the state it interrupts it in.
const REACH_TIMEOUT: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The digests (`sha256:…`) of the files under `layout/blobs/sha256`.
fn blob_files(layout: &Path) -> BTreeSet<String> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every digest an image fixture consists of (manifest, config, layers).
fn image_digests(image: &TestImage) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = image.blobs().map(|(d, _)| d.digest.to_string()).collect();
    all.insert(image.digest().to_string());
    all
}

/// Files in a layout's temp directory (in-flight or left-over blob writes).
fn temp_files(layout: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(layout.join(".strata/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Hidden staging directories of archive writers beside `target`.
fn staging_dirs(target: &Path) -> Vec<PathBuf> {
    let name = target.file_name().unwrap().to_string_lossy().to_string();
    std::fs::read_dir(target.parent().unwrap())
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!(".{name}.strata-"))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until `reached` holds (panics after [`REACH_TIMEOUT`] or when `child` exits first).
fn wait_until(child: &mut Child, what: &str, mut reached: impl FnMut() -> bool) {
    let deadline = Instant::now() + REACH_TIMEOUT;
    while !reached() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("strata exited ({status}) before {what}:\n{err}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    run("kill", &["-s", name, &child.id().to_string()]);
}

/// `child`'s exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let status = child.wait().expect("wait strata");
    let mut err = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

/// A registry holding a random image of two 6 MiB layers and one small one at `app:v1`, and
/// a proxy in front of it; returns them and the image.
fn registry_with_big_image(
    env: &Env,
    rt: &tokio::runtime::Runtime,
) -> (TestRegistry, FaultProxy, TestImage) {
    let registry = TestRegistry::start();
    let proxy = rt.block_on(FaultProxy::start(&registry.host()));
    let image = strata_testkit::random_image(7, &[6 << 20, 6 << 20, 64 << 10]);
    let src = env.path("big");
    image.write_oci_layout(&src, "v1").expect("fixture");
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/app:v1", registry.host()),
    ]);
    (registry, proxy, image)
}

/// Blob GETs through the proxy crawl (64 KiB every 25 ms): a 6 MiB layer takes seconds.
fn slow_blobs(proxy: &FaultProxy) {
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/sha256:",
            Fault::SlowBody {
                chunk: 64 << 10,
                delay: Duration::from_millis(25),
            },
        )
        .always(),
    );
}

/// `strata copy -q --tls-verify=false FROM TO` in the background, stderr captured.
fn spawn_copy(env: &Env, from: &str, to: &str) -> Child {
    env.strata()
        .args(["copy", "-q", "--tls-verify=false", from, to])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn strata")
}

/// Is a copy to `archive` writing blobs into its staging directory?
fn staging_busy(archive: &Path) -> bool {
    staging_dirs(archive)
        .iter()
        .any(|d| !temp_files(&d.join("layout")).is_empty())
}

#[test]
fn rm_then_gc_frees_exactly_the_unreferenced_blobs_of_store_and_layout() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let other = strata_testkit::random_image(3, &[1000, 2000]);
    let other_src = env.path("other");
    other.write_oci_layout(&other_src, "o").expect("fixture");
    let store = PathBuf::from(env.ok(&["ls", "--store-path"]).trim());
    assert_eq!(
        store,
        env.path("data/strata"),
        "the store is $XDG_DATA_HOME/strata"
    );

    // The local store: a busybox index and another image, then the index is removed.
    env.ok(&[
        "copy",
        "-q",
        "--all",
        &format!("oci:{}:multi", src.display()),
        "localhost/multi:1",
    ]);
    env.ok(&[
        "copy",
        "-q",
        &format!("oci:{}:o", other_src.display()),
        "localhost/other:1",
    ]);
    let before = blob_files(&store);
    let kept = image_digests(&other);
    assert!(kept.is_subset(&before));
    let out = env.ok(&["rm", "localhost/multi:1"]);
    assert_eq!(out.trim(), "untagged localhost/multi:1");
    assert_eq!(layout_tags(&store), vec!["localhost/other:1"]);
    assert_eq!(blob_files(&store), before, "rm alone frees nothing");
    let report = env.json(&["gc", "--format", "json"]);
    assert_eq!(report["blobs_removed"], (before.len() - kept.len()) as u64);
    assert_eq!(
        blob_files(&store),
        kept,
        "exactly the other image's blobs are left"
    );
    env.ok(&["inspect", "localhost/other:1"]);
    let err = env.fails(&["inspect", "localhost/multi:1"]);
    assert!(err.contains("localhost/multi:1"), "{err}");

    // Not there: an error naming the store, unless --ignore.
    let err = env.fails(&["rm", "localhost/multi:1"]);
    assert!(
        err.contains("no such image in the local store")
            && err.contains(&store.display().to_string()),
        "{err}"
    );
    env.ok(&["rm", "--ignore", "localhost/multi:1"]);
    // NAME@DIGEST: every tag of that repository on the digest, nothing else.
    env.ok(&["copy", "-q", "localhost/other:1", "localhost/other:2"]);
    env.ok(&["copy", "-q", "localhost/other:1", "localhost/keep:1"]);
    let out = env.ok(&["rm", &format!("localhost/other@{}", other.digest())]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["untagged localhost/other:1", "untagged localhost/other:2"]
    );
    assert_eq!(layout_tags(&store), vec!["localhost/keep:1"]);

    // An OCI layout with two tags sharing everything, and a third image.
    let layout = env.path("layout");
    for tag in ["a", "b"] {
        env.ok(&[
            "copy",
            "-q",
            &format!("oci:{}:o", other_src.display()),
            &format!("oci:{}:{tag}", layout.display()),
        ]);
    }
    let third = strata_testkit::random_image(4, &[3000]);
    let third_src = env.path("third");
    third.write_oci_layout(&third_src, "t").expect("fixture");
    env.ok(&[
        "copy",
        "-q",
        &format!("oci:{}:t", third_src.display()),
        &format!("oci:{}:c", layout.display()),
    ]);
    let all = blob_files(&layout);
    // `delete` is the same command; a tag still pointing at the blobs keeps them.
    env.ok(&["delete", &format!("oci:{}:a", layout.display())]);
    assert_eq!(
        env.json(&["gc", "--format", "json", layout.to_str().unwrap()])["blobs_removed"],
        0
    );
    assert_eq!(blob_files(&layout), all);
    env.ok(&["rmi", &format!("oci:{}:c", layout.display())]);
    let report = env.json(&["gc", "--format", "json", layout.to_str().unwrap()]);
    assert_eq!(report["blobs_removed"], image_digests(&third).len() as u64);
    assert_eq!(blob_files(&layout), kept);
    assert_eq!(layout_tags(&layout), vec!["b"]);
    // Other tools agree: b is whole, a is gone.
    strata_testkit::schema::assert_layout_valid(&layout);
    run(
        "skopeo",
        &["inspect", &format!("oci:{}:b", layout.display())],
    );
    let gone = Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:a", layout.display())])
        .output()
        .expect("skopeo");
    assert!(!gone.status.success());

    // A layout without a tag needs --all; --all empties it.
    let err = env.fails(&["rm", &format!("oci:{}", layout.display())]);
    assert!(err.contains("--all"), "{err}");
    let out = env.ok(&["rm", "--all", &format!("oci:{}", layout.display())]);
    assert_eq!(out.trim(), format!("untagged oci:{}:b", layout.display()));
    env.ok(&["gc", layout.to_str().unwrap()]);
    assert!(blob_files(&layout).is_empty());
}

/// A raw `HEAD /v2/REPO/manifests/REF` on `host`; returns the status code.
fn head_manifest(host: &str, repository: &str, reference: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(
        s,
        "HEAD /v2/{repository}/manifests/{reference} HTTP/1.0\r\nHost: {host}\r\n\
         Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn delete_removes_the_manifest_and_every_tag_on_it_from_the_registry() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let image = busybox_image("amd64");
    let src = env.path("src");
    image.write_oci_layout(&src, "bb").expect("fixture");
    for tag in ["v1", "v2"] {
        env.ok(&[
            "copy",
            "-q",
            "--tls-verify=false",
            &format!("oci:{}:bb", src.display()),
            &format!("docker://{}/app:{tag}", registry.host()),
        ]);
    }
    let digest = layout_digest(&src, "bb");
    assert_eq!(head_manifest(&registry.host(), "app", &digest), 200);

    let out = env.ok(&[
        "rm",
        "--tls-verify=false",
        &format!("docker://{}/app:v1", registry.host()),
    ]);
    assert_eq!(
        out.trim(),
        format!("deleted docker://{}/app@{digest}", registry.host())
    );
    assert_eq!(head_manifest(&registry.host(), "app", &digest), 404);
    assert_eq!(
        head_manifest(&registry.host(), "app", "v2"),
        404,
        "v2 pointed at it too"
    );
    for tag in ["v1", "v2"] {
        let inspect = Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{}/app:{tag}", registry.host()),
            ])
            .output()
            .expect("skopeo");
        assert!(!inspect.status.success(), "skopeo still finds app:{tag}");
    }
    // Again: not found names the registry; --ignore accepts it.
    let err = env.fails(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/app@{digest}", registry.host()),
    ]);
    assert!(
        err.contains("no such image on") && err.contains(&registry.host()),
        "{err}"
    );
    env.ok(&[
        "delete",
        "-i",
        "--tls-verify=false",
        &format!("docker://{}/app:v1", registry.host()),
    ]);
}

#[test]
fn delete_on_a_registry_without_deletion_names_the_registry_and_the_setting() {
    let env = Env::new();
    let registry = TestRegistry::start_with_delete_disabled();
    let src = env.path("src");
    busybox_image("amd64")
        .write_oci_layout(&src, "bb")
        .expect("fixture");
    let name = format!("docker://{}/app:v1", registry.host());
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        &format!("oci:{}:bb", src.display()),
        &name,
    ]);
    let err = env.fails(&["rm", "--tls-verify=false", &name]);
    assert!(err.contains(&registry.host()), "{err}");
    assert!(
        err.contains("405") && err.contains("storage.delete.enabled"),
        "{err}"
    );
    assert!(err.contains(&format!("removing {name}")), "{err}");
    run("skopeo", &["inspect", "--tls-verify=false", &name]);
}

#[test]
fn interrupted_copy_removes_its_temp_files_and_staging() {
    let env = Env::new();
    let rt = runtime();
    let (_registry, proxy, image) = registry_with_big_image(&env, &rt);
    slow_blobs(&proxy);
    let from = format!("docker://{}/app:v1", proxy.host());

    // Into a layout: SIGINT while blobs are being written.
    let layout = env.path("dest");
    let mut child = spawn_copy(&env, &from, &format!("oci:{}:v1", layout.display()));
    wait_until(&mut child, "blob temp files exist", || {
        temp_files(&layout).len() >= 2
    });
    signal(&child, "INT");
    let (code, err) = finish(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        temp_files(&layout),
        Vec::<PathBuf>::new(),
        "no temp file left"
    );
    assert!(layout_tags(&layout).is_empty(), "nothing tagged");

    // Into an oci-archive: SIGTERM; neither archive nor staging remains.
    let archive = env.path("out/app.tar");
    let mut child = spawn_copy(&env, &from, &format!("oci-archive:{}", archive.display()));
    wait_until(&mut child, "staged blob writes", || staging_busy(&archive));
    signal(&child, "TERM");
    let (code, err) = finish(child);
    assert_eq!(code, Some(130), "{err}");
    assert_eq!(staging_dirs(&archive), Vec::<PathBuf>::new());
    assert!(!archive.exists());

    // The copy works afterwards.
    proxy.clear_rules();
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        &from,
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert_eq!(layout_digest(&layout, "v1"), image.digest().to_string());
}

#[test]
fn failed_copy_removes_the_other_blobs_temp_files() {
    let env = Env::new();
    let rt = runtime();
    let (_registry, proxy, image) = registry_with_big_image(&env, &rt);
    let small = image
        .layers()
        .into_iter()
        .min_by_key(|l| l.size)
        .expect("layers")
        .digest
        .clone();
    // The small layer arrives corrupt while the big ones are still crawling in.
    proxy.add(Rule::new("GET", &format!("/blobs/{small}"), Fault::CorruptBody).always());
    slow_blobs(&proxy);
    let layout = env.path("dest");
    let err = env.fails(&[
        "copy",
        "--tls-verify=false",
        &format!("docker://{}/app:v1", proxy.host()),
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert!(
        err.contains(&small.to_string()),
        "names the corrupt blob: {err}"
    );
    assert!(!err.contains("nothing was written"), "{err}");
    assert_eq!(
        temp_files(&layout),
        Vec::<PathBuf>::new(),
        "no temp file of any blob left"
    );
    assert!(layout_tags(&layout).is_empty());
    let requests = proxy.matching("GET", "/blobs/sha256:");
    assert!(
        requests.len() >= 3,
        "every blob was in flight: {requests:?}"
    );
}

#[test]
fn killed_archive_copy_leaves_staging_that_gc_or_the_next_copy_removes() {
    let env = Env::new();
    let rt = runtime();
    let (_registry, proxy, image) = registry_with_big_image(&env, &rt);
    slow_blobs(&proxy);
    let from = format!("docker://{}/app:v1", proxy.host());
    let archive = env.path("out/app.tar");
    let to = format!("oci-archive:{}", archive.display());
    let kill_mid_copy = || {
        let mut child = spawn_copy(&env, &from, &to);
        wait_until(&mut child, "staged blob writes", || staging_busy(&archive));
        signal(&child, "KILL");
        finish(child);
        let left = staging_dirs(&archive);
        assert_eq!(
            left.len(),
            1,
            "SIGKILL leaves the staging directory: {left:?}"
        );
        left
    };

    // gc of the store finds it through the note the copy left there.
    let left = kill_mid_copy();
    let report = env.json(&["gc", "--format", "json"]);
    assert_eq!(report["staging_dirs_removed"], 1, "{report}");
    assert!(!left[0].exists());
    assert_eq!(
        env.json(&["gc", "--format", "json"])["staging_dirs_removed"],
        0
    );

    // The next copy to the same archive removes it too, and succeeds.
    let left = kill_mid_copy();
    proxy.clear_rules();
    env.ok(&["copy", "-q", "--tls-verify=false", &from, &to]);
    assert!(!left[0].exists());
    assert_eq!(staging_dirs(&archive), Vec::<PathBuf>::new());
    let raw = common::skopeo_raw(&to);
    assert_eq!(common::sha256_hex(&raw), image.digest().to_string());
}

/// A directory removed on drop, at a path podman 4.3 accepts in `oci:PATH` (it names the
/// image `localhost/PATH`, so PATH must be a valid repository name: lowercase, no component
/// starting with `.`, unlike test temp dirs and `~/.local/share/strata`).
struct PlainDir(PathBuf);

impl PlainDir {
    fn new(what: &str) -> PlainDir {
        let dir = PathBuf::from(format!("/tmp/strata-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        PlainDir(dir)
    }
}

impl Drop for PlainDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `podman run --rm IMAGE` with podman's storage in `root` (nothing outside it is touched);
/// returns stdout.
fn podman_run(env: &Env, root: &Path, image: &str) -> String {
    let out = Command::new("podman")
        .env("HOME", env.path("home"))
        .env("XDG_RUNTIME_DIR", env.path("runtime"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .args(["--root", root.join("root").to_str().unwrap()])
        .args(["--runroot", root.join("run").to_str().unwrap()])
        .args(["--tmpdir", root.join("tmp").to_str().unwrap()])
        .args(["--storage-driver", "vfs", "--events-backend", "none"])
        .args([
            "--cgroup-manager",
            "cgroupfs",
            "run",
            "--rm",
            "--network",
            "none",
            image,
        ])
        .output()
        .expect("podman (scripts/install-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "podman run {image} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The hand-over to podman without an archive: build into an OCI layout (or copy a store
/// image into one) and `podman run oci:DIR:TAG`.
#[test]
fn podman_runs_what_strata_built_from_an_oci_layout() {
    let env = Env::new();
    let base = env.path("base");
    busybox_image(match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    })
    .write_oci_layout(&base, "bb")
    .expect("fixture");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            "FROM oci:{}:bb\nCMD [\"echo\", \"built by strata\"]\n",
            base.display()
        ),
    )
    .expect("Containerfile");
    let images = PlainDir::new("handover");
    let podman = PlainDir::new("podman");

    // Straight from the build.
    let layout = images.0.join("hello");
    let built = format!("oci:{}:1", layout.display());
    env.ok(&["build", "-q", "-o", &built, ctx.to_str().unwrap()]);
    let out = podman_run(&env, &podman.0, &built);
    assert!(out.lines().any(|l| l == "built by strata"), "{out}");

    // From the local store, through one `strata copy` into a layout.
    env.ok(&[
        "build",
        "-q",
        "-t",
        "localhost/hello:2",
        ctx.to_str().unwrap(),
    ]);
    let copied = format!("oci:{}:2", images.0.join("from-store").display());
    env.ok(&["copy", "-q", "localhost/hello:2", &copied]);
    let out = podman_run(&env, &podman.0, &copied);
    assert!(out.lines().any(|l| l == "built by strata"), "{out}");
}
