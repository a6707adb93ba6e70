//! One rule for what an image name means, used by every command that reads an image
//! (copy, inspect, unpack, mount, manifest create/add/annotate/inspect, build `FROM`).
//!
//! - A name with a transport (`docker://…`, `oci:…`, `oci-archive:…`, `docker-archive:…`,
//!   `dir:…`) means exactly that.
//! - A bare `NAME[:TAG][@DIGEST]` is the local store's image when the store has that tag,
//!   else the registry image `docker://NAME`. A short name (no registry host: `busybox`,
//!   `user/app`) is looked up in the store as strata stores it (`docker.io/library/busybox`),
//!   then through [`ShortNames`]: an alias, else each unqualified-search registry in order.
//!   Names under `localhost/` never reach a registry.
//! - As a destination a bare name always means the local store (see `open::sink`).
//!
//! A failed lookup is a [`NotFound`] listing every place tried, with suggestions (the tags
//! the store and the registry do have, a near-miss, `oci:PATH` for a layout directory).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use async_trait::async_trait;
use strata_copy::ImageName;
use strata_image::{BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSource, RawManifest};
use strata_spec::{DOCKER_HUB_REGISTRY, Descriptor, Digest, MAX_MANIFEST_BYTES, Reference};
use strata_store::{LayoutSource, OciLayout, store_tag};

use crate::open::{self, Side};

/// Tags shown in a not-found hint, at most (a registry may have thousands).
const MAX_SUGGESTED_TAGS: usize = 10;
/// Edit distance up to which a store tag counts as a near-miss of the name asked for.
const MAX_NEAR_MISS_DISTANCE: usize = 2;
/// The registry host that only ever means this machine's store (as in podman).
const LOCAL_ONLY_REGISTRY: &str = "localhost";

/// How short names (no registry host) reach a registry: registries.conf's
/// `[aliases]` and `unqualified-search-registries`. The default is Docker's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortNames {
    /// Short name (`busybox`, `user/app`, without tag) → fully qualified repository.
    pub aliases: BTreeMap<String, String>,
    /// Registries a short name is tried at, in order.
    pub search_registries: Vec<String>,
}

impl Default for ShortNames {
    fn default() -> Self {
        ShortNames {
            aliases: BTreeMap::new(),
            search_registries: vec![DOCKER_HUB_REGISTRY.to_string()],
        }
    }
}

/// The short-name settings commands use: the effective registries.conf's `[aliases]` and
/// `unqualified-search-registries` (Docker Hub when it names none). A registries.conf that
/// cannot be read is reported by the first registry request, which loads it too.
pub fn short_names() -> ShortNames {
    let Ok(conf) = crate::config::registries() else {
        return ShortNames::default();
    };
    let settings = conf.short_names();
    let mut names = ShortNames {
        aliases: settings.aliases,
        ..ShortNames::default()
    };
    if !settings.search_registries.is_empty() {
        names.search_registries = settings.search_registries;
    }
    names
}

/// Where a bare name may be looked up (`strata build --pull` chooses; other commands use
/// [`Lookup::StoreThenRegistry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lookup {
    /// The store when it has the tag, else the registry.
    #[default]
    StoreThenRegistry,
    /// Only the local store.
    StoreOnly,
    /// Only the registry.
    RegistryOnly,
}

/// A name opened for reading: the name actually used (a bare name becomes the store's tag
/// or `docker://…`), its source, and its top document (already fetched and checked against
/// the digest the name gives).
pub struct Resolved {
    pub name: ImageName,
    pub source: Box<dyn ImageSource>,
    pub top: RawManifest,
}

impl Resolved {
    /// The source, answering `manifest(None)` with the top document already read.
    pub fn into_source(self) -> Box<dyn ImageSource> {
        Box::new(WithTop {
            inner: self.source,
            top: self.top,
        })
    }
}

struct WithTop {
    inner: Box<dyn ImageSource>,
    top: RawManifest,
}

#[async_trait]
impl ImageSource for WithTop {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        match digest {
            None => Ok(self.top.clone()),
            Some(d) if *d == self.top.digest => Ok(self.top.clone()),
            Some(d) => self.inner.manifest(Some(d)).await,
        }
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        self.inner.blob(descriptor).await
    }
    fn origin(&self) -> Option<BlobOrigin> {
        self.inner.origin()
    }
    fn blob_replay(&self) -> BlobReplay {
        self.inner.blob_replay()
    }
}

