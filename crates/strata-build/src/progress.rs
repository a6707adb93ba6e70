//! Build events for a live progress view.

use serde::Serialize;
use strata_spec::{Digest, Platform};

/// Where a layer of the result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerOrigin {
    /// A layer of the base image, reused as is.
    Base,
    /// Produced by this build.
    Built,
    /// Found in the build cache.
    Cached,
    /// Produced by another platform of this build (identical content, one blob).
    Shared,
}

/// One thing that happened during a build. `platform` is the target platform the event
/// belongs to; `stage` the stage name (or index); `step` the 1-based instruction number in
/// its stage.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BuildEvent {
    /// A base image is being resolved.
    BaseResolving { platform: Platform, image: String },
    /// The base's platform manifest was chosen.
    BaseResolved {
        platform: Platform,
        image: String,
        manifest: Digest,
    },
    StepStarted {
        platform: Platform,
        stage: String,
        step: usize,
        steps: usize,
        line: usize,
        instruction: String,
    },
    /// The step's key was found in the build cache: nothing was read or produced.
    StepCached {
        platform: Platform,
        stage: String,
        step: usize,
        layer: Option<Digest>,
        origin: LayerOrigin,
    },
    /// The step finished; `layer` is its layer, if it makes one, and `origin` where that
    /// layer came from (built now, the same content found in the cache, or produced by
    /// another platform of this build).
    StepDone {
        platform: Platform,
        stage: String,
        step: usize,
        layer: Option<Digest>,
        size: u64,
        origin: Option<LayerOrigin>,
    },
    /// Uncompressed bytes written into a layer so far (sent every few MiB).
    LayerBytes {
        platform: Platform,
        stage: String,
        step: usize,
        bytes: u64,
    },
    /// A line of a RUN step's output (stdout and stderr interleaved), while it runs. Lines
    /// longer than [`crate::MAX_OUTPUT_LINE_BYTES`] are cut into pieces.
    RunOutput {
        platform: Platform,
        stage: String,
        step: usize,
        line: String,
    },
    /// A platform's image manifest was written.
    ImageWritten {
        platform: Platform,
        manifest: Digest,
    },
    /// Something the user should know that is not an error (unused build args, …).
    Warning { message: String },
}

/// Receives [`BuildEvent`]s (the CLI draws its progress view from them). Called from many
/// tasks and threads; must not block.
pub trait BuildProgress: Send + Sync {
    fn event(&self, event: BuildEvent);
}
