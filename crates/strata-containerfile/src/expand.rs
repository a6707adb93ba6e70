//! Docker word expansion: the semantics of BuildKit's `frontend/dockerfile/shell/lex.go`,
//! written from its documented behaviour (not its code).
//!
//! One scanner serves three callers:
//! - [`crate::expand`] (a single word: variables replaced, quotes removed, escapes resolved);
//! - [`crate::expand_words`] (the same, then split on unquoted whitespace, where whitespace
//!   that came out of a variable value splits too, like an unquoted `$V` in a shell);
//! - the parser's heredoc detection, which needs the words of a line with quotes and escapes
//!   kept and unset variables left as written ([`Options::raw`]).

use crate::ExpandError;

/// Scanner switches (BuildKit's `RawQuotes`, `RawEscapes`, `SkipUnsetEnv`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output (the escaped character is still taken literally).
    pub raw_escapes: bool,
    /// Leave `$NAME` / `${NAME…}` as written when NAME is unset, instead of expanding to "".
    pub skip_unset: bool,
}

impl Options {
    /// Everything as written: used to find the words of an instruction line.
    pub(crate) fn raw() -> Options {
        Options {
            raw_quotes: true,
            raw_escapes: true,
            skip_unset: true,
        }
    }
}

/// Longest value a `#`/`%` pattern is tried against, position by position (quadratic work):
/// longer values are an error, so a hostile build arg cannot stall the build. Real values
/// (paths, versions, URLs) are far shorter.
const MAX_PATTERN_TRIM_LEN: usize = 8 * 1024;

/// Deepest `${…${…}…}` nesting accepted: the scanner recurses once per level, and a file of
/// nested braces must not exhaust the stack. Real words nest two or three levels.
const MAX_NESTING: usize = 64;

/// Longest result of expanding one word (an ENV/LABEL/ARG value, a path, a heredoc body)
/// when its variables make it longer than its own text. A value doubling itself
/// (`ENV A=${A}${A}`) on every line of a 429-byte file would otherwise reach hundreds of
/// MB and abort the build on allocation; an image config holding it could not be read by
/// any tool anyway (they cap configs at 4 MiB, `strata_spec::MAX_CONFIG_BYTES`).
pub const MAX_EXPANDED_BYTES: usize = 1024 * 1024;

/// Result of scanning: the joined word, and the same text split into words.
pub(crate) struct Scanned {
    pub word: String,
    pub words: Vec<String>,
}

/// Scan `text` with `opts`.
pub(crate) fn process(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
    opts: Options,
) -> Result<Scanned, ExpandError> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        escape,
        lookup,
        opts,
        depth: 0,
        limit: MAX_EXPANDED_BYTES.max(text.len()),
    };
    match lexer.process_until(&[], false) {
        Ok((word, words, _)) => Ok(Scanned { word, words }),
        Err(message) => Err(ExpandError {
            word: text.to_string(),
            message,
        }),
    }
}

/// Word accumulator with the shell's splitting rules: characters from quotes and escapes
/// never split; whitespace from plain text or variable values does. Empty words are dropped
/// (`a "" b` gives two words), as BuildKit does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    opts: Options,
    /// Current `${` nesting.
    depth: usize,
    /// Longest expansion accepted ([`MAX_EXPANDED_BYTES`], or the text's own length).
    limit: usize,
}

