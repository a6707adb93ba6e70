//! A minimal `strata build` stand-in for benchmarks until the CLI wires the engine:
//!
//! ```text
//! cargo run --release -p strata-build --example build -- \
//!     -f CONTAINERFILE -c CONTEXT -o LAYOUT [-t TAG] [--platform P]... [--no-cache] \
//!     [--base NAME=oci:PATH:TAG]... [--zstd] [--source-date-epoch N]
//! ```
//!
//! Prints the result as JSON. Base names resolve through `--base` mappings, then `oci:` names
//! and the local store.

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use strata_build::{
    BaseResolver, BuildOptions, CachePolicy, Compression, ContainerfileSource, LocalResolver,
    Output, build,
};
use strata_image::{ImageError, ImageSource};

struct Resolver {
    map: HashMap<String, String>,
    local: LocalResolver,
}

#[async_trait]
impl BaseResolver for Resolver {
    async fn open(&self, image: &str) -> Result<Box<dyn ImageSource>, ImageError> {
        let name = self.map.get(image).map(String::as_str).unwrap_or(image);
        self.local.open(name).await
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: build -f CONTAINERFILE -c CONTEXT -o LAYOUT [-t TAG] [--platform P]... [--no-cache] [--base NAME=oci:PATH:TAG]... [--zstd] [--source-date-epoch N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut options = BuildOptions::default();
    let mut map = HashMap::new();
    let mut args = std::env::args().skip(1);
    let mut have_file = false;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "-f" => {
                options.containerfile = ContainerfileSource::Path(PathBuf::from(val()));
                have_file = true;
            }
            "-c" => options.context = PathBuf::from(val()),
            "-o" => options.output = Output::Layout(PathBuf::from(val())),
            "-t" => options.tags.push(val()),
            "--platform" => options
                .platforms
                .push(val().parse().unwrap_or_else(|e| panic!("{e}"))),
            "--no-cache" => options.cache = CachePolicy::NoCache,
            "--zstd" => options.compression = Compression::Zstd { level: 3 },
            "--source-date-epoch" => {
                options.source_date_epoch = Some(val().parse().unwrap_or_else(|_| usage()))
            }
            "--base" => {
                let v = val();
                let (k, v) = v.split_once('=').unwrap_or_else(|| usage());
                map.insert(k.to_string(), v.to_string());
            }
            _ => usage(),
        }
    }
    if !have_file {
        options.containerfile = ContainerfileSource::Path(options.context.join("Containerfile"));
    }
    let resolver = Resolver {
        map,
        local: LocalResolver::default(),
    };
    match build(&options, &resolver, None).await {
        Ok(result) => println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        ),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
    }
}
