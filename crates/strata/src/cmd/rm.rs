//! `strata rm` (aliases `delete`, `rmi`): remove tags from the local store or an OCI layout,
//! delete manifests from a registry.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Args;
use strata_copy::ImageName;
use strata_spec::{Descriptor, Reference};
use strata_store::{OciLayout, StoreError};

use crate::cli::RegistryArgs;
use crate::open::{self, Side};
use crate::output;

pub const LONG_ABOUT: &str = "Remove images.\n\n\
NAME[:TAG] or NAME@DIGEST      untag it in the local store (podman rmi)\n\
oci:DIR:TAG                    untag it in an OCI layout\n\
docker://REGISTRY/REPO:TAG     delete the manifest the tag points at, and with it every tag\n\
docker://REGISTRY/REPO@DIGEST  pointing at it, from the registry (skopeo delete)\n\n\
Local blobs stay until `strata gc` frees those no tag refers to any more; a registry frees\n\
blobs with its own garbage collection.";

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Images to remove (see above).
    #[arg(value_name = "IMAGE", required_unless_present = "all")]
    pub images: Vec<String>,
    /// Remove every image of the local store, or of each oci:DIR given.
    #[arg(short, long)]
    pub all: bool,
    /// An image that does not exist is not an error.
    #[arg(short, long)]
    pub ignore: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What happened to one name.
enum Outcome {
    Removed(Vec<String>),
    /// Not there; says where it was looked for.
    Missing(String),
}

pub async fn run(a: RmArgs) -> anyhow::Result<()> {
    if a.all && a.images.is_empty() {
        let removed = remove_every_entry(&open::store_path()?, |t| t.to_string())?;
        report(&removed);
        hint_gc(!removed.is_empty());
        return Ok(());
    }
    let side = Side::new(&a.registry, None, None, None);
    let mut failed = 0;
    let mut untagged_locally = false;
    for image in &a.images {
        match remove_one(image, &a, &side).await {
            Ok(Outcome::Removed(lines)) => {
                untagged_locally |= !image.starts_with("docker://");
                report(&lines);
            }
            Ok(Outcome::Missing(_)) if a.ignore => {}
            Ok(Outcome::Missing(where_)) => {
                failed += 1;
                output::print_error(&anyhow::anyhow!("{image}: no such image {where_}"));
            }
            Err(e) => {
                failed += 1;
                output::print_error(&e.context(format!("removing {image}")));
            }
        }
    }
    hint_gc(untagged_locally);
    if failed > 0 {
        bail!("{failed} of {} images were not removed", a.images.len());
    }
    Ok(())
}

fn report(lines: &[String]) {
    for l in lines {
        outln!("{l}");
    }
}

fn hint_gc(untagged: bool) {
    if untagged {
        eprintln!("note: `strata gc [LAYOUT]` frees the blobs no tag refers to any more");
    }
}

async fn remove_one(image: &str, a: &RmArgs, side: &Side) -> anyhow::Result<Outcome> {
    let name: ImageName = image.parse()?;
    match &name {
        ImageName::Registry(r) => {
            if a.all {
                bail!("--all removes local images only; name each registry image");
            }
            delete_from_registry(r, side).await
        }
        ImageName::Store(r) => {
            if a.all {
                bail!("--all takes no store names (strata rm --all empties the whole store)");
            }
            let path = open::store_path()?;
            let where_ = format!("in the local store ({})", path.display());
            let Some(layout) = open_layout(&path)? else {
                return Ok(Outcome::Missing(where_));
            };
            let tag = strata_store::store_tag(r);
            let removed = layout
                .remove_entries(|d| store_entry_matches(d, r, &tag))
                .with_context(|| format!("local store {}", path.display()))?;
            Ok(outcome(removed, where_, |t| t.to_string()))
        }
        ImageName::OciLayout { path, tag } => {
            let display = format!("oci:{}", path.display());
            if a.all {
                if tag.is_some() {
                    bail!("--all removes every tag of {display}; name the layout without a tag");
                }
                return Ok(Outcome::Removed(remove_every_entry(path, |t| {
                    format!("{display}:{t}")
                })?));
            }
            let Some(tag) = tag else {
                bail!("name the tag to remove ({display}:TAG), or pass --all for every tag");
            };
            let where_ = format!("in the OCI layout {}", path.display());
            let Some(layout) = open_layout(path)? else {
                return Ok(Outcome::Missing(where_));
            };
            let removed = layout
                .remove_entries(|d| d.ref_name() == Some(tag.as_str()))
                .with_context(|| display.clone())?;
            Ok(outcome(removed, where_, |t| format!("{display}:{t}")))
        }
        other => bail!(
            "{other}: strata rm removes from the local store, OCI layouts and registries; \
             delete an archive or directory with rm(1)"
        ),
    }
}

/// `None` when there is no layout at `path` (nothing to remove).
fn open_layout(path: &Path) -> anyhow::Result<Option<OciLayout>> {
    match OciLayout::open(path) {
        Ok(l) => Ok(Some(l)),
        Err(StoreError::NotALayout { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Does the store entry `d` belong to `reference`? By tag (and digest, when both are given);
/// a digest-only name matches every tag of that repository pointing at the digest.
fn store_entry_matches(d: &Descriptor, reference: &Reference, tag: &str) -> bool {
    let Some(name) = d.ref_name() else {
        return false;
    };
    let digest_ok = reference.digest().is_none_or(|want| &d.digest == want);
    if reference.tag().is_some() {
        return name == tag && digest_ok;
    }
    let repository = reference.name();
    let same_repository = name == repository
        || name
            .strip_prefix(repository.as_str())
            .is_some_and(|rest| rest.starts_with(':'));
    same_repository && digest_ok
}

fn outcome(removed: Vec<Descriptor>, where_: String, line: impl Fn(&str) -> String) -> Outcome {
    if removed.is_empty() {
        return Outcome::Missing(where_);
    }
    Outcome::Removed(
        removed
            .iter()
            .map(|d| match d.ref_name() {
                Some(t) => format!("untagged {}", line(t)),
                None => format!("removed untagged entry {}", d.digest),
            })
            .collect(),
    )
}

fn remove_every_entry(path: &Path, line: impl Fn(&str) -> String) -> anyhow::Result<Vec<String>> {
    let Some(layout) = open_layout(path)? else {
        return Ok(Vec::new());
    };
    let removed = layout
        .remove_entries(|_| true)
        .with_context(|| path.display().to_string())?;
    let Outcome::Removed(lines) = outcome(removed, String::new(), line) else {
        return Ok(Vec::new());
    };
    Ok(lines)
}

async fn delete_from_registry(r: &Reference, side: &Side) -> anyhow::Result<Outcome> {
    let client = side.client()?;
    match client.delete_manifest(r).await {
        Ok(digest) => Ok(Outcome::Removed(vec![format!(
            "deleted docker://{}@{digest}",
            r.name()
        )])),
        Err(e) if e.is_not_found() => Ok(Outcome::Missing(format!("on {}", r.registry()))),
        Err(e) => Err(e.into()),
    }
}
