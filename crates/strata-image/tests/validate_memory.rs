//! Validation streams: peak memory does not grow with the layer size. Alone in its test
//! binary so no other test's allocations disturb the process's peak RSS.

use serde_json::json;
use strata_archive::{Compression, EntryMeta, LayerWriter, TarBuilder, TarOptions};
use strata_image::{ValidateOptions, validate};
use strata_spec::{Descriptor, MediaType};
use strata_store::{LayoutSource, OciLayout};
use strata_testkit::memory::{MixedBytes as Mixed, peak_rss_kib};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_a_large_layer_keeps_memory_flat() {
    const SIZE: u64 = 384 << 20;
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
        Mixed { left: SIZE, x: 7 },
    )
    .unwrap();
    let (info, _) = t.finish().unwrap().finish().unwrap();
    let layer = Descriptor::new(info.media_type.clone(), info.digest.clone(), info.size);
    layout
        .write_blob(
            &layer,
            std::fs::File::open(dir.path().join("layer")).unwrap(),
        )
        .unwrap();
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
    let report = validate(&source, &ValidateOptions::default())
        .await
        .unwrap();
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(report.is_valid(), "{report}");
    assert!(report.bytes >= info.size);
    eprintln!(
        "peak RSS grew by {grown_mib} MiB validating a {} MiB layer",
        SIZE >> 20
    );
    assert!(grown_mib < 48, "peak RSS grew by {grown_mib} MiB");
}
