//! Throughput of the layer pipeline on a directory: write a layer (tar + DiffId +
//! compression + digest) from it, then extract that layer into an empty directory.
//!
//! `cargo run --release -p strata-archive --example layer_bench -- DIR [gzip:N|zstd:N|none] [WORKERS]`
//! (bench/archive.sh runs it next to `tar | gzip -1`, `tar | pigz -1` and `tar -x`).

use std::path::PathBuf;
use std::time::Instant;

use strata_archive::{
    Compression, ExtractOptions, LayerReader, LayerWriter, TarBuilder, TarOptions, Threading,
    extract_layer, write_tree,
};
use strata_spec::Algorithm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: layer_bench DIR [gzip:N|zstd:N|none] [WORKERS]")?,
    );
    let compression = match args.next().as_deref().unwrap_or("gzip:1") {
        "none" => Compression::None,
        s if s.starts_with("gzip:") => Compression::Gzip {
            level: s[5..].parse()?,
        },
        s if s.starts_with("zstd:") => Compression::Zstd {
            level: s[5..].parse()?,
        },
        s => return Err(format!("unknown compression {s}").into()),
    };
    let workers: usize = match args.next() {
        Some(w) => w.parse()?,
        None => strata_archive::default_workers(),
    };
    // STRATA_BENCH_TMP: where the layer and the extracted tree go (tmpfs measures CPU
    // cost; a disk measures the disk).
    let out_dir = match std::env::var_os("STRATA_BENCH_TMP") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let layer_path = out_dir.path().join("layer");

    let start = Instant::now();
    let file = std::fs::File::create(&layer_path)?;
    let mut tar = TarBuilder::new(
        LayerWriter::with_workers(file, compression, workers)?,
        TarOptions::default(),
    );
    write_tree(&dir, "", &mut tar)?;
    let (info, file) = tar.finish()?.finish()?;
    file.sync_all()?;
    let write = start.elapsed().as_secs_f64();
    let mib = info.uncompressed_size as f64 / (1 << 20) as f64;
    println!(
        "write   {compression:?} workers={workers}: {mib:.0} MiB tar -> {:.0} MiB in {write:.2} s = {:.0} MiB/s  digest {}",
        info.size as f64 / (1 << 20) as f64,
        mib / write,
        info.digest
    );

    let root = out_dir.path().join("rootfs");
    std::fs::create_dir(&root)?;
    let start = Instant::now();
    let mut reader = LayerReader::new(
        std::fs::File::open(&layer_path)?,
        compression.layer_compression(),
        Algorithm::Sha256,
        Threading::DecoderThread,
    )?;
    let mode = std::env::var("STRATA_BENCH_THREADS").unwrap_or_default();
    let stats = if mode == "same" {
        let mut same = LayerReader::new(
            std::fs::File::open(&layer_path)?,
            compression.layer_compression(),
            Algorithm::Sha256,
            Threading::SameThread,
        )?;
        let stats = extract_layer(&mut same, &root, &ExtractOptions::default())?;
        same.finish()?;
        stats
    } else {
        extract_layer(&mut reader, &root, &ExtractOptions::default())?
    };
    let digests = reader.finish()?;
    let extract = start.elapsed().as_secs_f64();
    assert_eq!(digests.digest, info.digest);
    assert_eq!(digests.diff_id, info.diff_id);
    println!(
        "extract {} entries, {mib:.0} MiB in {extract:.2} s = {:.0} MiB/s (digest and DiffId verified)",
        stats.entries,
        mib / extract
    );
    Ok(())
}
