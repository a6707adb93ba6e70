//! The Containerfile parser, with BuildKit's rules (`frontend/dockerfile/parser` and
//! `instructions/parse.go`), written from their documented behaviour:
//!
//! - parser directives (`syntax`, `escape`, `check`) only in the leading comment block; the
//!   first line that is not a directive (an instruction, another comment, a blank line) ends it;
//! - a logical line is joined from physical lines ending in the escape character (not when
//!   that character is itself escaped); comment lines and blank lines inside a continuation
//!   are skipped; whitespace before the escape is kept;
//! - after a RUN/COPY/ADD (or ONBUILD of one) in shell form, each `<<WORD` / `<<-WORD` word of
//!   the line opens a heredoc whose body is the following lines up to `WORD`;
//! - operands are cut per instruction: JSON-or-shell (RUN, CMD, ENTRYPOINT), JSON-or-list
//!   (COPY, ADD, VOLUME), list (FROM, EXPOSE), quote-aware words (ENV, LABEL, ARG), the whole
//!   rest (WORKDIR, USER, STOPSIGNAL, MAINTAINER).

use std::collections::{BTreeMap, BTreeSet};

use crate::expand::{self, Options};
use crate::words::{self, Json};
use crate::{
    AddInstr, ArgDecl, CommandForm, Containerfile, CopyInstr, Directives, From, Healthcheck,
    Heredoc, Instruction, InstructionKind, KeyValue, ParseError, RunInstr, Source, Span, Stage,
};

/// Docker's smallest accepted HEALTHCHECK duration (`container.MinimumDuration`).
const MIN_HEALTHCHECK_DURATION: std::time::Duration = std::time::Duration::from_millis(1);

/// Lines of the input, each with its line ending, and a 1-based cursor.
struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        Lines {
            lines: text.split_inclusive('\n').collect(),
            next: 0,
        }
    }
    /// The next line (number, text with its line ending).
    fn next(&mut self) -> Option<(usize, &'a str)> {
        let line = self.lines.get(self.next)?;
        self.next += 1;
        Some((self.next, line))
    }
    fn count(&self) -> usize {
        self.lines.len()
    }
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line).trim_start().starts_with('#')
}

/// Remove a trailing line-continuation escape (and the blanks after it). Returns the text and
/// whether the line continues. An escape preceded by another escape is not a continuation
/// (BuildKit's rule; it does not count longer runs).
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    match body.strip_suffix(escape) {
        Some(before) if !before.ends_with(escape) => (before, true),
        _ => (line, false),
    }
}

/// State of the directive block at the top of the file.
struct DirectiveParser {
    done: bool,
    seen: BTreeSet<String>,
    directives: Directives,
}

