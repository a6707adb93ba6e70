//! Shared by the memory tests: a large one-layer image in an OCI layout, built without
//! holding the layer in memory.

use std::fs::File;
use std::path::Path;

use serde_json::json;
use strata_archive::{Compression, LayerInfo, LayerWriter, TarBuilder, TarOptions};
use strata_spec::{Descriptor, MediaType};
use strata_store::OciLayout;

/// Create an OCI layout at `layout_dir` holding one linux/amd64 image tagged `tag` whose
/// only layer is the tar `add_entries` writes (gzip level 1, streamed through a temporary
/// file next to the layout, removed afterwards). Returns the layer's digests and sizes.
pub fn layout_with_one_layer(
    layout_dir: &Path,
    tag: &str,
    add_entries: impl FnOnce(&mut TarBuilder<LayerWriter<File>>),
) -> LayerInfo {
    let layout = OciLayout::create_or_open(layout_dir).unwrap();
    let temp = layout_dir.with_extension("layer.tmp");
    let mut tar = TarBuilder::new(
        LayerWriter::new(File::create(&temp).unwrap(), Compression::Gzip { level: 1 }).unwrap(),
        TarOptions::default(),
    );
    add_entries(&mut tar);
    let (info, _) = tar.finish().unwrap().finish().unwrap();
    let layer = Descriptor::new(info.media_type.clone(), info.digest.clone(), info.size);
    layout
        .write_blob(&layer, File::open(&temp).unwrap())
        .unwrap();
    std::fs::remove_file(&temp).unwrap();
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
    layout.set_tag(Some(tag), &manifest).unwrap();
    info
}
