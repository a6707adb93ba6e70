//! The syntax tree. Values are *unexpanded* words exactly as written (after line
//! continuations are joined and quotes kept); the build engine expands them with
//! [`crate::expand`] in the right scope, because only it knows the ARG/ENV values.

/// Where an instruction is in the file (1-based lines; `end_line` > `line` for
/// continuations and heredocs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub end_line: usize,
}

/// A parsed Containerfile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Containerfile {
    pub directives: Directives,
    /// `ARG` instructions before the first `FROM` (global scope; usable in `FROM` lines).
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Directives {
    /// `# syntax=` (recorded, not acted on).
    pub syntax: Option<String>,
    /// `# escape=` (`\` or `` ` ``).
    pub escape: char,
    /// `# check=` (recorded, not acted on).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// One `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Position in the file (0-based); `COPY --from=0` refers to it.
    pub index: usize,
    pub from: From,
    /// The `FROM` instruction's own span and text.
    pub span: Span,
    pub original: String,
    /// Everything after `FROM`, in order.
    pub instructions: Vec<Instruction>,
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct From {
    /// Unexpanded image reference (may be `scratch`, a stage name, `${BASE}`).
    pub image: String,
    /// Unexpanded `--platform` value.
    pub platform: Option<String>,
    /// `AS` name, lowercased (stage names are case-insensitive in Docker).
    pub alias: Option<String>,
}

/// One instruction with its position and its text as written (continuations joined, comment
/// and blank lines inside them dropped, trimmed; heredoc bodies not included), which the build
/// engine records in the image history.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub span: Span,
    pub original: String,
    pub kind: InstructionKind,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InstructionKind {
    Arg(Vec<ArgDecl>),
    /// `ENV K=V …` or the legacy `ENV K V` (one pair).
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Copy(CopyInstr),
    Add(AddInstr),
    Run(RunInstr),
    Workdir(String),
    User(String),
    /// Unexpanded `PORT[/PROTO]` words.
    Expose(Vec<String>),
    /// Paths from JSON or space-separated form, unexpanded.
    Volume(Vec<String>),
    Entrypoint(CommandForm),
    Cmd(CommandForm),
    /// JSON form only.
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger instruction, run when the image is used as a base. Parsed already (so
    /// errors show at the ONBUILD line); `ONBUILD ONBUILD`, `ONBUILD FROM` and `ONBUILD
    /// MAINTAINER` are errors. The boxed instruction's `original` is exactly the text to store
    /// in the config's `OnBuild`: the trigger as written after `ONBUILD`, followed (for
    /// `ONBUILD RUN <<EOF`) by each heredoc body and delimiter line, as Docker stores it, so
    /// that parsing it again gives the same instruction.
    Onbuild(Box<Instruction>),
    Maintainer(String),
}

/// `ARG NAME[=default]`; one ARG instruction may declare several. The default keeps its
/// quotes (`"a b"`); [`crate::Scope::declare_arg`] expands it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgDecl {
    pub name: String,
    /// Unexpanded default.
    pub default: Option<String>,
}

/// `KEY=VALUE` with both sides unexpanded (quotes still in place; expansion removes them).
/// For the legacy `ENV KEY value with spaces`, `value` is the rest of the line as written.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// JSON (exec) form or shell form.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandForm {
    /// `["a","b"]`, already JSON-decoded.
    Exec(Vec<String>),
    /// Everything after the keyword and flags, continuations joined, as written (for
    /// `RUN <<EOF` this is `<<EOF`; the bodies are in [`RunInstr::heredocs`]).
    Shell(String),
}

/// A heredoc body (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    /// The delimiter word (without quotes or `-`).
    pub name: String,
    /// The body, without the closing delimiter line; with `<<-` leading tabs are stripped.
    pub content: String,
    /// Unquoted delimiter: the body is subject to expansion (for RUN: by the shell; for
    /// COPY: by the builder with build args/env).
    pub expand: bool,
}

/// Where a COPY/ADD source comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A path or glob in the context or `--from` stage/image (unexpanded), or a URL (ADD).
    Path(String),
    /// `COPY <<EOF /dest`: an inline file.
    Heredoc(Heredoc),
}

/// Flags and operands shared by COPY and ADD.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CopyInstr {
    pub sources: Vec<Source>,
    /// Unexpanded destination.
    pub dest: String,
    /// `--from=stage|index|image`
    pub from: Option<String>,
    /// `--chown=user[:group]`
    pub chown: Option<String>,
    /// `--chmod=0755` (octal) or symbolic (`u=rwX,go=rX`); checked by the parser unless it
    /// holds a variable; see [`crate::Chmod`].
    pub chmod: Option<String>,
    /// `--link`
    pub link: bool,
    /// `--exclude=pattern`, repeatable; match with [`crate::IgnoreMatcher::from_patterns`].
    pub excludes: Vec<String>,
    /// `--parents`
    pub parents: bool,
}

/// `ADD` = COPY's operands plus its own flags.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AddInstr {
    pub copy: CopyInstr,
    /// `--checksum=sha256:…` for URL sources.
    pub checksum: Option<String>,
    /// `--keep-git-dir`
    pub keep_git_dir: bool,
    /// `--unpack=true|false` (default: local archives are unpacked, URLs are not).
    pub unpack: Option<bool>,
}

/// `RUN [--mount=…] [--network=…] [--security=…] command`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInstr {
    pub command: CommandForm,
    /// Raw `--mount` values (`type=cache,target=/x,…`, quotes already removed), parsed by the
    /// build engine with [`crate::parse_mount`] after expansion. The parser already rejects
    /// values without a `$` that `parse_mount` would reject.
    pub mounts: Vec<String>,
    /// `--network=default|none|host` (other values are parse errors)
    pub network: Option<String>,
    /// `--security=sandbox|insecure` (other values are parse errors)
    pub security: Option<String>,
    /// Heredocs referenced by the command (`RUN <<EOF` / `RUN python3 <<EOF`).
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [opts] CMD …`.
#[derive(Debug, Clone, PartialEq)]
pub enum Healthcheck {
    None,
    Check {
        command: CommandForm,
        /// Durations as written (`30s`, `1m30s`), already checked (valid, at least 1ms);
        /// [`crate::parse_duration`] converts.
        interval: Option<String>,
        timeout: Option<String>,
        start_period: Option<String>,
        start_interval: Option<String>,
        retries: Option<u32>,
    },
}
