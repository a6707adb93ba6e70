//! Platform groups: which Containerfile, context and build args each target platform uses
//! when one build makes its platforms from different files, as the multi-OS recipe does
//! (Linux from `Dockerfile`, each Windows version from `Dockerfile.windows` on its own base):
//! `-f windows=Dockerfile.windows`, `--build-arg windows/amd64:10.0.17763=WINBASE=1809`, or a
//! build file ([`crate::read_build_file`]).
//!
//! A value is scoped by a [`PlatformPattern`] (`os[/arch[/variant]][:os.version]`, the
//! `--platform` syntax with everything after the os optional). For one platform, the most
//! specific matching scope wins: a pattern that fixes everything another fixes (and more) is
//! more specific, so `windows/amd64:10.0.17763` beats `windows/amd64` beats `windows` beats no
//! scope. Two matching scopes where neither is more specific (`windows:10.0.17763` and
//! `windows/amd64`) that give different values are an error, never a guess.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use strata_spec::Platform;

use crate::{BuildError, ContainerfileSource};

/// `os[/arch[/variant]][:os.version]`: the platforms a scoped value applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlatformPattern {
    os: String,
    architecture: Option<String>,
    variant: Option<String>,
    os_version: Option<String>,
    text: String,
}

impl FromStr for PlatformPattern {
    type Err = BuildError;
    fn from_str(s: &str) -> Result<Self, BuildError> {
        let bad = |reason: &str| BuildError::InvalidOption {
            option: format!("platform pattern {s:?}"),
            reason: format!("{reason} (expected os[/arch[/variant]][:os.version])"),
        };
        let (main, os_version) = match s.split_once(':') {
            Some((m, v)) => (m, Some(v)),
            None => (s, None),
        };
        let parts: Vec<&str> = main.split('/').collect();
        if parts.len() > 3 {
            return Err(bad("too many '/' components"));
        }
        // The --platform parser checks the characters of every part; a placeholder
        // architecture stands in for an os-only pattern.
        let mut probe = parts.clone();
        if probe.len() == 1 {
            probe.push("amd64");
        }
        let mut probe = probe.join("/");
        if let Some(v) = os_version {
            probe.push(':');
            probe.push_str(v);
        }
        let parsed: Platform = probe.parse().map_err(|e| bad(&format!("{e}")))?;
        let normalised = parsed.normalised();
        Ok(PlatformPattern {
            os: normalised.os,
            architecture: (parts.len() > 1).then(|| normalised.architecture.clone()),
            // A variant the architecture's default folds away (arm64/v8) fixes nothing.
            variant: if parts.len() > 2 {
                normalised.variant
            } else {
                None
            },
            os_version: parsed.os_version,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for PlatformPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PlatformPattern {
    /// Does this pattern apply to `platform` (a build's target platform)? An os.version
    /// matches on whole components (`10.0.17763` matches `10.0.17763.1757`).
    pub fn matches(&self, platform: &Platform) -> bool {
        let have = platform.normalised();
        let wanted = Platform {
            os: self.os.clone(),
            architecture: self
                .architecture
                .clone()
                .unwrap_or_else(|| have.architecture.clone()),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            ..Default::default()
        };
        wanted.matches(&have)
    }

    /// Is this pattern at least as specific as `other`: does it fix everything `other`
    /// fixes, to the same values?
    fn narrows(&self, other: &PlatformPattern) -> bool {
        let fixes =
            |mine: &Option<String>, theirs: &Option<String>| theirs.is_none() || mine == theirs;
        let version = match (&self.os_version, &other.os_version) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(mine), Some(theirs)) => mine == theirs || mine.starts_with(&format!("{theirs}.")),
        };
        self.os == other.os
            && fixes(&self.architecture, &other.architecture)
            && fixes(&self.variant, &other.variant)
            && version
    }

    /// Split `PATTERN=REST` when the part before the first `=` starts with a known os
    /// ([`strata_spec::KNOWN_OSES`]: `windows=Dockerfile.windows`, `linux/arm64=…`, while
    /// `--build-arg FOO=x=y` stays unscoped); `None` when the value is unscoped.
    pub fn split_scope(value: &str) -> Result<Option<(PlatformPattern, &str)>, BuildError> {
        let Some((head, rest)) = value.split_once('=') else {
            return Ok(None);
        };
        let os = head.split(['/', ':']).next().unwrap_or_default();
        if !strata_spec::KNOWN_OSES.contains(&os.to_ascii_lowercase().as_str()) {
            return Ok(None);
        }
        Ok(Some((head.parse()?, rest)))
    }
}

/// A value given for all platforms (`scope: None`) or for the platforms a pattern matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoped<T> {
    pub scope: Option<PlatformPattern>,
    pub value: T,
    /// The value as the user wrote it, with its flag (`-f windows=Dockerfile.windows`), for
    /// messages.
    pub given: String,
}

/// Of `candidates` (all matching one platform), the most specific ones: those no other
/// candidate narrows strictly.
fn most_specific<'a, T>(candidates: &[&'a Scoped<T>]) -> Vec<&'a Scoped<T>> {
    let scope = |c: &Scoped<T>| c.scope.clone();
    candidates
        .iter()
        .filter(|c| {
            !candidates.iter().any(|o| match (scope(o), scope(c)) {
                (Some(_), None) => true,
                (Some(o), Some(c)) => o.narrows(&c) && !c.narrows(&o),
                _ => false,
            })
        })
        .copied()
        .collect()
}

