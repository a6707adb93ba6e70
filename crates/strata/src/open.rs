//! Turning image names into sources and sinks, with the registry settings of one side of a
//! copy (credentials, auth file, TLS).

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use strata_copy::ImageName;
use strata_image::{BlobOrigin, BlobReader, ImageError, ImageSink, ImageSource, RawManifest};
use strata_registry::{Client, CredentialSource, Credentials, RegistryOptions, TlsMode};
use strata_spec::{Descriptor, Digest, Reference};
use strata_store::{
    DirSink, DirSource, DockerArchiveSink, DockerArchiveSource, LayoutSink, LayoutSource,
    OciArchiveSink, OciArchiveSource,
};

use crate::cli::RegistryArgs;

/// Registry settings for one side (source or destination) of an operation.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub creds: Option<String>,
    pub authfile: Option<PathBuf>,
    /// `Some(false)`: plain HTTP and unverified TLS allowed.
    pub tls_verify: Option<bool>,
    /// `--cert-dir`: trusted CAs and a client certificate.
    pub cert_dir: Option<PathBuf>,
    pub retry_times: u32,
    pub max_manifest_size: u64,
}

impl Side {
    /// Per-side flags win over the shared ones.
    pub fn new(
        shared: &RegistryArgs,
        creds: Option<&str>,
        authfile: Option<&Path>,
        tls_verify: Option<bool>,
    ) -> Side {
        Side {
            creds: creds.map(str::to_string).or_else(|| shared.creds.clone()),
            authfile: authfile
                .map(Path::to_path_buf)
                .or_else(|| shared.authfile.clone()),
            tls_verify: tls_verify.or(shared.tls_verify),
            cert_dir: shared.cert_dir.clone(),
            retry_times: if shared.retry_times == 0 {
                5
            } else {
                shared.retry_times
            },
            max_manifest_size: shared.max_manifest_size,
        }
    }
}

/// The name the top-level document gets at a destination.
pub fn destination_tag(name: &ImageName) -> Option<String> {
    match name {
        ImageName::Registry(r) => r.tag().map(str::to_string),
        ImageName::OciLayout { tag, .. } | ImageName::OciArchive { tag, .. } => tag.clone(),
        ImageName::DockerArchive { reference, .. } => reference.as_ref().map(|r| r.to_string()),
        ImageName::Dir { .. } => None,
        ImageName::Store(r) => Some(store_tag(r)),
    }
}

/// The tag an image of the local store is kept under: the full normalised reference.
pub fn store_tag(r: &Reference) -> String {
    strata_store::store_tag(r)
}

/// The digest a name pins, if any.
pub fn name_digest(name: &ImageName) -> Option<Digest> {
    match name {
        ImageName::Registry(r) | ImageName::Store(r) => r.digest().cloned(),
        _ => None,
    }
}

/// A source opened at a digest: `manifest(None)` returns the manifest with that digest.
struct AtDigest {
    inner: Box<dyn ImageSource>,
    digest: Digest,
}

#[async_trait]
impl ImageSource for AtDigest {
    fn describe(&self) -> String {
        format!("{}@{}", self.inner.describe(), self.digest)
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        self.inner
            .manifest(Some(digest.unwrap_or(&self.digest)))
            .await
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        self.inner.blob(descriptor).await
    }
    fn origin(&self) -> Option<BlobOrigin> {
        self.inner.origin()
    }
    fn blob_replay(&self) -> strata_image::BlobReplay {
        self.inner.blob_replay()
    }
}

/// Open `name` so that its top document is the manifest `digest`.
pub async fn source_at_digest(
    name: &ImageName,
    digest: &Digest,
    side: &Side,
) -> anyhow::Result<Box<dyn ImageSource>> {
    if let ImageName::Registry(r) = name {
        return source(&ImageName::Registry(r.with_digest(digest.clone())), side).await;
    }
    let inner = source(name, side).await?;
    Ok(Box::new(AtDigest {
        inner,
        digest: digest.clone(),
    }))
}