impl DirectiveParser {
    /// Look at a line (leading blanks already removed) while still in the directive block.
    fn line(&mut self, line: &str, number: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = parse_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if !self.seen.insert(key.clone()) {
            return Err(ParseError {
                line: number,
                message: format!("only one {key} parser directive can be used"),
                text: line.to_string(),
            });
        }
        match key.as_str() {
            "syntax" => self.directives.syntax = Some(value.to_string()),
            "check" => self.directives.check = Some(value.to_string()),
            _ => {
                self.directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ParseError {
                            line: number,
                            message: "invalid escape token (must be ` or \\)".to_string(),
                            text: value.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// `# key = value` (key: a letter then letters/digits; value trimmed, non-empty).
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_end == 0 {
        return None;
    }
    let key = &rest[..key_end];
    let value = rest[key_end..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}

/// A heredoc opener found on an instruction line.
#[derive(Debug, Clone, PartialEq)]
struct HeredocSpec {
    name: String,
    chomp: bool,
    expand: bool,
}

/// Parse a word like `<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`; `None` if it is not one.
fn heredoc_spec(word: &str) -> Result<Option<HeredocSpec>, String> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let none = |_: &str| None;
    let plain = Options {
        skip_unset: true,
        ..Options::default()
    };
    let words = expand::process(rest, &none, '\\', plain)
        .map_err(|e| e.to_string())?
        .words;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Options {
        raw_quotes: true,
        ..plain
    };
    let raw_words = expand::process(rest, &none, '\\', raw)
        .map_err(|e| e.to_string())?
        .words;
    if raw_words.len() != 1 {
        return Err(format!("inconsistent heredoc delimiter: {rest}"));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '"' || *c == '\'').count();
    Ok(Some(HeredocSpec {
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        name: words[0].clone(),
        chomp,
    }))
}

/// The heredocs an instruction line opens (none unless RUN/COPY/ADD, or ONBUILD of one, in
/// shell form). Lines the shell lexer cannot split (an unclosed quote) open none.
fn heredocs_of_line(line: &str) -> Result<Vec<HeredocSpec>, String> {
    // Every heredoc word contains `<<`; most lines have none, so skip the lexing.
    if !line.contains("<<") || !can_contain_heredoc(line) {
        return Ok(Vec::new());
    }
    let none = |_: &str| None;
    let Ok(scanned) = expand::process(line, &none, '\\', Options::raw()) else {
        return Ok(Vec::new());
    };
    let mut specs = Vec::new();
    for word in &scanned.words {
        if let Some(spec) = heredoc_spec(word)? {
            specs.push(spec);
        }
    }
    Ok(specs)
}

fn can_contain_heredoc(line: &str) -> bool {
    let (keyword, rest) = words::split_command(line);
    let keyword = keyword.to_ascii_lowercase();
    if keyword == "onbuild" {
        let (inner, _) = words::split_command(rest);
        if inner.eq_ignore_ascii_case("onbuild") {
            return false;
        }
        return can_contain_heredoc(rest);
    }
    if !matches!(keyword.as_str(), "run" | "copy" | "add") {
        return false;
    }
    let (_, operands) = words::extract_flags(rest);
    !matches!(words::parse_json(&operands), Json::Strings(_))
}

/// Parse a whole file.
pub(crate) fn parse(text: &str) -> Result<Containerfile, ParseError> {
    let mut lines = Lines::new(text);
    let mut directives = DirectiveParser {
        done: false,
        seen: BTreeSet::new(),
        directives: Directives::default(),
    };
    let mut file = Containerfile::default();
    let mut stage_names: BTreeMap<String, usize> = BTreeMap::new();
    let mut any_instruction = false;

    while let Some((number, raw)) = lines.next() {
        let first = trim_newline(raw).trim_start();
        directives.line(first, number)?;
        let escape = directives.directives.escape;
        let first = if first.starts_with('#') { "" } else { first };
        let (start, mut continues) = trim_continuation(first, escape);
        if !continues && start.is_empty() {
            continue;
        }
        let mut logical = start.to_string();
        let mut end_line = number;
        while continues {
            let Some((next_number, next_raw)) = lines.next() else {
                break;
            };
            end_line = next_number;
            if is_comment(next_raw) {
                continue;
            }
            let text = trim_newline(next_raw);
            if text.trim_start().is_empty() {
                continue;
            }
            let (piece, more) = trim_continuation(text, escape);
            logical.push_str(piece);
            continues = more;
        }

        let error = |message: String, text: &str| ParseError {
            line: number,
            message,
            text: text.trim().to_string(),
        };
        let specs = heredocs_of_line(&logical).map_err(|m| error(m, &logical))?;
        let mut heredocs = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut content = String::new();
            let mut terminated = false;
            while let Some((body_number, body_raw)) = lines.next() {
                end_line = body_number;
                let mut candidate = trim_newline(body_raw);
                if spec.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == spec.name {
                    terminated = true;
                    break;
                }
                content.push_str(body_raw);
            }
            if !terminated {
                return Err(error(
                    format!("unterminated heredoc (no line {:?} after it)", spec.name),
                    &logical,
                ));
            }
            if spec.chomp {
                content = chomp_tabs(&content);
            }
            heredocs.push(Heredoc {
                name: spec.name,
                content,
                expand: spec.expand,
            });
        }

        let span = Span {
            line: number,
            end_line,
        };
        any_instruction = true;
        match parse_line(&logical, span, escape, heredocs)? {
            Parsed::From(from) => {
                let index = file.stages.len();
                if let Some(alias) = &from.alias
                    && stage_names.insert(alias.clone(), index).is_some()
                {
                    return Err(error(format!("duplicate stage name {alias:?}"), alias));
                }
                file.stages.push(Stage {
                    index,
                    from,
                    span,
                    original: logical.trim().to_string(),
                    instructions: Vec::new(),
                });
            }
            Parsed::Instruction(instruction) => match file.stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None if matches!(instruction.kind, InstructionKind::Arg(_)) => {
                    file.global_args.push(instruction);
                }
                None => {
                    return Err(error(
                        "instruction before the first FROM (only ARG may come before FROM)"
                            .to_string(),
                        &instruction.original,
                    ));
                }
            },
        }
    }

    file.directives = directives.directives;
    if !any_instruction {
        return Err(ParseError {
            line: lines.count().max(1),
            message: "file with no instructions".to_string(),
            text: String::new(),
        });
    }
    if file.stages.is_empty() {
        let last = file.global_args.last();
        return Err(ParseError {
            line: last.map_or(1, |i| i.span.line),
            message: "no FROM instruction: nothing to build".to_string(),
            text: last.map(|i| i.original.clone()).unwrap_or_default(),
        });
    }
    Ok(file)
}

/// `<<-` bodies: leading tabs removed from every line.
fn chomp_tabs(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// A FROM starts a stage; everything else is an instruction.
enum Parsed {
    From(From),
    Instruction(Instruction),
}

/// Kinds of flag values (BuildKit's `BFlags`).
#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    /// `--link`, `--link=true|false`
    Bool,
    /// `--from=x`, once
    String,
    /// `--mount=…`, repeatable
    Strings,
}

/// Parsed flag values by name.
#[derive(Default)]
struct FlagValues {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl FlagValues {
    fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }
    fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

struct Ctx<'a> {
    span: Span,
    original: &'a str,
    escape: char,
}

impl Ctx<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.span.line,
            message: message.into(),
            text: self.original.to_string(),
        }
    }
    fn error_at(&self, message: impl Into<String>, text: &str) -> ParseError {
        ParseError {
            line: self.span.line,
            message: message.into(),
            text: text.to_string(),
        }
    }

    fn flags(
        &self,
        flags: &[String],
        allowed: &[(&'static str, FlagKind)],
    ) -> Result<FlagValues, ParseError> {
        let mut out = FlagValues::default();
        for word in flags {
            let body = word.strip_prefix("--").unwrap_or(word);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some(&(key, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(self.error_at("unknown flag", word));
            };
            let seen = out.values.entry(key).or_default();
            if !seen.is_empty() && kind != FlagKind::Strings {
                return Err(self.error_at("duplicate flag specified", word));
            }
            match kind {
                FlagKind::Bool => {
                    let value = match value.map(str::to_ascii_lowercase).as_deref() {
                        None => "true",
                        Some("") => return Err(self.error_at("missing a value on flag", word)),
                        Some("true") => "true",
                        Some("false") => "false",
                        Some(_) => {
                            return Err(self.error_at("expecting a boolean value for flag", word));
                        }
                    };
                    seen.push(value.to_string());
                }
                FlagKind::String | FlagKind::Strings => match value {
                    Some(value) => seen.push(value.to_string()),
                    None => return Err(self.error_at("missing a value on flag", word)),
                },
            }
        }
        Ok(out)
    }
}

/// Parse one logical line (continuations joined) with its heredoc bodies.
fn parse_line(
    line: &str,
    span: Span,
    escape: char,
    heredocs: Vec<Heredoc>,
) -> Result<Parsed, ParseError> {
    let ctx = Ctx {
        span,
        original: line.trim(),
        escape,
    };
    let (keyword, rest) = words::split_command(line);
    let (flags, operands) = words::extract_flags(rest);
    let upper = keyword.to_ascii_uppercase();
    let kind = match upper.as_str() {
        "FROM" => return parse_from(&ctx, &flags, &operands).map(Parsed::From),
        "ARG" => {
            ctx.flags(&flags, &[])?;
            parse_arg(&ctx, &operands)?
        }
        "ENV" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::Env(parse_key_values(&ctx, &operands, "ENV")?)
        }
        "LABEL" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::Label(parse_key_values(&ctx, &operands, "LABEL")?)
        }
        "COPY" => {
            let values = ctx.flags(
                &flags,
                &[
                    ("from", FlagKind::String),
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("parents", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                ],
            )?;
            let mut copy = parse_sources(&ctx, &operands, "COPY", &heredocs)?;
            copy.from = values.string("from");
            copy.chown = values.string("chown");
            copy.chmod = check_chmod(&ctx, values.string("chmod"))?;
            copy.link = values.bool("link").unwrap_or(false);
            copy.parents = values.bool("parents").unwrap_or(false);
            copy.excludes = values.strings("exclude");
            InstructionKind::Copy(copy)
        }
        "ADD" => {
            let values = ctx.flags(
                &flags,
                &[
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("keep-git-dir", FlagKind::Bool),
                    ("checksum", FlagKind::String),
                    ("exclude", FlagKind::Strings),
                    ("unpack", FlagKind::Bool),
                ],
            )?;
            let mut copy = parse_sources(&ctx, &operands, "ADD", &heredocs)?;
            copy.chown = values.string("chown");
            copy.chmod = check_chmod(&ctx, values.string("chmod"))?;
            copy.link = values.bool("link").unwrap_or(false);
            copy.excludes = values.strings("exclude");
            InstructionKind::Add(AddInstr {
                copy,
                checksum: values.string("checksum"),
                keep_git_dir: values.bool("keep-git-dir").unwrap_or(false),
                unpack: values.bool("unpack"),
            })
        }
        "RUN" => {
            let values = ctx.flags(
                &flags,
                &[
                    ("mount", FlagKind::Strings),
                    ("network", FlagKind::String),
                    ("security", FlagKind::String),
                ],
            )?;
            let network = values.string("network");
            if let Some(network) = &network
                && !matches!(network.as_str(), "default" | "none" | "host")
            {
                return Err(ctx.error_at(
                    "unsupported network mode (use default, none or host)",
                    network,
                ));
            }
            let security = values.string("security");
            if let Some(security) = &security
                && !matches!(security.as_str(), "sandbox" | "insecure")
            {
                return Err(ctx.error_at(
                    "unsupported security mode (use sandbox or insecure)",
                    security,
                ));
            }
            let mounts = values.strings("mount");
            for mount in &mounts {
                // Values with variables are checked by the build engine after expansion.
                if !mount.contains('$') {
                    crate::flags::parse_mount(mount)
                        .map_err(|e| ctx.error_at(format!("invalid --mount: {e}"), mount))?;
                }
            }
            let command = command_form(&ctx, &operands)?;
            if command_is_empty(&command) {
                return Err(ctx.error("RUN requires a command"));
            }
            InstructionKind::Run(RunInstr {
                command,
                mounts,
                network,
                security,
                heredocs,
            })
        }
        "CMD" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::Cmd(command_form(&ctx, &operands)?)
        }
        "ENTRYPOINT" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::Entrypoint(command_form(&ctx, &operands)?)
        }
        "SHELL" => {
            ctx.flags(&flags, &[])?;
            match words::parse_json(&operands) {
                Json::Strings(shell) if !shell.is_empty() => InstructionKind::Shell(shell),
                Json::Strings(_) => return Err(ctx.error("SHELL requires at least one argument")),
                Json::Mixed => return Err(ctx.error(not_strings())),
                Json::Shell => {
                    return Err(ctx.error(
                        "SHELL requires the arguments to be in JSON form (like [\"/bin/sh\", \"-c\"])",
                    ));
                }
            }
        }
        "WORKDIR" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::Workdir(one_argument(&ctx, &operands, "WORKDIR")?)
        }
        "USER" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::User(one_argument(&ctx, &operands, "USER")?)
        }
        "STOPSIGNAL" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::StopSignal(one_argument(&ctx, &operands, "STOPSIGNAL")?)
        }
        "MAINTAINER" => {
            ctx.flags(&flags, &[])?;
            InstructionKind::Maintainer(one_argument(&ctx, &operands, "MAINTAINER")?)
        }
        "EXPOSE" => {
            ctx.flags(&flags, &[])?;
            let ports = words::split_whitespace(&operands);
            if ports.is_empty() {
                return Err(ctx.error("EXPOSE requires at least one argument"));
            }
            InstructionKind::Expose(ports)
        }
        "VOLUME" => {
            ctx.flags(&flags, &[])?;
            let paths = json_or_list(&ctx, &operands)?;
            if paths.is_empty() {
                return Err(ctx.error("VOLUME requires at least one argument"));
            }
            let mut volumes = Vec::with_capacity(paths.len());
            for path in paths {
                let path = path.trim();
                if path.is_empty() {
                    return Err(ctx.error("VOLUME specified can not be an empty string"));
                }
                volumes.push(path.to_string());
            }
            InstructionKind::Volume(volumes)
        }
        "HEALTHCHECK" => parse_healthcheck(&ctx, &flags, &operands)?,
        "ONBUILD" => {
            ctx.flags(&flags, &[])?;
            if operands.is_empty() {
                return Err(ctx.error("ONBUILD requires at least one argument"));
            }
            let (trigger, _) = words::split_command(&operands);
            let trigger_upper = trigger.to_ascii_uppercase();
            match trigger_upper.as_str() {
                "ONBUILD" => {
                    return Err(ctx.error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
                }
                "FROM" | "MAINTAINER" => {
                    return Err(ctx.error(format!(
                        "{trigger_upper} isn't allowed as an ONBUILD trigger"
                    )));
                }
                _ => {}
            }
            // The trigger as written after the keyword (flags included), as Docker stores it.
            let trigger_text = rest.trim();
            let mut stored = trigger_text.to_string();
            for heredoc in &heredocs {
                stored.push('\n');
                stored.push_str(&heredoc.content);
                stored.push_str(&heredoc.name);
            }
            match parse_line(trigger_text, span, escape, heredocs)? {
                Parsed::Instruction(mut inner) => {
                    inner.original = stored;
                    InstructionKind::Onbuild(Box::new(inner))
                }
                Parsed::From(_) => {
                    return Err(ctx.error("FROM isn't allowed as an ONBUILD trigger"));
                }
            }
        }
        _ => return Err(ctx.error_at("unknown instruction", keyword)),
    };
    Ok(Parsed::Instruction(Instruction {
        span,
        original: ctx.original.to_string(),
        kind,
    }))
}

