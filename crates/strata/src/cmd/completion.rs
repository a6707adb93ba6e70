//! `strata completion SHELL` and `strata man [DIR]`: shell completions and man pages generated
//! from the CLI definition, so they never fall behind the flags.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};

use crate::cli::Cli;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// Shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write strata.1 and one page per subcommand (strata-build.1, …) into this directory,
    /// created if missing (default: print strata.1 to standard output).
    pub dir: Option<PathBuf>,
}

/// `strata completion bash` goes to a file in bash-completion's directory, and so on.
pub const COMPLETION_AFTER_HELP: &str = "\
Examples:
  strata completion bash > /etc/bash_completion.d/strata
  strata completion zsh > \"${fpath[1]}/_strata\"
  strata completion fish > ~/.config/fish/completions/strata.fish";

pub fn completion(a: CompletionArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut command, "strata", &mut script);
    write_stdout(&script)
}

pub fn man(a: ManArgs) -> anyhow::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name (strata-manifest-create), the page's title.
    command.build();
    match a.dir {
        None => write_stdout(&render(&command)?),
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the man page directory {}", dir.display()))?;
            let written = write_pages(&command, &dir)?;
            eprintln!("wrote {written} man pages to {}", dir.display());
            Ok(())
        }
    }
}

/// The roff source of one command's page: clap_mangen's sections, except that DESCRIPTION
/// keeps indented lines (the transport table) as written and the `Examples:` of `--help`
/// become an EXAMPLES section, also as written (clap_mangen would refill both, and title the
/// examples EXTRA).
fn render(command: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let man = man_page(command);
    let mut page = Vec::new();
    let mut sections = || -> std::io::Result<()> {
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        if let Some(about) = command.get_long_about().or_else(|| command.get_about()) {
            text_section("DESCRIPTION", &about.to_string()).to_writer(&mut page)?;
        }
        man.render_options_section(&mut page)?;
        if command.get_subcommands().any(|s| !s.is_hide_set()) {
            man.render_subcommands_section(&mut page)?;
        }
        if let Some(after) = command.get_after_help() {
            let after = after.to_string();
            let examples = after.strip_prefix("Examples:\n").unwrap_or(&after);
            text_section("EXAMPLES", examples).to_writer(&mut page)?;
        }
        if command.get_version().is_some() {
            man.render_version_section(&mut page)?;
        }
        Ok(())
    };
    sections().context("rendering a man page")?;
    Ok(page)
}

/// A section of `text`: paragraphs filled, lines indented by two spaces left as they are.
fn text_section(title: &str, text: &str) -> roff::Roff {
    let mut section = roff::Roff::new();
    section.control("SH", [title]);
    let mut unfilled = false;
    for line in text.lines() {
        let indented = line.starts_with("  ");
        if indented != unfilled {
            section.control(if indented { "nf" } else { "fi" }, []);
            unfilled = indented;
        }
        if line.trim().is_empty() {
            section.control("PP", []);
        } else {
            section.text([roff::roman(line)]);
        }
    }
    if unfilled {
        section.control("fi", []);
    }
    section
}

fn man_page(command: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command.clone())
        .source(format!("strata {}", env!("STRATA_VERSION")))
        .manual("strata manual")
}

/// Writes the page of `command` and of each of its visible subcommands; returns how many.
fn write_pages(command: &clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        written += write_pages(sub, dir)?;
    }
    let path = dir.join(man_page(command).get_filename());
    std::fs::write(&path, render(command)?)
        .with_context(|| format!("writing the man page {}", path.display()))?;
    Ok(written + 1)
}

/// Everything to standard output; a reader that stops early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}