/// The one value among the most specific `winners`; the last given when they share a scope,
/// an error naming them when distinct scopes disagree.
fn one_winner<'a, T: PartialEq>(
    platform: &Platform,
    winners: &[&'a Scoped<T>],
) -> Result<Option<&'a T>, BuildError> {
    let Some(last) = winners.last() else {
        return Ok(None);
    };
    let disagree = winners
        .iter()
        .any(|w| w.scope != last.scope && w.value != last.value);
    if disagree {
        let given: Vec<&str> = winners.iter().map(|w| w.given.as_str()).collect();
        return Err(BuildError::AmbiguousScope {
            platform: Box::new(platform.clone()),
            given: given.join(", "),
        });
    }
    Ok(Some(&last.value))
}

/// The value of `values` for `platform`: the most specific matching scope's, else the
/// unscoped one's; `None` when nothing applies.
pub fn scoped_value<'a, T: PartialEq>(
    platform: &Platform,
    values: &'a [Scoped<T>],
) -> Result<Option<&'a T>, BuildError> {
    let candidates: Vec<&Scoped<T>> = values
        .iter()
        .filter(|v| v.scope.as_ref().is_none_or(|s| s.matches(platform)))
        .collect();
    one_winner(platform, &most_specific(&candidates))
}

/// Build args (`(KEY, VALUE)` values) for `platform`: every key takes its value from the most
/// specific matching scope that sets it (unscoped values included).
pub fn scoped_args(
    platform: &Platform,
    values: &[Scoped<(String, String)>],
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut by_key: BTreeMap<&str, Vec<Scoped<&str>>> = BTreeMap::new();
    for v in values {
        if v.scope.as_ref().is_none_or(|s| s.matches(platform)) {
            by_key.entry(&v.value.0).or_default().push(Scoped {
                scope: v.scope.clone(),
                value: v.value.1.as_str(),
                given: v.given.clone(),
            });
        }
    }
    let mut out = BTreeMap::new();
    for (key, candidates) in by_key {
        let refs: Vec<&Scoped<&str>> = candidates.iter().collect();
        if let Some(value) = one_winner(platform, &most_specific(&refs))? {
            out.insert(key.to_string(), value.to_string());
        }
    }
    Ok(out)
}

/// Every scope of `values` must match one of `platforms`: a scope that matches nothing is a
/// typo or a platform left out of `--platform`.
pub fn check_scopes<T>(platforms: &[Platform], values: &[Scoped<T>]) -> Result<(), BuildError> {
    for v in values {
        if let Some(scope) = &v.scope
            && !platforms.iter().any(|p| scope.matches(p))
        {
            let list: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
            return Err(BuildError::UnmatchedScope {
                given: v.given.clone(),
                platforms: list.join(", "),
            });
        }
    }
    Ok(())
}