fn not_strings() -> &'static str {
    "when using JSON array syntax, arrays must be comprised of strings only"
}

fn command_is_empty(command: &CommandForm) -> bool {
    match command {
        CommandForm::Exec(args) => args.is_empty(),
        CommandForm::Shell(text) => text.trim().is_empty(),
    }
}

fn command_form(ctx: &Ctx, operands: &str) -> Result<CommandForm, ParseError> {
    if operands.is_empty() {
        return Ok(CommandForm::Shell(String::new()));
    }
    match words::parse_json(operands) {
        Json::Strings(args) => Ok(CommandForm::Exec(args)),
        Json::Mixed => Err(ctx.error(not_strings())),
        Json::Shell => Ok(CommandForm::Shell(operands.to_string())),
    }
}

fn json_or_list(ctx: &Ctx, operands: &str) -> Result<Vec<String>, ParseError> {
    match words::parse_json(operands) {
        Json::Strings(items) => Ok(items),
        Json::Mixed => Err(ctx.error(not_strings())),
        Json::Shell => Ok(words::split_whitespace(operands)),
    }
}

fn one_argument(ctx: &Ctx, operands: &str, keyword: &str) -> Result<String, ParseError> {
    if operands.is_empty() {
        return Err(ctx.error(format!("{keyword} requires exactly one argument")));
    }
    Ok(operands.to_string())
}

