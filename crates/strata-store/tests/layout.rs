//! The OCI layout core: blobs, tags, locking, gc, hostile layouts and faults.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use strata_spec::{Descriptor, Digest, MediaType};
use strata_store::{OciLayout, StoreError, ref_name_conforms, valid_tag};

/// Store a test image's blobs and manifest (untagged) through the sync API.
fn store_image(layout: &OciLayout, img: &TestImage) -> Descriptor {
    layout
        .write_blob(&img.config_descriptor(), img.config.as_slice())
        .unwrap();
    for (d, l) in img.layer_descriptors().iter().zip(&img.layers) {
        layout.write_blob(d, l.as_slice()).unwrap();
    }
    layout
        .write_blob_bytes(MediaType::OCI_MANIFEST, &img.manifest)
        .unwrap()
}

#[test]
fn create_open_and_schema_valid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    assert!(matches!(
        OciLayout::open(&root),
        Err(StoreError::NotALayout { .. })
    ));
    let layout = OciLayout::create_or_open(&root).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert!(layout.list().unwrap().is_empty());
    assert_layout_valid(&root);
    // Opening again (either way) keeps the content.
    let img = image("a", "amd64");
    let d = store_image(&layout, &img);
    layout.set_tag(Some("v1"), &d).unwrap();
    let again = OciLayout::create_or_open(&root).unwrap();
    assert_eq!(again.resolve(Some("v1")).unwrap().digest, img.digest());
    assert_layout_valid(&root);
    // A plain directory is not a layout; neither is a bad oci-layout.
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let err = OciLayout::open(&plain).unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    fs::write(plain.join("oci-layout"), r#"{"imageLayoutVersion":"9.0"}"#).unwrap();
    assert!(matches!(
        OciLayout::open(&plain),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn write_blob_verifies_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let data = b"some blob bytes".to_vec();
    let d = Descriptor::of_bytes("application/octet-stream", &data);
    layout.write_blob(&d, data.as_slice()).unwrap();
    assert_eq!(fs::read(layout.blob_path(&d.digest)).unwrap(), data);
    let (mut f, size) = layout.open_blob(&d.digest).unwrap();
    assert_eq!(size, data.len() as u64);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut back).unwrap();
    assert_eq!(back, data);
    // Idempotent: an existing blob is kept, the reader is not even consulted.
    layout.write_blob(&d, &b"garbage"[..]).unwrap();
    assert_eq!(fs::read(layout.blob_path(&d.digest)).unwrap(), data);
    assert!(temp_files(dir.path()).is_empty());
}

/// RELIABILITY M4/M5: wrong bytes, short and long content, negative size — each an error, no
/// blob under the digest, no temp file left (F15-F17 cleanup path).
#[test]
fn bad_blobs_are_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let good = b"0123456789".to_vec();
    let d = Descriptor::of_bytes("application/octet-stream", &good);

    let err = layout.write_blob(&d, &b"0123456780"[..]).unwrap_err();
    match &err {
        StoreError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &d.digest);
            assert_eq!(actual, &Digest::sha256_of(b"0123456780"));
        }
        other => panic!("expected digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains(&d.digest.to_string()));

    let err = layout.write_blob(&d, &b"012345"[..]).unwrap_err();
    assert!(
        matches!(err, StoreError::SizeMismatch { actual: 6, .. }),
        "{err}"
    );
    // Longer: aborted at size+1, never reading the rest.
    let endless = std::io::repeat(b'x');
    let err = layout.write_blob(&d, endless).unwrap_err();
    assert!(
        matches!(err, StoreError::SizeMismatch { expected: 10, actual, .. } if actual > 10),
        "{err}"
    );
    let mut negative = d.clone();
    negative.size = -1;
    assert!(layout.write_blob(&negative, good.as_slice()).is_err());
    let mut huge = d.clone();
    huge.size = 1 << 62;
    assert!(matches!(
        layout.write_blob(&huge, good.as_slice()).unwrap_err(),
        StoreError::SizeMismatch { .. }
    ));

    assert!(!layout.has_blob(&d.digest, None));
    assert!(!layout.blob_path(&d.digest).exists());
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn tags_replace_resolve_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let a = store_image(&layout, &image("a", "amd64"));
    let b = store_image(&layout, &image("b", "amd64"));
    layout.set_tag(Some("v1"), &a).unwrap();
    layout.set_tag(Some("latest"), &a).unwrap();
    // Re-pointing a tag replaces its entry.
    layout.set_tag(Some("v1"), &b).unwrap();
    assert_eq!(layout.resolve(Some("v1")).unwrap().digest, b.digest);
    assert_eq!(layout.resolve(Some("latest")).unwrap().digest, a.digest);
    assert_eq!(layout.list().unwrap().len(), 2);
    // Untagged entries, added once.
    layout.set_tag(None, &b).unwrap();
    layout.set_tag(None, &b).unwrap();
    let list = layout.list().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|(t, _)| t.is_none()).count(), 1);
    // Without a tag and several entries: an error naming them.
    let err = layout.resolve(None).unwrap_err();
    assert!(matches!(err, StoreError::Ambiguous { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("v1") && msg.contains("latest") && msg.contains("untagged"),
        "{msg}"
    );
    let err = layout.resolve(Some("nope")).unwrap_err();
    assert!(err.is_not_found() && err.to_string().contains("nope"));
    layout.remove_tag("latest").unwrap();
    assert!(layout.resolve(Some("latest")).unwrap_err().is_not_found());
    assert!(layout.remove_tag("latest").unwrap_err().is_not_found());
    // Bad tags are refused before touching index.json.
    for bad in ["", "a b", "x\ny", "ü", &"x".repeat(600)] {
        assert!(
            matches!(
                layout.set_tag(Some(bad), &a),
                Err(StoreError::InvalidTag { .. })
            ),
            "{bad:?}"
        );
    }
    assert_layout_valid(dir.path());
}

#[test]
fn full_references_are_valid_tags() {
    for r in [
        "docker.io/library/busybox:latest",
        "localhost/app:v1",
        "127.0.0.1:5000/a/b:1.0",
        "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(valid_tag(r), "{r}");
        assert!(ref_name_conforms(r), "{r}");
    }
    assert!(ref_name_conforms("docker.io/library/my_app:v1_2"));
    // Docker allows `__` and `---` in paths and tags ending in `.`; the OCI ref.name grammar
    // (a SHOULD) does not. strata stores them anyway and says so.
    for r in ["localhost/a__b:x", "localhost/a---b:x", "localhost/a:v1."] {
        assert!(valid_tag(r), "{r}");
        assert!(!ref_name_conforms(r), "{r}");
    }
    for r in ["-a", "a-", "a//b", "a..b", "a:", "a/"] {
        assert!(!ref_name_conforms(r), "{r}");
    }
    assert!(ref_name_conforms("a--b"));
    assert!(!ref_name_conforms("a---b"));
    // The default store tag of a bare name is the full normalised reference.
    let r: strata_spec::Reference = "busybox".parse().unwrap();
    assert_eq!(
        strata_store::store_tag(&r),
        "docker.io/library/busybox:latest"
    );
}

/// RELIABILITY M14: a blob, a blob directory, `index.json` or `oci-layout` symlinked to a
/// host file is refused; the host file is never read.
#[test]
fn symlinks_in_a_layout_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, b"host secret").unwrap();
    let d = Descriptor::of_bytes("x", b"host secret");
    std::os::unix::fs::symlink("/etc/shadow", layout.blob_path(&d.digest)).unwrap();
    assert!(matches!(
        layout.open_blob(&d.digest),
        Err(StoreError::NotRegular { .. })
    ));
    fs::remove_file(layout.blob_path(&d.digest)).unwrap();
    // Even a symlink to a file with the right content: the layout must not leave its root.
    std::os::unix::fs::symlink(&secret, layout.blob_path(&d.digest)).unwrap();
    assert!(matches!(
        layout.open_blob(&d.digest),
        Err(StoreError::NotRegular { .. })
    ));
    assert!(layout.read_blob(&d.digest, 100).is_err());
    fs::remove_file(layout.blob_path(&d.digest)).unwrap();
    // A symlinked parent directory (blobs/sha256 -> elsewhere).
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join(d.digest.encoded()), b"host secret").unwrap();
    fs::remove_dir_all(dir.path().join("blobs/sha256")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("blobs/sha256")).unwrap();
    assert!(matches!(
        layout.open_blob(&d.digest),
        Err(StoreError::NotRegular { .. })
    ));
    // A directory or a FIFO where a blob should be (opening the FIFO must not hang).
    fs::remove_file(dir.path().join("blobs/sha256")).unwrap();
    fs::create_dir_all(layout.blob_path(&d.digest)).unwrap();
    assert!(matches!(
        layout.open_blob(&d.digest),
        Err(StoreError::NotRegular { .. })
    ));
    fs::remove_dir(layout.blob_path(&d.digest)).unwrap();
    let mkfifo = Command::new("mkfifo")
        .arg(layout.blob_path(&d.digest))
        .status()
        .unwrap();
    assert!(mkfifo.success());
    assert!(matches!(
        layout.open_blob(&d.digest),
        Err(StoreError::NotRegular { .. })
    ));
    // index.json -> /etc/shadow
    fs::remove_file(dir.path().join("index.json")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.path().join("index.json")).unwrap();
    assert!(matches!(
        layout.read_index(),
        Err(StoreError::NotRegular { .. })
    ));
    assert!(layout.list().is_err());
    // oci-layout -> elsewhere
    fs::remove_file(dir.path().join("oci-layout")).unwrap();
    fs::write(dir.path().join("real"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::os::unix::fs::symlink("real", dir.path().join("oci-layout")).unwrap();
    assert!(matches!(
        OciLayout::open(dir.path()),
        Err(StoreError::NotRegular { .. })
    ));
}

#[test]
fn oversized_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let f = fs::File::create(dir.path().join("index.json")).unwrap();
    f.set_len(strata_store::MAX_INDEX_BYTES + 1).unwrap();
    assert!(matches!(
        layout.read_index(),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn gc_removes_unreferenced_keeps_referenced_and_stale_temps_go() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let a = image("a", "amd64");
    let b = image("b", "arm64");
    let da = store_image(&layout, &a);
    let db = store_image(&layout, &b);
    // An index over a and b, tagged; a also tagged directly; b only via the index.
    let index = index_of(&[(&a, "amd64"), (&b, "arm64")]);
    let di = layout
        .write_blob_bytes(MediaType::OCI_INDEX, &index)
        .unwrap();
    layout.set_tag(Some("multi"), &di).unwrap();
    layout.set_tag(Some("a"), &da).unwrap();
    let orphan = image("orphan", "amd64");
    let dorphan = store_image(&layout, &orphan);
    // A dead writer's temp file.
    let tmp = dir.path().join(".strata/tmp/.strata-tmp-999999-dead");
    fs::write(&tmp, b"partial").unwrap();

    let report = layout.gc().unwrap();
    assert!(!tmp.exists());
    assert_eq!(report.temp_files_removed, 1);
    for d in [&da, &db, &di] {
        assert!(layout.has_blob(&d.digest, None), "{} collected", d.digest);
    }
    for img in [&a, &b] {
        assert!(layout.has_blob(&img.config_descriptor().digest, None));
        for l in img.layer_descriptors() {
            assert!(layout.has_blob(&l.digest, None));
        }
    }
    assert!(!layout.has_blob(&dorphan.digest, None));
    assert!(!layout.has_blob(&orphan.config_descriptor().digest, None));
    // orphan: manifest, config, two layers.
    assert_eq!(report.blobs_removed, 4);
    // Dropping the index tag frees the index and b (a stays tagged).
    layout.remove_tag("multi").unwrap();
    let report = layout.gc().unwrap();
    assert!(!layout.has_blob(&di.digest, None));
    assert!(!layout.has_blob(&db.digest, None));
    assert!(layout.has_blob(&da.digest, None));
    assert_eq!(report.blobs_removed, 1 + 1 + 1 + 2);
    assert_layout_valid(dir.path());
}

/// M8: an index that (through a hash we can't forge) nests deeper than the limit stops gc
/// with an error and removes nothing.
#[test]
fn gc_bounds_nesting_and_refuses_to_guess() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let img = image("deep", "amd64");
    let mut top = store_image(&layout, &img);
    for _ in 0..12 {
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": [top]
        }))
        .unwrap();
        top = layout.write_blob_bytes(MediaType::OCI_INDEX, &idx).unwrap();
    }
    layout.set_tag(Some("deep"), &top).unwrap();
    let junk = layout.write_blob_bytes("x", b"junk").unwrap();
    let err = layout.gc().unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
    assert!(layout.has_blob(&junk.digest, None), "gc removed on error");

    // A reachable manifest that does not parse: gc stops instead of deleting its layers.
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let bogus = layout
        .write_blob_bytes(
            MediaType::OCI_MANIFEST,
            br#"{"schemaVersion":2,"manifests":[],"layers":[]}"#,
        )
        .unwrap();
    layout.set_tag(Some("bogus"), &bogus).unwrap();
    let junk = layout.write_blob_bytes("x", b"junk").unwrap();
    assert!(layout.gc().is_err());
    assert!(layout.has_blob(&junk.digest, None));
}

