//! Build files: several targets (platforms, Containerfile, context, build args) built into one
//! result, in the style of `docker buildx bake`, as YAML (JSON is YAML too):
//!
//! ```yaml
//! args:                          # for every target
//!   APP: demo
//! targets:
//!   linux:
//!     platforms: [linux/amd64, linux/arm64]
//!     containerfile: Dockerfile  # (or dockerfile:) relative to the context;
//!                                # default Containerfile, else Dockerfile
//!     context: .                 # relative to this file; default its directory
//!   windows-1809:
//!     platforms: [windows/amd64:10.0.17763]
//!     containerfile: Dockerfile.windows
//!     args: {WINBASE: 1809}
//!     target: app                # stage to build (default: the last)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_spec::Platform;

use crate::groups::{PlatformGroup, default_containerfile};
use crate::{BuildError, ContainerfileSource};

/// Largest build file read (it is a short list of targets).
const MAX_BUILD_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    args: BTreeMap<String, String>,
    targets: BTreeMap<String, Target>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    platforms: Vec<String>,
    #[serde(default, alias = "dockerfile")]
    containerfile: Option<PathBuf>,
    #[serde(default)]
    context: Option<PathBuf>,
    #[serde(default)]
    args: BTreeMap<String, String>,
    #[serde(default)]
    target: Option<String>,
}

/// Read a build file into one [`PlatformGroup`] per target (named after it). Paths are
/// resolved as described in the module docs; every platform parses, every Containerfile
/// exists and no platform is in two targets.
pub fn read_build_file(path: &Path) -> Result<Vec<PlatformGroup>, BuildError> {
    let bad = |reason: String| BuildError::BuildFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .len();
    if size > MAX_BUILD_FILE_BYTES {
        return Err(bad(format!(
            "larger than {MAX_BUILD_FILE_BYTES} bytes ({size})"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let doc: Document = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if doc.targets.is_empty() {
        return Err(bad("no targets".into()));
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let mut groups = Vec::new();
    let mut seen: Vec<(Platform, String)> = Vec::new();
    for (name, t) in doc.targets {
        let bad_target = |reason: String| bad(format!("target {name}: {reason}"));
        if t.platforms.is_empty() {
            return Err(bad_target("platforms: none listed".into()));
        }
        let mut platforms = Vec::new();
        for p in &t.platforms {
            let platform: Platform = p
                .parse()
                .map_err(|e| bad_target(format!("platforms: {e}")))?;
            if let Some((_, other)) = seen
                .iter()
                .find(|(s, _)| s.normalised() == platform.normalised())
            {
                return Err(BuildError::PlatformInTwoGroups {
                    platform: Box::new(platform),
                    first: format!("target {other}"),
                    second: format!("target {name} of {}", path.display()),
                });
            }
            seen.push((platform.clone(), name.clone()));
            platforms.push(platform);
        }
        let context = match &t.context {
            Some(c) => base.join(c),
            None => base.to_path_buf(),
        };
        let context = if context.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            context
        };
        if !context.is_dir() {
            return Err(bad_target(format!(
                "context {} is not a directory",
                context.display()
            )));
        }
        let containerfile = match &t.containerfile {
            Some(f) => {
                let f = context.join(f);
                if !f.is_file() {
                    return Err(bad_target(format!(
                        "containerfile {} not found",
                        f.display()
                    )));
                }
                f
            }
            None => default_containerfile(&context).ok_or_else(|| {
                bad_target(format!(
                    "no Containerfile or Dockerfile in {}; name one with containerfile:",
                    context.display()
                ))
            })?,
        };
        let mut build_args = doc.args.clone();
        build_args.extend(t.args);
        groups.push(PlatformGroup {
            name: Some(name.clone()),
            platforms,
            containerfile: ContainerfileSource::Path(containerfile),
            context,
            build_args,
            target: t.target,
        });
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn targets_become_groups_with_paths_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app/Dockerfile", "FROM alpine\n");
        write(dir.path(), "app/Dockerfile.windows", "FROM nanoserver\n");
        let file = write(
            dir.path(),
            "strata-build.yaml",
            "args: {APP: demo, WINBASE: ltsc2022}\n\
             targets:\n\
             \x20 linux:\n\
             \x20   platforms: [linux/amd64, linux/arm64]\n\
             \x20   context: app\n\
             \x20 win-1809:\n\
             \x20   platforms: ['windows/amd64:10.0.17763']\n\
             \x20   context: app\n\
             \x20   dockerfile: Dockerfile.windows\n\
             \x20   args: {WINBASE: 1809, N: 0777}\n\
             \x20   target: final\n",
        );
        let groups = read_build_file(&file).unwrap();
        assert_eq!(groups.len(), 2);
        let linux = &groups[0];
        assert_eq!(linux.name.as_deref(), Some("linux"));
        assert_eq!(linux.context, dir.path().join("app"));
        assert_eq!(
            linux.containerfile,
            ContainerfileSource::Path(dir.path().join("app/Dockerfile"))
        );
        assert_eq!(linux.platforms.len(), 2);
        assert_eq!(linux.build_args["WINBASE"], "ltsc2022");
        let win = &groups[1];
        assert_eq!(
            win.containerfile,
            ContainerfileSource::Path(dir.path().join("app/Dockerfile.windows"))
        );
        // Plain YAML scalars are taken as written, numbers included.
        assert_eq!(win.build_args["WINBASE"], "1809");
        assert_eq!(win.build_args["N"], "0777");
        assert_eq!(win.build_args["APP"], "demo");
        assert_eq!(win.target.as_deref(), Some("final"));
        assert_eq!(win.platforms[0].os_version.as_deref(), Some("10.0.17763"));
    }

    #[test]
    fn mistakes_name_the_file_and_target() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "Dockerfile", "FROM alpine\n");
        let cases = [
            (
                "targets:\n  a:\n    platforms: [linux/amd64]\n    contxt: .\n",
                "contxt",
            ),
            (
                "targets:\n  a:\n    platforms: [linux]\n",
                "target a: platforms",
            ),
            (
                "targets:\n  a:\n    platforms: []\n",
                "target a: platforms: none",
            ),
            (
                "targets:\n  a:\n    platforms: [linux/amd64]\n    containerfile: Nope\n",
                "target a: containerfile",
            ),
            (
                "targets:\n  a:\n    platforms: [linux/amd64]\n    context: missing\n",
                "target a: context",
            ),
            (
                "targets:\n  a:\n    platforms: [linux/amd64]\n  b:\n    platforms: [linux/x86_64]\n",
                "both target a and target b",
            ),
            ("targets: {}\n", "no targets"),
        ];
        for (text, wanted) in cases {
            let file = write(dir.path(), "b.yaml", text);
            let err = read_build_file(&file).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text}: {err}");
            assert!(
                err.contains("b.yaml") || err.contains("target b"),
                "{text}: {err}"
            );
        }
    }
}