/// Stage names: a lowercase letter, then letters, digits, `-`, `_`, `.`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_from(ctx: &Ctx, flags: &[String], operands: &str) -> Result<From, ParseError> {
    let values = ctx.flags(flags, &[("platform", FlagKind::String)])?;
    let args = words::split_whitespace(operands);
    let alias = match args.as_slice() {
        [_] => None,
        [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
            let lower = name.to_ascii_lowercase();
            if !valid_stage_name(&lower) {
                return Err(ctx.error_at(
                    "invalid name for build stage (must start with a letter and contain only letters, digits, '-', '_' and '.')",
                    name,
                ));
            }
            Some(lower)
        }
        _ => return Err(ctx.error("FROM requires either one or three arguments (IMAGE [AS NAME])")),
    };
    Ok(From {
        image: args[0].clone(),
        platform: values.string("platform"),
        alias,
    })
}

fn parse_arg(ctx: &Ctx, operands: &str) -> Result<InstructionKind, ParseError> {
    let words = words::parse_words(operands, ctx.escape);
    if words.is_empty() {
        return Err(ctx.error("ARG requires at least one argument"));
    }
    let mut decls = Vec::with_capacity(words.len());
    for word in words {
        let decl = match word.split_once('=') {
            Some(("", _)) => return Err(ctx.error_at("ARG names can not be blank", &word)),
            Some((name, default)) => ArgDecl {
                name: name.to_string(),
                default: Some(default.to_string()),
            },
            None => ArgDecl {
                name: word,
                default: None,
            },
        };
        decls.push(decl);
    }
    Ok(InstructionKind::Arg(decls))
}

