//! `strata manifest create|add|annotate|remove|inspect|push`
//!
//! A list lives in its own OCI layout inside the store (`manifest-lists/`), tagged with the
//! list's full name: never in the image namespace, so a list named like an image does not
//! shadow that image for `inspect`, `copy` or `FROM`. Its entries are only references: the
//! images stay where they are, and `push` copies each entry (by digest) to the destination
//! before writing the list. Where each entry came from is kept beside the store in
//! `manifest-sources.json` (digest → image name). A list an older strata kept among the
//! images (an index whose entries are not in the store) is moved here when first used.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use strata_copy::{CopyOptions, ImageName, Selection, copy_image};
use strata_image::RawManifest;
use strata_spec::{
    Descriptor, Digest, ImageIndex, MAX_MANIFEST_BYTES, Manifest, MediaType, Platform, Reference,
};
use strata_store::{OciLayout, store_tag};

use crate::cli::{
    ListFormat, ManifestAddArgs, ManifestAnnotateArgs, ManifestCommand, ManifestCreateArgs,
    ManifestInspectArgs, ManifestPushArgs, ManifestRemoveArgs, OutputFormat, PlatformFields,
    RegistryArgs,
};
use crate::cmd::inspect::read_config;
use crate::open::{self, Side};
use crate::output::print_json;
use crate::progress::Bars;
use crate::resolve::{Lookup, is_reference_list, resolve, short_names};

const SOURCES_FILE: &str = "manifest-sources.json";
/// The layout of manifest lists, inside the store directory.
const LISTS_DIR: &str = "manifest-lists";

pub async fn run(c: ManifestCommand) -> anyhow::Result<()> {
    match c {
        ManifestCommand::Create(a) => create(a).await,
        ManifestCommand::Add(a) => add(a).await,
        ManifestCommand::Annotate(a) => annotate(a).await,
        ManifestCommand::Remove(a) => remove(a).await,
        ManifestCommand::Inspect(a) => inspect(a).await,
        ManifestCommand::Push(a) => push(a).await,
    }
}

fn list_name(list: &str) -> anyhow::Result<Reference> {
    list.parse::<Reference>()
        .with_context(|| format!("manifest list name {list:?}"))
}

fn sources_path() -> anyhow::Result<PathBuf> {
    Ok(open::store_path()?.join(SOURCES_FILE))
}

fn load_sources() -> anyhow::Result<BTreeMap<String, String>> {
    let p = sources_path()?;
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save_sources(map: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let p = sources_path()?;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(map)?)?;
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}

fn lists_layout() -> anyhow::Result<OciLayout> {
    let path = open::store_path()?.join(LISTS_DIR);
    OciLayout::create_or_open(&path).with_context(|| format!("opening {}", path.display()))
}

