//! Unpack, repack and runtime-config tests against real OCI layouts written to disk.
//! Run as root (CI does): ownership, setuid bits and devices are checked for real.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_image::repack::{RepackOptions, Repacked, write_layer};
use strata_image::runtime::{RuntimeMode, RuntimeOptions};
use strata_image::{
    ExistingBundle, ImageError, ImageSource, Ownership, UnpackOptions, read_bundle_meta, unpack,
};
use strata_store::{LayoutSink, LayoutSource};
use strata_testkit::{TestImage, image_from_layers};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Tar entries for test layers.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Owned(&'a str, &'a [u8], u32, u64, u64),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Xattr(&'a str, &'a [u8], &'a str, &'a [u8]),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Owned(p, data, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Xattr(p, data, name, value) => {
                let key = format!("SCHILY.xattr.{name}");
                b.append_pax_extensions([(key.as_str(), *value)]).unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o755);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn layout(&self, image: &TestImage, tag: &str) -> PathBuf {
        let p = self.path("layout");
        image.write_oci_layout(&p, tag).unwrap();
        p
    }
    /// [`base_image`] written as `layout` (tag `v1`) and unpacked into `bundle`: both paths.
    async fn unpack_base(&self, options: &UnpackOptions) -> (PathBuf, PathBuf) {
        let layout = self.layout(&base_image(), "v1");
        let bundle = self.path("bundle");
        unpack_layout(&layout, "v1", &bundle, options)
            .await
            .unwrap();
        (layout, bundle)
    }
}

async fn unpack_layout(
    layout: &Path,
    tag: &str,
    bundle: &Path,
    options: &UnpackOptions,
) -> Result<strata_image::UnpackReport, ImageError> {
    let source = LayoutSource::open(layout, Some(tag)).unwrap();
    let top = source.manifest(None).await.unwrap();
    unpack(&source, &top, bundle, options).await
}

/// `write_layer` on a blocking thread, as the CLI runs it.
async fn repack(bundle: &Path, options: RepackOptions) -> Result<Repacked, ImageError> {
    let bundle = bundle.to_path_buf();
    tokio::task::spawn_blocking(move || write_layer(&bundle, &options))
        .await
        .unwrap()
}

/// Replace the image's config with `config` (and the manifest's config descriptor to match).
fn replace_config(image: &mut TestImage, config: &serde_json::Value) {
    let bytes = serde_json::to_vec(config).unwrap();
    let descriptor = strata_spec::Descriptor::of_bytes(strata_spec::MediaType::OCI_CONFIG, &bytes);
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"] = serde_json::to_value(&descriptor).unwrap();
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    image.blob_list[0] = (descriptor, bytes);
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        source_name: "test".into(),
        ..UnpackOptions::default()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Everything about a tree that an image carries: type, mode, owner, size, link target,
/// content hash, xattrs (the rootless record excluded). Directory mtimes excluded.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let detail = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file {} {} mtime {}",
                    data.len(),
                    strata_spec::Digest::sha256_of(&data),
                    m.mtime()
                )
            } else {
                format!("special {:o} rdev {}", m.mode() & 0o170000, m.rdev())
            };
            let mut names = vec![0u8; 4096];
            let mut xattrs = Vec::new();
            if let Ok(n) = rustix::fs::llistxattr(&p, &mut names[..]) {
                for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    let name = String::from_utf8_lossy(name).to_string();
                    if name != "user.rootlesscontainers" {
                        xattrs.push(format!("{name}={:?}", get_xattr(&p, &name)));
                    }
                }
            }
            out.insert(
                rel,
                format!(
                    "{detail} mode {:o} {}:{} nlink {} {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    if ft.is_dir() { 0 } else { m.nlink() },
                    xattrs.join(",")
                ),
            );
        }
    }
    out
}