/// `ENV`/`LABEL`: `K=V …`, or the legacy `K V` (one pair, V is the rest of the line).
fn parse_key_values(ctx: &Ctx, operands: &str, keyword: &str) -> Result<Vec<KeyValue>, ParseError> {
    let words = words::parse_words(operands, ctx.escape);
    let Some(first) = words.first() else {
        return Err(ctx.error(format!("{keyword} requires at least one argument")));
    };
    if !first.contains('=') {
        let (key, value) = words::split_first(operands);
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Err(ctx.error(format!(
                "{keyword} must have two arguments (KEY VALUE or KEY=VALUE)"
            )));
        };
        return Ok(vec![KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        }]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ctx.error_at(
                format!("syntax error - can't find = in {word:?}; must be of the form name=value"),
                word,
            ));
        };
        if key.is_empty() {
            return Err(ctx.error_at(format!("{keyword} names can not be blank"), word));
        }
        pairs.push(KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(pairs)
}

fn parse_sources(
    ctx: &Ctx,
    operands: &str,
    keyword: &str,
    heredocs: &[Heredoc],
) -> Result<CopyInstr, ParseError> {
    let args = json_or_list(ctx, operands)?;
    let Some((dest, sources)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(ctx.error(format!(
            "{keyword} requires at least two arguments (SOURCE… DEST), but only {} given",
            args.len()
        )));
    };
    if heredoc_spec(dest).ok().flatten().is_some() {
        return Err(ctx.error_at(
            format!("{keyword} cannot accept a heredoc as a destination"),
            dest,
        ));
    }
    let mut out = CopyInstr {
        dest: dest.clone(),
        ..CopyInstr::default()
    };
    let json = matches!(words::parse_json(operands), Json::Strings(_));
    for source in sources {
        let spec = if json {
            None
        } else {
            heredoc_spec(source).map_err(|e| ctx.error_at(e, source))?
        };
        match spec {
            Some(spec) => {
                // BuildKit looks bodies up by name; the last heredoc with that name wins.
                let body = heredocs.iter().rev().find(|h| h.name == spec.name);
                let Some(body) = body else {
                    return Err(ctx.error_at("heredoc without a body", source));
                };
                out.sources.push(Source::Heredoc(body.clone()));
            }
            None => out.sources.push(Source::Path(source.clone())),
        }
    }
    Ok(out)
}

