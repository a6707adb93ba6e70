//! Progress bars for copies: one bar per blob on a terminal, nothing when piped.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_copy::{Progress, ProgressEvent};
use strata_spec::Digest;

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    /// Bars on stderr if it is a terminal and `quiet` is off; `None` otherwise.
    pub fn new_if_terminal(quiet: bool) -> Option<std::sync::Arc<dyn Progress>> {
        if quiet || !crate::output::stderr_is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        Some(std::sync::Arc::new(Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        }))
    }
}

fn short(d: &Digest) -> String {
    d.encoded().chars().take(12).collect()
}

impl Progress for Bars {
    fn event(&self, event: ProgressEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            ProgressEvent::BlobStarted { digest, size } => {
                let bar = self.multi.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "{prefix:.bold} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style.progress_chars("=> "));
                bar.set_prefix(format!("blob {}", short(&digest)));
                bars.insert(digest, bar);
            }
            ProgressEvent::BlobBytes { digest, bytes } => {
                if let Some(b) = bars.get(&digest) {
                    b.inc(bytes);
                }
            }
            ProgressEvent::BlobDone { digest } => {
                if let Some(b) = bars.get(&digest) {
                    b.finish_with_message("done");
                }
            }
            ProgressEvent::BlobSkipped { digest, .. } => {
                let _ = self
                    .multi
                    .println(format!("blob {} already present", short(&digest)));
            }
            ProgressEvent::ManifestWritten { digest, tag } => {
                let _ = self.multi.println(match tag {
                    Some(t) => format!("manifest {} written as {t}", short(&digest)),
                    None => format!("manifest {} written", short(&digest)),
                });
            }
        }
    }
}