/// F19: gc waits for writers; a blob written but not yet tagged survives a concurrent gc.
#[test]
fn gc_never_removes_in_flight_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let layout = OciLayout::create_or_open(&root).unwrap();
    let img = image("inflight", "amd64");
    let guard = layout.writer_guard().unwrap();
    let d = store_image(&layout, &img); // written, not referenced yet
    let done = Arc::new(AtomicBool::new(false));
    let gc = {
        let root = root.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let report = OciLayout::open(&root).unwrap().gc().unwrap();
            done.store(true, Ordering::SeqCst);
            report
        })
    };
    // Give gc every chance to run early; if it did not wait it would delete the blobs now.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "gc ran while a writer held its guard"
    );
    layout.set_tag(Some("v1"), &d).unwrap();
    drop(guard);
    let report = gc.join().unwrap();
    assert_eq!(report.blobs_removed, 0);
    assert!(layout.has_blob(&d.digest, None));
    for l in img.layer_descriptors() {
        assert!(layout.has_blob(&l.digest, None));
    }
}

/// Child process for `concurrent_processes_keep_every_tag`: adds one tag when told to.
#[test]
#[ignore = "run by concurrent_processes_keep_every_tag in a child process"]
fn child_add_tag() {
    let (Ok(root), Ok(tag)) = (
        std::env::var("STRATA_TEST_LAYOUT"),
        std::env::var("STRATA_TEST_TAG"),
    ) else {
        return;
    };
    let root = Path::new(&root);
    // Start together: wait for the go file.
    while !root.join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let layout = OciLayout::create_or_open(&root.join("layout")).unwrap();
    let d = store_image(&layout, &image(&tag, "amd64"));
    for _ in 0..5 {
        layout.set_tag(Some(&tag), &d).unwrap();
        layout.set_tag(None, &d).unwrap();
    }
}

