//! `ADD <http(s) url>`: streamed to a temporary file, hashed while it arrives, checked against
//! `--checksum` before anything else sees it (RELIABILITY B8).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_spec::{Algorithm, Digest, DigestHasher};

use crate::error::error_chain;
use crate::source::{OwnerSource, SourceRoot};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;
/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A read may stall this long before the download fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Name of the downloaded file inside its temporary root.
pub(crate) const DOWNLOAD_NAME: &[u8] = b"download";

/// A fetched URL.
#[derive(Debug)]
pub(crate) struct Download {
    /// A temporary root holding the bytes as [`DOWNLOAD_NAME`].
    pub root: Arc<SourceRoot>,
    pub digest: Digest,
    /// From `Last-Modified`, else `None`.
    pub mtime: Option<u64>,
    /// The file name the URL's path ends with.
    pub name: String,
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn host_is_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_local(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The file name a URL gives to `ADD <url> /dir/`.
pub(crate) fn url_file_name(url: &url::Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back().map(percent_decode))
        .filter(|s| !s.is_empty() && !s.contains('/') && s != "." && s != "..")
        .unwrap_or_else(|| "index.html".into())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fetch `url` into a new temporary root under `temp_base`. With `checksum`, bytes that hash
/// differently are an error and are removed before this returns.
pub(crate) async fn fetch(
    raw_url: &str,
    checksum: Option<&Digest>,
    temp_base: &Path,
) -> Result<Download, FetchError> {
    let url =
        url::Url::parse(raw_url).map_err(|e| FetchError::Other(format!("invalid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Other(format!(
            "only http and https URLs can be fetched, not {}:",
            url.scheme()
        )));
    }
    let origin_local = host_is_local(&url);
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let next = attempt.url();
        if !matches!(next.scheme(), "http" | "https") {
            let msg = format!("redirect to {next} refused: only http and https are followed");
            return attempt.error(msg);
        }
        if !origin_local && host_is_local(next) {
            let msg = format!(
                "redirect to {next} refused: a public URL may not lead to a local or private address"
            );
            return attempt.error(msg);
        }
        attempt.follow()
    });
    let client = reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Other(format!("HTTP client: {e}")))?;
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| FetchError::Other(error_chain(&e)))?;
    if response.status().is_redirection() {
        // reqwest hands back redirects it will not follow (a `file:` Location, say).
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(no Location)")
            .to_string();
        return Err(FetchError::Other(format!(
            "redirect to {to} refused: only http and https are followed"
        )));
    }
    if !response.status().is_success() {
        return Err(FetchError::Other(format!(
            "server answered {}",
            response.status()
        )));
    }
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let name = url_file_name(response.url());
    std::fs::create_dir_all(temp_base)
        .map_err(|e| FetchError::Other(format!("{}: {e}", temp_base.display())))?;
    let dir = tempfile::Builder::new()
        .prefix("add-url-")
        .tempdir_in(temp_base)
        .map_err(|e| FetchError::Other(format!("{}: {e}", temp_base.display())))?;
    let path = dir.path().join(std::ffi::OsStr::new(
        std::str::from_utf8(DOWNLOAD_NAME).unwrap_or("download"),
    ));
    let mut file = std::fs::File::create(&path)
        .map_err(|e| FetchError::Other(format!("{}: {e}", path.display())))?;
    let algorithm = checksum.map(Digest::algorithm).unwrap_or(Algorithm::Sha256);
    let mut hasher = DigestHasher::new(algorithm);
    let mut sha256 = (algorithm != Algorithm::Sha256).then(|| DigestHasher::new(Algorithm::Sha256));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Other(format!("reading the body: {e}")))?
    {
        hasher.update(&chunk);
        if let Some(h) = sha256.as_mut() {
            h.update(&chunk);
        }
        file.write_all(&chunk)
            .map_err(|e| FetchError::Other(format!("{}: {e}", path.display())))?;
    }
    file.flush()
        .map_err(|e| FetchError::Other(format!("{}: {e}", path.display())))?;
    drop(file);
    let actual = hasher.finish();
    if let Some(expected) = checksum
        && &actual != expected
    {
        // `dir` drops here: the unverified bytes are gone.
        return Err(FetchError::Checksum {
            expected: expected.clone(),
            actual,
        });
    }
    let digest = match sha256 {
        Some(h) => h.finish(),
        None => actual,
    };
    let root = SourceRoot::temporary(dir, OwnerSource::Inode)
        .map_err(|e| FetchError::Other(format!("opening the download: {e}")))?;
    Ok(Download {
        root: Arc::new(root),
        digest,
        mtime,
        name,
    })
}

#[derive(Debug)]
pub(crate) enum FetchError {
    Checksum { expected: Digest, actual: Digest },
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locality() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            url_file_name(&u("https://x.org/a/b/tool.tar.gz?x=1")),
            "tool.tar.gz"
        );
        assert_eq!(url_file_name(&u("https://x.org/")), "index.html");
        assert_eq!(url_file_name(&u("https://x.org/a%20b")), "a b");
        assert!(host_is_local(&u("http://127.0.0.1:8080/")));
        assert!(host_is_local(&u("http://10.1.2.3/")));
        assert!(host_is_local(&u("http://169.254.169.254/")));
        assert!(host_is_local(&u("http://[::1]/")));
        assert!(!host_is_local(&u("https://example.com/")));
        assert!(!host_is_local(&u("http://8.8.8.8/")));
    }
}
