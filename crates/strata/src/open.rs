//! Turning image names into sources and sinks, with the registry settings of one side of a
//! copy (credentials, auth file, TLS).

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use strata_copy::ImageName;
use strata_image::{BlobOrigin, BlobReader, ImageError, ImageSink, ImageSource, RawManifest};
use strata_registry::config::CertDirs;
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
    /// `Some(false)`: plain HTTP and unverified TLS allowed; `Some(true)`: verified TLS even
    /// for hosts the configuration marks insecure; `None`: as configured.
    pub tls_verify: Option<bool>,
    pub retry_times: u32,
    pub max_manifest_size: u64,
    /// `--cert-dir`: certificates for every registry of this side, instead of certs.d.
    pub cert_dir: Option<PathBuf>,
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
            retry_times: shared
                .retry_times
                .filter(|n| *n > 0)
                .or(crate::config::settings()
                    .retry_times
                    .as_ref()
                    .map(|s| s.value))
                .unwrap_or(crate::config::DEFAULT_RETRY_TIMES),
            max_manifest_size: shared.max_manifest_size,
            cert_dir: shared.cert_dir.clone(),
        }
    }

    /// This side's own `--src-cert-dir` / `--dest-cert-dir`, when given, beats `--cert-dir`.
    pub fn with_cert_dir(mut self, cert_dir: Option<&Path>) -> Side {
        if let Some(d) = cert_dir {
            self.cert_dir = Some(d.to_path_buf());
        }
        self
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

/// Parse `USER[:PASSWORD]` (skopeo's `--creds`). Without `:PASSWORD` the password is asked
/// for on the terminal, without echo, once per user name for the whole command; when stdin
/// is not a terminal that is an error saying how to pass it.
pub fn parse_creds(value: &str) -> anyhow::Result<Credentials> {
    let (username, password) = match value.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (value, None),
    };
    anyhow::ensure!(
        !username.is_empty(),
        "--creds: the user name is empty (expected USER[:PASSWORD])"
    );
    let password = match password {
        Some(p) => p.to_string(),
        None => prompted_password(username)?,
    };
    Ok(Credentials {
        username: username.to_string(),
        password,
    })
}

/// Passwords asked for so far, by user name (source and destination may share one).
static PROMPTED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn prompted_password(username: &str) -> anyhow::Result<String> {
    let mut prompted = PROMPTED
        .lock()
        .map_err(|_| anyhow::anyhow!("password prompt state poisoned"))?;
    if let Some((_, p)) = prompted.iter().find(|(u, _)| u == username) {
        return Ok(p.clone());
    }
    anyhow::ensure!(
        crate::terminal::can_prompt(),
        "--creds {username}: no password, and standard input is not a terminal to ask on; pass --creds {username}:PASSWORD, or store it with `strata login --password-stdin`"
    );
    let password = crate::terminal::read_secret(&format!("Password for {username}: "))?;
    prompted.push((username.to_string(), password.clone()));
    Ok(password)
}

impl Side {
    /// Registry client options for this side.
    pub fn registry_options(&self) -> anyhow::Result<RegistryOptions> {
        let mut options = RegistryOptions {
            tls: match self.tls_verify {
                Some(false) => TlsMode::Insecure,
                Some(true) => TlsMode::VerifyAlways,
                None => TlsMode::Verify,
            },
            registries: crate::config::registries()?,
            ..RegistryOptions::default()
        };
        if let Some(dir) = &self.cert_dir {
            options.cert_dirs = CertDirs::Flat(dir.clone());
        }
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

/// Open `name` for reading (a bare name: the store only; `crate::resolve` applies the
/// whole rule).
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
        // Staging is noted in the store, so `strata gc` finds it should this process be
        // killed (best effort: without a usable store only the next copy there removes it).
        ImageName::OciArchive { path, .. } => Box::new(match strata_store::default_store() {
            Ok(store) => OciArchiveSink::create_noted_in(path, &store)?,
            Err(_) => OciArchiveSink::create(path)?,
        }),
        ImageName::DockerArchive { path, reference } => {
            Box::new(match strata_store::default_store() {
                Ok(store) => DockerArchiveSink::create_noted_in(path, reference.as_ref(), &store)?,
                Err(_) => DockerArchiveSink::create(path, reference.as_ref())?,
            })
        }
        ImageName::Dir { path } => Box::new(DirSink::create(path)?),
        ImageName::Store(_) => Box::new(LayoutSink::to_store()?),
    };
    Ok(sink)
}
