//! How an instruction's text is cut into operands, with BuildKit's rules: the keyword, the
//! leading `--flags`, the JSON (exec) form, whitespace-separated lists and the quote-aware
//! words of `ENV`/`LABEL`/`ARG`.

/// BuildKit's `[\t\v\f\r ]+` separator (no newline: a logical line has none).
pub(crate) fn is_separator(ch: char) -> bool {
    matches!(ch, '\t' | '\u{0B}' | '\u{0C}' | '\r' | ' ')
}

/// Split on runs of separators, dropping empty pieces at both ends.
pub(crate) fn split_whitespace(text: &str) -> Vec<String> {
    text.split(is_separator)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Split off the first separator run: `("KEY", "rest of text")`.
pub(crate) fn split_first(text: &str) -> (&str, Option<&str>) {
    match text.find(is_separator) {
        Some(i) => {
            let rest = text[i..].trim_start_matches(is_separator);
            (&text[..i], Some(rest))
        }
        None => (text, None),
    }
}

/// The keyword and the text after it (flags not yet removed), both trimmed.
pub(crate) fn split_command(line: &str) -> (&str, &str) {
    let line = line.trim();
    match split_first(line) {
        (keyword, Some(rest)) => (keyword, rest),
        (keyword, None) => (keyword, ""),
    }
}

/// Leading `--name[=value]` words, quotes removed and `\` escapes resolved (always `\`, not
/// the escape directive's character, as BuildKit does); `--` ends the flags. Returns the flags
/// and the remaining text, trimmed.
pub(crate) fn extract_flags(text: &str) -> (Vec<String>, String) {
    let chars: Vec<char> = text.chars().collect();
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        while pos < chars.len() && chars[pos].is_whitespace() {
            pos += 1;
        }
        if pos >= chars.len() {
            return (flags, String::new());
        }
        if !(chars[pos] == '-' && chars.get(pos + 1) == Some(&'-')) {
            let rest: String = chars[pos..].iter().collect();
            return (flags, rest.trim().to_string());
        }
        // One word, with quotes and backslash escapes.
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while pos < chars.len() {
            let ch = chars[pos];
            match quote {
                None if ch.is_whitespace() => break,
                None if ch == '\'' || ch == '"' => quote = Some(ch),
                Some(q) if ch == q => quote = None,
                _ if ch == '\\' => {
                    if let Some(&next) = chars.get(pos + 1) {
                        word.push(next);
                        pos += 1;
                    }
                }
                _ => word.push(ch),
            }
            pos += 1;
        }
        if word == "--" {
            let rest: String = chars[pos..].iter().collect();
            return (flags, rest.trim().to_string());
        }
        flags.push(word);
    }
}

/// The words of `ENV`/`LABEL`/`ARG` operands: split on unquoted whitespace, quotes and
/// escape sequences kept (expansion removes them later). An escape at the very end is dropped.
pub(crate) fn parse_words(text: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    // A word that contained quotes is kept even when empty (`""`).
    let mut blank_ok = false;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        match quote {
            None => {
                if ch.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    in_word = false;
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                in_word = true;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue;
                    }
                    word.push(ch);
                    i += 1;
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                    word.push(ch);
                    i += 1;
                    continue;
                }
                if ch == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        quote = None;
                        i += 1;
                        continue;
                    }
                    word.push(ch);
                    i += 1;
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(ch);
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Outcome of trying the JSON (exec) form.
pub(crate) enum Json {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Not JSON: use the shell form.
    Shell,
    /// A JSON array with a non-string element: an error, as in Docker.
    Mixed,
}

/// Docker's exec-form rule: the text (after leading whitespace) starts with `[` and its first
/// JSON value is an array. As in Docker (Go's `json.Decoder`), text after that value is
/// ignored.
pub(crate) fn parse_json(text: &str) -> Json {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Json::Shell;
    }
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = stream.next() else {
        return Json::Shell;
    };
    let mut strings = Vec::with_capacity(items.len());
    for item in items {
        match item {
            serde_json::Value::String(s) => strings.push(s),
            _ => return Json::Mixed,
        }
    }
    Json::Strings(strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_split_from_operands() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("--from=build /a /b", &["--from=build"], "/a /b"),
            ("--link --chmod=755 a b", &["--link", "--chmod=755"], "a b"),
            ("a --from=x b", &[], "a --from=x b"),
            (
                "--mount=type=cache,target=\"/a b\" make",
                &["--mount=type=cache,target=/a b"],
                "make",
            ),
            ("--x='q w' -- --not-a-flag", &["--x=q w"], "--not-a-flag"),
            ("--a\\ b c", &["--a b"], "c"),
            ("-x", &[], "-x"),
            ("--only", &["--only"], ""),
            ("", &[], ""),
        ];
        for (text, flags, rest) in cases {
            let (got_flags, got_rest) = extract_flags(text);
            assert_eq!(&got_flags, flags, "{text}");
            assert_eq!(&got_rest, rest, "{text}");
        }
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        let cases: &[(&str, &[&str])] = &[
            ("a=1 b=2", &["a=1", "b=2"]),
            ("a=\"x y\" b='z w'", &["a=\"x y\"", "b='z w'"]),
            ("a=x\\ y", &["a=x\\ y"]),
            ("a=\"\"", &["a=\"\""]),
            ("\"\"", &["\"\""]),
            ("  a   b  ", &["a", "b"]),
            ("a=\"q\\\"r\" x", &["a=\"q\\\"r\"", "x"]),
            ("a='q\\' x'", &["a='q\\'", "x'"]),
            ("tail\\", &["tail"]),
        ];
        for (text, words) in cases {
            assert_eq!(&parse_words(text, '\\'), words, "{text}");
        }
        assert_eq!(parse_words("a=x` y", '`'), vec!["a=x` y"]);
    }

    #[test]
    fn json_form_rules() {
        assert!(matches!(parse_json(r#"["a", "b c"]"#), Json::Strings(v) if v == ["a", "b c"]));
        assert!(matches!(parse_json(r#"  []"#), Json::Strings(v) if v.is_empty()));
        assert!(matches!(parse_json(r#"["a"] trailing"#), Json::Strings(v) if v == ["a"]));
        assert!(matches!(parse_json(r#"[1, 2]"#), Json::Mixed));
        assert!(matches!(parse_json(r#"["a", null]"#), Json::Mixed));
        assert!(matches!(parse_json(r#"[a, b]"#), Json::Shell));
        assert!(matches!(parse_json(r#"["a",]"#), Json::Shell));
        assert!(matches!(parse_json(r#"echo ["a"]"#), Json::Shell));
        assert!(matches!(parse_json(r#"{"a": 1}"#), Json::Shell));
    }

    #[test]
    fn command_split() {
        assert_eq!(split_command("  RUN   echo  hi "), ("RUN", "echo  hi"));
        assert_eq!(split_command("RUN\techo"), ("RUN", "echo"));
        assert_eq!(split_command("CMD"), ("CMD", ""));
        assert_eq!(split_whitespace(" a \t b  "), vec!["a", "b"]);
        assert_eq!(split_first("K  v w"), ("K", Some("v w")));
    }
}
