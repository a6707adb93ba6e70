//! `.dockerignore` matching with moby's `patternmatcher` semantics (and its `ignorefile`
//! reader), written from their documented behaviour on the `regex` crate.
//!
//! A pattern is matched against the whole context-relative path (`a/b/c`), never a suffix:
//! `*` and `?` do not cross `/`, `**` matches any number of directories, `[…]` is a class
//! (`[^…]` negated), `\` escapes. Patterns are applied in order and the last one that matches
//! wins; a pattern also matches a path when it matches one of the path's parent directories,
//! so `dir` excludes everything under `dir` and `!dir/keep` can bring a file back.
//!
//! Deliberate differences with moby, for patterns moby mishandles: a `^` outside a class is a
//! literal (moby passes it to the regex engine as an anchor, so the pattern never matches),
//! and `\` before a letter is that letter (moby emits a regex escape such as `\n`).

use regex::Regex;

use crate::ParseError;

/// How a pattern is tested (moby's four match types, kept because they are *not* all
/// equivalent to the regex: `**foo` is a plain suffix test).
#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcards: the whole path equals the pattern.
    Exact,
    /// Literal text then a trailing `**`: the path starts with the text.
    Prefix(String),
    /// A leading `**` then literal text: the path ends with the text.
    Suffix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The pattern after cleaning, without its `!`.
    text: String,
    exclusion: bool,
    matcher: Matcher,
    /// Components, for [`IgnoreMatcher::may_include_below`] (`!` patterns only).
    parts: Vec<Part>,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.text,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }

    /// The path or one of its parent directories matches.
    fn matches_or_parent(&self, path: &str) -> bool {
        if self.matches(path) {
            return true;
        }
        path.match_indices('/')
            .any(|(i, _)| self.matches(&path[..i]))
    }
}

/// `.dockerignore` matcher (moby patternmatcher semantics: anchored at the context root, `*`
/// and `?` never cross `/`, `**` any depth, `!` re-includes, last match wins, a matched
/// directory excludes everything under it unless a later `!` pattern can re-include).
///
/// ```
/// use strata_containerfile::IgnoreMatcher;
/// let m = IgnoreMatcher::parse("# build output\ntarget\n*.log\n!keep.log\n").unwrap();
/// assert!(m.is_excluded("target/debug/app"));
/// assert!(m.is_excluded("err.log"));
/// assert!(!m.is_excluded("keep.log"));
/// assert!(!m.is_excluded("src/err.log")); // `*.log` is anchored at the root
/// assert!(!m.may_include_below("target"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

impl IgnoreMatcher {
    /// Parse `.dockerignore` text: a `#` in the first column starts a comment, blank lines are
    /// skipped, each pattern is trimmed and cleaned (`./a` → `a`, `a/../b` → `b`, a leading
    /// `/` removed), `!` re-includes. Errors name the line of a malformed pattern.
    pub fn parse(text: &str) -> Result<IgnoreMatcher, ParseError> {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exclusion = pattern.starts_with('!');
            if exclusion {
                pattern = pattern[1..].trim();
            }
            let mut cleaned = String::new();
            if !pattern.is_empty() {
                cleaned = clean_path(pattern);
                if cleaned.len() > 1 && cleaned.starts_with('/') {
                    cleaned.remove(0);
                }
            }
            let written = if exclusion {
                format!("!{cleaned}")
            } else {
                cleaned
            };
            if let Some(compiled) = compile(&written).map_err(|message| ParseError {
                line: index + 1,
                message,
                text: line.to_string(),
            })? {
                patterns.push(compiled);
            }
        }
        Ok(IgnoreMatcher { patterns })
    }

    /// From patterns already split (COPY `--exclude`): each is trimmed and cleaned; empty
    /// ones are skipped. Errors carry the pattern's 1-based position as `line`.
    pub fn from_patterns(patterns: &[String]) -> Result<IgnoreMatcher, ParseError> {
        let mut out = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            let compiled = compile(pattern).map_err(|message| ParseError {
                line: index + 1,
                message,
                text: pattern.clone(),
            })?;
            out.extend(compiled);
        }
        Ok(IgnoreMatcher { patterns: out })
    }

    /// Is this context-relative path (`a/b/c`, no leading `/`) excluded? The path is cleaned
    /// first; the context root itself (`.`, ``) is never excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean_relative(path);
        if path == "." {
            return false;
        }
        let mut excluded = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exclusion an included one.
            if pattern.exclusion != excluded {
                continue;
            }
            if pattern.matches_or_parent(&path) {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Could some path *under* this excluded directory be re-included by a `!` pattern?
    /// (When false, a walker skips the whole directory.) Conservative: `true` whenever a `!`
    /// pattern might match below `dir`, or matches `dir` or one of its parents.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir = clean_relative(dir);
        let dir_parts: Vec<&str> = if dir == "." {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| (dir != "." && p.matches_or_parent(&dir)) || could_match_below(p, &dir_parts))
    }
}