/// F18 (skopeo issue #513): eight processes adding tags to one (new) layout at once keep all
/// eight tags.
#[test]
fn concurrent_processes_keep_every_tag() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let tags: Vec<String> = (0..8).map(|i| format!("proc{i}")).collect();
    let children: Vec<_> = tags
        .iter()
        .map(|t| {
            Command::new(&exe)
                .args(["--exact", "child_add_tag", "--ignored", "--nocapture"])
                .env("STRATA_TEST_LAYOUT", dir.path())
                .env("STRATA_TEST_TAG", t)
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs::write(dir.path().join("go"), b"").unwrap();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let layout = OciLayout::open(&dir.path().join("layout")).unwrap();
    let list = layout.list().unwrap();
    for t in &tags {
        let d = layout.resolve(Some(t)).unwrap();
        assert_eq!(d.digest, image(t, "amd64").digest(), "{t}");
    }
    // Each process also added one untagged entry (deduplicated across its 5 rounds).
    assert_eq!(list.len(), 16, "{list:?}");
    assert_layout_valid(&dir.path().join("layout"));
    assert!(temp_files(dir.path()).is_empty());
}

/// F20: a reader polling index.json while writers rewrite it always sees complete JSON.
#[test]
fn readers_never_see_a_torn_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let layout = OciLayout::create_or_open(&root).unwrap();
    let d = store_image(&layout, &image("torn", "amd64"));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let root = root.clone();
            let d = d.clone();
            std::thread::spawn(move || {
                let layout = OciLayout::open(&root).unwrap();
                for i in 0..60 {
                    // Long tags make index.json big enough that a torn write would show.
                    let tag = format!("w{w}-{i}-{}", "x".repeat(300));
                    layout.set_tag(Some(&tag), &d).unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let root = root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut max_entries = 0;
            while !stop.load(Ordering::SeqCst) {
                let bytes = fs::read(root.join("index.json")).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("torn index.json ({} bytes): {e}", bytes.len()));
                max_entries = max_entries.max(v["manifests"].as_array().unwrap().len());
                reads += 1;
            }
            (reads, max_entries)
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, _) = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(layout.list().unwrap().len(), 180);
}

/// F15: ENOSPC while writing a blob: an error, no temp file, index.json and the earlier image
/// intact, and a later write that fits succeeds. Needs root (mounts a 1 MiB tmpfs).
#[test]
fn enospc_leaves_the_layout_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let root = mnt.join("layout");
    let layout = OciLayout::create_or_open(&root).unwrap();
    let img = image("small", "amd64");
    let d = store_image(&layout, &img);
    layout.set_tag(Some("v1"), &d).unwrap();
    let index_before = fs::read(root.join("index.json")).unwrap();

    // 2 MiB of incompressible-looking bytes into a 1 MiB filesystem.
    let big: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let bd = Descriptor::of_bytes(MediaType::OCI_LAYER, &big);
    let err = layout.write_blob(&bd, big.as_slice()).unwrap_err();
    let chain = format!("{err} / {:?}", std::error::Error::source(&err));
    assert!(
        chain.contains("No space left") || chain.contains("StorageFull"),
        "{chain}"
    );
    assert!(!layout.has_blob(&bd.digest, None));
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));
    assert_eq!(fs::read(root.join("index.json")).unwrap(), index_before);
    assert_eq!(layout.resolve(Some("v1")).unwrap().digest, d.digest);
    // The space is free again: a tag update still works.
    layout.set_tag(Some("v2"), &d).unwrap();
    assert_layout_valid(&root);
}

