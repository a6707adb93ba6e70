//! What a user sees before running anything: `--version`, `--help` examples, shell completions
//! and man pages generated from the CLI definition.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Env;

/// Every subcommand, as `strata help` lists them (manifest's own subcommands separately).
const SUBCOMMANDS: &[&str] = &[
    "build",
    "copy",
    "inspect",
    "tags",
    "ls",
    "manifest",
    "login",
    "logout",
    "gc",
    "prune",
    "unpack",
    "repack",
    "mount",
    "umount",
    "completion",
    "man",
    "rm",
    "config",
];
const MANIFEST_SUBCOMMANDS: &[&str] = &["create", "add", "annotate", "remove", "inspect", "push"];

/// The abbreviated commit of the checkout the tests run in, or None outside one.
fn checkout_commit() -> Option<String> {
    let out = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=7",
            "HEAD",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let env = Env::new();
    let out = env.ok(&["--version"]);
    let version = env!("CARGO_PKG_VERSION");
    match checkout_commit() {
        Some(commit) => {
            let prefix = format!("strata {version} ({commit}");
            assert!(
                out.starts_with(&prefix),
                "{out:?} should start with {prefix:?}"
            );
            // `(abc1234[-dirty] YYYY-MM-DD)`
            let date = out
                .trim_end()
                .strip_suffix(')')
                .and_then(|s| s.rsplit(' ').next())
                .unwrap_or_default();
            let digits: Vec<&str> = date.split('-').collect();
            assert!(
                digits.len() == 3 && digits.iter().all(|d| d.parse::<u32>().is_ok()),
                "no commit date in {out:?}"
            );
        }
        None => assert_eq!(out, format!("strata {version}\n")),
    }
}

#[test]
fn help_of_the_main_commands_ends_with_examples() {
    let env = Env::new();
    for command in ["build", "copy", "inspect", "manifest", "unpack"] {
        for flag in ["-h", "--help"] {
            let out = env.ok(&[command, flag]);
            let examples = out
                .split_once("\nExamples:\n")
                .map(|(_, e)| e)
                .unwrap_or_else(|| panic!("strata {command} {flag}: no Examples:\n{out}"));
            assert!(
                examples.contains(&format!("  strata {command} ")),
                "strata {command} {flag}: no example of the command itself:\n{examples}"
            );
        }
    }
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let env = Env::new();
    let script = env.ok(&["completion", "bash"]);
    for sub in SUBCOMMANDS {
        assert!(
            script.contains(&format!("strata,{sub})")),
            "bash completion lacks {sub}"
        );
    }
    let file = env.path("strata.bash");
    std::fs::write(&file, &script).expect("write script");
    // bash itself is the judge: load the script and ask it to complete.
    let complete = |words: &str, cword: usize, cur: &str, prev: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; _strata strata {cur} {prev}; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        common::run("bash", &["-c", &program])
    };
    assert_eq!(complete("strata ma", 1, "ma", "strata"), "manifest\nman\n");
    assert_eq!(
        complete("strata build --plat", 2, "--plat", "build"),
        "--platform\n"
    );
    assert_eq!(
        complete("strata manifest a", 2, "a", "manifest"),
        "add\nannotate\n"
    );
}

#[test]
fn completion_scripts_for_every_shell_name_the_subcommands() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = env.ok(&["completion", shell]);
        for sub in SUBCOMMANDS.iter().chain(MANIFEST_SUBCOMMANDS) {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        let platform_flag = if shell == "fish" {
            "-l platform"
        } else {
            "--platform"
        };
        assert!(script.contains(platform_flag), "{shell}: no --platform");
    }
}

#[test]
fn completion_for_an_unknown_shell_is_a_usage_error_naming_the_shells() {
    let env = Env::new();
    let out = env.output(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'tcsh'"), "{stderr}");
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}

/// `man -l` renders the page (when man-db is installed), as plain text.
fn render_man(page: &Path) -> Option<String> {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "200")
        .env("LANG", "C.UTF-8")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "man -l {} failed: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn man_writes_a_page_per_command_that_man_renders() {
    let env = Env::new();
    let dir = env.path("man/man1");
    let out = env.output(&["man", dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    let top = std::fs::read_to_string(dir.join("strata.1")).expect("strata.1");
    for sub in SUBCOMMANDS {
        assert!(
            dir.join(format!("strata-{sub}.1")).is_file(),
            "no page for {sub}"
        );
        // The top page lists every subcommand by its page name.
        assert!(
            top.contains(&format!("strata\\-{sub}(1)")),
            "strata.1 lacks {sub}"
        );
    }
    for sub in MANIFEST_SUBCOMMANDS {
        assert!(
            dir.join(format!("strata-manifest-{sub}.1")).is_file(),
            "no page for manifest {sub}"
        );
    }
    let build = dir.join("strata-build.1");
    let roff = std::fs::read_to_string(&build).expect("strata-build.1");
    assert!(
        roff.starts_with(".ie \\n(.g .ds Aq"),
        "not roff: {roff:.80}"
    );
    assert!(roff.contains(".SH EXAMPLES\n.nf\n"), "no EXAMPLES section");
    match render_man(&build) {
        Some(text) => {
            assert!(text.contains("strata-build - Build images"), "{text}");
            assert!(text.contains("--platform"), "{text}");
            // Examples stay one command per line, with real hyphens.
            assert!(
                text.contains("strata build -t localhost/app:1 ."),
                "examples refilled:\n{text}"
            );
        }
        None => eprintln!("man is not installed: the roff source alone was checked"),
    }
    // The transport table of strata.1 keeps one transport per line.
    if let Some(text) = render_man(&dir.join("strata.1")) {
        assert!(
            text.contains(
                "dir:PATH                                a directory of manifest and blobs\n"
            ),
            "transport table refilled:\n{text}"
        );
    }
}

#[test]
fn man_without_a_directory_prints_the_main_page() {
    let env = Env::new();
    let page = env.ok(&["man"]);
    assert!(page.contains(".TH strata 1"), "{page:.200}");
    assert!(page.contains("strata\\-build(1)"));
}

#[test]
fn man_into_a_file_names_the_path_at_fault() {
    let env = Env::new();
    let file = env.path("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let stderr = env.fails(&["man", file.to_str().expect("utf-8")]);
    assert!(
        stderr.contains(&format!("man page directory {}", file.display())),
        "{stderr}"
    );
}

/// A reader that stops early (`strata … | head`) ends strata quietly, as it ends other Unix
/// tools: no panic ("failed printing to stdout"), no error line, exit 0 or SIGPIPE's 141.
#[test]
fn a_closed_standard_output_ends_strata_quietly() {
    let env = Env::new();
    let commands: [&[&str]; 4] = [
        &["config", "--format", "json"],
        &["config"],
        &["man"],
        &["completion", "bash"],
    ];
    for args in commands {
        let mut child = env
            .strata()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strata");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for strata");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 141)),
            "strata {args:?} with its output closed: {:?}\n{stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "strata {args:?} printed: {stderr}");
    }
}
