//! Reproducibility and the build cache: same inputs → same digests (also after deleting the
//! cache), all-hit rebuilds, a touched file rebuilds from the first step reading it, no-cache,
//! prune, and keys that never trust a layer's own claims (M15).

mod common;

use common::*;
use strata_build::{CachePolicy, PruneKeep, PruneOptions, default_cache_dir, prune_cache};

const CF: &str = "FROM test/busybox:amd64\n\
                  COPY a /a\n\
                  ENV X=1\n\
                  COPY b /b\n\
                  COPY dir /dir\n\
                  LABEL done=yes\n";

fn context() -> Ctx {
    let c = Ctx::new();
    c.file("a", b"a\n");
    c.file("b", b"b\n");
    c.file("dir/one", b"1\n");
    c.file("dir/two", b"2\n");
    c
}

#[tokio::test]
async fn reproducible_digests_across_runs_and_after_deleting_the_cache() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = context();
    let mut o = c.options(CF);
    o.source_date_epoch = Some(1_700_000_000);
    o.containerfile = strata_build::ContainerfileSource::Text {
        text: CF.replace("busybox:amd64", "multi"),
        name: "Containerfile".into(),
    };
    o.platforms = vec![
        "linux/amd64".parse().unwrap(),
        "linux/arm64".parse().unwrap(),
    ];
    let (first, _) = run_build(&o, &r).await.unwrap();
    let (second, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(second.digest, first.digest);
    assert_eq!(events.step_counts().0, 0, "second run is all cache hits");
    std::fs::remove_dir_all(default_cache_dir(&c.out())).unwrap();
    let (third, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(third.digest, first.digest, "same digest from scratch");
    assert!(events.step_counts().0 > 0, "rebuilt without the cache");
    // Into a brand-new layout too.
    o.output = strata_build::Output::Layout(c.dir.path().join("fresh"));
    let (fresh, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(fresh.digest, first.digest);
    // History and created are clamped; base history untouched.
    let config = config_of(
        &first.layout,
        &manifest_of(&first.layout, &first.images[0].manifest),
    );
    assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(config.history[0].created, None, "base history kept as is");
    assert!(
        config.history[1..]
            .iter()
            .all(|h| h.created.as_deref() == Some("2023-11-14T22:13:20Z"))
    );
    // New files' mtimes are clamped to SOURCE_DATE_EPOCH only when newer.
    let mut newer = c.options("FROM scratch\nCOPY a /a\n");
    newer.source_date_epoch = Some(1_600_000_000);
    let (clamped, _) = run_build(&newer, &r).await.unwrap();
    assert_eq!(layer_entries(&clamped, 0, 0)[0].mtime, 1_600_000_000);
}

#[tokio::test]
async fn without_epoch_layers_still_reproduce() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = context();
    let o = c.options(CF);
    let (first, _) = run_build(&o, &r).await.unwrap();
    std::fs::remove_dir_all(default_cache_dir(&c.out())).unwrap();
    let (second, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        layer_digests(&first),
        layer_digests(&second),
        "layer bytes depend on the context only"
    );
}

#[tokio::test]
async fn touching_a_file_rebuilds_from_the_first_step_reading_it() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = context();
    let o = c.options(CF);
    let (first, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(events.step_counts(), (3, 0));
    let (_, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        events.step_counts(),
        (0, 3),
        "nothing changed: every step hits"
    );
    // Touch b (content unchanged, mtime changes): COPY a still hits, COPY b and COPY dir rebuild.
    set_mtime(&c.ctx().join("b"), 1_650_000_100);
    let (second, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(events.step_counts(), (2, 1));
    assert_eq!(
        second.images[0].layers[1].digest,
        first.images[0].layers[1].digest
    );
    assert_ne!(
        second.images[0].layers[2].digest,
        first.images[0].layers[2].digest
    );
    // COPY dir rebuilt (its parent changed) but its content is the same blob.
    assert_eq!(
        second.images[0].layers[3].digest,
        first.images[0].layers[3].digest
    );
    // Same size and mtime but new content (the stat identity still changes: ctime).
    std::fs::write(c.ctx().join("dir/two"), b"3\n").unwrap();
    set_mtime(&c.ctx().join("dir/two"), 1_650_000_000);
    let (third, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(events.step_counts(), (1, 2));
    assert_eq!(find(&layer_entries(&third, 0, 3), "dir/two").data, b"3\n");
    // An ENV change invalidates the steps after it.
    let (_, events) = run_build(&c.options(&CF.replace("X=1", "X=2")), &r)
        .await
        .unwrap();
    assert_eq!(events.step_counts(), (2, 1));
    // No-cache rebuilds everything (and still produces the same layers).
    let mut nc = c.options(CF);
    nc.cache = CachePolicy::NoCache;
    let (fourth, events) = run_build(&nc, &r).await.unwrap();
    assert_eq!(events.step_counts(), (3, 0));
    assert_eq!(fourth.images[0].layers, {
        let mut l = third.images[0].layers.clone();
        for x in l.iter_mut().skip(1) {
            x.origin = strata_build::LayerOrigin::Built;
        }
        l
    });
}

#[tokio::test]
async fn changing_the_base_rebuilds_everything_and_prune_empties_the_cache() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = context();
    run_build(&c.options(CF), &r).await.unwrap();
    let (_, events) = run_build(&c.options(&CF.replace("busybox:amd64", "two-layers")), &r)
        .await
        .unwrap();
    assert_eq!(
        events.step_counts().1,
        0,
        "a different base manifest is a different chain"
    );
    let cache = default_cache_dir(&c.out());
    let kept = prune_cache(
        &cache,
        &PruneOptions {
            keep: PruneKeep::UsedWithin(std::time::Duration::from_secs(3600)),
            layout: Some(c.out()),
        },
    )
    .unwrap();
    assert_eq!(kept.entries_removed, 0);
    assert!(kept.entries_kept > 0);
    let report = prune_cache(&cache, &PruneOptions::default()).unwrap();
    assert_eq!(report.entries_removed, kept.entries_kept);
    let (_, events) = run_build(&c.options(CF), &r).await.unwrap();
    assert_eq!(events.step_counts().1, 0, "pruned: nothing hits");
}

#[tokio::test]
async fn m15_keys_do_not_trust_a_base_claiming_another_layers_diff_id() {
    // Two bases with the same config diff_ids claim but different layer bytes: the cache must
    // not reuse a step across them (keys come from the manifest digest strata computes).
    let bases = bases();
    let layout = &bases.layout;
    let amd64: strata_spec::Platform = "linux/amd64".parse().unwrap();
    let honest = tar_of(&[T::File("etc/who", b"honest\n".to_vec(), 0o644)]);
    let liar_bytes = tar_of(&[T::File("etc/who", b"liar!!\n".to_vec(), 0o644)]);
    let h = write_image(
        layout,
        &amd64,
        std::slice::from_ref(&honest),
        busybox_runtime(),
        vec![serde_json::json!({})],
    );
    tag_image(layout, &h, "honest");
    // The liar's config claims the honest layer's DiffId.
    let liar_layer = layout
        .write_blob_bytes(strata_spec::MediaType::OCI_LAYER_GZIP, &gzip(&liar_bytes))
        .unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [strata_spec::Digest::sha256_of(&honest).to_string()]},
        "history": [{}]
    }))
    .unwrap();
    let config = layout
        .write_blob_bytes(strata_spec::MediaType::OCI_CONFIG, &config)
        .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": strata_spec::MediaType::OCI_MANIFEST,
        "config": config, "layers": [liar_layer]
    }))
    .unwrap();
    let m = layout
        .write_blob_bytes(strata_spec::MediaType::OCI_MANIFEST, &manifest)
        .unwrap();
    layout.set_tag(Some("liar"), &m).unwrap();
    let mut r = MapResolver::with_bases(&bases);
    for t in ["honest", "liar"] {
        r.names
            .insert(format!("test/{t}"), (bases.path(), t.into()));
    }
    let c = context();
    let cf = "FROM test/honest\nCOPY --from=test/honest /etc/who /who\n";
    let (honest_result, _) = run_build(&c.options(cf), &r).await.unwrap();
    assert_eq!(
        find(&layer_entries(&honest_result, 0, -1), "who").data,
        b"honest\n"
    );
    let events = std::sync::Arc::new(Events::default());
    // (Not validated: the liar's base layer does not match the DiffId it claims.)
    let liar = strata_build::build(
        &c.options(&cf.replace("honest", "liar")),
        &r,
        Some(events.clone() as std::sync::Arc<dyn strata_build::BuildProgress>),
    )
    .await
    .unwrap();
    assert_eq!(
        events.step_counts(),
        (1, 0),
        "no cache hit across the lying base"
    );
    assert_eq!(find(&layer_entries(&liar, 0, -1), "who").data, b"liar!!\n");
}