/// The list `name` (its descriptor and bytes), if there is one. A list an older strata kept
/// in the image store is moved to the lists layout first.
fn find_list(name: &Reference) -> anyhow::Result<Option<RawManifest>> {
    let tag = store_tag(name);
    let lists = lists_layout()?;
    let descriptor = match lists.resolve(Some(&tag)) {
        Ok(d) => d,
        Err(_) => match move_old_list(&lists, &tag)? {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    let bytes = lists.read_blob(&descriptor.digest, MAX_MANIFEST_BYTES)?;
    Ok(Some(RawManifest {
        bytes,
        media_type: descriptor.media_type,
        digest: descriptor.digest,
    }))
}

/// Move the reference-only index tagged `tag` in the image store into `lists`.
fn move_old_list(lists: &OciLayout, tag: &str) -> anyhow::Result<Option<Descriptor>> {
    let Ok(store) = OciLayout::open(&open::store_path()?) else {
        return Ok(None);
    };
    let Ok(old) = store.resolve(Some(tag)) else {
        return Ok(None);
    };
    if !old.media_type.is_index() || !is_reference_list(&store, &old) {
        return Ok(None);
    }
    let bytes = store.read_blob(&old.digest, MAX_MANIFEST_BYTES)?;
    let _guard = lists.writer_guard()?;
    let moved = lists.write_blob_bytes(old.media_type.as_str(), &bytes)?;
    lists.set_tag(Some(tag), &moved)?;
    store.remove_tag(tag)?;
    eprintln!(
        "note: moved manifest list {tag} out of the image store into {}",
        lists.root().display()
    );
    Ok(Some(moved))
}

async fn load_list(name: &Reference) -> anyhow::Result<ImageIndex> {
    let Some(raw) = find_list(name)? else {
        let hint = match OciLayout::open(&open::store_path()?)
            .map(|s| s.resolve(Some(&store_tag(name))))
        {
            Ok(Ok(_)) => format!(
                "; the local store has an image {name}: start a list from it with `strata manifest create {name} {name}`"
            ),
            _ => " (create it with `strata manifest create`)".to_string(),
        };
        bail!(
            "manifest list {name} not found in {}{hint}",
            lists_layout()?.root().display()
        );
    };
    match raw.parse()? {
        Manifest::Index(i) => Ok(i),
        Manifest::Image(_) => bail!("{name} is an image, not a manifest list"),
    }
}

async fn save_list(name: &Reference, index: &ImageIndex) -> anyhow::Result<Digest> {
    let bytes = index.to_bytes();
    let lists = lists_layout()?;
    let _guard = lists.writer_guard()?;
    let descriptor = lists.write_blob_bytes(index.media_type().as_str(), &bytes)?;
    lists.set_tag(Some(&store_tag(name)), &descriptor)?;
    Ok(descriptor.digest)
}

fn same_platform(a: &Platform, b: &Platform) -> bool {
    let (a, b) = (a.normalised(), b.normalised());
    a.os == b.os
        && a.architecture == b.architecture
        && a.variant == b.variant
        && a.os_version == b.os_version
}

fn apply_fields(d: &mut Descriptor, f: &PlatformFields) -> anyhow::Result<()> {
    let p = d.platform.get_or_insert_with(Platform::default);
    if let Some(v) = &f.os {
        p.os = v.clone();
    }
    if let Some(v) = &f.arch {
        p.architecture = v.clone();
    }
    if let Some(v) = &f.variant {
        p.variant = Some(v.clone()).filter(|v| !v.is_empty());
    }
    if let Some(v) = &f.os_version {
        p.os_version = Some(v.clone()).filter(|v| !v.is_empty());
    }
    if !f.os_features.is_empty() {
        p.os_features = f.os_features.clone();
    }
    for a in &f.annotation {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--annotation {a:?}: expected KEY=VALUE"))?;
        d.annotations.insert(k.to_string(), v.to_string());
    }
    Ok(())
}

/// Insert `entry`, replacing an entry with the same digest or the same platform (`--amend`).
fn upsert(index: &mut ImageIndex, entry: Descriptor) {
    index.manifests.retain(|d| {
        d.digest != entry.digest
            && !matches!((&d.platform, &entry.platform), (Some(a), Some(b)) if same_platform(a, b))
    });
    index.manifests.push(entry);
}

/// The entries an image name contributes: one per image (platform from its config), or every
/// entry of an index.
async fn entries_for(
    image: &str,
    registry: &RegistryArgs,
    sources: &mut BTreeMap<String, String>,
) -> anyhow::Result<Vec<Descriptor>> {
    let side = Side::new(registry, None, None, None);
    let resolved = resolve(image, &side, &short_names(), Lookup::default()).await?;
    let (name, source, top) = (resolved.name, resolved.source, resolved.top);
    let mut out = Vec::new();
    match top.parse()? {
        Manifest::Index(i) => {
            for d in i.manifests {
                if d.media_type.is_manifest() {
                    sources.insert(d.digest.to_string(), name.to_string());
                    out.push(d);
                }
            }
        }
        Manifest::Image(m) => {
            let (_, config) = read_config(source.as_ref(), &m.config).await?;
            let mut d = top.descriptor();
            let mut p = config.platform();
            if p.os.is_empty() || p.architecture.is_empty() {
                bail!("{name}: its config has no os/architecture; set them with --os/--arch");
            }
            p.os_features = config.os_features.clone();
            d.platform = Some(p);
            sources.insert(d.digest.to_string(), name.to_string());
            out.push(d);
        }
    }
    Ok(out)
}

async fn create(a: ManifestCreateArgs) -> anyhow::Result<()> {
    let name = list_name(&a.list)?;
    let mut index = match (a.amend, load_list(&name).await) {
        (true, Ok(existing)) => existing,
        _ => ImageIndex::new(match a.format {
            ListFormat::Oci => MediaType::OCI_INDEX,
            ListFormat::V2s2 => MediaType::DOCKER_MANIFEST_LIST,
        }),
    };
    let mut sources = load_sources()?;
    for image in &a.images {
        for d in entries_for(image, &a.registry, &mut sources).await? {
            check_kind(&index, &d, image)?;
            upsert(&mut index, d);
        }
    }
    save_sources(&sources)?;
    outln!("{}", save_list(&name, &index).await?);
    Ok(())
}

fn check_kind(index: &ImageIndex, d: &Descriptor, image: &str) -> anyhow::Result<()> {
    if index.media_type().as_str() == MediaType::DOCKER_MANIFEST_LIST && !d.media_type.is_docker() {
        bail!(
            "{image} is an OCI manifest; a Docker manifest list can only hold Docker manifests (create the list with --format oci, or copy the image with --format v2s2 first)"
        );
    }
    Ok(())
}

async fn add(a: ManifestAddArgs) -> anyhow::Result<()> {
    let name = list_name(&a.list)?;
    let mut index = load_list(&name).await?;
    let mut sources = load_sources()?;
    for image in &a.images {
        for mut d in entries_for(image, &a.registry, &mut sources).await? {
            apply_fields(&mut d, &a.platform)?;
            check_kind(&index, &d, image)?;
            upsert(&mut index, d);
        }
    }
    save_sources(&sources)?;
    outln!("{}", save_list(&name, &index).await?);
    Ok(())
}

/// The entry `entry` names: a digest, a platform (matched as `--platform` matches:
/// `linux/arm64/v8` = `linux/arm64`, `windows/amd64:10.0.17763` = `…:10.0.17763.1757`), or
/// an image whose digest is in the list.
async fn find_entry(
    list: &Reference,
    index: &ImageIndex,
    entry: &str,
    registry: &RegistryArgs,
) -> anyhow::Result<usize> {
    let entries = || Descriptor::platform_list(&index.manifests);
    if let Ok(d) = entry.parse::<Digest>() {
        return index
            .manifests
            .iter()
            .position(|m| m.digest == d)
            .with_context(|| format!("no entry {d} in the list {list} (entries: {})", entries()));
    }
    if let Ok(p) = entry.parse::<Platform>()
        && strata_spec::KNOWN_OSES.contains(&p.os.as_str())
    {
        let matching: Vec<usize> = (0..index.manifests.len())
            .filter(|&i| {
                index.manifests[i]
                    .platform
                    .as_ref()
                    .is_some_and(|have| p.matches(have))
            })
            .collect();
        return match matching.as_slice() {
            [i] => Ok(*i),
            [] => bail!(
                "no entry for platform {p} in the list {list} (entries: {})",
                entries()
            ),
            several => bail!(
                "platform {p} matches {} entries of the list {list}: {}; name one by digest or with its full platform (os.version)",
                several.len(),
                Descriptor::platform_list(several.iter().map(|&i| &index.manifests[i]))
            ),
        };
    }
    let side = Side::new(registry, None, None, None);
    let digest = resolve(entry, &side, &short_names(), Lookup::default())
        .await?
        .top
        .digest;
    index
        .manifests
        .iter()
        .position(|m| m.digest == digest)
        .with_context(|| {
            format!(
                "{entry} ({digest}) is not in the list {list} (entries: {})",
                entries()
            )
        })
}

async fn annotate(a: ManifestAnnotateArgs) -> anyhow::Result<()> {
    let name = list_name(&a.list)?;
    let mut index = load_list(&name).await?;
    let i = find_entry(&name, &index, &a.entry, &a.registry).await?;
    apply_fields(&mut index.manifests[i], &a.platform)?;
    outln!("{}", save_list(&name, &index).await?);
    Ok(())
}

async fn remove(a: ManifestRemoveArgs) -> anyhow::Result<()> {
    let name = list_name(&a.list)?;
    let mut index = load_list(&name).await?;
    let i = find_entry(&name, &index, &a.entry, &RegistryArgs::default()).await?;
    index.manifests.remove(i);
    outln!("{}", save_list(&name, &index).await?);
    Ok(())
}

async fn inspect(a: ManifestInspectArgs) -> anyhow::Result<()> {
    let list = match a.list.parse::<ImageName>() {
        Ok(ImageName::Store(r)) => find_list(&r)?,
        _ => None,
    };
    let bytes = match list {
        Some(raw) => raw.bytes,
        None => {
            let side = Side::new(&a.registry, None, None, None);
            resolve(&a.list, &side, &short_names(), Lookup::default())
                .await?
                .top
                .bytes
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)?;
    print_json(&value)
}

async fn push(a: ManifestPushArgs) -> anyhow::Result<()> {
    let name = list_name(&a.list)?;
    let index = load_list(&name).await?;
    let sources = load_sources()?;
    let destination: ImageName = match &a.destination {
        Some(d) => d.parse()?,
        None => ImageName::Registry(name.clone()),
    };
    let side = Side::new(&a.registry, None, None, None);
    let sink = open::sink(&destination, &side).await?;
    let progress = Bars::new_if_terminal(a.quiet || a.format == OutputFormat::Json);
    for entry in &index.manifests {
        let origin = sources.get(&entry.digest.to_string()).with_context(|| {
            format!(
                "entry {} has no recorded source image; add it again with `strata manifest add`",
                entry.digest
            )
        })?;
        let origin: ImageName = origin.parse()?;
        let source = open::source_at_digest(&origin, &entry.digest, &side).await?;
        let options = CopyOptions {
            selection: Selection::All,
            tag: None,
            expected_digest: Some(entry.digest.clone()),
            progress: progress.clone(),
            ..Default::default()
        };
        copy_image(source.as_ref(), sink.as_ref(), &options)
            .await
            .with_context(|| format!("pushing entry {} from {origin}", entry.digest))?;
    }
    let raw = RawManifest::new(index.to_bytes(), index.media_type());
    sink.put_manifest(&raw, open::destination_tag(&destination).as_deref())
        .await
        .with_context(|| format!("pushing list to {destination}"))?;
    sink.finish().await?;
    if a.purge {
        lists_layout()?.remove_tag(&store_tag(&name))?;
    }
    match a.format {
        OutputFormat::Json => print_json(&serde_json::json!({
            "destination": destination.to_string(),
            "digest": raw.digest.to_string(),
            "manifests": index.manifests.len(),
        }))?,
        OutputFormat::Text => outln!("{}", raw.digest),
    }
    Ok(())
}