/// Pattern component kinds for [`could_match_below`].
#[derive(Debug, Clone)]
enum Part {
    /// `**`: zero or more directories.
    AnyDepth,
    /// One path component, literally.
    Literal(String),
    /// One path component with `*`, `?` or escapes.
    One(Regex),
    /// Something the component walk cannot judge (a class that may match `/`, `**` inside a
    /// name): assume it can match.
    Unknown,
}

/// Split a pattern into components for [`could_match_below`].
fn parts_of(text: &str) -> Vec<Part> {
    text.split('/')
        .map(|component| {
            if component == "**" {
                Part::AnyDepth
            } else if component.contains("**") || component.contains('[') {
                Part::Unknown
            } else if !component.contains(['*', '?', '\\']) {
                Part::Literal(component.to_string())
            } else {
                component_regex(component).map_or(Part::Unknown, Part::One)
            }
        })
        .collect()
}

/// Can pattern `p` match a path strictly below the directory `dir`?
fn could_match_below(p: &Pattern, dir: &[&str]) -> bool {
    let parts = &p.parts;
    // Walk the directory's components, tracking which pattern positions are still alive (an
    // NFA run, iterative so a pattern or path with thousands of components cannot overflow
    // the stack).
    let closure = |mut states: Vec<usize>| {
        // `**` may match zero components.
        let mut i = 0;
        while i < states.len() {
            let pi = states[i];
            if matches!(parts.get(pi), Some(Part::AnyDepth)) && !states.contains(&(pi + 1)) {
                states.push(pi + 1);
            }
            i += 1;
        }
        states
    };
    let mut states = closure(vec![0]);
    for component in dir {
        let mut next = Vec::new();
        for &pi in &states {
            match parts.get(pi) {
                Some(Part::Unknown) => return true,
                Some(Part::AnyDepth) => next.push(pi),
                Some(Part::One(re)) if re.is_match(component) => next.push(pi + 1),
                Some(Part::Literal(text)) if text == component => next.push(pi + 1),
                _ => {}
            }
        }
        next.sort_unstable();
        next.dedup();
        states = closure(next);
        if states.is_empty() {
            return false;
        }
    }
    // The directory is consumed: any pattern component left can match something below it.
    states.iter().any(|&pi| pi < parts.len())
}

/// A single component (no `/`, no `**`, no class) as an anchored regex.
fn component_regex(component: &str) -> Option<Regex> {
    let mut out = String::from("^");
    let mut chars = component.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(next) => push_literal(&mut out, next),
                None => push_literal(&mut out, '\\'),
            },
            _ => push_literal(&mut out, ch),
        }
    }
    out.push('$');
    Regex::new(&out).ok()
}

/// Compile one pattern (moby `New`): trimmed, cleaned, `!` split off. `Ok(None)` for an empty
/// pattern.
fn compile(pattern: &str) -> Result<Option<Pattern>, String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Ok(None);
    }
    let (exclusion, body) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, pattern),
    };
    if exclusion && body.is_empty() {
        return Err("illegal exclusion pattern: \"!\"".to_string());
    }
    let text = clean_path(body);
    validate(&text)?;
    let matcher = build_matcher(&text)?;
    let parts = if exclusion {
        parts_of(&text)
    } else {
        Vec::new()
    };
    Ok(Some(Pattern {
        text,
        exclusion,
        matcher,
        parts,
    }))
}