/// A name that was looked up everywhere it may be, and found nowhere.
#[derive(Debug)]
pub struct NotFound {
    pub name: String,
    /// One entry per place tried, with why it was not there.
    pub tried: Vec<String>,
    /// Likely fixes, each a sentence.
    pub suggestions: Vec<String>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image {} not found: {}",
            self.name,
            self.tried.join("; ")
        )
    }
}

impl std::error::Error for NotFound {}

impl NotFound {
    /// The suggestions as one hint line, if there are any.
    pub fn hint(&self) -> Option<String> {
        (!self.suggestions.is_empty()).then(|| self.suggestions.join("; "))
    }
}

/// Does `text` (a bare name) name its registry? `busybox`, `user/app:1` do not;
/// `quay.io/app`, `host:5000/app`, `localhost/app` do.
fn is_qualified(text: &str) -> bool {
    match text.split_once('/') {
        Some((first, _)) => {
            first.contains('.')
                || first.contains(':')
                || first == LOCAL_ONLY_REGISTRY
                || first.starts_with('[')
        }
        None => false,
    }
}

/// `text` split into the repository part and the `:tag` / `@digest` suffix as written.
fn split_suffix(text: &str) -> (&str, &str) {
    let without_digest = text.split_once('@').map(|(n, _)| n).unwrap_or(text);
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let end = without_digest[last_slash..]
        .rfind(':')
        .map(|i| last_slash + i)
        .unwrap_or(without_digest.len());
    (&text[..end], &text[end..])
}