/// `--chmod` values (octal or symbolic) are checked here; values with variables are left to
/// the engine.
fn check_chmod(ctx: &Ctx, chmod: Option<String>) -> Result<Option<String>, ParseError> {
    if let Some(value) = &chmod
        && !value.contains('$')
    {
        crate::flags::Chmod::parse(value).map_err(|e| ctx.error_at(e, value))?;
    }
    Ok(chmod)
}

fn parse_healthcheck(
    ctx: &Ctx,
    flags: &[String],
    operands: &str,
) -> Result<InstructionKind, ParseError> {
    let (kind, rest) = match operands.find(char::is_whitespace) {
        Some(i) => (&operands[..i], operands[i..].trim_start()),
        None => (operands, ""),
    };
    if kind.is_empty() {
        return Err(ctx.error("HEALTHCHECK requires at least one argument"));
    }
    let kind_upper = kind.to_ascii_uppercase();
    if kind_upper == "NONE" {
        if !rest.is_empty() {
            return Err(ctx.error("HEALTHCHECK NONE takes no arguments"));
        }
        // Docker does not look at flags on HEALTHCHECK NONE; neither do we.
        return Ok(InstructionKind::Healthcheck(Healthcheck::None));
    }
    let values = ctx.flags(
        flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if kind_upper != "CMD" {
        return Err(ctx.error_at("unknown type in HEALTHCHECK (try CMD)", kind));
    }
    let command = command_form(ctx, rest)?;
    if command_is_empty(&command) {
        return Err(ctx.error("missing command after HEALTHCHECK CMD"));
    }
    let duration = |name: &str| -> Result<Option<String>, ParseError> {
        let Some(value) = values.string(name) else {
            return Ok(None);
        };
        let parsed = crate::flags::parse_duration(&value)
            .map_err(|e| ctx.error_at(format!("--{name}: {e}"), &value))?;
        if parsed < MIN_HEALTHCHECK_DURATION {
            return Err(ctx.error_at(format!("--{name} cannot be less than 1ms"), &value));
        }
        Ok(Some(value))
    };
    let retries = match values.string("retries") {
        None => None,
        Some(value) => match value.parse::<i32>() {
            Ok(n) if n >= 1 => Some(n.unsigned_abs()),
            Ok(_) => return Err(ctx.error_at("--retries must be at least 1", &value)),
            Err(_) => return Err(ctx.error_at("--retries must be a number", &value)),
        },
    };
    Ok(InstructionKind::Healthcheck(Healthcheck::Check {
        command,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    }))
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
