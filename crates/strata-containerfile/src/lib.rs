//! Containerfile / Dockerfile parsing: `&str` in, syntax tree out, no I/O.
//!
//! SKELETON: the public API below is the contract the build engine codes against; the
//! bodies are being written (see the crate's tests for what is done).
//!
//! - [`parse`] → [`Containerfile`] (directives, global ARGs, stages, instructions with spans).
//! - [`expand`] / [`expand_words`]: Docker word expansion (`$V`, `${V}`, `${V:-x}`, `${V:+x}`,
//!   quotes, escapes).
//! - [`Scope`]: Docker's ARG/ENV scoping rules for one stage.
//! - [`IgnoreMatcher`]: `.dockerignore` matching (moby patternmatcher semantics).
//! - [`parse_mount`], [`parse_duration`], [`parse_chmod`]: flag values.

mod ast;

use std::collections::BTreeMap;

pub use ast::*;

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
    let _ = text;
    todo!("parser")
}

/// Expand one word: variables replaced, quotes removed, escapes resolved. Unset variables
/// expand to the empty string.
pub fn expand(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    let _ = (word, lookup, escape);
    todo!("expand")
}

/// Expand and split into words on unquoted whitespace (Docker's `ProcessWords`, used for
/// instructions whose operands are a list: COPY/ADD sources, EXPOSE, VOLUME).
pub fn expand_words(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    let _ = (text, lookup, escape);
    todo!("expand_words")
}

/// ARG/ENV scope of one stage, with Docker's rules:
/// - global ARGs (before the first FROM) are visible in FROM lines only; inside a stage a
///   name must be redeclared (`ARG NAME`, no default → the global value);
/// - a `--build-arg` overrides a declared ARG's default; undeclared build args are not visible
///   (but are reported by [`Scope::unused_build_args`]);
/// - ENV shadows ARG of the same name; the base image's ENV starts the stage's env;
/// - predefined args (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`,
///   `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`) are visible in the global scope
///   and must be declared inside a stage, like any ARG; proxy args (`HTTP_PROXY`, …) are
///   accepted as build args without a declaration and are never recorded in history.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) env: Vec<(String, String)>,
}

impl Scope {
    /// The scope FROM lines are expanded in.
    pub fn global(
        global_args: &[Instruction],
        build_args: &BTreeMap<String, String>,
        predefined: &BTreeMap<String, String>,
        escape: char,
    ) -> Result<Scope, ExpandError> {
        let _ = (global_args, build_args, predefined, escape);
        todo!("Scope::global")
    }
    /// A new stage's scope: no ARGs declared yet, ENV from the base image config
    /// (`KEY=VALUE` strings).
    pub fn stage(global: &Scope, base_env: &[String]) -> Scope {
        let _ = (global, base_env);
        todo!("Scope::stage")
    }
    /// Apply an `ARG` declaration.
    pub fn declare_arg(
        &mut self,
        decl: &ArgDecl,
        global: &Scope,
        build_args: &BTreeMap<String, String>,
        escape: char,
    ) -> Result<(), ExpandError> {
        let _ = (decl, global, build_args, escape);
        todo!("declare_arg")
    }
    /// Apply an `ENV` pair (value already expanded).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let _ = (key, value);
        todo!("set_env")
    }
    /// The value a `$NAME` has here (ENV first, then ARG).
    pub fn lookup(&self, name: &str) -> Option<String> {
        let _ = name;
        todo!("lookup")
    }
    /// Expand a word in this scope.
    pub fn expand(&self, word: &str, escape: char) -> Result<String, ExpandError> {
        expand(word, &|n| self.lookup(n), escape)
    }
    /// Expand and split a list of words in this scope.
    pub fn expand_words(&self, text: &str, escape: char) -> Result<Vec<String>, ExpandError> {
        expand_words(text, &|n| self.lookup(n), escape)
    }
    /// The image config env (`KEY=VALUE`, in order).
    pub fn env(&self) -> Vec<String> {
        todo!("env")
    }
    /// The environment a RUN step sees: ENV plus declared ARGs not shadowed by ENV.
    pub fn run_env(&self) -> Vec<(String, String)> {
        todo!("run_env")
    }
    /// Declared ARG values (for cache keys and RUN history).
    pub fn args(&self) -> &BTreeMap<String, String> {
        &self.args
    }
}

/// `.dockerignore` matcher (moby patternmatcher semantics: anchored at the context root, `*`
/// and `?` never cross `/`, `**` any depth, `!` re-includes, last match wins, a matched
/// directory excludes everything under it unless a later `!` pattern can re-include).
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    _patterns: Vec<String>,
}

impl IgnoreMatcher {
    /// Parse `.dockerignore` text (comments, blank lines, leading `/` and `./` removed,
    /// paths cleaned).
    pub fn parse(text: &str) -> Result<IgnoreMatcher, ParseError> {
        let _ = text;
        todo!("IgnoreMatcher::parse")
    }
    /// From patterns already split (COPY `--exclude`).
    pub fn from_patterns(patterns: &[String]) -> Result<IgnoreMatcher, ParseError> {
        let _ = patterns;
        todo!("IgnoreMatcher::from_patterns")
    }
    /// Is this context-relative path (`a/b/c`, no leading `/`) excluded?
    pub fn is_excluded(&self, path: &str) -> bool {
        let _ = path;
        todo!("is_excluded")
    }
    /// Could some path *under* this excluded directory be re-included by a `!` pattern?
    /// (When false, a walker skips the whole directory.)
    pub fn may_include_below(&self, dir: &str) -> bool {
        let _ = dir;
        todo!("may_include_below")
    }
}

/// A `RUN --mount=` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Mount {
    Bind {
        target: String,
        source: Option<String>,
        from: Option<String>,
        read_write: bool,
    },
    Cache {
        target: String,
        id: Option<String>,
        sharing: CacheSharing,
        from: Option<String>,
        source: Option<String>,
        read_only: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: Option<String>,
        target: Option<String>,
        required: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// Parse a `--mount` value (already expanded).
pub fn parse_mount(value: &str) -> Result<Mount, String> {
    let _ = value;
    todo!("parse_mount")
}

/// Parse a Docker duration (`30s`, `1m30s`, `500ms`).
pub fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let _ = value;
    todo!("parse_duration")
}

/// `--chmod` value: octal (`755`, `0644`) → mode bits. (Symbolic forms are rejected with a
/// clear error unless implemented.)
pub fn parse_chmod(value: &str) -> Result<u32, String> {
    let _ = value;
    todo!("parse_chmod")
}
