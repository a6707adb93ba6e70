//! Pipeline logic against an in-memory endpoint: selection, ordering (blobs before manifests,
//! the tag last), conversion, and that a failing blob leaves no tag behind. Registry and disk
//! transports are tested against the real things in their own crates and in the CLI tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use strata_copy::{CopyOptions, ManifestFormat, Progress, ProgressEvent, Selection, copy_image};
use strata_image::{BlobOrigin, BlobReader, ImageError, ImageSink, ImageSource, RawManifest};
use strata_spec::{Descriptor, Digest, ImageIndex, ImageManifest, Manifest, MediaType, Platform};

#[derive(Default)]
struct Memory {
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
    manifests: Mutex<HashMap<Digest, RawManifest>>,
    tags: Mutex<HashMap<String, Digest>>,
    top: Mutex<Option<Digest>>,
    log: Mutex<Vec<String>>,
    corrupt: Mutex<Option<Digest>>,
    /// As a sink: read half of every blob from a first stream and drop it before reading it
    /// again from a new one, as an upload resuming after a broken request does.
    reread: Mutex<bool>,
}

impl Memory {
    fn add_blob(&self, mt: &str, bytes: &[u8]) -> Descriptor {
        let d = Descriptor::of_bytes(mt, bytes);
        self.blobs
            .lock()
            .unwrap()
            .insert(d.digest.clone(), bytes.to_vec());
        d
    }
    fn add_manifest(&self, bytes: Vec<u8>, mt: &str) -> Descriptor {
        let raw = RawManifest::new(bytes, MediaType::new(mt));
        let d = Descriptor::new(mt, raw.digest.clone(), raw.bytes.len() as u64);
        self.manifests
            .lock()
            .unwrap()
            .insert(raw.digest.clone(), raw);
        d
    }
    fn image(&self, arch: &str, layer: &[u8], docker: bool) -> Descriptor {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let (cmt, lmt, mmt) = if docker {
            (
                MediaType::DOCKER_CONFIG,
                MediaType::DOCKER_LAYER_GZIP,
                MediaType::DOCKER_MANIFEST,
            )
        } else {
            (
                MediaType::OCI_CONFIG,
                MediaType::OCI_LAYER_GZIP,
                MediaType::OCI_MANIFEST,
            )
        };
        let c = self.add_blob(cmt, config.as_bytes());
        let l = self.add_blob(lmt, layer);
        let mut m = ImageManifest::new(mmt, c);
        m.layers.push(l);
        let mut d = self.add_manifest(m.to_bytes(), mmt);
        d.platform = Some(format!("linux/{arch}").parse().unwrap());
        d
    }
}

#[async_trait]
impl ImageSource for Memory {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        let d = match digest {
            Some(d) => d.clone(),
            None => self.top.lock().unwrap().clone().unwrap(),
        };
        self.manifests
            .lock()
            .unwrap()
            .get(&d)
            .cloned()
            .ok_or(ImageError::NotFound {
                what: d.to_string(),
            })
    }
    async fn blob(&self, d: &Descriptor) -> Result<BlobReader, ImageError> {
        let mut bytes =
            self.blobs
                .lock()
                .unwrap()
                .get(&d.digest)
                .cloned()
                .ok_or(ImageError::NotFound {
                    what: d.digest.to_string(),
                })?;
        if self.corrupt.lock().unwrap().as_ref() == Some(&d.digest) {
            bytes[0] ^= 0xff;
        }
        Ok(Box::pin(std::io::Cursor::new(bytes)))
    }
}

#[async_trait]
impl ImageSink for Memory {
    fn describe(&self) -> String {
        "memory-sink".into()
    }
    async fn reuse_blob(&self, d: &Descriptor, _: Option<&BlobOrigin>) -> Result<bool, ImageError> {
        Ok(self.blobs.lock().unwrap().contains_key(&d.digest))
    }
    async fn put_blob(&self, d: &Descriptor, data: BlobReader) -> Result<(), ImageError> {
        use tokio::io::AsyncReadExt;
        let mut r = strata_image::VerifyingReader::new(data, d)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .await
            .map_err(|e| ImageError::from_io("put", e))?;
        self.log.lock().unwrap().push(format!("blob {}", d.digest));
        self.blobs.lock().unwrap().insert(d.digest.clone(), out);
        Ok(())
    }
    async fn put_blob_from(
        &self,
        d: &Descriptor,
        source: &dyn ImageSource,
    ) -> Result<(), ImageError> {
        if *self.reread.lock().unwrap() {
            use tokio::io::AsyncReadExt;
            let mut first = source.blob(d).await?;
            let mut half = vec![0u8; (d.size_u64().unwrap() as usize / 2).max(1)];
            first
                .read_exact(&mut half)
                .await
                .map_err(|e| ImageError::from_io("first read", e))?;
        }
        let data = source.blob(d).await?;
        self.put_blob(d, data).await
    }
    async fn put_manifest(&self, m: &RawManifest, tag: Option<&str>) -> Result<(), ImageError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("manifest {} {:?}", m.digest, tag));
        self.manifests
            .lock()
            .unwrap()
            .insert(m.digest.clone(), m.clone());
        if let Some(t) = tag {
            self.tags.lock().unwrap().insert(t.into(), m.digest.clone());
        }
        Ok(())
    }
}

