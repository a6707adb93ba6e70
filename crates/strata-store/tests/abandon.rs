//! A copy that fails or is interrupted drops its other blob transfers and abandons the sink
//! (`ImageSink::abandon`): every temp file and staging directory is gone when that returns,
//! and the sink takes no new blobs. Also `OciLayout::remove_entries` (`strata rm`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_image::{BlobReader, ImageSink};
use strata_spec::{Descriptor, MediaType};
use strata_store::{DirSink, LayoutSink, OciArchiveSink, OciLayout};
use tokio::io::AsyncWriteExt;

/// How long a test waits for a blob write to get under way.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn files_under(dir: &Path, name_contains: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_under(&p, name_contains));
        } else if e.file_name().to_string_lossy().contains(name_contains) {
            out.push(p);
        }
    }
    out
}

/// A blob stream that delivers 3 MiB and then stalls (its writer half is returned: keep it).
async fn stalling_stream() -> (BlobReader, tokio::io::DuplexStream) {
    let (reader, mut writer) = tokio::io::duplex(8 << 20);
    writer.write_all(&vec![7u8; 3 << 20]).await.unwrap();
    (Box::pin(reader), writer)
}

/// Start writing a 16 MiB blob into `sink` that stalls after 3 MiB, wait until its temp file
/// (`temp_marker` in its name, under `root`) exists, then drop the transfer as a failed copy
/// does, abandon the sink and check that nothing is left and no new blob is accepted.
async fn abandon_leaves_nothing(sink: &dyn ImageSink, root: &Path, temp_marker: &str) {
    let descriptor = Descriptor::of_bytes(MediaType::OCI_LAYER, &vec![1u8; 16 << 20]);
    let (stream, _keep_open) = stalling_stream().await;
    let started = async {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while files_under(root, temp_marker).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no temp file under {}",
                root.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = sink.put_blob(&descriptor, stream) => panic!("a stalled write ended: {r:?}"),
        _ = started => {}
    }
    sink.abandon().await;
    assert_eq!(
        files_under(root, temp_marker),
        Vec::<PathBuf>::new(),
        "temp files left"
    );
    let (stream, _keep) = stalling_stream().await;
    let err = sink.put_blob(&descriptor, stream).await.unwrap_err();
    let chain = strata_testkit::error_chain(&err);
    assert!(chain.contains("abandoned"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_layout_and_dir_sinks_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(&dir.path().join("layout")).unwrap();
    let sink = LayoutSink::new(layout, "test".into()).unwrap();
    abandon_leaves_nothing(&sink, &dir.path().join("layout"), ".strata-tmp-").await;

    let target = dir.path().join("dir");
    let sink = DirSink::create(&target).unwrap();
    abandon_leaves_nothing(&sink, &target, "tmp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_archive_sink_removes_its_staging() {
    let dir = tempfile::tempdir().unwrap();
    let store = OciLayout::create_or_open(&dir.path().join("store")).unwrap();
    let target = dir.path().join("out/app.tar");
    let sink = OciArchiveSink::create_noted_in(&target, &store).unwrap();
    abandon_leaves_nothing(&sink, &dir.path().join("out"), ".strata-tmp-").await;
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new(), "staging removed, no archive");
    drop(sink);
    // The note in the store goes with the sink; gc has nothing to do.
    assert_eq!(store.gc().unwrap().staging_dirs_removed, 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/.strata/staging"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn remove_entries_takes_out_exactly_what_it_selects() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create_or_open(dir.path()).unwrap();
    let one = layout
        .write_blob_bytes(MediaType::OCI_MANIFEST, b"{\"one\":1}")
        .unwrap();
    let two = layout
        .write_blob_bytes(MediaType::OCI_MANIFEST, b"{\"two\":2}")
        .unwrap();
    layout.set_tag(Some("a"), &one).unwrap();
    layout.set_tag(Some("b"), &one).unwrap();
    layout.set_tag(None, &two).unwrap();
    let removed = layout.remove_entries(|d| d.digest == one.digest).unwrap();
    let mut tags: Vec<_> = removed.iter().filter_map(|d| d.ref_name()).collect();
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
    let left = layout.list().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, None);
    assert_eq!(left[0].1.digest, two.digest);
    assert!(layout.remove_entries(|_| false).unwrap().is_empty());
}