fn base_image() -> TestImage {
    let l1 = tar_of(&[
        E::Dir("etc/", 0o755),
        E::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        ),
        E::File(
            "etc/group",
            b"root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
            0o644,
        ),
        E::Dir("a/", 0o755),
        E::File("a/x", b"x", 0o644),
        E::File("a/y", b"y", 0o644),
        E::Dir("b/", 0o755),
        E::File("b/old", b"old", 0o644),
        E::Dir("c/", 0o755),
        E::File("c/keep", b"keep", 0o600),
        E::Owned("c/owned", b"owned", 0o640, 1000, 1000),
        E::File("c/hard1", b"hard", 0o644),
        E::Hard("c/hard2", "c/hard1"),
        E::Link("c/sym", "../etc/passwd"),
    ]);
    let l2 = tar_of(&[
        E::Dir("a/", 0o755),
        E::File("a/.wh.x", b"", 0o644),
        E::Dir("b/", 0o755),
        E::File("b/new", b"new", 0o644),
        E::File("b/.wh..wh..opq", b"", 0o644),
        E::File("top", b"top", 0o4755),
    ]);
    image_from_layers(
        &[l1, l2],
        serde_json::json!({
            "Env": ["PATH=/bin", "FOO=bar"],
            "Entrypoint": ["/bin/app"],
            "Cmd": ["--serve"],
            "WorkingDir": "/srv",
            "User": "app",
            "Labels": {"org.example": "yes"},
            "Volumes": {"/data": {}},
            "ExposedPorts": {"80/tcp": {}}
        }),
    )
}

#[tokio::test]
async fn unpack_applies_layers_in_order_with_whiteouts_and_opaque_dirs() {
    let f = Fixture::new();
    let layout = f.layout(&base_image(), "v1");
    let bundle = f.path("bundle");
    let report = unpack_layout(&layout, "v1", &bundle, &opts())
        .await
        .unwrap();
    assert_eq!(report.layers, 2);
    let r = bundle.join("rootfs");
    assert!(!r.join("a/x").exists(), "whiteout applied");
    assert_eq!(read(&r.join("a/y")), "y");
    assert!(!r.join("b/old").exists(), "opaque dir hides lower contents");
    assert_eq!(
        read(&r.join("b/new")),
        "new",
        "the layer's own entry survives"
    );
    assert_eq!(read(&r.join("top")), "top");
    let hard1 = std::fs::metadata(r.join("c/hard1")).unwrap();
    let hard2 = std::fs::metadata(r.join("c/hard2")).unwrap();
    assert_eq!(hard1.ino(), hard2.ino());
    assert_eq!(
        std::fs::read_link(r.join("c/sym")).unwrap(),
        Path::new("../etc/passwd")
    );
    // The marker, state and runtime config are there; no partial marker.
    assert!(bundle.join("strata.json").is_file());
    assert!(bundle.join("strata.state").is_file());
    assert!(!bundle.join("strata.partial").exists());
    assert_eq!(
        std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let meta = read_bundle_meta(&bundle).unwrap();
    assert_eq!(meta.layers.len(), 2);
    assert_eq!(meta.source, "test");
    if is_root() {
        let top = std::fs::metadata(r.join("top")).unwrap();
        assert_eq!(top.mode() & 0o7777, 0o4755, "setuid kept as root");
        let owned = std::fs::metadata(r.join("c/owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    }
}

#[tokio::test]
async fn runtime_config_follows_the_image_config() {
    let f = Fixture::new();
    let (_, bundle) = f.unpack_base(&opts()).await;
    let spec: serde_json::Value = serde_json::from_str(&read(&bundle.join("config.json"))).unwrap();
    // It parses as a runtime spec.
    let _: oci_spec::runtime::Spec = serde_json::from_value(spec.clone()).unwrap();
    let p = &spec["process"];
    assert_eq!(p["args"], serde_json::json!(["/bin/app", "--serve"]));
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["user"]["uid"], 1000);
    assert_eq!(p["user"]["gid"], 1000);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([10]));
    let env: Vec<&str> = p["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"PATH=/bin"),
        "image PATH replaces the default: {env:?}"
    );
    assert!(env.contains(&"FOO=bar"));
    assert!(env.contains(&"HOME=/home/app"));
    assert_eq!(p["terminal"], false);
    assert_eq!(spec["root"]["path"], "rootfs");
    let a = &spec["annotations"];
    assert_eq!(a["org.example"], "yes");
    assert_eq!(a["org.opencontainers.image.architecture"], "amd64");
    assert_eq!(a["org.opencontainers.image.exposedPorts"], "80/tcp");
    let mounts = spec["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["destination"] == "/data" && m["type"] == "tmpfs")
    );
    let ns: Vec<&str> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"network") && !ns.contains(&"user"));
}

