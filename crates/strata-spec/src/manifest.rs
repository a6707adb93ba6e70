use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Descriptor, MediaType, SpecError};

/// Annotation naming a tag in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Most entries an index may have before it is refused (a 1e6-entry index is a DoS, not an image).
pub const MAX_INDEX_ENTRIES: usize = 10_000;

/// An OCI image manifest or Docker schema2 manifest (same shape, different media types).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// A new manifest of the given kind (OCI or Docker) with no layers.
    pub fn new(media_type: &str, config: Descriptor) -> Self {
        ImageManifest {
            schema_version: 2,
            media_type: Some(MediaType::new(media_type)),
            artifact_type: None,
            config,
            layers: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
    pub fn media_type(&self) -> MediaType {
        self.media_type
            .clone()
            .unwrap_or_else(|| MediaType::new(MediaType::OCI_MANIFEST))
    }
    /// Canonical bytes for a manifest strata writes (pretty printing is not used so digests
    /// are stable across versions).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialises")
    }
}

impl ImageIndex {
    pub fn new(media_type: &str) -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(MediaType::new(media_type)),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
    pub fn media_type(&self) -> MediaType {
        self.media_type
            .clone()
            .unwrap_or_else(|| MediaType::new(MediaType::OCI_INDEX))
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("index serialises")
    }
}

/// A parsed manifest-like document.
// Parsed once per document and short-lived; boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    /// Parse a manifest or index, refusing ambiguous and unsupported documents.
    ///
    /// `declared` is the media type the transport claimed (registry `Content-Type`, the parent
    /// descriptor's `mediaType`); when given, the document's own `mediaType` must agree with it.
    /// A document without `mediaType` is classified by the declared type, else by its shape.
    pub fn parse(bytes: &[u8], declared: Option<&MediaType>) -> Result<Manifest, SpecError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|source| SpecError::MalformedJson {
                what: "manifest",
                source,
            })?;
        let obj = value.as_object().ok_or_else(|| SpecError::MalformedJson {
            what: "manifest",
            source: serde::de::Error::custom("top level is not a JSON object"),
        })?;
        if obj.contains_key("fsLayers") || obj.contains_key("signatures") {
            return Err(SpecError::UnsupportedMediaType {
                media_type: MediaType::new(MediaType::DOCKER_SCHEMA1),
                hint: " (Docker schema 1 is deprecated; re-push the image with a current tool)",
            });
        }
        let has_index_fields = obj.contains_key("manifests");
        let has_image_fields = obj.contains_key("config") || obj.contains_key("layers");
        if has_index_fields && has_image_fields {
            return Err(SpecError::AmbiguousManifest);
        }
        if let Some(v) = obj.get("schemaVersion") {
            let n = v.as_i64().unwrap_or(-1);
            if n != 2 {
                return Err(SpecError::UnsupportedSchemaVersion(n));
            }
        }
        let own = obj
            .get("mediaType")
            .and_then(Value::as_str)
            .map(MediaType::new);
        if let (Some(own), Some(declared)) = (&own, declared)
            && !declared.0.is_empty()
            && own != declared
            && !generic_type(declared)
        {
            {
                return Err(SpecError::MediaTypeMismatch {
                    document: own.clone(),
                    declared: declared.clone(),
                    declared_by: "the transport",
                });
            }
        }
        let effective = own
            .clone()
            .or_else(|| declared.filter(|d| !generic_type(d)).cloned());
        let is_index = match &effective {
            Some(mt) if mt.is_index() => true,
            Some(mt) if mt.is_image_manifest() => false,
            Some(mt) if mt.is_schema1() => {
                return Err(SpecError::UnsupportedMediaType {
                    media_type: mt.clone(),
                    hint: " (Docker schema 1 is deprecated; re-push the image with a current tool)",
                });
            }
            Some(mt) => {
                return Err(SpecError::UnsupportedMediaType {
                    media_type: mt.clone(),
                    hint: "",
                });
            }
            None => has_index_fields,
        };
        if is_index && has_image_fields || !is_index && has_index_fields {
            return Err(SpecError::AmbiguousManifest);
        }
        if is_index {
            let index: ImageIndex =
                serde_json::from_value(value).map_err(|source| SpecError::MalformedJson {
                    what: "image index",
                    source,
                })?;
            if index.manifests.len() > MAX_INDEX_ENTRIES {
                return Err(SpecError::TooManyEntries {
                    count: index.manifests.len(),
                    limit: MAX_INDEX_ENTRIES,
                });
            }
            for d in &index.manifests {
                d.size_u64()?;
            }
            Ok(Manifest::Index(index))
        } else {
            let manifest: ImageManifest =
                serde_json::from_value(value).map_err(|source| SpecError::MalformedJson {
                    what: "image manifest",
                    source,
                })?;
            manifest.config.size_u64()?;
            for d in &manifest.layers {
                d.size_u64()?;
            }
            Ok(Manifest::Image(manifest))
        }
    }

    /// The media type this document has (its own, or the default for its kind).
    pub fn media_type(&self) -> MediaType {
        match self {
            Manifest::Image(m) => m.media_type(),
            Manifest::Index(i) => i.media_type(),
        }
    }
}

/// Content types registries and servers send when they know nothing better.
fn generic_type(mt: &MediaType) -> bool {
    matches!(
        mt.as_str(),
        "application/json" | "text/plain" | "application/octet-stream"
    ) || mt.as_str().starts_with("text/plain;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image_json(mt: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},"layers":[]}}"#
        )
    }

    #[test]
    fn parses_image_and_index() {
        let m = Manifest::parse(image_json(MediaType::OCI_MANIFEST).as_bytes(), None).unwrap();
        assert!(matches!(m, Manifest::Image(_)));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D}","size":1}}]}}"#,
            MediaType::OCI_MANIFEST
        );
        let m = Manifest::parse(i.as_bytes(), Some(&MediaType::new(MediaType::OCI_INDEX))).unwrap();
        assert!(matches!(m, Manifest::Index(_)));
    }

    #[test]
    fn rejects_ambiguous_and_mismatched() {
        let both = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"mediaType":"x","digest":"{D}","size":0}},"layers":[]}}"#
        );
        assert!(matches!(
            Manifest::parse(both.as_bytes(), None),
            Err(SpecError::AmbiguousManifest)
        ));
        // an index-typed document with image fields
        let lying = image_json(MediaType::OCI_INDEX);
        assert!(Manifest::parse(lying.as_bytes(), None).is_err());
        // declared type disagrees with the document
        let m = image_json(MediaType::OCI_MANIFEST);
        let err = Manifest::parse(
            m.as_bytes(),
            Some(&MediaType::new(MediaType::DOCKER_MANIFEST)),
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::MediaTypeMismatch { .. }), "{err}");
    }

    #[test]
    fn rejects_schema1_and_unknown() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = Manifest::parse(s1.as_bytes(), None).unwrap_err();
        assert!(err.to_string().contains("unsupported"), "{err}");
        let unknown = image_json("application/vnd.example.thing+json");
        let err = Manifest::parse(unknown.as_bytes(), None).unwrap_err();
        assert!(matches!(err, SpecError::UnsupportedMediaType { .. }));
        assert!(Manifest::parse(b"[1,2]", None).is_err());
        assert!(Manifest::parse(b"{not json", None).is_err());
        let neg = image_json(MediaType::OCI_MANIFEST).replace(r#""size":0"#, r#""size":-1"#);
        assert!(Manifest::parse(neg.as_bytes(), None).is_err());
    }
}