fn two_arch_index(src: &Memory, docker: bool) -> Descriptor {
    let a = src.image("amd64", b"layer-amd64-bytes", docker);
    let b = src.image("arm64", b"layer-arm64-bytes-longer", docker);
    let mut i = ImageIndex::new(if docker {
        MediaType::DOCKER_MANIFEST_LIST
    } else {
        MediaType::OCI_INDEX
    });
    i.manifests = vec![a, b];
    let d = src.add_manifest(
        i.to_bytes(),
        if docker {
            MediaType::DOCKER_MANIFEST_LIST
        } else {
            MediaType::OCI_INDEX
        },
    );
    *src.top.lock().unwrap() = Some(d.digest.clone());
    d
}

#[tokio::test]
async fn all_keeps_digest_and_writes_tag_last() {
    let src = Memory::default();
    let top = two_arch_index(&src, false);
    let dst = Memory::default();
    let opts = CopyOptions {
        selection: Selection::All,
        tag: Some("v1".into()),
        ..Default::default()
    };
    let report = copy_image(&src, &dst, &opts).await.unwrap();
    assert_eq!(report.digest, top.digest, "no conversion: digest preserved");
    assert_eq!(dst.tags.lock().unwrap().get("v1"), Some(&top.digest));
    let log = dst.log.lock().unwrap().clone();
    assert_eq!(
        log.len(),
        4 + 3,
        "4 blobs, 2 child manifests, 1 index: {log:?}"
    );
    assert!(
        log[..4].iter().all(|l| l.starts_with("blob")),
        "blobs first: {log:?}"
    );
    assert_eq!(
        log.last().unwrap(),
        &format!("manifest {} Some(\"v1\")", top.digest)
    );
    assert_eq!(report.blobs_copied, 4);
    // copying again skips every blob
    let again = copy_image(&src, &dst, &opts).await.unwrap();
    assert_eq!((again.blobs_copied, again.blobs_skipped), (0, 4));
}

#[derive(Default)]
struct Events(Mutex<Vec<ProgressEvent>>);

