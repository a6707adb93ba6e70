use std::fmt;
use std::path::PathBuf;

use strata_archive::ArchiveError;
use strata_image::ImageError;
use strata_spec::{DiffId, Digest, Platform};
use strata_store::StoreError;

/// A place in a Containerfile: `Containerfile:12`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// The Containerfile's name as the user gave it.
    pub file: String,
    /// 1-based line of the instruction.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Every failure of a build. Variants name the Containerfile line, the path, the image or the
/// digest at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Containerfile does not parse.
    #[error("{file}:{}: {}: {}", source.line, source.message, source.text)]
    Parse {
        file: String,
        #[source]
        source: strata_containerfile::ParseError,
    },
    /// A word of an instruction cannot be expanded (`${V:?msg}`, bad `${`).
    #[error("{at}: {source}")]
    Expand {
        at: Location,
        #[source]
        source: strata_containerfile::ExpandError,
    },
    /// An instruction that is well-formed but cannot be carried out as written.
    #[error("{at}: {instruction}: {message}")]
    Instruction {
        at: Location,
        instruction: String,
        message: String,
    },
    /// `RUN` needs the sandbox executor, which this build was not given.
    #[error("{at}: RUN is not supported yet (no RUN executor in this build): {instruction}")]
    RunNotSupported { at: Location, instruction: String },
    /// `RUN` cannot execute for a Windows target on this host.
    #[error("{at}: RUN cannot run for the Windows target {platform}: {instruction}")]
    RunOnWindows {
        at: Location,
        platform: Box<Platform>,
        instruction: String,
    },
    /// A COPY/ADD source that matches nothing.
    #[error("{at}: {what} {path:?} not found{hint}")]
    SourceNotFound {
        at: Location,
        what: &'static str,
        path: String,
        hint: String,
    },
    /// A COPY/ADD source that climbs out of the build context (`../x`).
    #[error("{at}: source {path:?} is outside the build context")]
    OutsideContext { at: Location, path: String },
    /// An explicitly named COPY/ADD source that `.dockerignore` excludes.
    #[error("{at}: source {path:?} is excluded by {ignore_file} and cannot be copied")]
    Ignored {
        at: Location,
        path: String,
        ignore_file: String,
    },
    /// A `--from` names no stage and cannot be meant as an image: a stage number out of
    /// range, not a valid image name, or a near miss of a stage name (`buidler`).
    #[error("{at}: no stage {name:?} (stages: {available}){suggestion}")]
    UnknownStage {
        at: Location,
        name: String,
        available: String,
        /// `; did you mean …?` with how to name an image of that name, or empty.
        suggestion: String,
    },
    /// An empty (or unset) variable made a path empty or put `//` in it
    /// (`/build/$OS/$ARCH/app` → `/build/linux//app`): almost always a missing `--build-arg`.
    #[error("{at}: {message}")]
    EmptyVariable {
        at: Location,
        /// The variable's name.
        name: String,
        /// Which ARG/ENV, the word, what it expanded to, what to do.
        message: String,
    },
    #[error("target stage {target:?} not found (stages: {available})")]
    TargetNotFound { target: String, available: String },
    #[error("{at}: stage {stage:?} depends on itself")]
    StageCycle { at: Location, stage: String },
    /// The base image has no entry for the wanted platform.
    #[error("base image {image}: no image for platform {wanted} (available: {available})")]
    PlatformNotFound {
        image: String,
        wanted: Box<Platform>,
        available: String,
    },
    /// Several entries of a base index match the wanted platform and nothing tells them apart.
    #[error(
        "base image {image}: platform {wanted} matches several images ({candidates}); name one, e.g. --platform {example}"
    )]
    AmbiguousPlatform {
        image: String,
        wanted: Box<Platform>,
        candidates: String,
        example: String,
    },
    /// A layer's content does not hash to the DiffId its image config declares (a corrupt
    /// or lying image, found while extracting it for RUN).
    #[error(
        "layer {digest}: the image config declares DiffId {expected} but its content hashes to {actual}"
    )]
    DiffIdMismatch {
        digest: Box<Digest>,
        expected: Box<DiffId>,
        actual: Box<DiffId>,
    },
    /// A base or `--from` image cannot be read.
    #[error("image {image}: {context}")]
    Image {
        image: String,
        context: String,
        #[source]
        source: Box<ImageError>,
    },
    /// The output layout or the build cache's store failed.
    #[error("{context}")]
    Store {
        context: String,
        #[source]
        source: Box<StoreError>,
    },
    /// Writing or reading layer bytes failed.
    #[error("{context}")]
    Archive {
        context: String,
        #[source]
        source: Box<ArchiveError>,
    },
    /// A filesystem operation on `path` failed.
    #[error("{path}: {context}")]
    Io {
        path: PathBuf,
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `ADD <url>` could not be fetched.
    #[error("{at}: ADD {url}: {reason}")]
    Fetch {
        at: Location,
        url: String,
        reason: String,
    },
    /// `ADD --checksum` does not match what the URL served (nothing was committed).
    #[error("{at}: ADD {url}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        at: Location,
        url: String,
        expected: Digest,
        actual: Digest,
    },
    /// `--chown` names a user or group the stage's `/etc/passwd` / `/etc/group` lacks.
    #[error("{at}: --chown {spec}: {reason}")]
    UnknownOwner {
        at: Location,
        spec: String,
        reason: String,
    },
    /// A build option is invalid or contradicts another one.
    #[error("invalid build option {option}: {reason}")]
    InvalidOption { option: String, reason: String },
    /// Two platform-scoped values apply to one platform and neither scope is more specific
    /// (`-f windows:10.0.17763=A -f windows/amd64=B` for `windows/amd64:10.0.17763`).
    #[error(
        "platform {platform}: {given} all apply and none is more specific; scope one of them to the platform"
    )]
    AmbiguousScope {
        platform: Box<Platform>,
        given: String,
    },
    /// A platform-scoped value whose pattern matches none of the build's platforms.
    #[error("{given}: its platform pattern matches none of the platforms built ({platforms})")]
    UnmatchedScope { given: String, platforms: String },
    /// A platform is in two groups of one build (two build-file targets).
    #[error("platform {platform} is built by both {first} and {second}")]
    PlatformInTwoGroups {
        platform: Box<Platform>,
        first: String,
        second: String,
    },
    /// A build file (`strata build --build-file`) is unreadable or invalid.
    #[error("build file {path}: {reason}")]
    BuildFile { path: PathBuf, reason: String },
    /// A build-arg file line is not `KEY=VALUE`.
    #[error("{path}:{line}: build-arg file lines must be KEY=VALUE: {text:?}")]
    BuildArgFile {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// The build cache holds something it should not (corrupt entry).
    #[error("build cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    /// Copying the result to another destination failed.
    #[error("pushing the build result: {source}")]
    Push {
        #[source]
        source: Box<strata_copy::CopyError>,
    },
    /// A RUN step failed: it exited non-zero (`exit_code`), was killed, or could not be
    /// started. `output` holds its last lines of output.
    #[error("{at}: {instruction}: {message}{}", output_suffix(.output))]
    Run {
        at: Location,
        instruction: String,
        message: String,
        exit_code: Option<i32>,
        output: Vec<String>,
    },
    /// The build was interrupted (Ctrl-C / SIGTERM, [`crate::CancelFlag`]).
    #[error("the build was interrupted")]
    Interrupted,
    /// A layer decompresses to more than the cap on uncompressed content.
    #[error("layer {digest}: uncompressed content exceeds {limit} bytes ({origin})")]
    LayerTooLarge {
        digest: Box<Digest>,
        limit: u64,
        /// Which cap: the default or `--max-uncompressed`.
        origin: String,
    },
    /// The image config would exceed [`strata_spec::MAX_CONFIG_BYTES`], which registries'
    /// clients (containers/image, strata) refuse to read; `at` names the step that made it
    /// grow past the limit when it is known.
    #[error(
        "{}{what}: the image config would be larger than {limit} bytes, more than \
         registries' clients read (MAX_CONFIG_BYTES): too many steps, or too large ENV/LABEL \
         values",
        .at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default()
    )]
    ConfigTooLarge {
        at: Option<Location>,
        /// The stage or image (platform) whose config it is.
        what: String,
        limit: u64,
    },
    /// An internal task died (a panic in a blocking section).
    #[error("internal error: {0}")]
    Internal(String),
}