/// Go's `filepath.Match` syntax check: classes well formed, no trailing `\`.
fn validate(pattern: &str) -> Result<(), String> {
    let bad = || format!("syntax error in pattern {pattern:?}");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err(bad());
                }
                i += 2;
            }
            '[' => {
                let (_, used) = class(&chars[i + 1..]).ok_or_else(bad)?;
                i += 1 + used;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// A class after its `[` (Go `filepath.Match` syntax): `^` negates, ranges `a-z`, `\`
/// escapes, at least one item. Returns the regex class and the chars used (with the `]`).
fn class(chars: &[char]) -> Option<(String, usize)> {
    let mut out = String::from("[");
    let mut i = 0;
    if chars.first() == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut items = 0;
    loop {
        match chars.get(i)? {
            ']' if items > 0 => {
                out.push(']');
                return Some((out, i + 1));
            }
            _ => {}
        }
        let (lo, used) = class_char(&chars[i..])?;
        i += used;
        push_class_char(&mut out, lo);
        if chars.get(i) == Some(&'-') {
            let (hi, used) = class_char(&chars[i + 1..])?;
            if hi < lo {
                return None;
            }
            i += 1 + used;
            out.push('-');
            push_class_char(&mut out, hi);
        }
        items += 1;
    }
}

/// One class character: not a bare `-` or `]`; `\x` is `x`.
fn class_char(chars: &[char]) -> Option<(char, usize)> {
    match chars.first()? {
        '-' | ']' => None,
        '\\' => chars.get(1).map(|c| (*c, 2)),
        c => Some((*c, 1)),
    }
}

fn push_literal(out: &mut String, ch: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(ch.encode_utf8(&mut buf)));
}

fn push_class_char(out: &mut String, ch: char) {
    out.push_str(&format!("\\x{{{:x}}}", ch as u32));
}

/// moby's pattern compiler: decide the match type and build the regex if one is needed.
fn build_matcher(pattern: &str) -> Result<Matcher, String> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    push_literal(&mut re, next);
                    i += 1;
                    kind = Kind::Regex;
                }
                None => push_literal(&mut re, '\\'),
            },
            '[' => {
                let (class, used) = class(&chars[i..])
                    .ok_or_else(|| format!("syntax error in pattern {pattern:?}"))?;
                re.push_str(&class);
                i += used;
                kind = Kind::Regex;
            }
            ']' => {
                push_literal(&mut re, ']');
                kind = Kind::Regex;
            }
            _ => push_literal(&mut re, ch),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            Matcher::Regex(Regex::new(&re).map_err(|e| format!("bad pattern {pattern:?}: {e}"))?)
        }
    })
}

