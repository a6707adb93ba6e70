//! Validation streams: peak memory does not grow with the layer size. Alone in its test
//! binary so no other test's allocations disturb the process's peak RSS.

mod common;

use strata_archive::EntryMeta;
use strata_image::{ValidateOptions, validate};
use strata_store::LayoutSource;
use strata_testkit::memory::{MixedBytes, peak_rss_kib};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_a_large_layer_keeps_memory_flat() {
    const SIZE: u64 = 384 << 20;
    let dir = tempfile::tempdir().unwrap();
    let info = common::layout_with_one_layer(&dir.path().join("l"), "t", |t| {
        t.append_file(
            "big",
            &EntryMeta::with_mode(0o644),
            SIZE,
            MixedBytes::new(SIZE, 7),
        )
        .unwrap();
    });
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
