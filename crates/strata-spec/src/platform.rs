use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// Operating system names (Go's `GOOS` values). Where a word may be a platform or something
/// else (`manifest annotate` entries, `build -f windows=FILE`), only these start a platform.
pub const KNOWN_OSES: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

/// A target platform: `os/arch[/variant][:os.version]`, as in descriptors and image configs.
///
/// Architecture names are normalised to Go's (`x86_64` → `amd64`, `aarch64` → `arm64`), and
/// `arm64` without a variant equals `arm64/v8`, as containerd's platform matcher does.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

fn normalise_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(|v| v.to_ascii_lowercase());
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => ("arm64".into(), variant.filter(|v| v != "v8" && v != "8")),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => (
            "arm".into(),
            Some(match variant.as_deref() {
                Some("7") | None => "v7".into(),
                Some("6") => "v6".into(),
                Some("5") => "v5".into(),
                Some(v) => v.to_string(),
            }),
        ),
        "i386" | "i486" | "i586" | "i686" | "386" => ("386".into(), variant),
        _ => (arch, variant),
    }
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Self {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            ..Default::default()
        }
    }

    /// The platform of the machine strata runs on (`linux/amd64`, `linux/arm64`, …).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch)
    }

    /// The canonical form: lowercase os, Go arch names, default variants folded
    /// (`arm64/v8` → `arm64`, `arm` → `arm/v7`).
    pub fn normalised(&self) -> Platform {
        let (architecture, variant) = normalise_arch(&self.architecture, self.variant.as_deref());
        Platform {
            architecture,
            variant,
            os: self.os.to_ascii_lowercase(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            features: self.features.clone(),
        }
    }

    /// Does `candidate` (a descriptor's or config's platform) satisfy this wanted platform?
    ///
    /// os and architecture must be equal after normalisation; a wanted variant must be equal;
    /// a wanted os.version must match the candidate's on the Windows build number
    /// (`10.0.17763` matches `10.0.17763.1757`; a full wanted version must be equal).
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.normalised();
        let have = candidate.normalised();
        if want.os != have.os || want.architecture != have.architecture {
            return false;
        }
        if self.variant.is_some() && want.variant != have.variant {
            return false;
        }
        if let Some(wv) = &want.os_version {
            match &have.os_version {
                None => return false,
                Some(hv) => {
                    if !os_version_matches(wv, hv) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The `os/arch[/variant]` string without os.version.
    pub fn short(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            s.push('/');
            s.push_str(v);
        }
        s
    }

    /// Sort key: linux before windows, then arch, variant, os.version (for stable index order).
    pub fn sort_key(&self) -> (u8, String, String, String) {
        let n = self.normalised();
        (
            if n.os == "linux" { 0 } else { 1 },
            n.architecture,
            n.variant.unwrap_or_default(),
            n.os_version.unwrap_or_default(),
        )
    }
}

fn os_version_matches(want: &str, have: &str) -> bool {
    if want == have {
        return true;
    }
    // A wanted version with fewer components matches by prefix on whole components.
    let w: Vec<&str> = want.split('.').collect();
    let h: Vec<&str> = have.split('.').collect();
    w.len() < h.len() && h[..w.len()] == w[..]
}

impl FromStr for Platform {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = |reason| SpecError::InvalidPlatform {
            value: s.to_string(),
            reason,
        };
        let (main, os_version) = match s.split_once(':') {
            Some((m, v)) if !v.is_empty() => (m, Some(v.to_string())),
            Some(_) => return Err(bad("empty os.version after ':'")),
            None => (s, None),
        };
        let parts: Vec<&str> = main.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty component"));
        }
        let valid = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(bad(
                "components may contain only letters, digits, '_' and '-'",
            ));
        }
        if let Some(v) = &os_version
            && !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return Err(bad(
                "os.version may contain only letters, digits, '.', '-' and '_'",
            ));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(variant.to_string())),
            [_] => return Err(bad("expected os/arch[/variant][:os.version]")),
            _ => return Err(bad("too many '/' components")),
        };
        let p = Platform {
            os: os.to_ascii_lowercase(),
            architecture: arch.to_string(),
            variant,
            os_version,
            ..Default::default()
        };
        let n = p.normalised();
        // Keep an explicit variant the user gave (arm64/v8) but normalise arch names.
        Ok(Platform {
            architecture: n.architecture,
            variant: p.variant.or(n.variant),
            ..p
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())?;
        if let Some(v) = &self.os_version {
            write!(f, ":{v}")?;
        }
        Ok(())
    }
}
impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        let w = p("windows/amd64:10.0.17763.1757");
        assert_eq!(w.os_version.as_deref(), Some("10.0.17763.1757"));
        assert_eq!(w.to_string(), "windows/amd64:10.0.17763.1757");
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/amd64:",
            "lin ux/amd64",
            "linux/amd64:1/2",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn matching_rules() {
        let cases = [
            ("linux/arm64", "linux/arm64/v8", true),
            ("linux/arm64/v8", "linux/arm64", true),
            ("linux/arm64", "linux/amd64", false),
            ("linux/arm/v7", "linux/arm/v6", false),
            ("linux/arm", "linux/arm/v7", true),
            ("linux/amd64", "windows/amd64", false),
            ("windows/amd64", "windows/amd64:10.0.17763.1757", true),
            (
                "windows/amd64:10.0.17763",
                "windows/amd64:10.0.17763.1757",
                true,
            ),
            (
                "windows/amd64:10.0.17763.1757",
                "windows/amd64:10.0.17763.1757",
                true,
            ),
            (
                "windows/amd64:10.0.20348",
                "windows/amd64:10.0.17763.1757",
                false,
            ),
            (
                "windows/amd64:10.0.17763.1",
                "windows/amd64:10.0.17763.1757",
                false,
            ),
            (
                "windows/amd64:10.0.1776",
                "windows/amd64:10.0.17763.1757",
                false,
            ),
        ];
        for (want, have, expect) in cases {
            assert_eq!(p(want).matches(&p(have)), expect, "{want} vs {have}");
        }
    }

    #[test]
    fn serde_field_names() {
        let w = p("windows/amd64:10.0.17763.1757");
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(
            j,
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1757"}"#
        );
    }
}