/// Bytes that do not repeat with any power-of-two period (a chunk-boundary mix-up shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Blobs of 4 MiB and more bypass the page cache (O_DIRECT, aligned chunks, the odd tail
/// written buffered): every byte must arrive, in order, through both the sync API (unaligned
/// pieces, staged) and a sink fed by an async stream (aligned chunks, written as they are).
#[tokio::test]
async fn large_blobs_are_written_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    // Not a multiple of the chunk or block size.
    let data = pattern(9 * 1024 * 1024 + 12_345);
    let d = Descriptor::of_bytes(MediaType::OCI_LAYER, &data);
    layout.write_blob(&d, data.as_slice()).unwrap();
    assert!(fs::read(layout.blob_path(&d.digest)).unwrap() == data);

    // Three whole chunks and a last one of a block and a byte: the block is written direct,
    // the byte staged and written buffered at commit.
    let other = pattern(6 * 1024 * 1024 + 4097);
    let od = Descriptor::of_bytes(MediaType::OCI_LAYER, &other);
    let sink = strata_store::LayoutSink::new(layout.clone(), "test".into()).unwrap();
    strata_image::ImageSink::put_blob(&sink, &od, reader(other.clone()))
        .await
        .unwrap();
    assert!(fs::read(layout.blob_path(&od.digest)).unwrap() == other);
    // Exactly a multiple of the chunk size: no tail at all.
    let even = pattern(8 * 1024 * 1024);
    let ed = Descriptor::of_bytes(MediaType::OCI_LAYER, &even);
    strata_image::ImageSink::put_blob(&sink, &ed, reader(even.clone()))
        .await
        .unwrap();
    assert!(fs::read(layout.blob_path(&ed.digest)).unwrap() == even);
    assert!(temp_files(dir.path()).is_empty());
}

