use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::SpecError;

/// A digest algorithm that strata accepts (image-spec descriptor.md registered algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest: `sha256:` + 64 or `sha512:` + 128 lowercase hex characters.
///
/// Validation happens on construction, so a `Digest` is always safe to use as a path component
/// or in a URL (CVE-2024-3727).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    encoded: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The hex part, as used for `blobs/<alg>/<encoded>`.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }
    /// The digest of `bytes` with this digest's algorithm (used to verify).
    pub fn same_algorithm_of(&self, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(self.algorithm);
        h.update(bytes);
        h.finish()
    }
    /// True when `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        &self.same_algorithm_of(bytes) == self
    }
}

impl FromStr for Digest {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = |reason| SpecError::InvalidDigest {
            value: s.to_string(),
            reason,
        };
        let (alg, enc) = s
            .split_once(':')
            .ok_or_else(|| bad("missing ':' separator"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad("unsupported algorithm (sha256 or sha512 expected)")),
        };
        if enc.len() != algorithm.hex_len() {
            return Err(bad("wrong length for its algorithm"));
        }
        if !enc
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("encoded part must be lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            encoded: enc.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.encoded)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of an *uncompressed* layer tar (config `rootfs.diff_ids`).
///
/// Kept distinct from [`Digest`] so a stored-blob digest and an uncompressed digest are never
/// confused; cache keys use only DiffIds that strata computed itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiffId(pub Digest);

impl fmt::Display for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl fmt::Debug for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl FromStr for DiffId {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Ok(DiffId(s.parse()?))
    }
}

/// Incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }
    pub fn finish(self) -> Digest {
        match self {
            DigestHasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                encoded: hex::encode(h.finalize()),
            },
            DigestHasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                encoded: hex::encode(h.finalize()),
            },
        }
    }
}

impl std::io::Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_hostile_digest_strings() {
        let hex64 = "a".repeat(64);
        for bad in [
            "sha256:../../x".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("md5:{}", "a".repeat(32)),
            format!("sha512:{hex64}"),
            String::new(),
            "sha256".into(),
            format!("sha256:{}/x", "a".repeat(62)),
            format!("SHA256:{hex64}"),
            format!(" sha256:{hex64}"),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn accepts_and_computes() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let s512 = format!("sha512:{}", "0".repeat(128));
        assert_eq!(
            s512.parse::<Digest>().unwrap().algorithm(),
            Algorithm::Sha512
        );
        assert!(d.verify(b""));
        assert!(!d.verify(b"x"));
    }
}
