//! Unpack and repack stream: peak memory does not grow with the layer size. Alone in its
//! test binary so no other test's allocations disturb the process's peak RSS.

mod common;

use strata_archive::EntryMeta;
use strata_image::repack::{RepackOptions, write_layer};
use strata_image::{ImageSource, UnpackOptions, unpack};
use strata_store::{LayoutSink, LayoutSource};
use strata_testkit::memory::{MixedBytes, peak_rss_kib};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpacking_and_repacking_a_large_layer_keeps_memory_flat() {
    const SIZE: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    common::layout_with_one_layer(&dir.path().join("l"), "t", |t| {
        t.append_file(
            "big",
            &EntryMeta::with_mode(0o644),
            SIZE,
            MixedBytes::new(SIZE, 11),
        )
        .unwrap();
        for i in 0..2000 {
            t.append_file(
                format!("small/{i}"),
                &EntryMeta::with_mode(0o644),
                100,
                MixedBytes::new(100, i + 1),
            )
            .unwrap();
        }
    });
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