/// Platforms built from one Containerfile, context and set of build args. A build of several
/// groups ([`crate::BuildOptions::groups`]) makes one result: one index over every group's
/// platforms.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformGroup {
    /// A name for messages (a build file's target name).
    pub name: Option<String>,
    /// The group's platforms; empty = the host's. A platform may be in one group only.
    pub platforms: Vec<Platform>,
    pub containerfile: ContainerfileSource,
    /// The build context directory.
    pub context: PathBuf,
    /// Build args of this group, over [`crate::BuildOptions::build_args`].
    pub build_args: BTreeMap<String, String>,
    /// Build this stage instead of [`crate::BuildOptions::target`] (else the last).
    pub target: Option<String>,
}

impl PlatformGroup {
    /// Merge groups that differ only in their platforms (in first-seen order), so that each
    /// Containerfile is parsed and each context opened once.
    pub fn merge(groups: impl IntoIterator<Item = PlatformGroup>) -> Vec<PlatformGroup> {
        let mut out: Vec<PlatformGroup> = Vec::new();
        for g in groups {
            let same = out.iter_mut().find(|o| {
                o.name == g.name
                    && o.containerfile == g.containerfile
                    && o.context == g.context
                    && o.build_args == g.build_args
                    && o.target == g.target
            });
            match same {
                Some(o) => {
                    for p in g.platforms {
                        if !o.platforms.contains(&p) {
                            o.platforms.push(p);
                        }
                    }
                }
                None => out.push(g),
            }
        }
        out
    }

    /// The Containerfile's name, as messages and `--format json` show it.
    pub fn containerfile_name(&self) -> String {
        match &self.containerfile {
            ContainerfileSource::Path(p) => p.display().to_string(),
            ContainerfileSource::Text { name, .. } => name.clone(),
        }
    }
}

