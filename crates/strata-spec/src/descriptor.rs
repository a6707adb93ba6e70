use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, MediaType, Platform, SpecError};

/// An OCI content descriptor: what a blob or manifest is, where it is, and how big.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    /// This index entry's platform for people: `linux/arm64/v8`, or `(no platform)`.
    pub fn platform_label(&self) -> String {
        self.platform
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "(no platform)".into())
    }
    /// The platforms of index `entries`, for messages: `linux/amd64, windows/amd64:10.0.17763.1757`
    /// (`(no platform)` for an entry without one, `none` for no entries).
    pub fn platform_list<'a>(entries: impl IntoIterator<Item = &'a Descriptor>) -> String {
        let v: Vec<String> = entries
            .into_iter()
            .map(Descriptor::platform_label)
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
    pub fn new(media_type: impl Into<MediaType>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: size as i64,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            data: None,
        }
    }
    /// The descriptor of `bytes` (SHA-256).
    pub fn of_bytes(media_type: impl Into<MediaType>, bytes: &[u8]) -> Self {
        Descriptor::new(media_type, Digest::sha256_of(bytes), bytes.len() as u64)
    }
    /// The size as unsigned, rejecting negative sizes (image-spec: size MUST NOT be negative).
    pub fn size_u64(&self) -> Result<u64, SpecError> {
        u64::try_from(self.size).map_err(|_| SpecError::InvalidDescriptor {
            digest: self.digest.to_string(),
            reason: "negative size",
        })
    }
    /// The `org.opencontainers.image.ref.name` annotation (tag in an OCI layout).
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(crate::manifest::REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

impl From<String> for MediaType {
    fn from(s: String) -> Self {
        MediaType(s)
    }
}