#[tokio::test]
async fn rootless_unpack_records_owners_and_maps_the_caller_to_root() {
    let f = Fixture::new();
    let options = UnpackOptions {
        ownership: Ownership::Rootless,
        runtime: RuntimeOptions {
            mode: RuntimeMode::Rootless {
                uid: 4321,
                gid: 4322,
            },
            ..RuntimeOptions::default()
        },
        ..opts()
    };
    let (_, bundle) = f.unpack_base(&options).await;
    let owned = bundle.join("rootfs/c/owned");
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(std::fs::metadata(&owned).unwrap().uid(), me, "no chown");
    // umoci's protobuf: uid=1000 (0x08 0xe8 0x07), gid=1000 (0x10 0xe8 0x07).
    assert_eq!(
        get_xattr(&owned, "user.rootlesscontainers"),
        Some(vec![0x08, 0xe8, 0x07, 0x10, 0xe8, 0x07])
    );
    assert_eq!(
        get_xattr(&bundle.join("rootfs/c/keep"), "user.rootlesscontainers"),
        None
    );
    let spec: serde_json::Value = serde_json::from_str(&read(&bundle.join("config.json"))).unwrap();
    let ns: Vec<&str> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"user") && !ns.contains(&"network"), "{ns:?}");
    assert_eq!(
        spec["linux"]["uidMappings"],
        serde_json::json!([{"hostID": 4321, "containerID": 0, "size": 1}])
    );
    assert_eq!(
        spec["linux"]["gidMappings"],
        serde_json::json!([{"hostID": 4322, "containerID": 0, "size": 1}])
    );
    assert!(spec["process"]["user"].get("additionalGids").is_none());
    assert_eq!(
        read_bundle_meta(&bundle).unwrap().ownership(),
        Ownership::Rootless
    );
}

#[tokio::test]
async fn m7_wrong_diff_id_fails_and_removes_the_bundle() {
    let f = Fixture::new();
    let mut image = base_image();
    // Rewrite the config with a wrong second DiffId (and the manifest to match).
    let (config_desc, config) = image.blob_list[0].clone();
    let mut c: serde_json::Value = serde_json::from_slice(&config).unwrap();
    c["rootfs"]["diff_ids"][1] = format!("sha256:{}", "ab".repeat(32)).into();
    replace_config(&mut image, &c);
    assert_ne!(config_desc.digest, image.blob_list[0].0.digest);
    let layout = f.layout(&image, "bad");
    let bundle = f.path("bundle");
    let err = unpack_layout(&layout, "bad", &bundle, &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::DiffIdMismatch { layer: 1, .. }),
        "{err}"
    );
    assert!(!bundle.exists(), "partial bundle removed");

    // Fewer diff_ids than layers: refused before anything is written.
    c["rootfs"]["diff_ids"] = serde_json::json!([c["rootfs"]["diff_ids"][0]]);
    replace_config(&mut image, &c);
    let layout2 = f.path("layout2");
    image.write_oci_layout(&layout2, "bad").unwrap();
    let err = unpack_layout(&layout2, "bad", &bundle, &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("diff_ids"), "{err}");
    assert!(!bundle.exists());
}