/// The Containerfile a context holds by default: `Containerfile`, else `Dockerfile`.
pub fn default_containerfile(context: &Path) -> Option<PathBuf> {
    ["Containerfile", "Dockerfile"]
        .iter()
        .map(|n| context.join(n))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }
    fn pat(s: &str) -> PlatformPattern {
        s.parse().unwrap()
    }
    fn scoped(given: &str) -> Scoped<String> {
        match PlatformPattern::split_scope(given).unwrap() {
            Some((scope, rest)) => Scoped {
                scope: Some(scope),
                value: rest.to_string(),
                given: given.to_string(),
            },
            None => Scoped {
                scope: None,
                value: given.to_string(),
                given: given.to_string(),
            },
        }
    }

    #[test]
    fn patterns_match_platforms() {
        let ltsc2019 = p("windows/amd64:10.0.17763.1757");
        for (pattern, yes) in [
            ("windows", true),
            ("windows/amd64", true),
            ("windows/x86_64", true),
            ("windows:10.0.17763", true),
            ("windows/amd64:10.0.17763", true),
            ("windows/amd64:10.0.17763.1757", true),
            ("windows/amd64:10.0.1776", false),
            ("windows/amd64:10.0.18362", false),
            ("windows/arm64", false),
            ("linux", false),
        ] {
            assert_eq!(pat(pattern).matches(&ltsc2019), yes, "{pattern}");
        }
        // A version in the pattern needs one in the platform.
        assert!(!pat("windows:10.0.17763").matches(&p("windows/amd64")));
        assert!(pat("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(pat("linux/arm").matches(&p("linux/arm/v6")));
        assert!(!pat("linux/arm/v7").matches(&p("linux/arm/v6")));
        for bad in ["", "linux/", "windows:", "a/b/c/d", "linux/am d64"] {
            assert!(bad.parse::<PlatformPattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_are_recognised_only_on_known_os_names() {
        let s = scoped("windows=Dockerfile.windows");
        assert_eq!(s.scope, Some(pat("windows")));
        assert_eq!(s.value, "Dockerfile.windows");
        let s = scoped("windows/amd64:10.0.17763=WINBASE=1809");
        assert_eq!(s.scope, Some(pat("windows/amd64:10.0.17763")));
        assert_eq!(s.value, "WINBASE=1809");
        for plain in ["Dockerfile", "dir/file=x", "FOO=bar=baz", "./windows=x"] {
            assert_eq!(scoped(plain).scope, None, "{plain}");
        }
        // A known os with a broken rest is an error, not a silently unscoped value.
        assert!(PlatformPattern::split_scope("linux/a b=x").is_err());
    }

    #[test]
    fn most_specific_scope_wins() {
        let values = vec![
            scoped("Dockerfile"),
            scoped("windows=Dockerfile.windows"),
            scoped("windows/amd64:10.0.17763=Dockerfile.1809"),
        ];
        let pick = |plat: &str| scoped_value(&p(plat), &values).unwrap().cloned();
        assert_eq!(pick("linux/arm64").as_deref(), Some("Dockerfile"));
        assert_eq!(
            pick("windows/amd64:10.0.18362").as_deref(),
            Some("Dockerfile.windows")
        );
        assert_eq!(
            pick("windows/amd64:10.0.17763.1757").as_deref(),
            Some("Dockerfile.1809")
        );
        // Nothing unscoped: a platform no scope covers gets nothing.
        let values = vec![scoped("windows=Dockerfile.windows")];
        assert_eq!(scoped_value(&p("linux/amd64"), &values).unwrap(), None);
    }

    #[test]
    fn incomparable_scopes_that_disagree_are_an_error() {
        let values = vec![scoped("windows:10.0.17763=A"), scoped("windows/amd64=B")];
        let err = scoped_value(&p("windows/amd64:10.0.17763"), &values)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("windows:10.0.17763=A")
                && err.contains("windows/amd64=B")
                && err.contains("windows/amd64:10.0.17763"),
            "{err}"
        );
        // The same scope given twice: the last wins, as repeated flags do.
        let values = vec![scoped("windows=A"), scoped("windows=B")];
        assert_eq!(
            scoped_value(&p("windows/amd64"), &values).unwrap().cloned(),
            Some("B".to_string())
        );
    }

    #[test]
    fn args_merge_key_by_key() {
        let arg = |given: &str| {
            let s = scoped(given);
            let (k, v) = s.value.split_once('=').unwrap();
            Scoped {
                scope: s.scope,
                value: (k.to_string(), v.to_string()),
                given: given.to_string(),
            }
        };
        let values = vec![
            arg("APP=demo"),
            arg("WINBASE=ltsc2022"),
            arg("windows=SHELL=cmd"),
            arg("windows/amd64:10.0.17763=WINBASE=1809"),
        ];
        let args = scoped_args(&p("windows/amd64:10.0.17763"), &values).unwrap();
        assert_eq!(
            args,
            BTreeMap::from([
                ("APP".to_string(), "demo".to_string()),
                ("SHELL".to_string(), "cmd".to_string()),
                ("WINBASE".to_string(), "1809".to_string()),
            ])
        );
        let linux = scoped_args(&p("linux/amd64"), &values).unwrap();
        assert_eq!(linux["WINBASE"], "ltsc2022");
        assert!(!linux.contains_key("SHELL"));
    }

    #[test]
    fn a_scope_matching_no_platform_is_an_error() {
        let platforms = vec![p("linux/amd64"), p("windows/amd64:10.0.17763")];
        let values = vec![scoped("windows/amd64:10.0.18362=WINBASE=1903")];
        let err = check_scopes(&platforms, &values).unwrap_err().to_string();
        assert!(
            err.contains("windows/amd64:10.0.18362=WINBASE=1903")
                && err.contains("linux/amd64, windows/amd64:10.0.17763"),
            "{err}"
        );
        assert!(check_scopes(&platforms, &[scoped("windows=x")]).is_ok());
    }

    #[test]
    fn groups_merge_when_only_platforms_differ() {
        let g = |plat: &str, file: &str| PlatformGroup {
            name: None,
            platforms: vec![p(plat)],
            containerfile: ContainerfileSource::Path(file.into()),
            context: ".".into(),
            build_args: BTreeMap::new(),
            target: None,
        };
        let merged = PlatformGroup::merge([
            g("linux/amd64", "Dockerfile"),
            g("windows/amd64:10.0.17763", "Dockerfile.windows"),
            g("linux/arm64", "Dockerfile"),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0].platforms,
            vec![p("linux/amd64"), p("linux/arm64")]
        );
        assert_eq!(merged[1].containerfile_name(), "Dockerfile.windows");
    }
}