/// Parse `USER[:PASSWORD]` (skopeo's `--creds`); a missing password is an empty one.
pub fn parse_creds(value: &str) -> anyhow::Result<Credentials> {
    let (username, password) = value.split_once(':').unwrap_or((value, ""));
    anyhow::ensure!(
        !username.is_empty(),
        "--creds: the user name is empty (expected USER[:PASSWORD])"
    );
    Ok(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

impl Side {
    /// Registry client options for this side.
    pub fn registry_options(&self) -> anyhow::Result<RegistryOptions> {
        let mut options = RegistryOptions::default();
        if self.tls_verify == Some(false) {
            options.tls = TlsMode::Insecure;
        }
        options.cert_dir = self.cert_dir.clone();
        options.credentials = match (&self.creds, &self.authfile) {
            (Some(c), _) => CredentialSource::Explicit(parse_creds(c)?),
            (None, Some(path)) => CredentialSource::AuthFile(path.clone()),
            (None, None) => CredentialSource::Default,
        };
        options.retry.max_attempts = self.retry_times.max(1);
        if self.max_manifest_size > 0 {
            options.max_manifest_bytes = self.max_manifest_size;
        }
        options.user_agent = concat!("strata/", env!("CARGO_PKG_VERSION")).to_string();
        Ok(options)
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.registry_options()?)?)
    }
}

/// Where the local store is.
pub fn store_path() -> anyhow::Result<PathBuf> {
    Ok(strata_store::default_store_path()?)
}

/// Remove `reference`'s tag from the local store (its blobs go at the next `strata gc`).
pub fn remove_store_tag(reference: &Reference) -> anyhow::Result<()> {
    let layout = strata_store::default_store()?;
    layout.remove_tag(&store_tag(reference))?;
    Ok(())
}

/// Open `name` for reading.
/// Open `name` for reading and fetch its top manifest, checking it against the digest the
/// name gives (if any).
pub async fn source_and_top(
    name: &ImageName,
    side: &Side,
) -> anyhow::Result<(Box<dyn ImageSource>, RawManifest)> {
    let source = source(name, side).await?;
    let top = source
        .manifest(None)
        .await
        .with_context(|| format!("reading {name}"))?;
    if let Some(d) = name_digest(name) {
        anyhow::ensure!(
            top.digest == d,
            "{name}: content has digest {}, not the one named",
            top.digest
        );
    }
    Ok((source, top))
}

pub async fn source(name: &ImageName, side: &Side) -> anyhow::Result<Box<dyn ImageSource>> {
    let source: Box<dyn ImageSource> = match name {
        ImageName::Registry(r) => Box::new(
            side.client()?
                .source(r)
                .await
                .with_context(|| format!("opening {name}"))?,
        ),
        ImageName::OciLayout { path, tag } => Box::new(LayoutSource::open(path, tag.as_deref())?),
        ImageName::OciArchive { path, tag } => {
            let (path, tag) = (path.clone(), tag.clone());
            Box::new(
                tokio::task::spawn_blocking(move || OciArchiveSource::open(&path, tag.as_deref()))
                    .await??,
            )
        }
        ImageName::DockerArchive { path, reference } => {
            let (path, reference) = (path.clone(), reference.clone());
            Box::new(
                tokio::task::spawn_blocking(move || {
                    DockerArchiveSource::open(&path, reference.as_ref())
                })
                .await??,
            )
        }
        ImageName::Dir { path } => Box::new(DirSource::open(path)?),
        ImageName::Store(r) => {
            let path = store_path()?;
            let layout = strata_store::OciLayout::open(&path)
                .with_context(|| format!("{r} is not in the local store ({}); pull it with `strata copy docker://{r} {r}`", path.display()))?;
            let tag = store_tag(r);
            Box::new(LayoutSource::new(layout, Some(&tag), tag.clone()))
        }
    };
    Ok(source)
}

/// Open `name` for writing.
pub async fn sink(name: &ImageName, side: &Side) -> anyhow::Result<Box<dyn ImageSink>> {
    let sink: Box<dyn ImageSink> = match name {
        ImageName::Registry(r) => Box::new(
            side.client()?
                .sink(r)
                .await
                .with_context(|| format!("opening {name}"))?,
        ),
        ImageName::OciLayout { path, .. } => Box::new(LayoutSink::create(path)?),
        ImageName::OciArchive { path, .. } => Box::new(OciArchiveSink::create(path)?),
        ImageName::DockerArchive { path, reference } => {
            Box::new(DockerArchiveSink::create(path, reference.as_ref())?)
        }
        ImageName::Dir { path } => Box::new(DirSink::create(path)?),
        ImageName::Store(_) => Box::new(LayoutSink::to_store()?),
    };
    Ok(sink)
}