#[tokio::test]
async fn recompressed_blob_with_the_same_diff_id_is_caught() {
    // umoci hardening.bats: the blob at the manifest's digest is replaced by a different
    // compression of the same tar (same DiffId). Here only the gzip header's MTIME field
    // changes, so the size stays the same too: only the digest check can catch it.
    let f = Fixture::new();
    let image = base_image();
    let layout = f.layout(&image, "v1");
    let layer = &image.blob_list[1].0;
    let path = layout.join("blobs/sha256").join(layer.digest.encoded());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let bundle = f.path("bundle");
    let err = unpack_layout(&layout, "v1", &bundle, &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { expected, .. } if expected == &layer.digest),
        "{err}"
    );
    assert!(!bundle.exists());
}

#[tokio::test]
async fn a24_target_policy() {
    let f = Fixture::new();
    let layout = f.layout(&base_image(), "v1");
    // Non-empty: refused, contents untouched; --force replaces.
    let bundle = f.path("full");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("precious"), "x").unwrap();
    let err = unpack_layout(&layout, "v1", &bundle, &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(read(&bundle.join("precious")), "x");
    let force = UnpackOptions {
        existing: ExistingBundle::Replace,
        ..opts()
    };
    unpack_layout(&layout, "v1", &bundle, &force).await.unwrap();
    assert!(!bundle.join("precious").exists());
    assert!(bundle.join("rootfs/top").exists());

    // A symlink: refused and never followed; --force replaces the link, not its target.
    let probe = f.path("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::write(probe.join("sentinel"), "s").unwrap();
    let link = f.path("link");
    std::os::unix::fs::symlink(&probe, &link).unwrap();
    let err = unpack_layout(&layout, "v1", &link, &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    unpack_layout(&layout, "v1", &link, &force).await.unwrap();
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_dir(&probe).unwrap().count(), 1);
    assert_eq!(read(&probe.join("sentinel")), "s");

    // The leftover of a killed unpack (strata.partial, no strata.json) is cleared.
    let left = f.path("left");
    std::fs::create_dir_all(left.join("rootfs/half")).unwrap();
    std::fs::write(left.join("strata.partial"), "").unwrap();
    unpack_layout(&layout, "v1", &left, &opts()).await.unwrap();
    assert!(!left.join("rootfs/half").exists());
    assert!(left.join("strata.json").exists());

    // So is the leftover of an interrupted `repack --refresh-bundle` (strata.partial, the
    // state and meta temp files beside a complete bundle).
    let refreshed = f.path("refreshed");
    unpack_layout(&layout, "v1", &refreshed, &opts())
        .await
        .unwrap();
    for name in ["strata.partial", "strata.state.tmp", "strata.json.tmp"] {
        std::fs::write(refreshed.join(name), "").unwrap();
    }
    unpack_layout(&layout, "v1", &refreshed, &opts())
        .await
        .unwrap();
    for name in ["strata.partial", "strata.state.tmp", "strata.json.tmp"] {
        assert!(!refreshed.join(name).exists(), "{name}");
    }
    assert!(refreshed.join("strata.json").exists());
}

#[tokio::test]
async fn a19_bomb_stops_at_the_cap_and_removes_the_partial_rootfs() {
    let f = Fixture::new();
    let zeros = vec![0u8; 8 << 20];
    let l1 = tar_of(&[E::File("small", b"s", 0o644)]);
    let l2 = tar_of(&[E::File("zeros", &zeros, 0o644)]);
    let layout = f.layout(&image_from_layers(&[l1, l2], serde_json::json!({})), "bomb");
    let bundle = f.path("bundle");
    let capped = UnpackOptions {
        max_uncompressed: strata_image::UncompressedLimit::Bytes(1 << 20),
        ..opts()
    };
    let err = unpack_layout(&layout, "bomb", &bundle, &capped)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert!(!bundle.exists(), "partial rootfs removed");
    // Under the cap it unpacks.
    let ok = UnpackOptions {
        max_uncompressed: strata_image::UncompressedLimit::Bytes(16 << 20),
        ..opts()
    };
    unpack_layout(&layout, "bomb", &bundle, &ok).await.unwrap();
    assert_eq!(
        std::fs::metadata(bundle.join("rootfs/zeros"))
            .unwrap()
            .len(),
        8 << 20
    );
}

#[tokio::test]
async fn cancel_removes_the_partial_bundle_but_keeps_a_given_directory() {
    let f = Fixture::new();
    let layout = f.layout(&base_image(), "v1");
    let bundle = f.path("given");
    std::fs::create_dir(&bundle).unwrap();
    let cancel = Arc::new(AtomicBool::new(true));
    let options = UnpackOptions {
        cancel: Some(cancel),
        ..opts()
    };
    let err = unpack_layout(&layout, "v1", &bundle, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Interrupted), "{err}");
    assert!(bundle.is_dir());
    assert_eq!(std::fs::read_dir(&bundle).unwrap().count(), 0);
}

