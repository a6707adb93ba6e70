//! `strata repack BUNDLE IMAGE`

use clap::Args;

#[derive(Args, Debug)]
pub struct RepackArgs {
    pub bundle: std::path::PathBuf,
    pub image: String,
}

pub async fn run(_a: RepackArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