impl BuildError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        context: impl Into<String>,
        e: std::io::Error,
    ) -> Self {
        BuildError::Io {
            path: path.into(),
            context: context.into(),
            source: e,
        }
    }
    pub(crate) fn store(context: impl Into<String>, source: StoreError) -> Self {
        BuildError::Store {
            context: context.into(),
            source: Box::new(source),
        }
    }
    pub(crate) fn archive(context: impl Into<String>, source: ArchiveError) -> Self {
        BuildError::Archive {
            context: context.into(),
            source: Box::new(source),
        }
    }
    pub(crate) fn image(
        image: impl Into<String>,
        context: impl Into<String>,
        source: ImageError,
    ) -> Self {
        BuildError::Image {
            image: image.into(),
            context: context.into(),
            source: Box::new(source),
        }
    }
    pub(crate) fn instruction(
        at: &Location,
        instruction: &str,
        message: impl Into<String>,
    ) -> Self {
        BuildError::Instruction {
            at: at.clone(),
            instruction: instruction.to_string(),
            message: message.into(),
        }
    }
    /// The Containerfile line this error is about, when it is about one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            BuildError::Expand { at, .. }
            | BuildError::Instruction { at, .. }
            | BuildError::RunNotSupported { at, .. }
            | BuildError::RunOnWindows { at, .. }
            | BuildError::SourceNotFound { at, .. }
            | BuildError::OutsideContext { at, .. }
            | BuildError::Ignored { at, .. }
            | BuildError::UnknownStage { at, .. }
            | BuildError::EmptyVariable { at, .. }
            | BuildError::StageCycle { at, .. }
            | BuildError::Fetch { at, .. }
            | BuildError::ChecksumMismatch { at, .. }
            | BuildError::UnknownOwner { at, .. }
            | BuildError::Run { at, .. } => Some(at),
            BuildError::ConfigTooLarge { at, .. } => at.as_ref(),
            _ => None,
        }
    }
}

fn output_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = String::from("\nlast output:");
    for l in lines {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

/// An error and its sources, `: `-separated (the text a wrapped error would otherwise lose).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(x) = source {
        s.push_str(": ");
        s.push_str(&x.to_string());
        source = x.source();
    }
    s
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> BuildError {
    BuildError::Internal(format!("build task failed: {e}"))
}
