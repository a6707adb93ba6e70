use std::fmt;
use std::str::FromStr;

use crate::{Digest, SpecError};

/// The registry host a name without a domain refers to.
pub const DOCKER_HUB_REGISTRY: &str = "docker.io";
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A registry image reference: `[registry/]repository[:tag][@digest]`, normalised like Docker
/// (`busybox` → `docker.io/library/busybox:latest`).
///
/// When both a tag and a digest are given, the digest decides what is fetched and the content
/// is verified against it; the tag is kept only for display and for naming a destination.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || i >= b.len() {
            return false;
        }
        if !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_domain(d: &str) -> bool {
    // host[:port], host labels of [A-Za-z0-9-], or a bracketed IPv6 literal
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || p.len() > 5)
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b':')
        })
}

impl Reference {
    /// Build a reference from parts (the repository is validated).
    pub fn new(registry: &str, repository: &str, tag: Option<&str>) -> Result<Self, SpecError> {
        let mut s = format!("{registry}/{repository}");
        if let Some(t) = tag {
            s.push(':');
            s.push_str(t);
        }
        s.parse()
    }
    /// The registry as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// The host to talk to: Docker Hub's API host for `docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB_REGISTRY {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    pub fn with_tag(&self, tag: &str) -> Result<Reference, SpecError> {
        if !valid_tag(tag) {
            return Err(SpecError::InvalidReference {
                value: tag.into(),
                reason: "invalid tag".into(),
            });
        }
        Ok(Reference {
            tag: Some(tag.into()),
            digest: None,
            ..self.clone()
        })
    }
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
    /// The same repository with another repository path on the same registry.
    pub fn with_repository(&self, repository: &str) -> Result<Reference, SpecError> {
        Reference::new(&self.registry, repository, self.tag.as_deref())
    }
}

impl FromStr for Reference {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = |reason: &str| SpecError::InvalidReference {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            {
                return Err(bad(
                    "invalid tag (letters, digits, '_', '.', '-'; at most 128)",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                if !valid_domain(first) {
                    return Err(bad("invalid registry host"));
                }
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB_REGISTRY.into()
        } else {
            registry
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad("invalid repository path component"));
        }
        let repository = if registry == DOCKER_HUB_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}
impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Optimal string alignment distance (Levenshtein with adjacent transpositions), for
/// near-miss names: `buidler` is one edit from `builder`, `busybx` from `busybox`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            (
                "127.0.0.1:5000/base/busybox",
                "127.0.0.1:5000/base/busybox:latest",
            ),
            ("localhost/app:v1", "localhost/app:v1"),
            ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
            (
                "quay.io/a/b__c-d.e:tag_1.0-x",
                "quay.io/a/b__c-d.e:tag_1.0-x",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<Reference>().unwrap().to_string(),
                want,
                "{input}"
            );
        }
        let r: Reference = format!("busybox@{d}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.selector(), d);
        let r: Reference = format!("busybox:1@{d}").parse().unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.selector(), d, "digest wins over tag");
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/b/",
            "-a",
            "a-",
            "a..b",
            "busybox@sha256:../../x",
            "reg:5000x/a",
            "a b",
            "busybox:t/x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "accepted {bad:?}");
        }
        let long = format!("example.com/{}", "a".repeat(260));
        assert!(long.parse::<Reference>().is_err());
    }

    #[test]
    fn edit_distances() {
        assert_eq!(super::edit_distance("builder", "builder"), 0);
        assert_eq!(super::edit_distance("builder", "buidler"), 1);
        assert_eq!(super::edit_distance("builder", "bulder"), 1);
        assert_eq!(super::edit_distance("builder", "buildr2"), 2);
        assert_eq!(super::edit_distance("alpine", "golang"), 5);
        assert_eq!(super::edit_distance("", "ab"), 2);
    }
}
