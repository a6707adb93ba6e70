//! Manual benchmark: `cargo run --release -p strata-registry --example copy_to_layout --
//! 127.0.0.1:5000/bench/big:latest /tmp/layout [plain|insecure]` copies a registry image into
//! an OCI layout through strata-copy and prints the time (compare with `skopeo copy`).

use std::time::Instant;

use strata_registry::{Client, RegistryOptions, TlsMode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(reference), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: copy_to_layout HOST/REPO:TAG DIR");
        std::process::exit(2);
    };
    let reference = reference.parse()?;
    let client = Client::new(RegistryOptions {
        tls: TlsMode::Insecure,
        ..RegistryOptions::default()
    })?;
    let start = Instant::now();
    let source = client.source(&reference).await?;
    let sink = strata_store::LayoutSink::create(dir.as_ref())?;
    let report = strata_copy::copy_image(
        &source,
        &sink,
        &strata_copy::CopyOptions {
            tag: Some("latest".into()),
            ..Default::default()
        },
    )
    .await?;
    println!(
        "{} blobs, {} bytes in {:.2}s",
        report.blobs_copied,
        report.bytes_copied,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
