//! Containerfile / Dockerfile parsing: `&str` in, syntax tree out, no I/O.
//!
//! The rules are BuildKit's (the Dockerfile frontend Docker and buildx use), reproduced from
//! its documentation and observable behaviour:
//!
//! - [`parse`] → [`Containerfile`] (directives, global ARGs, stages, instructions with spans;
//!   continuations, comments, heredocs, JSON vs shell form, flags). Errors name the line.
//! - [`expand`] / [`expand_words`]: Docker word expansion (`$V`, `${V}`, `${V:-x}`, `${V-x}`,
//!   `${V:+x}`, `${V+x}`, `${V:?msg}`, `${V#p}`, `${V%p}`, `${V/p/r}`, quotes, escapes).
//! - [`Scope`]: Docker's ARG/ENV scoping rules for one stage.
//! - [`IgnoreMatcher`]: `.dockerignore` matching (moby patternmatcher semantics).
//! - [`parse_mount`], [`parse_duration`], [`parse_chmod`] / [`Chmod`]: flag values.
//!
//! # Who expands what (BuildKit's rules, for the build engine)
//!
//! The AST keeps words unexpanded. The engine expands, in the stage's [`Scope`]:
//! - with [`expand`] (one word each, never split): FROM image and `--platform` (in the
//!   *global* scope), ENV and LABEL keys and values, ARG defaults ([`Scope::declare_arg`]),
//!   WORKDIR, USER, STOPSIGNAL, each VOLUME path, each COPY/ADD source and destination, and
//!   COPY/ADD `--from`, `--chown`, `--chmod`; RUN `--mount` with [`parse_mount_expanding`];
//! - with [`expand_words`] (split after expansion): each EXPOSE word;
//! - COPY/ADD heredoc bodies whose [`Heredoc::expand`] is true, with [`expand`];
//! - nothing in RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER (RUN heredocs are left
//!   to the shell);
//! - ONBUILD triggers only when they run in the child build.
//!
//! ```
//! use strata_containerfile::{parse, expand, CommandForm, InstructionKind};
//!
//! let file = parse("ARG V=1\nFROM alpine:$V AS base\nRUN echo \\\n  hi\nCMD [\"sh\"]\n").unwrap();
//! assert_eq!(file.stages[0].from.alias.as_deref(), Some("base"));
//! let run = &file.stages[0].instructions[0];
//! assert_eq!((run.span.line, run.span.end_line), (3, 4));
//! assert_eq!(run.original, "RUN echo   hi");
//! assert!(matches!(&file.stages[0].instructions[1].kind,
//!     InstructionKind::Cmd(CommandForm::Exec(args)) if args == &["sh"]));
//! let v = expand("alpine:${V:-latest}", &|n| (n == "V").then(|| "3.20".to_string()), '\\');
//! assert_eq!(v.unwrap(), "alpine:3.20");
//! ```

mod ast;
mod expand;
pub use expand::MAX_EXPANDED_BYTES;
mod flags;
mod ignore;
mod parser;
mod scope;
mod words;

pub use ast::*;
pub use flags::{
    CacheSharing, Chmod, EntryKind, Mount, parse_chmod, parse_duration, parse_mount,
    parse_mount_expanding,
};
pub use ignore::IgnoreMatcher;
pub use scope::{PREDEFINED_ARGS, PROXY_ARGS, Scope};

/// A syntax error, naming the line and the offending text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
    /// The offending text (an instruction or a word of it).
    pub text: String,
}

/// A word that cannot be expanded (`${V:?msg}` with V unset, bad `${` syntax).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}: {word}")]
pub struct ExpandError {
    pub word: String,
    pub message: String,
}

/// Parse a whole Containerfile.
pub fn parse(text: &str) -> Result<Containerfile, ParseError> {
    parser::parse(text)
}

/// Expand one word: variables replaced, quotes removed, escapes resolved (`escape` is the
/// file's escape character, [`Directives::escape`]). Unset variables expand to the empty
/// string; `${V:?msg}` with V unset and malformed `${…}` are errors.
pub fn expand(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    expand::process(word, lookup, escape, expand::Options::default()).map(|s| s.word)
}

/// Expand and split into words on unquoted whitespace, including whitespace that comes from
/// a variable's value (Docker's `ProcessWords`; BuildKit uses it for EXPOSE). COPY/ADD
/// sources and VOLUME paths are already split by the parser and expanded one by one with
/// [`expand`].
pub fn expand_words(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    expand::process(text, lookup, escape, expand::Options::default()).map(|s| s.words)
}
