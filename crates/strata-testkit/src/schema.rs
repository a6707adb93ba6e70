//! Validation against the OCI image-spec JSON schemas (draft-04) vendored in
//! `crates/strata-testkit/oci-schema/`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_spec::{Descriptor, Manifest, MediaType};

/// Which schema a document is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    Layout,
    Index,
    Manifest,
    Config,
}

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oci-schema")
}

fn load(name: &str) -> Value {
    let path = schema_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A validator for one schema, with every schema file registered under the ids they `$ref`.
pub fn validator(schema: Schema) -> jsonschema::Validator {
    let file = match schema {
        Schema::Layout => "image-layout-schema.json",
        Schema::Index => "image-index-schema.json",
        Schema::Manifest => "image-manifest-schema.json",
        Schema::Config => "config-schema.json",
    };
    let mut options = jsonschema::options().with_draft(jsonschema::Draft::Draft4);
    // The schemas refer to each other by file name relative to ids under both
    // https://opencontainers.org/schema/ and …/schema/image/: register every file under both.
    for name in [
        "defs.json",
        "defs-descriptor.json",
        "content-descriptor.json",
        "image-index-schema.json",
        "image-manifest-schema.json",
        "config-schema.json",
        "image-layout-schema.json",
    ] {
        for base in [
            "https://opencontainers.org/schema/",
            "https://opencontainers.org/schema/image/",
        ] {
            let resource = jsonschema::Resource::from_contents(load(name))
                .unwrap_or_else(|e| panic!("schema {name}: {e}"));
            options = options.with_resource(format!("{base}{name}"), resource);
        }
    }
    options
        .build(&load(file))
        .unwrap_or_else(|e| panic!("schema {file}: {e}"))
}

/// Panic unless `bytes` is valid JSON that passes `schema`.
pub fn assert_valid(schema: Schema, bytes: &[u8], what: &str) {
    let v = validator(schema);
    let doc: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what} fails the {schema:?} schema: {errors:?}\n{doc}"
    );
}

/// Validate `oci-layout`, `index.json` and every OCI manifest, index and config reachable from
/// it, and check every reachable blob's bytes against its digest.
pub fn assert_layout_valid(root: &Path) {
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_valid(Schema::Layout, &read(root.join("oci-layout")), "oci-layout");
    let index = read(root.join("index.json"));
    assert_valid(Schema::Index, &index, "index.json");
    let index: strata_spec::ImageIndex =
        serde_json::from_slice(&index).unwrap_or_else(|e| panic!("index.json: {e}"));
    for d in &index.manifests {
        validate_blob_tree(root, d);
    }
}

fn blob(root: &Path, d: &Descriptor) -> Vec<u8> {
    let path = root
        .join("blobs")
        .join(d.digest.algorithm().as_str())
        .join(d.digest.encoded());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        d.digest.verify(&bytes),
        "{} does not match its digest",
        path.display()
    );
    assert_eq!(
        bytes.len() as i64,
        d.size,
        "{}: size differs from its descriptor",
        d.digest
    );
    bytes
}

fn validate_blob_tree(root: &Path, d: &Descriptor) {
    let bytes = blob(root, d);
    let parsed = Manifest::parse(&bytes, Some(&d.media_type))
        .unwrap_or_else(|e| panic!("manifest {}: {e}", d.digest));
    match parsed {
        Manifest::Index(i) => {
            if d.media_type.as_str() == MediaType::OCI_INDEX {
                assert_valid(Schema::Index, &bytes, &format!("index {}", d.digest));
            }
            for c in &i.manifests {
                validate_blob_tree(root, c);
            }
        }
        Manifest::Image(m) => {
            if d.media_type.as_str() == MediaType::OCI_MANIFEST {
                assert_valid(Schema::Manifest, &bytes, &format!("manifest {}", d.digest));
            }
            let config = blob(root, &m.config);
            if m.config.media_type.as_str() == MediaType::OCI_CONFIG {
                assert_valid(
                    Schema::Config,
                    &config,
                    &format!("config {}", m.config.digest),
                );
            }
            for l in &m.layers {
                let path = root.join("blobs/sha256").join(l.digest.encoded());
                let size = std::fs::metadata(&path)
                    .unwrap_or_else(|e| panic!("layer {}: {e}", l.digest))
                    .len();
                assert_eq!(size as i64, l.size, "layer {} size", l.digest);
            }
        }
    }
}