/// The references a bare name may mean: in the local store, and at registries.
fn candidates(
    text: &str,
    given: &Reference,
    short_names: &ShortNames,
) -> anyhow::Result<(Vec<Reference>, Vec<Reference>)> {
    if is_qualified(text) {
        let registry = if given.registry() == LOCAL_ONLY_REGISTRY {
            vec![]
        } else {
            vec![given.clone()]
        };
        return Ok((vec![given.clone()], registry));
    }
    let (repository, suffix) = split_suffix(text);
    let registry: Vec<Reference> = match short_names.aliases.get(repository) {
        Some(alias) => vec![
            format!("{alias}{suffix}")
                .parse()
                .with_context(|| format!("short-name alias {repository:?} = {alias:?}"))?,
        ],
        None => short_names
            .search_registries
            .iter()
            .map(|r| {
                format!("{r}/{text}")
                    .parse::<Reference>()
                    .with_context(|| format!("{text} qualified with search registry {r:?}"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    // What `strata build -t NAME` / `strata copy X NAME` store a short name as comes first.
    let mut store = vec![given.clone()];
    for r in &registry {
        if !store.iter().any(|s| store_tag(s) == store_tag(r)) {
            store.push(r.clone());
        }
    }
    Ok((store, registry))
}

/// Open `text` for reading by the rule above, and read its top document.
pub async fn resolve(
    text: &str,
    side: &Side,
    short_names: &ShortNames,
    lookup: Lookup,
) -> anyhow::Result<Resolved> {
    let name: ImageName = match text.parse() {
        Ok(n) => n,
        Err(e) => {
            return Err(match layout_suggestion(text) {
                Some(s) => NotFound {
                    name: text.to_string(),
                    tried: vec![e.to_string()],
                    suggestions: vec![s],
                }
                .into(),
                None => e.into(),
            });
        }
    };
    let ImageName::Store(given) = &name else {
        return open_named(name, side).await;
    };
    let (store_refs, registry_refs) = candidates(text, given, short_names)?;
    // `--pull always` cannot apply to a name no registry serves (localhost/…).
    let lookup = if registry_refs.is_empty() && lookup == Lookup::RegistryOnly {
        Lookup::StoreThenRegistry
    } else {
        lookup
    };
    let mut tried = Vec::new();
    let mut suggestions = Vec::new();
    let store_path = open::store_path()?;
    let layout = OciLayout::open(&store_path).ok();
    if lookup != Lookup::RegistryOnly {
        for r in &store_refs {
            let tag = store_tag(r);
            match layout.as_ref().map(|l| store_lookup(l, &tag)) {
                Some(StoreHit::Image) => {
                    let layout = layout.clone().context("store layout")?;
                    let source: Box<dyn ImageSource> =
                        Box::new(LayoutSource::new(layout, Some(&tag), tag.clone()));
                    return finish(ImageName::Store(r.clone()), source).await;
                }
                Some(StoreHit::ReferenceList) => tried.push(format!(
                    "the local store ({}) has only a manifest list made by an older `strata manifest create` as {tag} (run `strata manifest inspect {tag}` to move it aside)",
                    store_path.display()
                )),
                Some(StoreHit::Missing) => tried.push(format!(
                    "not in the local store ({}) as {tag}",
                    store_path.display()
                )),
                None => tried.push(format!(
                    "not in the local store ({}: no store there yet)",
                    store_path.display()
                )),
            }
        }
        if let Some(layout) = &layout {
            suggestions.extend(store_suggestions(layout, &store_refs));
        }
    }
    if lookup == Lookup::StoreOnly {
        if let Some(r) = registry_refs.first() {
            suggestions.push(format!(
                "did you mean docker://{r}? (--pull never keeps bare names in the local store)"
            ));
        }
    } else {
        if registry_refs.is_empty() {
            tried.push(if given.registry() == LOCAL_ONLY_REGISTRY {
                "names under localhost/ are never looked up in a registry".to_string()
            } else {
                "no unqualified-search registries are configured: name the registry".to_string()
            });
        }
        for r in &registry_refs {
            let registry_name = ImageName::Registry(r.clone());
            match open_named(registry_name.clone(), side).await {
                Ok(found) => return Ok(found),
                Err(e) => {
                    tried.push(format!("not at {registry_name}: {}", root_cause(&e)));
                    if is_not_found(&e)
                        && let Some(s) = registry_tags(r, side).await
                    {
                        suggestions.push(s);
                    }
                }
            }
        }
    }
    if let Some(s) = layout_suggestion(text) {
        suggestions.push(s);
    }
    Err(NotFound {
        name: text.to_string(),
        tried,
        suggestions,
    }
    .into())
}

/// Open a name that says where it is, read its top document and check it against the digest
/// the name gives.
async fn open_named(name: ImageName, side: &Side) -> anyhow::Result<Resolved> {
    let source = open::source(&name, side).await?;
    finish(name, source).await
}

async fn finish(name: ImageName, source: Box<dyn ImageSource>) -> anyhow::Result<Resolved> {
    let top = source
        .manifest(None)
        .await
        .with_context(|| format!("reading {name}"))?;
    if let Some(d) = open::name_digest(&name) {
        anyhow::ensure!(
            top.digest == d,
            "{name}: content has digest {}, not the one named",
            top.digest
        );
    }
    Ok(Resolved { name, source, top })
}

enum StoreHit {
    Image,
    /// An index with entries missing from the store: a list `strata manifest create` kept
    /// here before lists got their own layout (reading it as an image fails on its blobs;
    /// what strata copies or builds into the store always has every entry).
    ReferenceList,
    Missing,
}

fn store_lookup(layout: &OciLayout, tag: &str) -> StoreHit {
    let Ok(descriptor) = layout.resolve(Some(tag)) else {
        return StoreHit::Missing;
    };
    if descriptor.media_type.is_index() && is_reference_list(layout, &descriptor) {
        return StoreHit::ReferenceList;
    }
    StoreHit::Image
}

/// Is the index `descriptor` in `layout` a list of references (an entry is not there)?
pub fn is_reference_list(layout: &OciLayout, descriptor: &Descriptor) -> bool {
    let Ok(bytes) = layout.read_blob(&descriptor.digest, MAX_MANIFEST_BYTES) else {
        return false;
    };
    let Ok(index) = serde_json::from_slice::<strata_spec::ImageIndex>(&bytes) else {
        return false;
    };
    !index.manifests.is_empty()
        && index
            .manifests
            .iter()
            .any(|d| !layout.has_blob(&d.digest, None))
}

/// The store's other tags of the same repositories, and near-misses of the names asked for.
fn store_suggestions(layout: &OciLayout, wanted: &[Reference]) -> Vec<String> {
    let Ok(entries) = layout.list() else {
        return Vec::new();
    };
    let tags: Vec<String> = entries.into_iter().filter_map(|(t, _)| t).collect();
    let mut out = Vec::new();
    for r in wanted {
        let prefix = format!("{}:", r.name());
        let same: Vec<&str> = tags
            .iter()
            .filter_map(|t| t.strip_prefix(&prefix))
            .take(MAX_SUGGESTED_TAGS)
            .collect();
        if !same.is_empty() {
            out.push(format!(
                "the local store has {} with tag(s) {}",
                r.name(),
                same.join(", ")
            ));
        }
    }
    if out.is_empty() {
        let near: Vec<&str> = tags
            .iter()
            .filter(|t| {
                wanted
                    .iter()
                    .any(|r| strata_spec::edit_distance(t, &store_tag(r)) <= MAX_NEAR_MISS_DISTANCE)
            })
            .map(String::as_str)
            .take(MAX_SUGGESTED_TAGS)
            .collect();
        if !near.is_empty() {
            out.push(format!("did you mean {}?", near.join(" or ")));
        }
    }
    out
}

/// The tags the registry has for `r`'s repository, as a suggestion (one request).
async fn registry_tags(r: &Reference, side: &Side) -> Option<String> {
    let tags = side.client().ok()?.tags(r).await.ok()?;
    if tags.is_empty() {
        return None;
    }
    let shown: Vec<&str> = tags
        .iter()
        .take(MAX_SUGGESTED_TAGS)
        .map(String::as_str)
        .collect();
    let more = if tags.len() > shown.len() {
        format!(" (and {} more)", tags.len() - shown.len())
    } else {
        String::new()
    };
    Some(format!(
        "docker://{} has tag(s) {}{more}",
        r.name(),
        shown.join(", ")
    ))
}

/// `oci:PATH` when `text` is the path of an OCI layout directory.
fn layout_suggestion(text: &str) -> Option<String> {
    Path::new(text)
        .join("oci-layout")
        .is_file()
        .then(|| format!("{text} is an OCI layout directory: did you mean oci:{text}?"))
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ImageError>()
            .is_some_and(ImageError::is_not_found)
            || matches!(
                c.downcast_ref::<strata_registry::RegistryError>(),
                Some(strata_registry::RegistryError::NotFound { .. })
            )
    })
}

/// The innermost message of an error chain (the outer ones repeat the name).
fn root_cause(e: &anyhow::Error) -> String {
    e.chain()
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(refs: &[Reference]) -> Vec<String> {
        refs.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn qualified_short_and_local_names() {
        let d = ShortNames::default();
        let c = |t: &str, s: &ShortNames| candidates(t, &t.parse().unwrap(), s).unwrap();
        let (store, registry) = c("127.0.0.1:5000/app:v1", &d);
        assert_eq!(names(&store), ["127.0.0.1:5000/app:v1"]);
        assert_eq!(names(&registry), ["127.0.0.1:5000/app:v1"]);
        let (store, registry) = c("busybox:1.36", &d);
        assert_eq!(names(&store), ["docker.io/library/busybox:1.36"]);
        assert_eq!(names(&registry), ["docker.io/library/busybox:1.36"]);
        let (_, registry) = c("localhost/app:v1", &d);
        assert!(registry.is_empty());
        let mut s = ShortNames {
            aliases: BTreeMap::new(),
            search_registries: vec!["quay.io".into(), "docker.io".into()],
        };
        let (store, registry) = c("user/app:2", &s);
        assert_eq!(
            names(&store),
            ["docker.io/user/app:2", "quay.io/user/app:2"]
        );
        assert_eq!(
            names(&registry),
            ["quay.io/user/app:2", "docker.io/user/app:2"]
        );
        s.aliases.insert(
            "busybox".into(),
            "registry.example.com/mirror/busybox".into(),
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let (_, registry) = c(&format!("busybox@{digest}"), &s);
        assert_eq!(
            names(&registry),
            [format!("registry.example.com/mirror/busybox@{digest}")]
        );
    }

    #[test]
    fn distances() {
        assert_eq!(strata_spec::edit_distance("busybox", "busybox"), 0);
        assert_eq!(strata_spec::edit_distance("busybx", "busybox"), 1);
        assert_eq!(strata_spec::edit_distance("app:v1", "app:v2"), 1);
        assert_eq!(strata_spec::edit_distance("", "abc"), 3);
        assert_eq!(split_suffix("host:5000/a/b:t"), ("host:5000/a/b", ":t"));
        assert_eq!(split_suffix("a"), ("a", ""));
    }
}