/// Go's `path.Clean`: collapse `//`, drop `.`, resolve `..` lexically.
pub(crate) fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A path to test: cleaned, relative to the context root.
fn clean_relative(path: &str) -> String {
    let cleaned = clean_path(path);
    match cleaned.strip_prefix('/') {
        Some("") => ".".to_string(),
        Some(rest) => rest.to_string(),
        None => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> IgnoreMatcher {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        IgnoreMatcher::from_patterns(&patterns).unwrap()
    }

    /// (pattern, path, excluded), the cases of moby patternmatcher's `TestMatches`
    /// (rewritten from its documented semantics).
    const SINGLE: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**", "dir/dir2/file/", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file/", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        // Anchored at the root; `*` and `?` do not cross `/`.
        ("*.log", "err.log", true),
        ("*.log", "sub/err.log", false),
        ("*/*.log", "sub/err.log", true),
        ("?", "a/b", true),
        ("?", "ab", false),
        ("a*", "abc/x", true),
        // A matched parent excludes everything under it.
        ("node_modules", "node_modules/x/y/z.js", true),
        ("node_modules", "src/node_modules/x", false),
        ("a/b", "a/b/c", true),
        ("a/b", "a/bc", false),
        // moby's `**foo` is a plain suffix test.
        ("**foo", "barfoo", true),
        ("**foo", "bar/xfoo", true),
        // Escapes.
        ("\\*.txt", "*.txt", true),
        ("\\*.txt", "a.txt", false),
        ("[*]", "*", true),
        ("a[\\]]b", "a]b", true),
        // Patterns are cleaned; `^` is a literal.
        ("./a/../b//c/", "b/c", true),
        ("a^b", "a^b", true),
    ];

    #[test]
    fn single_patterns_like_moby() {
        for (pattern, path, excluded) in SINGLE {
            assert_eq!(
                matcher(&[pattern]).is_excluded(path),
                *excluded,
                "pattern {pattern:?} path {path:?}"
            );
        }
    }

    #[test]
    fn later_patterns_win() {
        // (patterns, path, excluded), including moby's multi-pattern cases.
        let cases: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (
                &[
                    "**",
                    "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                ],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (
                &["**", "!dist/*.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (&["!README.md", "*.md"], "README.md", true),
            (&["docs", "!docs/keep.txt"], "docs/keep.txt", false),
            (&["docs", "!docs/keep.txt"], "docs/other.txt", true),
            (&["docs", "!docs/keep.txt"], "docs", true),
            (&["!a"], "a", false),
        ];
        for (patterns, path, excluded) in cases {
            assert_eq!(
                matcher(patterns).is_excluded(path),
                *excluded,
                "{patterns:?} {path:?}"
            );
        }
    }

    #[test]
    fn b3_secret_excluded_and_keep_included() {
        // RELIABILITY row B3: `.dockerignore` has `secret`, `!keep`.
        let m = IgnoreMatcher::parse("secret\n!keep\n").unwrap();
        assert!(m.is_excluded("secret"));
        assert!(m.is_excluded("secret/inner/file"));
        assert!(!m.is_excluded("keep"));
        assert!(!m.is_excluded("other"));
        assert!(!m.may_include_below("secret"));
    }

    #[test]
    fn dockerignore_file_format() {
        let text = "\u{FEFF}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n  spaced  \n ./dot/../x \n";
        let m = IgnoreMatcher::parse(text).unwrap();
        let texts: Vec<String> = m
            .patterns
            .iter()
            .map(|p| format!("{}{}", if p.exclusion { "!" } else { "" }, p.text))
            .collect();
        assert_eq!(
            texts,
            vec![
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "spaced",
                "x"
            ]
        );
        // A `#` only starts a comment in the first column.
        let m = IgnoreMatcher::parse(" #not-a-comment\n").unwrap();
        assert!(m.is_excluded("#not-a-comment"));
        // CRLF files.
        let m = IgnoreMatcher::parse("a\r\nb\r\n").unwrap();
        assert!(m.is_excluded("a") && m.is_excluded("b"));
    }

    #[test]
    fn malformed_patterns_are_errors_with_their_line() {
        for (text, line) in [
            ("ok\n!\n", 2),
            ("a\n\n[\n", 3),
            ("x[]y\n", 1),
            ("a[z-a]\n", 1),
            ("a\\\n", 1),
        ] {
            let e = IgnoreMatcher::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
        let e = IgnoreMatcher::from_patterns(&["ok".to_string(), "[".to_string()]).unwrap_err();
        assert_eq!((e.line, e.text.as_str()), (2, "["));
    }

    #[test]
    fn paths_are_cleaned_before_matching() {
        let m = matcher(&["a/b"]);
        for path in ["a/b", "./a/b", "/a/b", "a//b", "a/c/../b", "a/b/"] {
            assert!(m.is_excluded(path), "{path}");
        }
        for path in ["", ".", "/", "./"] {
            assert!(
                !matcher(&["**"]).is_excluded(path),
                "{path:?}: the root is never excluded"
            );
        }
    }

    #[test]
    fn pruning_below_excluded_directories() {
        // (patterns, excluded dir, may a path below it be re-included)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["node_modules"], "node_modules", false),
            (
                &["node_modules", "!node_modules/keep"],
                "node_modules",
                true,
            ),
            (&["node_modules", "!src"], "node_modules", false),
            (&["a", "!a/b/c"], "a", true),
            (&["a", "!a/b/c"], "a/b", true),
            (&["a", "!a/b/c"], "a/x", false),
            (&["a", "!a/*/c"], "a/x", true),
            (&["a", "!**/keep"], "a/deep/dir", true),
            (&["a", "!*.md"], "a", false),
            (&["a", "!*/*.md"], "a", true),
            (&["a", "!*/*.md"], "a/b", false),
            (&["**", "!a/b"], "a", true),
            (&["**", "!a/b"], "c", false),
            (&["a", "![ab]/x"], "a", true),
            (&["a", "!a"], "a", true),
            (&["*"], ".", false),
            (&["*", "!x/y"], ".", true),
        ];
        for (patterns, dir, expected) in cases {
            let m = matcher(patterns);
            assert_eq!(m.may_include_below(dir), *expected, "{patterns:?} {dir:?}");
            // Soundness: whenever pruning is allowed, nothing below is actually included.
            if !expected && m.is_excluded(dir) {
                for below in [
                    "keep",
                    "b/c",
                    "x/c",
                    "deep/keep",
                    "x.md",
                    "y/z.md",
                    "b",
                    "y",
                ] {
                    let path = if *dir == "." {
                        below.to_string()
                    } else {
                        format!("{dir}/{below}")
                    };
                    assert!(
                        m.is_excluded(&path),
                        "{patterns:?}: {path} would be re-included"
                    );
                }
            }
        }
    }

    #[test]
    fn clean_like_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("/", "/"),
            ("a/b/", "a/b"),
            ("a//b", "a/b"),
            ("./a", "a"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("/a/./b/../c", "/a/c"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean_path(input), expected, "{input:?}");
        }
    }
}