type Stopped = (String, Vec<String>, Option<char>);

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Scan until one of `stops` (consumed, and returned) or the end of input (only allowed
    /// when `stops` is empty). `raw_escapes` keeps escape characters (for glob patterns).
    fn process_until(&mut self, stops: &[char], raw_escapes: bool) -> Result<Stopped, String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stops.contains(&ch) {
                self.next();
                return Ok((result, words.finish(), Some(ch)));
            }
            match ch {
                '\'' => {
                    let text = self.single_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                '"' => {
                    let text = self.double_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                '$' => {
                    let text = self.dollar()?;
                    self.push_checked(&mut result, &text)?;
                    words.add_string(&text);
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if raw_escapes || self.opts.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stops.first() {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish(), None))
    }

    /// `'…'`: everything literal; a single quote cannot be escaped inside.
    fn single_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        if self.opts.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    );
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"…"`: variables expand; the escape character escapes only `"`, `$` and itself.
    fn double_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        if self.opts.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    self.push_checked(&mut result, &value)?;
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.peek() {
                            // An escape right before the end is dropped (the missing quote is
                            // reported on the next turn).
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                if self.opts.raw_escapes {
                                    result.push(ch);
                                }
                                ch = next;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Append what a substitution produced, within [`MAX_EXPANDED_BYTES`].
    fn push_checked(&self, out: &mut String, text: &str) -> Result<(), String> {
        if out.len() + text.len() > self.limit {
            return Err(format!(
                "expands to more than {} bytes (the limit of one expanded word)",
                self.limit
            ));
        }
        out.push_str(text);
        Ok(())
    }

    /// `$NAME`, `${NAME}` and `${NAME<modifier>…}`.
    fn dollar(&mut self) -> Result<String, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "substitutions nested deeper than {MAX_NESTING} levels"
            ));
        }
        self.depth += 1;
        let result = self.dollar_inner();
        self.depth -= 1;
        result
    }

    fn dollar_inner(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get(&name) {
                Some(value) => value,
                None if self.opts.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        if name.is_empty() {
            return Err("syntax error: bad substitution".to_string());
        }
        let Some(ch) = self.next() else {
            return Err("syntax error: missing '}'".to_string());
        };
        match ch {
            '}' => Ok(match self.get(&name) {
                Some(value) => value,
                None if self.opts.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '-' | '+' | '?' | '#' | '%' => self.modifier(&name, ch),
            '/' => self.substitute(&name),
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// `${NAME:-w}`, `${NAME-w}`, `${NAME:+w}`, `${NAME+w}`, `${NAME:?w}`, `${NAME?w}`,
    /// `${NAME#p}`, `${NAME##p}`, `${NAME%p}`, `${NAME%%p}`.
    fn modifier(&mut self, name: &str, first: char) -> Result<String, String> {
        let mut op = first;
        let mut spelled = first.to_string();
        let null_is_unset = first == ':';
        if null_is_unset {
            match self.next() {
                Some(ch @ ('-' | '+' | '?')) => {
                    op = ch;
                    spelled.push(ch);
                }
                Some(ch) => {
                    spelled.push(ch);
                    return Err(format!("unsupported modifier ({spelled}) in substitution"));
                }
                None => return Err("syntax error: missing '}'".to_string()),
            }
        }
        let pattern_op = op == '#' || op == '%';
        let word = self.word_until_brace(pattern_op)?;
        let value = self.get(name);
        let Some(value) = value else {
            if self.opts.skip_unset {
                return Ok(format!("${{{name}{spelled}{word}}}"));
            }
            return match op {
                '-' => Ok(word),
                '?' => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                _ => Ok(String::new()),
            };
        };
        let null = null_is_unset && value.is_empty();
        match op {
            '-' => Ok(if null { word } else { value }),
            '+' => Ok(if null { String::new() } else { word }),
            '?' if null => Err(format!(
                "{name}: {}",
                if word.is_empty() {
                    "is not allowed to be empty"
                } else {
                    &word
                }
            )),
            '?' => Ok(value),
            '#' | '%' => {
                let (longest, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let glob = glob_regex(&pattern, self.escape);
                if value.len() > MAX_PATTERN_TRIM_LEN {
                    return Err(format!(
                        "{name}: value longer than {MAX_PATTERN_TRIM_LEN} bytes for pattern removal"
                    ));
                }
                Ok(if op == '#' {
                    trim_prefix(&value, &glob, longest)
                } else {
                    trim_suffix(&value, &glob, longest)
                })
            }
            _ => Err(format!("unsupported modifier ({spelled}) in substitution")),
        }
    }

    fn word_until_brace(&mut self, raw_escapes: bool) -> Result<String, String> {
        match self.process_until(&['}'], raw_escapes) {
            Ok((word, _, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err("syntax error: missing '}'".to_string()),
            Err(e) => Err(e),
        }
    }

    /// `${NAME/pattern/replacement}` (first match) and `${NAME//pattern/replacement}` (all);
    /// `${NAME/pattern}` deletes the match, as in bash.
    fn substitute(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let (pattern, _, stop) = match self.process_until(&['/', '}'], true) {
            Ok(scanned) => scanned,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '}'".to_string());
            }
            Err(e) => return Err(e),
        };
        let replacement = if stop == Some('/') {
            self.word_until_brace(false)?
        } else {
            String::new()
        };
        let Some(value) = self.get(name) else {
            if self.opts.skip_unset {
                let slashes = if all { "//" } else { "/" };
                return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        if pattern.is_empty() {
            return Ok(value);
        }
        let glob = glob_regex(&pattern, self.escape);
        let re = regex::Regex::new(&format!("(?s:{glob})"))
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        let mut out = String::with_capacity(value.len());
        let mut last = 0;
        for found in re.find_iter(&value) {
            // An empty match replaces nothing (bash never substitutes an empty match).
            if found.start() == found.end() {
                continue;
            }
            out.push_str(&value[last..found.start()]);
            self.push_checked(&mut out, &replacement)?;
            last = found.end();
            if !all {
                break;
            }
        }
        out.push_str(&value[last..]);
        Ok(out)
    }

    /// A variable name: letters, digits and `_`; or a run of digits (`$1`); or one special
    /// parameter character (`$@`, `$$`, `$#`, …).
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(digit) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(digit);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

/// Translate a shell glob (`*`, `?`, `[…]`, escapes) into a regex body (not anchored).
fn glob_regex(pattern: &str, escape: char) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == escape {
            match chars.get(i) {
                Some(&next) => {
                    push_literal(&mut out, next);
                    i += 1;
                }
                None => push_literal(&mut out, ch),
            }
            continue;
        }
        match ch {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => match class_regex(&chars[i..], escape) {
                Some((class, used)) => {
                    out.push_str(&class);
                    i += used;
                }
                // An unclosed `[` is a literal, as in the shell.
                None => push_literal(&mut out, '['),
            },
            _ => push_literal(&mut out, ch),
        }
    }
    out
}

/// A bracket expression after its `[`: returns the regex class and how many chars it used.
fn class_regex(chars: &[char], escape: char) -> Option<(String, usize)> {
    let mut out = String::from("[");
    let mut i = 0;
    if matches!(chars.first(), Some('!' | '^')) {
        out.push('^');
        i += 1;
    }
    let start = i;
    while i < chars.len() {
        let mut ch = chars[i];
        if ch == ']' && i > start {
            out.push(']');
            return Some((out, i + 1));
        }
        if ch == escape {
            i += 1;
            ch = *chars.get(i)?;
        }
        push_class_char(&mut out, ch);
        // A range `a-z` (a `-` right before `]` is literal).
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|c| *c != ']') {
            let mut hi = chars[i + 2];
            let mut used = 2;
            if hi == escape {
                hi = *chars.get(i + 3)?;
                used = 3;
            }
            if hi < ch {
                return None;
            }
            out.push('-');
            push_class_char(&mut out, hi);
            i += used;
        }
        i += 1;
    }
    None
}

fn push_literal(out: &mut String, ch: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(ch.encode_utf8(&mut buf)));
}

fn push_class_char(out: &mut String, ch: char) {
    out.push_str(&format!("\\x{{{:x}}}", ch as u32));
}

fn anchored(glob: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?s:{glob})$")).ok()
}

/// `${V#p}` (shortest) / `${V##p}` (longest): remove a matching prefix.
fn trim_prefix(value: &str, glob: &str, longest: bool) -> String {
    let Some(re) = anchored(glob) else {
        return value.to_string();
    };
    let mut ends: Vec<usize> = value.char_indices().map(|(i, _)| i).collect();
    ends.push(value.len());
    if longest {
        ends.reverse();
    }
    for end in ends {
        if re.is_match(&value[..end]) {
            return value[end..].to_string();
        }
    }
    value.to_string()
}

/// `${V%p}` (shortest) / `${V%%p}` (longest): remove a matching suffix.
fn trim_suffix(value: &str, glob: &str, longest: bool) -> String {
    let Some(re) = anchored(glob) else {
        return value.to_string();
    };
    let mut starts: Vec<usize> = value.char_indices().map(|(i, _)| i).collect();
    starts.push(value.len());
    if !longest {
        starts.reverse();
    }
    for start in starts {
        if re.is_match(&value[start..]) {
            return value[..start].to_string();
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use crate::{MAX_EXPANDED_BYTES, expand, expand_words};

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD" => Some("/home".to_string()),
            "SHELL" => Some("bash".to_string()),
            "KOREAN" => Some("한국어".to_string()),
            "NULL" => Some(String::new()),
            "FILE" => Some("archive.tar.gz".to_string()),
            "PATHV" => Some("/usr/local/bin:/usr/bin:/bin".to_string()),
            "SPACED" => Some("abc  def".to_string()),
            "LEADING" => Some("  ab c".to_string()),
            "TRAILING" => Some("ab c   ".to_string()),
            _ => None,
        }
    }

    /// One word per row: (input, expected output or `None` for an error). The first block
    /// follows the cases of BuildKit's `shell/envVarTest` (rewritten from its documented
    /// semantics), the rest covers the newer modifiers.
    const WORDS: &[(&str, Option<&str>)] = &[
        ("hello", Some("hello")),
        ("he'll'o", Some("hello")),
        ("he'llo", None),
        ("he\\'llo", Some("he'llo")),
        ("he\\\\'llo", None),
        ("abc\\tdef", Some("abctdef")),
        ("\"abc\\tdef\"", Some("abc\\tdef")),
        ("\"abc\\\\tdef\"", Some("abc\\tdef")),
        ("'abc\\tdef'", Some("abc\\tdef")),
        ("hello\\", Some("hello")),
        ("hello\\\\", Some("hello\\")),
        ("\"hello", None),
        ("\"hello\\\"", None),
        ("\"hel'lo\"", Some("hel'lo")),
        ("'hello", None),
        ("'hello\\'", Some("hello\\")),
        ("'hello\\there'", Some("hello\\there")),
        ("\"''\"", Some("''")),
        ("$.", Some("$.")),
        ("$", Some("$")),
        ("he$1x", Some("hex")),
        ("he$.x", Some("he$.x")),
        ("he$pwd.", Some("he.")),
        ("he$PWD", Some("he/home")),
        ("he\\$PWD", Some("he$PWD")),
        ("he\\\\$PWD", Some("he\\/home")),
        ("\"he\\$PWD\"", Some("he$PWD")),
        ("\"he\\\\$PWD\"", Some("he\\/home")),
        ("\\${}", Some("${}")),
        ("\\${}aaa", Some("${}aaa")),
        ("he\\${}xx", Some("he${}xx")),
        ("${}", None),
        ("${}aaa", None),
        ("he${}xx", None),
        ("he${hi}", Some("he")),
        ("he${hi}xx", Some("hexx")),
        ("he${PWD}", Some("he/home")),
        ("he${.}", None),
        ("he${XXX:-000}xx", Some("he000xx")),
        ("he${PWD:-000}xx", Some("he/homexx")),
        ("he${XXX:-$PWD}xx", Some("he/homexx")),
        ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
        ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
        ("he${XXX:YYY}", None),
        ("he${XXX?}", None),
        ("he${XXX:?}", None),
        ("he${PWD?}", Some("he/home")),
        ("he${PWD:?}", Some("he/home")),
        ("he${NULL?}", Some("he")),
        ("he${NULL:?}", None),
        ("he${XXX:+${PWD}}xx", Some("hexx")),
        ("he${PWD:+${XXX}}xx", Some("hexx")),
        ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
        ("he${XXX:+000}xx", Some("hexx")),
        ("he${PWD:+000}xx", Some("he000xx")),
        ("'he${XX}'", Some("he${XX}")),
        ("\"he${PWD}\"", Some("he/home")),
        ("\"he'$PWD'\"", Some("he'/home'")),
        ("\"$PWD\"", Some("/home")),
        ("'$PWD'", Some("$PWD")),
        ("'\\$PWD'", Some("\\$PWD")),
        ("'\"hello\"'", Some("\"hello\"")),
        ("he${PWD", None),
        ("he${PWD:=000}xx", None),
        ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
        ("he${XXX:-\\$PWD:}xx", Some("he$PWD:xx")),
        ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
        ("안녕하세요", Some("안녕하세요")),
        ("안'녕'하세요", Some("안녕하세요")),
        ("안'녕하세요", None),
        ("안녕\\'하세요", Some("안녕'하세요")),
        ("안녕$1x", Some("안녕x")),
        ("안녕${PWD}", Some("안녕/home")),
        ("안녕${XXX:-${YYY:-yyy}}xx", Some("안녕yyyxx")),
        ("$KOREAN", Some("한국어")),
        ("안녕$KOREAN", Some("안녕한국어")),
        ("${{aaa}", None),
        ("${aaa}}", Some("}")),
        ("${aaa", None),
        ("${{aaa", None),
        ("${aaa}}}", Some("}}")),
        ("${:}", None),
        // `${V-x}` / `${V+x}`: only an unset variable counts (an empty one is set).
        ("${NULL-def}", Some("")),
        ("${NULL:-def}", Some("def")),
        ("${XXX-def}", Some("def")),
        ("${NULL+alt}", Some("alt")),
        ("${NULL:+alt}", Some("")),
        ("${XXX+alt}", Some("")),
        ("${PWD-def}", Some("/home")),
        ("${XXX-\"a b\"}", Some("a b")),
        ("${XXX:-'$PWD'}", Some("$PWD")),
        // Special parameters expand like unset variables.
        ("$$", Some("")),
        ("a$@b", Some("ab")),
        ("${#}", Some("")),
        // Pattern removal.
        ("${FILE#*.}", Some("tar.gz")),
        ("${FILE##*.}", Some("gz")),
        ("${FILE%.*}", Some("archive.tar")),
        ("${FILE%%.*}", Some("archive")),
        ("${FILE#archive}", Some(".tar.gz")),
        ("${FILE#nomatch}", Some("archive.tar.gz")),
        ("${FILE%.gz}", Some("archive.tar")),
        ("${FILE%[.]gz}", Some("archive.tar")),
        ("${FILE#a?c}", Some("hive.tar.gz")),
        ("${FILE#\\*}", Some("archive.tar.gz")),
        ("${XXX#a}", Some("")),
        ("${PATHV##*:}", Some("/bin")),
        ("${PATHV%%:*}", Some("/usr/local/bin")),
        ("${FILE:#x}", None),
        // Substitution.
        ("${PATHV/:/;}", Some("/usr/local/bin;/usr/bin:/bin")),
        ("${PATHV//:/;}", Some("/usr/local/bin;/usr/bin;/bin")),
        ("${PATHV//\\/usr/}", Some("/local/bin:/bin:/bin")),
        ("${FILE/.tar}", Some("archive.gz")),
        ("${FILE/t*r/X}", Some("archive.X.gz")),
        ("${FILE//a/}", Some("rchive.tr.gz")),
        ("${XXX/a/b}", Some("")),
        ("${FILE/a/b", None),
    ];

    #[test]
    fn words_expand_like_buildkit() {
        for (input, expected) in WORDS {
            let got = expand(input, &env, '\\');
            match expected {
                Some(expected) => assert_eq!(
                    got.as_deref().map_err(|e| e.to_string()),
                    Ok(*expected),
                    "input {input:?}"
                ),
                None => assert!(got.is_err(), "input {input:?} should fail, got {got:?}"),
            }
        }
    }

    #[test]
    fn error_messages_name_the_word_and_the_problem() {
        let e = expand("x${NOPE:?set NOPE first}", &env, '\\').unwrap_err();
        assert_eq!(e.word, "x${NOPE:?set NOPE first}");
        assert_eq!(e.message, "NOPE: set NOPE first");
        let e = expand("${NOPE?}", &env, '\\').unwrap_err();
        assert_eq!(e.message, "NOPE: is not allowed to be unset");
        let e = expand("${NULL:?}", &env, '\\').unwrap_err();
        assert_eq!(e.message, "NULL: is not allowed to be empty");
        let e = expand("${PWD:=x}", &env, '\\').unwrap_err();
        assert!(e.message.contains("unsupported modifier (:=)"), "{e}");
        let e = expand("'open", &env, '\\').unwrap_err();
        assert!(e.message.contains("single-quote"), "{e}");
        assert!(e.to_string().contains("'open"));
    }

    /// (input, expected words; `["error"]` for an error), following BuildKit's
    /// `shell/wordsTest`: whitespace from variable values splits, quoted whitespace does not.
    const SPLITS: &[(&str, &[&str])] = &[
        ("hello", &["hello"]),
        ("hello${hi}bye", &["hellobye"]),
        ("hello${SHELL}bye", &["hellobashbye"]),
        ("hello${SPACED}bye", &["helloabc", "defbye"]),
        ("hello\"${SPACED}\"bye", &["helloabc  defbye"]),
        ("hello \"${SPACED}\"bye", &["hello", "abc  defbye"]),
        ("hello${LEADING}def", &["hello", "ab", "cdef"]),
        ("hello\"${LEADING}\" def", &["hello  ab c", "def"]),
        ("hello\"${LEADING}\"", &["hello  ab c"]),
        ("hello${LEADING}", &["hello", "ab", "c"]),
        ("hello${TRAILING}", &["helloab", "c"]),
        ("hello${TRAILING}d", &["helloab", "c", "d"]),
        ("hello\"${TRAILING}\"d", &["helloab c   d"]),
        ("hel\"lo${TRAILING}\"", &["helloab c   "]),
        ("hello\" there  \"", &["hello there  "]),
        ("hello there     ", &["hello", "there"]),
        ("hello\\ there", &["hello there"]),
        ("hello\" there", &["error"]),
        ("hello\\\" there", &["hello\"", "there"]),
        ("hello\"\\\\there\"", &["hello\\there"]),
        ("hello\"\\there\"", &["hello\\there"]),
        ("hello'\\\\there'", &["hello\\\\there"]),
        ("hello'\\there'", &["hello\\there"]),
        ("hello'$there'", &["hello$there"]),
        ("a \"\" b", &["a", "b"]),
        ("  ", &[]),
        ("80/tcp $PWD", &["80/tcp", "/home"]),
    ];

    #[test]
    fn words_split_like_buildkit() {
        for (input, expected) in SPLITS {
            let got = match expand_words(input, &env, '\\') {
                Ok(words) => words,
                Err(_) => vec!["error".to_string()],
            };
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    #[test]
    fn backtick_escape_leaves_backslashes_alone() {
        let cases: &[(&str, &str)] = &[
            ("C:\\Program Files\\$SHELL", "C:\\Program Files\\bash"),
            ("`$PWD", "$PWD"),
            ("a` b", "a b"),
            ("\"q`\"q\"", "q\"q"),
            ("\"c:\\dir\"", "c:\\dir"),
            ("tail`", "tail"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                expand(input, &env, '`').unwrap(),
                *expected,
                "input {input:?}"
            );
        }
        assert_eq!(
            expand_words("a` b c:\\x", &env, '`').unwrap(),
            vec!["a b", "c:\\x"]
        );
    }

    #[test]
    fn raw_mode_keeps_the_text() {
        use super::{Options, process};
        let none = |_: &str| None;
        let scanned = process(
            "RUN cat \"a b\" <<'EOF' $X ${Y:-z} \\<<",
            &none,
            '\\',
            Options::raw(),
        )
        .unwrap();
        assert_eq!(
            scanned.words,
            vec!["RUN", "cat", "\"a b\"", "<<'EOF'", "$X", "${Y:-z}", "\\<<"]
        );
    }

    #[test]
    fn hostile_patterns_do_not_hang_or_panic() {
        let long = "a".repeat(5000);
        let huge = "a".repeat(100_000);
        let lookup = |n: &str| match n {
            "L" => Some(long.clone()),
            "H" => Some(huge.clone()),
            _ => None,
        };
        let out = expand("${L%%*b*}", &lookup, '\\').unwrap();
        assert_eq!(out.len(), 5000);
        assert_eq!(expand("${L//a/}", &lookup, '\\').unwrap(), "");
        assert_eq!(expand("${H//a/}", &lookup, '\\').unwrap(), "");
        let e = expand("${H%a}", &lookup, '\\').unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
        // Deep nesting is an error, not a stack overflow.
        let nested = "${A:-".repeat(100_000) + &"}".repeat(100_000);
        let e = expand(&nested, &lookup, '\\').unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let fine = "${A:-".repeat(10) + "x" + &"}".repeat(10);
        assert_eq!(expand(&fine, &lookup, '\\').unwrap(), "x");
        // Malformed classes are literals, as in the shell.
        assert_eq!(expand("${PWD#[}", &env, '\\').unwrap(), "/home");
        assert_eq!(expand("${PWD#[z-a]}", &env, '\\').unwrap(), "/home");
        assert_eq!(expand("${PWD/[/x}", &env, '\\').unwrap(), "/home");
        // An escaped `}` does not close the substitution.
        assert!(expand("${PWD#\\}", &env, '\\').is_err());
    }

    #[test]
    fn expansions_that_grow_past_the_cap_are_errors() {
        let half = "x".repeat(MAX_EXPANDED_BYTES / 2 + 1);
        let lookup = |n: &str| (n == "A").then(|| half.clone());
        // Doubling a value past the cap: an error naming the limit, not an allocation.
        for word in ["${A}${A}", "\"$A$A\"", "${A/x/${A}}${A}", "${A//x/xx}"] {
            let e = expand(word, &lookup, '\\').unwrap_err();
            assert!(e.message.contains("expands to more than"), "{word}: {e}");
            assert_eq!(e.word, word);
        }
        assert_eq!(expand("$A", &lookup, '\\').unwrap().len(), half.len());
        // A long text without variables is not limited by the cap (heredoc bodies).
        let body = "y".repeat(MAX_EXPANDED_BYTES * 2);
        assert_eq!(expand(&body, &lookup, '\\').unwrap().len(), body.len());
    }
}
