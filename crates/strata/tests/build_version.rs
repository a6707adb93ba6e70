//! The commit `build.rs` puts into `strata --version`, for the source trees it meets: a
//! checkout, a changed checkout, a tarball, a tarball unpacked inside another repository.

#[allow(dead_code)]
#[path = "../build.rs"]
mod build_script;

use std::path::Path;
use std::process::Command;

use build_script::git_commit;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_DATE", "2026-12-07T23:30:00Z")
        .env("GIT_AUTHOR_DATE", "2026-12-07T23:30:00Z")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository whose only commit holds `crate_dir/Cargo.toml`.
fn repository_with_crate(root: &Path, crate_dir: &str) -> std::path::PathBuf {
    let dir = root.join(crate_dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("Cargo.toml"), "[package]\n").expect("write");
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "first"]);
    dir
}

#[test]
fn a_checkout_gives_the_abbreviated_commit_and_its_date() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = repository_with_crate(root.path(), "crates/strata");
    let head = git(root.path(), &["rev-parse", "--short=7", "HEAD"]);
    assert_eq!(git_commit(&dir), Some(format!("{head} 2026-12-07")));
    // An uncommitted change to a tracked file marks it.
    std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"x\"\n").expect("write");
    assert_eq!(git_commit(&dir), Some(format!("{head}-dirty 2026-12-07")));
}

#[test]
fn a_tag_does_not_replace_the_commit() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = repository_with_crate(root.path(), "crates/strata");
    git(root.path(), &["tag", "v0.1.0"]);
    let head = git(root.path(), &["rev-parse", "--short=7", "HEAD"]);
    assert_eq!(git_commit(&dir), Some(format!("{head} 2026-12-07")));
}

#[test]
fn a_tree_outside_any_checkout_has_no_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").expect("write");
    assert_eq!(git_commit(dir.path()), None);
}

#[test]
fn a_tarball_unpacked_inside_another_repository_has_no_commit() {
    let root = tempfile::tempdir().expect("tempdir");
    repository_with_crate(root.path(), "other");
    // strata's sources, untracked, inside that repository's work tree.
    let unpacked = root.path().join("downloads/strata-0.1.0");
    std::fs::create_dir_all(&unpacked).expect("mkdir");
    std::fs::write(unpacked.join("Cargo.toml"), "[package]\n").expect("write");
    assert_eq!(git_commit(&unpacked), None);
}