#[tokio::test]
async fn a10_symlinked_dir_then_whiteouts_through_it_stay_inside() {
    let f = Fixture::new();
    let probe = f.path("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::write(probe.join("victim"), "v").unwrap();
    std::fs::write(probe.join("other"), "o").unwrap();
    let probe_str = probe.display().to_string();
    let l1 = tar_of(&[E::Link("etc", &probe_str)]);
    let l2 = tar_of(&[
        E::File("etc/.wh.victim", b"", 0o644),
        E::File("etc/.wh..wh..opq", b"", 0o644),
    ]);
    let layout = f.layout(&image_from_layers(&[l1, l2], serde_json::json!({})), "a10");
    let bundle = f.path("bundle");
    // Whatever the outcome, the probe is untouched.
    let _ = unpack_layout(&layout, "a10", &bundle, &opts()).await;
    assert_eq!(read(&probe.join("victim")), "v");
    assert_eq!(read(&probe.join("other")), "o");
}

/// Unpack, change the rootfs, repack into the same layout, unpack the result: the trees
/// match.
#[tokio::test]
async fn repack_round_trip_keeps_every_change() {
    let f = Fixture::new();
    let (layout, bundle) = f.unpack_base(&opts()).await;
    let r = bundle.join("rootfs");
    std::fs::write(r.join("added"), "added").unwrap();
    std::fs::write(r.join("a/y"), "modified").unwrap();
    std::fs::set_permissions(r.join("c/keep"), std::fs::Permissions::from_mode(0o4711)).unwrap();
    std::fs::remove_file(r.join("etc/group")).unwrap();
    std::fs::remove_dir_all(r.join("b")).unwrap();
    // Directory replaced by a file, file replaced by a directory.
    std::fs::remove_dir_all(r.join("a")).unwrap();
    std::fs::write(r.join("a"), "now a file").unwrap();
    std::fs::remove_file(r.join("top")).unwrap();
    std::fs::create_dir(r.join("top")).unwrap();
    std::fs::write(r.join("top/inside"), "in").unwrap();
    // Directory removed and made again: opaque.
    std::fs::remove_dir_all(r.join("c")).unwrap();
    std::fs::create_dir(r.join("c")).unwrap();
    std::fs::write(r.join("c/fresh"), "fresh").unwrap();
    std::fs::hard_link(r.join("c/fresh"), r.join("c/fresh-link")).unwrap();
    std::os::unix::fs::symlink("/nowhere", r.join("dangling")).unwrap();
    rustix::fs::setxattr(
        r.join("added").as_path(),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    if is_root() {
        std::os::unix::fs::chown(r.join("added"), Some(2000), Some(3000)).unwrap();
    }

    let repacked = repack(
        &bundle,
        RepackOptions {
            created: Some("2024-01-01T00:00:00Z".into()),
            ..RepackOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(repacked.changes.deleted >= 2, "{:?}", repacked.changes);
    assert_eq!(repacked.changes.opaque, 1, "{:?}", repacked.changes);
    let sink = LayoutSink::create(&layout).unwrap();
    let source = LayoutSource::open(&layout, Some("v1")).unwrap();
    repacked
        .commit(&sink, Some(&source), Some("v2"))
        .await
        .unwrap();

    // The new image is valid (digests, DiffIds, no duplicate paths) and has one more layer.
    let v2 = LayoutSource::open(&layout, Some("v2")).unwrap();
    let report = strata_image::validate(&v2, &strata_image::ValidateOptions::default())
        .await
        .unwrap();
    assert!(report.is_valid(), "{report}");
    let top = v2.manifest(None).await.unwrap();
    let strata_spec::Manifest::Image(m) = top.parse().unwrap() else {
        panic!("not an image")
    };
    assert_eq!(m.layers.len(), 3);
    let config = strata_image::read_blob_bytes(&v2, &m.config, 1 << 20)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    assert_eq!(config["history"][1]["created_by"], "strata repack");
    assert_eq!(config["created"], "2024-01-01T00:00:00Z");
    assert_eq!(config["config"]["User"], "app", "runtime config kept");

    let again = f.path("again");
    unpack_layout(&layout, "v2", &again, &opts()).await.unwrap();
    let want = snapshot(&r);
    let got = snapshot(&again.join("rootfs"));
    assert_eq!(want, got);
    assert!(got.contains_key("c/fresh-link"));
    assert!(
        !got.contains_key("c/keep"),
        "opaque dir hid the old contents"
    );
}

#[tokio::test]
async fn repack_without_changes_writes_an_empty_layer_and_refuses_a_partial_bundle() {
    let f = Fixture::new();
    let (_, bundle) = f.unpack_base(&opts()).await;
    let repacked = repack(&bundle, RepackOptions::default()).await.unwrap();
    assert!(repacked.changes.is_empty(), "{:?}", repacked.changes);
    std::fs::write(bundle.join("strata.partial"), "").unwrap();
    let err = repack(&bundle, RepackOptions::default())
        .await
        .err()
        .expect("partial bundle refused");
    assert!(err.to_string().contains("did not complete"), "{err}");
}

#[tokio::test]
async fn a16_setuid_and_capabilities_are_kept_as_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // security.capability v2: cap_net_bind_service+ep.
    let cap: &[u8] = &[
        0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let l1 = tar_of(&[
        E::Xattr("ping", b"#!/bin/sh\n", "security.capability", cap),
        E::File("su", b"su", 0o4755),
        E::File("wall", b"wall", 0o2755),
    ]);
    let f = Fixture::new();
    let layout = f.layout(&image_from_layers(&[l1], serde_json::json!({})), "caps");
    let bundle = f.path("bundle");
    let report = unpack_layout(&layout, "caps", &bundle, &opts())
        .await
        .unwrap();
    assert_eq!(report.warning_count, 0, "{:?}", report.warnings);
    let r = bundle.join("rootfs");
    assert_eq!(
        get_xattr(&r.join("ping"), "security.capability").as_deref(),
        Some(cap)
    );
    assert_eq!(
        std::fs::metadata(r.join("su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::metadata(r.join("wall")).unwrap().mode() & 0o7777,
        0o2755
    );
    // Repack keeps them.
    std::fs::write(r.join("new"), "n").unwrap();
    rustix::fs::setxattr(
        r.join("new").as_path(),
        "security.capability",
        cap,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let repacked = repack(&bundle, RepackOptions::default()).await.unwrap();
    let sink = LayoutSink::create(&layout).unwrap();
    repacked.commit(&sink, None, Some("caps2")).await.unwrap();
    let again = f.path("again");
    unpack_layout(&layout, "caps2", &again, &opts())
        .await
        .unwrap();
    assert_eq!(
        get_xattr(&again.join("rootfs/new"), "security.capability").as_deref(),
        Some(cap)
    );
}

#[tokio::test]
async fn rootless_repack_takes_owners_from_the_rootless_xattr() {
    let f = Fixture::new();
    let options = UnpackOptions {
        ownership: Ownership::Rootless,
        ..opts()
    };
    let (layout, bundle) = f.unpack_base(&options).await;
    let owned = bundle.join("rootfs/c/owned");
    std::fs::write(&owned, "changed").unwrap();
    std::fs::write(bundle.join("rootfs/c/made-here"), "new").unwrap();
    let repacked = repack(&bundle, RepackOptions::default()).await.unwrap();
    let sink = LayoutSink::create(&layout).unwrap();
    repacked.commit(&sink, None, Some("v2")).await.unwrap();
    // Read the new layer's headers: the owner comes from user.rootlesscontainers (1000),
    // a file without the record belongs to root — whoever owns it on disk.
    let v2 = LayoutSource::open(&layout, Some("v2")).unwrap();
    let strata_spec::Manifest::Image(m) = v2.manifest(None).await.unwrap().parse().unwrap() else {
        panic!("not an image")
    };
    let layer = m.layers.last().unwrap();
    let blob = std::fs::read(layout.join("blobs/sha256").join(layer.digest.encoded())).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
    let mut owners = BTreeMap::new();
    for e in tar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        owners.insert(
            e.path().unwrap().display().to_string(),
            (h.uid().unwrap(), h.gid().unwrap()),
        );
    }
    assert_eq!(owners.get("c/owned"), Some(&(1000, 1000)), "{owners:?}");
    assert_eq!(owners.get("c/made-here"), Some(&(0, 0)), "{owners:?}");
}

#[tokio::test]
async fn m15_mount_cache_never_trusts_a_claimed_diff_id() {
    use strata_image::mount::{LayerCache, mount_image, unmount_image};
    if !is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let f = Fixture::new();
    let cache = LayerCache::new(f.path("cache"));
    let good = image_from_layers(
        &[tar_of(&[E::File("f", b"genuine", 0o644)])],
        serde_json::json!({}),
    );
    let layout = f.layout(&good, "good");
    let source = LayoutSource::open(&layout, Some("good")).unwrap();
    let top = source.manifest(None).await.unwrap();
    let mnt = f.path("mnt");
    mount_image(&source, &top, &cache, &mnt, None)
        .await
        .unwrap();
    assert_eq!(read(&mnt.join("f")), "genuine");
    unmount_image(&mnt).unwrap();
    // Another image whose config claims the cached layer's DiffId for different content:
    // its blob is extracted and hashed, and the lie is an error, not a cache hit.
    let good_diff_id = {
        let c: serde_json::Value = serde_json::from_slice(&good.blob_list[0].1).unwrap();
        c["rootfs"]["diff_ids"][0].clone()
    };
    let mut evil = image_from_layers(
        &[tar_of(&[E::File("f", b"evil", 0o644)])],
        serde_json::json!({}),
    );
    let mut c: serde_json::Value = serde_json::from_slice(&evil.blob_list[0].1).unwrap();
    c["rootfs"]["diff_ids"][0] = good_diff_id;
    replace_config(&mut evil, &c);
    let evil_layout = f.path("evil");
    evil.write_oci_layout(&evil_layout, "evil").unwrap();
    let source = LayoutSource::open(&evil_layout, Some("evil")).unwrap();
    let top = source.manifest(None).await.unwrap();
    let err = mount_image(&source, &top, &cache, &mnt, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
    assert!(!strata_image::mount::is_strata_mount(&mnt).unwrap());
    // The cached genuine layer is untouched.
    let source = LayoutSource::open(&layout, Some("good")).unwrap();
    let top = source.manifest(None).await.unwrap();
    mount_image(&source, &top, &cache, &mnt, None)
        .await
        .unwrap();
    assert_eq!(read(&mnt.join("f")), "genuine");
    unmount_image(&mnt).unwrap();
}
