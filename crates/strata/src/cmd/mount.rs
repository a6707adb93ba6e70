//! `strata mount IMAGE DIR`, `strata umount DIR`

use clap::Args;

#[derive(Args, Debug)]
pub struct MountArgs {
    pub image: String,
    pub dir: std::path::PathBuf,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    pub dir: std::path::PathBuf,
}

pub async fn mount(_a: MountArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub async fn umount(_a: UmountArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
