//! Records the commit strata is built from, for `strata --version`:
//! `STRATA_VERSION` = `0.1.0 (abc1234 2026-12-07)` in a git checkout (`abc1234-dirty` with
//! uncommitted changes), plain `0.1.0` elsewhere (a crate tarball, `cargo install` from a
//! registry, no git installed). Packagers may set `STRATA_BUILD_COMMIT` (e.g. `abc1234
//! 2026-12-07`) to name the commit of a source tree that is not a checkout.

use std::path::Path;
use std::process::Command;

/// Environment variable a packager sets instead of a git checkout.
const COMMIT_OVERRIDE: &str = "STRATA_BUILD_COMMIT";

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={COMMIT_OVERRIDE}");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let commit = match std::env::var(COMMIT_OVERRIDE) {
        Ok(c) if !c.trim().is_empty() => Some(c.trim().to_owned()),
        _ => git_commit(Path::new(&manifest_dir)),
    };
    match commit {
        Some(c) => println!("cargo:rustc-env=STRATA_VERSION={version} ({c})"),
        None => println!("cargo:rustc-env=STRATA_VERSION={version}"),
    }
}

/// `abc1234[-dirty] YYYY-MM-DD` of the checkout holding `dir`, or None when `dir` is not part
/// of one (or git is missing). Registers the files whose change means another commit.
/// (Public for tests/build_version.rs, which includes this file.)
pub fn git_commit(dir: &Path) -> Option<String> {
    // A tarball unpacked inside some unrelated repository must not report that repository's
    // commit: this crate's own manifest has to be tracked by it.
    git(dir, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    let git_dir = git(dir, &["rev-parse", "--absolute-git-dir"])?;
    let common_dir = git(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .unwrap_or_else(|| git_dir.clone());
    // HEAD moves on checkout, the branch's ref on commit (loose or packed), the index when
    // changes are staged or committed (a worktree has its own HEAD and index).
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={git_dir}/index");
    println!("cargo:rerun-if-changed={common_dir}/packed-refs");
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={common_dir}/{branch}");
    }
    // --exclude='*': the abbreviated hash even when tags exist (the version is printed
    // already).
    let hash = git(
        dir,
        &[
            "describe",
            "--always",
            "--dirty",
            "--abbrev=7",
            "--exclude=*",
        ],
    )?;
    let date = git(
        dir,
        &["log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%d"],
    )?;
    Some(format!("{hash} {date}"))
}

/// Trimmed stdout of a successful `git -C dir ARGS`, in UTC.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