/// The direct path verifies like the buffered one: a large blob with one wrong byte at the
/// end, or one byte too many, is never committed and leaves no temp file.
#[tokio::test]
async fn large_bad_blobs_are_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let good = pattern(5 * 1024 * 1024 + 7);
    let d = Descriptor::of_bytes(MediaType::OCI_LAYER, &good);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    let err = layout.write_blob(&d, bad.as_slice()).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let sink = strata_store::LayoutSink::new(layout.clone(), "test".into()).unwrap();
    let err = strata_image::ImageSink::put_blob(&sink, &d, reader(bad))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("digest") || format!("{err:?}").contains("Digest"),
        "{err}"
    );
    let mut long = good.clone();
    long.push(0);
    let err = strata_image::ImageSink::put_blob(&sink, &d, reader(long))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("SizeMismatch"), "{err:?}");
    assert!(!layout.has_blob(&d.digest, None));
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn new_blob_names_itself_by_its_digest_and_cleans_up() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let mut blob = layout.new_blob().unwrap();
    blob.write_all(b"layer bytes").unwrap();
    let (digest, size) = blob.commit().unwrap();
    assert_eq!(digest, Digest::sha256_of(b"layer bytes"));
    assert_eq!(size, 11);
    assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), b"layer bytes");
    // The same content again keeps the existing blob.
    let mut again = layout.new_blob().unwrap();
    again.write_all(b"layer bytes").unwrap();
    assert_eq!(again.commit().unwrap().0, digest);
    // Dropped before commit: nothing left behind.
    let mut dropped = layout.new_blob().unwrap();
    dropped.write_all(b"partial").unwrap();
    drop(dropped);
    assert!(!layout.has_blob(&Digest::sha256_of(b"partial"), None));
    assert!(temp_files(dir.path()).is_empty());
}
