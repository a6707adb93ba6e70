//! `transport:reference` names, spelled as skopeo spells them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use strata_spec::Reference;

use crate::CopyError;

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// `docker://registry/repo[:tag][@digest]`
    Registry(Reference),
    /// `oci:PATH[:TAG]`
    OciLayout { path: PathBuf, tag: Option<String> },
    /// `oci-archive:PATH[:TAG]`
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker-archive:PATH[:REF]` (the `docker save` format)
    DockerArchive {
        path: PathBuf,
        reference: Option<Reference>,
    },
    /// `dir:PATH`
    Dir { path: PathBuf },
    /// A bare name (`app:1`, `localhost/app`): strata's local store.
    Store(Reference),
}

fn split_path_tag(rest: &str) -> (PathBuf, Option<String>) {
    // containers/image splits at the first ':' (paths containing ':' are not supported).
    match rest.split_once(':') {
        Some((p, t)) if !t.is_empty() => (PathBuf::from(p), Some(t.to_string())),
        Some((p, _)) => (PathBuf::from(p), None),
        None => (PathBuf::from(rest), None),
    }
}

impl FromStr for ImageName {
    type Err = CopyError;
    fn from_str(s: &str) -> Result<Self, CopyError> {
        let bad = |reason: String| CopyError::InvalidName {
            name: s.to_string(),
            reason,
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            let r = rest.parse::<Reference>().map_err(|e| bad(e.to_string()))?;
            return Ok(ImageName::Registry(r));
        }
        let need_path = |p: &PathBuf| {
            if p.as_os_str().is_empty() {
                Err(bad("missing path".into()))
            } else {
                Ok(())
            }
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = split_path_tag(rest);
            need_path(&path)?;
            return Ok(ImageName::OciLayout { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = split_path_tag(rest);
            need_path(&path)?;
            return Ok(ImageName::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) if !r.is_empty() => (
                    PathBuf::from(p),
                    Some(r.parse::<Reference>().map_err(|e| bad(e.to_string()))?),
                ),
                Some((p, _)) => (PathBuf::from(p), None),
                None => (PathBuf::from(rest), None),
            };
            need_path(&path)?;
            return Ok(ImageName::DockerArchive { path, reference });
        }
        if let Some(rest) = s.strip_prefix("dir:") {
            let path = PathBuf::from(rest);
            need_path(&path)?;
            return Ok(ImageName::Dir { path });
        }
        if let Some((scheme, _)) = s.split_once(':')
            && matches!(
                scheme,
                "docker" | "containers-storage" | "docker-daemon" | "sif" | "tarball" | "ostree"
            )
        {
            return Err(bad(format!(
                "transport {scheme:?} is not supported (use docker://, oci:, oci-archive:, docker-archive:, dir:, or a bare name for the local store)"
            )));
        }
        let r = s.parse::<Reference>().map_err(|e| bad(e.to_string()))?;
        Ok(ImageName::Store(r))
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            ImageName::Registry(r) => write!(f, "docker://{r}"),
            ImageName::OciLayout { path, tag: t } => write!(f, "oci:{}{}", path.display(), tag(t)),
            ImageName::OciArchive { path, tag: t } => {
                write!(f, "oci-archive:{}{}", path.display(), tag(t))
            }
            ImageName::DockerArchive { path, reference } => {
                write!(f, "docker-archive:{}", path.display())?;
                if let Some(r) = reference {
                    write!(f, ":{r}")?;
                }
                Ok(())
            }
            ImageName::Dir { path } => write!(f, "dir:{}", path.display()),
            ImageName::Store(r) => write!(f, "{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_skopeo_spelling() {
        let n: ImageName = "docker://127.0.0.1:5000/a/b:t".parse().unwrap();
        assert!(matches!(&n, ImageName::Registry(r) if r.tag() == Some("t")));
        assert_eq!(
            "oci:/tmp/x:latest".parse::<ImageName>().unwrap(),
            ImageName::OciLayout {
                path: "/tmp/x".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            "oci:/tmp/x".parse::<ImageName>().unwrap(),
            ImageName::OciLayout {
                path: "/tmp/x".into(),
                tag: None
            }
        );
        assert!(matches!(
            "docker-archive:/tmp/a.tar:app:v1"
                .parse::<ImageName>()
                .unwrap(),
            ImageName::DockerArchive {
                reference: Some(_),
                ..
            }
        ));
        assert!(matches!(
            "app:v1".parse::<ImageName>().unwrap(),
            ImageName::Store(_)
        ));
        assert!("oci:".parse::<ImageName>().is_err());
        assert!("containers-storage:x".parse::<ImageName>().is_err());
        assert!("docker://Bad/Name".parse::<ImageName>().is_err());
        for s in [
            "docker://127.0.0.1:5000/a/b:t",
            "oci:/tmp/x:latest",
            "dir:/tmp/d",
            "oci-archive:/a.tar:t",
        ] {
            assert_eq!(s.parse::<ImageName>().unwrap().to_string(), s);
        }
    }
}
