//! `WWW-Authenticate` challenges (RFC 7235) as registries send them.

use std::collections::BTreeMap;

/// What a registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// Scopes the registry named in the challenge (`repository:a:pull,push`).
        scope: Vec<String>,
        /// `error="insufficient_scope"` and the like.
        error: Option<String>,
    },
}

/// Parse the first challenge of a header value. Unknown schemes give `None`.
pub(crate) fn parse(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    let params = parse_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let realm = params.get("realm")?.clone();
        if realm.is_empty() {
            return None;
        }
        let scope = params
            .get("scope")
            .map(|s| {
                s.split(' ')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        return Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
            scope,
            error: params.get("error").cloned(),
        });
    }
    None
}

/// `key=value, key="quoted \" value"` → map with lower-case keys. Stops at garbage.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' || key_start == i {
            return out;
        }
        let key = s[key_start..i].to_ascii_lowercase();
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        value.push(b[i + 1] as char);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    _ => {
                        // Keep UTF-8 intact: copy the whole character.
                        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                return out;
            }
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&s[start..i]);
        }
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        let c = parse(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: vec!["repository:samalba/my-app:pull,push".into()],
                error: None,
            }
        );
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse("basic"), Some(Challenge::Basic));
        let c = parse(
            r#"bearer realm=http://x/t, error="insufficient_scope", scope="a:b:pull c:d:push""#,
        )
        .unwrap();
        match c {
            Challenge::Bearer {
                realm,
                scope,
                error,
                service,
            } => {
                assert_eq!(realm, "http://x/t");
                assert_eq!(scope, vec!["a:b:pull", "c:d:push"]);
                assert_eq!(error.as_deref(), Some("insufficient_scope"));
                assert_eq!(service, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(r#"Bearer realm="a\"b""#).map(|c| match c {
                Challenge::Bearer { realm, .. } => realm,
                _ => String::new(),
            }),
            Some("a\"b".into())
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "Bearer",
            "Bearer service=x",
            r#"Bearer realm="unterminated"#,
            "Negotiate abc",
            "Bearer realm=\"\"",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
