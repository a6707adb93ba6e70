//! Unpack and repack stream: peak memory does not grow with the layer size. Alone in its
//! test binary so no other test's allocations disturb the process's peak RSS.

use serde_json::json;
use strata_archive::{Compression, EntryMeta, LayerWriter, TarBuilder, TarOptions};
use strata_image::repack::{RepackOptions, write_layer};
use strata_image::{ImageSource, UnpackOptions, unpack};
use strata_spec::{Descriptor, MediaType};
use strata_store::{LayoutSink, LayoutSource, OciLayout};
use strata_testkit::memory::{MixedBytes as Mixed, peak_rss_kib};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpacking_and_repacking_a_large_layer_keeps_memory_flat() {
    const SIZE: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(&dir.path().join("l")).unwrap();
    let file = std::fs::File::create(dir.path().join("layer")).unwrap();
    let mut t = TarBuilder::new(
        LayerWriter::new(file, Compression::Gzip { level: 1 }).unwrap(),
        TarOptions::default(),
    );
    t.append_file(
        "big",
        &EntryMeta::with_mode(0o644),
        SIZE,
        Mixed { left: SIZE, x: 11 },
    )
    .unwrap();
    for i in 0..2000 {
        t.append_file(
            format!("small/{i}"),
            &EntryMeta::with_mode(0o644),
            100,
            Mixed {
                left: 100,
                x: i + 1,
            },
        )
        .unwrap();
    }
    let (info, _) = t.finish().unwrap().finish().unwrap();
    let layer = Descriptor::new(info.media_type.clone(), info.digest.clone(), info.size);
    layout
        .write_blob(
            &layer,
            std::fs::File::open(dir.path().join("layer")).unwrap(),
        )
        .unwrap();
    std::fs::remove_file(dir.path().join("layer")).unwrap();
    let config = layout
        .write_blob_bytes(
            MediaType::OCI_CONFIG,
            &serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [info.diff_id.to_string()]},
            }))
            .unwrap(),
        )
        .unwrap();
    let manifest = layout
        .write_blob_bytes(
            MediaType::OCI_MANIFEST,
            &serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": MediaType::OCI_MANIFEST,
                "config": config, "layers": [layer],
            }))
            .unwrap(),
        )
        .unwrap();
    layout.set_tag(Some("t"), &manifest).unwrap();
    // Reset the peak to now (Linux: writing 5 to clear_refs resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss_kib();
    let source = LayoutSource::open(&dir.path().join("l"), Some("t")).unwrap();
    let top = source.manifest(None).await.unwrap();
    let bundle = dir.path().join("bundle");
    let options = UnpackOptions {
        source_name: "t".into(),
        ..UnpackOptions::default()
    };
    let report = unpack(&source, &top, &bundle, &options).await.unwrap();
    assert_eq!(report.file_bytes, SIZE + 200_000);
    let unpack_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    // Every file changed: repack reads and compresses all of it again.
    let big = bundle.join("rootfs/big");
    std::fs::set_permissions(&big, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for i in 0..2000 {
        let p = bundle.join(format!("rootfs/small/{i}"));
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let b = bundle.clone();
    let repacked = tokio::task::spawn_blocking(move || write_layer(&b, &RepackOptions::default()))
        .await
        .unwrap()
        .unwrap();
    assert!(repacked.changes.file_bytes >= SIZE);
    let sink = LayoutSink::create(&dir.path().join("l")).unwrap();
    repacked.commit(&sink, None, Some("t2")).await.unwrap();
    let total_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!(
        "peak RSS grew by {unpack_mib} MiB unpacking and {total_mib} MiB with repack of a {} MiB layer",
        SIZE >> 20
    );
    assert!(unpack_mib < 48, "unpack: peak RSS grew by {unpack_mib} MiB");
    assert!(total_mib < 64, "repack: peak RSS grew by {total_mib} MiB");
}