impl Progress for Events {
    fn event(&self, event: ProgressEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[tokio::test]
async fn progress_counts_each_byte_once_when_a_blob_is_read_again() {
    let src = Memory::default();
    let layer: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let top = src.image("amd64", &layer, false);
    set_top(&src, &top);
    let dst = Memory::default();
    *dst.reread.lock().unwrap() = true;
    let events = Arc::new(Events::default());
    let options = CopyOptions {
        selection: Selection::All,
        progress: Some(events.clone()),
        ..Default::default()
    };
    copy_image(&src, &dst, &options).await.unwrap();
    let mut counted: HashMap<Digest, u64> = HashMap::new();
    for e in events.0.lock().unwrap().iter() {
        if let ProgressEvent::BlobBytes { digest, bytes } = e {
            *counted.entry(digest.clone()).or_default() += bytes;
        }
    }
    let copied: HashMap<Digest, u64> = dst
        .blobs
        .lock()
        .unwrap()
        .iter()
        .map(|(d, b)| (d.clone(), b.len() as u64))
        .collect();
    assert_eq!(copied.len(), 2, "config and layer");
    assert_eq!(counted, copied, "each blob's bytes reported exactly once");
}

#[tokio::test]
async fn one_platform_copies_that_image_alone() {
    let src = Memory::default();
    two_arch_index(&src, false);
    let dst = Memory::default();
    let want: Platform = "linux/arm64/v8".parse().unwrap();
    let opts = CopyOptions {
        selection: Selection::Platforms(vec![want]),
        tag: Some("t".into()),
        ..Default::default()
    };
    let report = copy_image(&src, &dst, &opts).await.unwrap();
    let raw = dst
        .manifests
        .lock()
        .unwrap()
        .get(&report.digest)
        .cloned()
        .unwrap();
    let Manifest::Image(m) = raw.parse().unwrap() else {
        panic!("expected an image")
    };
    assert_eq!(
        m.layers[0].digest,
        Digest::sha256_of(b"layer-arm64-bytes-longer")
    );
    let missing = CopyOptions {
        selection: Selection::Platforms(vec!["linux/s390x".parse().unwrap()]),
        ..Default::default()
    };
    let err = copy_image(&src, &Memory::default(), &missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[tokio::test]
async fn several_platforms_make_a_smaller_index() {
    let src = Memory::default();
    let top = two_arch_index(&src, false);
    let c = src.image("ppc64le", b"ppc", false);
    let mut i =
        match Manifest::parse(&src.manifests.lock().unwrap()[&top.digest].bytes, None).unwrap() {
            Manifest::Index(i) => i,
            _ => unreachable!(),
        };
    i.manifests.push(c);
    let d = src.add_manifest(i.to_bytes(), MediaType::OCI_INDEX);
    *src.top.lock().unwrap() = Some(d.digest.clone());
    let dst = Memory::default();
    let ps = vec![
        "linux/amd64".parse().unwrap(),
        "linux/ppc64le".parse().unwrap(),
    ];
    let report = copy_image(
        &src,
        &dst,
        &CopyOptions {
            selection: Selection::Platforms(ps),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let raw = dst.manifests.lock().unwrap()[&report.digest].clone();
    let Manifest::Index(out) = raw.parse().unwrap() else {
        panic!()
    };
    let plats: Vec<String> = out
        .manifests
        .iter()
        .map(|d| d.platform.clone().unwrap().to_string())
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/ppc64le"]);
}

#[tokio::test]
async fn converts_oci_to_v2s2_and_rewrites_children() {
    let src = Memory::default();
    two_arch_index(&src, false);
    let dst = Memory::default();
    let opts = CopyOptions {
        selection: Selection::All,
        format: Some(ManifestFormat::V2s2),
        ..Default::default()
    };
    let report = copy_image(&src, &dst, &opts).await.unwrap();
    let manifests = dst.manifests.lock().unwrap().clone();
    let Manifest::Index(i) = manifests[&report.digest].parse().unwrap() else {
        panic!()
    };
    assert_eq!(i.media_type().as_str(), MediaType::DOCKER_MANIFEST_LIST);
    for child in &i.manifests {
        assert_eq!(child.media_type.as_str(), MediaType::DOCKER_MANIFEST);
        let raw = manifests
            .get(&child.digest)
            .expect("child written under its new digest");
        assert_eq!(raw.digest, Digest::sha256_of(&raw.bytes));
        let Manifest::Image(m) = raw.parse().unwrap() else {
            panic!()
        };
        assert_eq!(m.config.media_type.as_str(), MediaType::DOCKER_CONFIG);
        assert_eq!(
            m.layers[0].media_type.as_str(),
            MediaType::DOCKER_LAYER_GZIP
        );
    }
}

#[tokio::test]
async fn corrupt_blob_fails_and_leaves_no_tag() {
    let src = Memory::default();
    two_arch_index(&src, false);
    *src.corrupt.lock().unwrap() = Some(Digest::sha256_of(b"layer-amd64-bytes"));
    let dst = Memory::default();
    let opts = CopyOptions {
        selection: Selection::All,
        tag: Some("v1".into()),
        ..Default::default()
    };
    let err = copy_image(&src, &dst, &opts).await.unwrap_err();
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(chain.contains("digest mismatch"), "{chain}");
    assert!(
        dst.tags.lock().unwrap().is_empty(),
        "no tag after a failed copy"
    );
    assert!(
        !dst.blobs
            .lock()
            .unwrap()
            .contains_key(&Digest::sha256_of(b"layer-amd64-bytes"))
    );
}

// ---------------------------------------------------------------------------------------
// Hostile documents (RELIABILITY §a): each must fail with a clear error and leave the
// destination without a tag.

fn set_top(src: &Memory, d: &Descriptor) {
    *src.top.lock().unwrap() = Some(d.digest.clone());
}

async fn copy_all(
    src: &Memory,
    dst: &Memory,
) -> Result<strata_copy::CopyReport, strata_copy::CopyError> {
    let options = CopyOptions {
        selection: Selection::All,
        tag: Some("t".into()),
        ..Default::default()
    };
    copy_image(src, dst, &options).await
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test]
async fn m1_document_with_manifests_and_layers_is_refused_as_ambiguous() {
    let src = Memory::default();
    let img = src.image("amd64", b"l", false);
    let bytes = format!(
        r#"{{"schemaVersion":2,"manifests":[{}],"config":{},"layers":[]}}"#,
        serde_json::to_string(&img).unwrap(),
        serde_json::to_string(&img).unwrap()
    );
    let d = src.add_manifest(bytes.into_bytes(), MediaType::OCI_INDEX);
    set_top(&src, &d);
    let dst = Memory::default();
    let err = copy_all(&src, &dst).await.unwrap_err();
    let msg = error_chain(&err);
    assert!(msg.contains("ambiguous") || msg.contains("both"), "{msg}");
    assert!(dst.tags.lock().unwrap().is_empty());
}

#[tokio::test]
async fn m5_descriptor_sizes_smaller_larger_or_negative_fail() {
    for size in [-1i64, 1, 1 << 40, 1 << 62] {
        let src = Memory::default();
        let mut d = src.image("amd64", b"some-layer-bytes", false);
        // Rewrite the manifest with a layer descriptor of the wrong size.
        let raw = src.manifest(Some(&d.digest)).await.unwrap();
        let mut m: ImageManifest = serde_json::from_slice(&raw.bytes).unwrap();
        m.layers[0].size = size;
        d = src.add_manifest(m.to_bytes(), MediaType::OCI_MANIFEST);
        set_top(&src, &d);
        let dst = Memory::default();
        let err = copy_all(&src, &dst).await.unwrap_err();
        let msg = error_chain(&err);
        assert!(
            msg.contains("size") || msg.contains("negative"),
            "size {size}: {msg}"
        );
        assert!(dst.tags.lock().unwrap().is_empty(), "size {size}");
        assert!(
            !dst.blobs.lock().unwrap().contains_key(&m.layers[0].digest),
            "size {size}: the layer must not be committed"
        );
    }
}

#[tokio::test]
async fn m8_index_cycles_and_deep_nesting_end_with_an_error() {
    // An index whose only entry is an index whose only entry is … 100 levels.
    let src = Memory::default();
    let mut child = src.image("amd64", b"leaf", false);
    for _ in 0..100 {
        let mut i = ImageIndex::new(MediaType::OCI_INDEX);
        i.manifests = vec![child];
        child = src.add_manifest(i.to_bytes(), MediaType::OCI_INDEX);
    }
    set_top(&src, &child);
    let dst = Memory::default();
    let msg = error_chain(&copy_all(&src, &dst).await.unwrap_err());
    assert!(msg.contains("deeper") || msg.contains("nested"), "{msg}");
    assert!(dst.tags.lock().unwrap().is_empty());

    // An index listing itself cannot be built by content addressing, but a source can lie:
    // serve an index whose entry's digest resolves to the index itself.
    let src = Memory::default();
    let placeholder = Digest::sha256_of(b"self");
    let mut i = ImageIndex::new(MediaType::OCI_INDEX);
    i.manifests = vec![Descriptor::new(
        MediaType::OCI_INDEX,
        placeholder.clone(),
        10,
    )];
    let raw = RawManifest::new(i.to_bytes(), MediaType::new(MediaType::OCI_INDEX));
    src.manifests
        .lock()
        .unwrap()
        .insert(placeholder.clone(), raw.clone());
    src.manifests
        .lock()
        .unwrap()
        .insert(raw.digest.clone(), raw.clone());
    *src.top.lock().unwrap() = Some(raw.digest.clone());
    let dst = Memory::default();
    let msg = error_chain(&copy_all(&src, &dst).await.unwrap_err());
    assert!(!msg.is_empty());
    assert!(dst.tags.lock().unwrap().is_empty());
}

#[tokio::test]
async fn m8_an_index_over_the_entry_limit_is_refused() {
    // (A 1e6-entry index is over the 4 MiB document cap of every transport already; this
    // checks the count limit itself, which applies whatever the size cap.)
    let src = Memory::default();
    let img = src.image("amd64", b"l", false);
    let entry = serde_json::to_string(&img).unwrap();
    let mut bytes = String::from(
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#,
    );
    for n in 0..=strata_spec::MAX_INDEX_ENTRIES {
        if n > 0 {
            bytes.push(',');
        }
        bytes.push_str(&entry);
    }
    bytes.push_str("]}");
    let d = src.add_manifest(bytes.into_bytes(), MediaType::OCI_INDEX);
    set_top(&src, &d);
    let dst = Memory::default();
    let msg = error_chain(&copy_all(&src, &dst).await.unwrap_err());
    assert!(msg.contains("entries") || msg.contains("limit"), "{msg}");
}

#[tokio::test]
async fn m11_schema1_and_unknown_media_types_are_unsupported() {
    let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[{"blobSum":"sha256:00"}],"signatures":[]}"#;
    let unknown = br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json","config":{"mediaType":"a/b","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":3},"layers":[]}"#;
    for (bytes, mt) in [
        (
            &schema1[..],
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        (&unknown[..], "application/vnd.example.thing+json"),
    ] {
        let src = Memory::default();
        let d = src.add_manifest(bytes.to_vec(), mt);
        set_top(&src, &d);
        let dst = Memory::default();
        let msg = error_chain(&copy_all(&src, &dst).await.unwrap_err());
        assert!(msg.to_lowercase().contains("unsupported"), "{mt}: {msg}");
    }
}
