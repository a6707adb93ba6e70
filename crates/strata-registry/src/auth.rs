//! Registry credentials in docker `config.json` / containers `auth.json` files.
//!
//! # Which file
//!
//! [`default_auth_file`] is the file `strata login` writes and `strata logout` edits, chosen
//! like podman/skopeo:
//! 1. `$REGISTRY_AUTH_FILE`;
//! 2. `${XDG_RUNTIME_DIR}/containers/auth.json` when `XDG_RUNTIME_DIR` is set;
//! 3. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//!
//! [`auth_file_search_path`] is where credentials are *looked up* (first file with an entry
//! for the registry wins): `$REGISTRY_AUTH_FILE` alone when it is set; otherwise
//! `${XDG_RUNTIME_DIR}/containers/auth.json`, `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`,
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` — containers/image's order.
//!
//! # Inside a file
//!
//! For a registry, in this order: `credHelpers[registry]` (run `docker-credential-NAME get`),
//! `auths[registry]` (`auth` = base64 `user:password`, or `identitytoken` for the OAuth2
//! refresh-token flow), then `credsStore` (a helper for every registry). Keys are matched
//! after normalisation: `https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io`
//! and `docker.io` are one registry; a scheme and a `/v1/`-style suffix are ignored.
//! Repository-scoped keys (`quay.io/org/repo`, a podman extension) are not used, so a
//! credential for one repository is never sent for another.
//!
//! A helper that is missing, crashes or answers garbage is an error naming the helper and the
//! registry: strata never falls back to anonymous or to another file's credentials then
//! (RELIABILITY N7, CVE-2021-41092). "credentials not found" from a helper means none.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::RegistryError;

/// Largest credentials file strata reads (they hold a few entries; this is generous).
const MAX_AUTH_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest answer read from a credential helper.
const MAX_HELPER_OUTPUT_BYTES: u64 = 1024 * 1024;
/// How long a credential helper may take (some prompt a keychain; a hung one must not hang us).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// The key the docker CLI uses for Docker Hub.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The credentials file `login` writes (see the module documentation for the order).
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        return Some(p);
    }
    if let Some(run) = env_path("XDG_RUNTIME_DIR") {
        return Some(run.join("containers/auth.json"));
    }
    docker_config_file()
}

/// The files credentials are looked up in, in order (see the module documentation).
pub fn auth_file_search_path() -> Vec<PathBuf> {
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        return vec![p];
    }
    let mut out = Vec::new();
    if let Some(run) = env_path("XDG_RUNTIME_DIR") {
        out.push(run.join("containers/auth.json"));
    }
    if let Some(cfg) = env_path("XDG_CONFIG_HOME").or_else(|| home().map(|h| h.join(".config"))) {
        out.push(cfg.join("containers/auth.json"));
    }
    if let Some(d) = docker_config_file() {
        out.push(d);
    }
    out
}

pub(crate) fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub(crate) fn home() -> Option<PathBuf> {
    env_path("HOME")
}

fn docker_config_file() -> Option<PathBuf> {
    env_path("DOCKER_CONFIG")
        .map(|d| d.join("config.json"))
        .or_else(|| home().map(|h| h.join(".docker/config.json")))
}

/// `docker.io` for every Docker Hub alias; the host (with port) for anything else; `None`
/// for keys that name a repository rather than a registry.
pub(crate) fn normalise_registry(key: &str) -> Option<String> {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let (host, path) = match k.find('/') {
        Some(i) => (&k[..i], &k[i..]),
        None => (k, ""),
    };
    if !matches!(path, "" | "/" | "/v1" | "/v1/" | "/v2" | "/v2/") || host.is_empty() {
        return None;
    }
    let host = host.to_ascii_lowercase();
    Some(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    })
}

/// A credential found for a registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Secret {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), used with the token endpoint's POST flow.
    IdentityToken {
        token: String,
    },
}

impl Secret {
    /// The user name, for messages (an identity token has none).
    pub(crate) fn username(&self) -> Option<&str> {
        match self {
            Secret::Basic { username, .. } => Some(username),
            Secret::IdentityToken { .. } => None,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Secret::IdentityToken { .. } => f
                .debug_struct("IdentityToken")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

fn read_file(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io(format!("opening {}", path.display()), e)),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_AUTH_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(|e| RegistryError::io(format!("reading {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_AUTH_FILE_BYTES {
        return Err(RegistryError::TooLarge {
            what: path.display().to_string(),
            limit: MAX_AUTH_FILE_BYTES,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(RegistryError::config(
            Some(path.into()),
            "not a JSON object",
        )),
        // serde_json's message holds a line/column, never the file's content.
        Err(e) => Err(RegistryError::config(
            Some(path.into()),
            format!("invalid JSON: {e}"),
        )),
    }
}

/// The entry of `map` (an `auths` or `credHelpers` object) for `registry`, exact key first.
fn entry_for<'a>(map: &'a Map<String, Value>, registry: &str) -> Option<&'a Value> {
    let want = normalise_registry(registry)?;
    if let Some(v) = map.get(registry) {
        return Some(v);
    }
    map.iter()
        .find(|(k, _)| normalise_registry(k).as_deref() == Some(want.as_str()))
        .map(|(_, v)| v)
}

/// What one file says about `registry`.
enum FileAnswer {
    Secret(Secret),
    Helper(String),
    Nothing,
}

fn answer_of(
    path: &Path,
    file: &Map<String, Value>,
    registry: &str,
) -> Result<FileAnswer, RegistryError> {
    if let Some(Value::Object(helpers)) = file.get("credHelpers")
        && let Some(v) = entry_for(helpers, registry)
    {
        let name = v.as_str().unwrap_or_default();
        return Ok(FileAnswer::Helper(name.to_string()));
    }
    if let Some(Value::Object(auths)) = file.get("auths")
        && let Some(Value::Object(entry)) = entry_for(auths, registry)
    {
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(FileAnswer::Secret(Secret::IdentityToken {
                token: token.to_string(),
            }));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let bad = || {
                RegistryError::config(
                    Some(path.into()),
                    format!("the \"auth\" entry for {registry} is not base64 of USER:PASSWORD"),
                )
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, pass) = text.split_once(':').ok_or_else(bad)?;
            return Ok(FileAnswer::Secret(Secret::Basic {
                username: user.to_string(),
                password: pass.to_string(),
            }));
        }
    }
    if let Some(store) = file
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Ok(FileAnswer::Helper(store.to_string()));
    }
    Ok(FileAnswer::Nothing)
}

/// Look `registry` up in `files` (first file with an answer wins).
pub(crate) async fn find_credentials(
    files: &[PathBuf],
    registry: &str,
    helper_dirs: &[PathBuf],
) -> Result<Option<Secret>, RegistryError> {
    for path in files {
        let file = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_file(&path))
                .await
                .map_err(|e| RegistryError::io("reading credentials", std::io::Error::other(e)))??
        };
        let Some(file) = file else { continue };
        match answer_of(path, &file, registry)? {
            FileAnswer::Secret(s) => {
                tracing::debug!(registry, file = %path.display(), "using credentials from file");
                return Ok(Some(s));
            }
            FileAnswer::Helper(helper) => {
                tracing::debug!(registry, helper, "asking credential helper");
                return run_helper(&helper, registry, helper_dirs).await;
            }
            FileAnswer::Nothing => {}
        }
    }
    Ok(None)
}

/// `docker-credential-NAME get` with the server URL on stdin.
pub(crate) async fn run_helper(
    helper: &str,
    registry: &str,
    helper_dirs: &[PathBuf],
) -> Result<Option<Secret>, RegistryError> {
    let fail = |message: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(fail("invalid helper name".into()));
    }
    let server = if normalise_registry(registry).as_deref() == Some("docker.io") {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    };
    let program = format!("docker-credential-{helper}");
    let executable = if helper_dirs.is_empty() {
        PathBuf::from(&program)
    } else {
        helper_dirs
            .iter()
            .map(|d| d.join(&program))
            .find(|p| p.is_file())
            .ok_or_else(|| fail(format!("{program} not found in the helper directories")))?
    };
    let mut child = tokio::process::Command::new(&executable)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                fail(format!("{program} not found in PATH"))
            } else {
                fail(format!("cannot run {program}: {e}"))
            }
        })?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading stdin is judged by its exit status below.
            let _ = stdin.write_all(server.as_bytes()).await;
            drop(stdin);
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let out = child.stdout.take();
        let err = child.stderr.take();
        let read_out = async {
            if let Some(o) = out {
                let _ = o
                    .take(MAX_HELPER_OUTPUT_BYTES + 1)
                    .read_to_end(&mut stdout)
                    .await;
            }
        };
        let read_err = async {
            if let Some(e) = err {
                let _ = e
                    .take(MAX_HELPER_OUTPUT_BYTES)
                    .read_to_end(&mut stderr)
                    .await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, stdout, stderr)
    };
    let (status, stdout, stderr) = tokio::time::timeout(HELPER_TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("timed out after {}s", HELPER_TIMEOUT.as_secs())))?;
    let status = status.map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    let said = |bytes: &[u8]| -> String {
        // Helpers print their own errors; keep them short. They never echo secrets on failure.
        let s = String::from_utf8_lossy(bytes);
        let s = s.trim();
        s.chars().take(200).collect()
    };
    if !status.success() {
        let msg = if stdout.is_empty() {
            said(&stderr)
        } else {
            said(&stdout)
        };
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!(
            "exited with {status}{}",
            if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            }
        )));
    }
    if stdout.len() as u64 > MAX_HELPER_OUTPUT_BYTES {
        return Err(fail("answer too large".into()));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    // The parse error of serde_json could quote the input; report only that it is not JSON.
    let answer: Answer = serde_json::from_slice(&stdout)
        .map_err(|_| fail("answer is not the expected JSON object".into()))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    if answer.username == "<token>" {
        return Ok(Some(Secret::IdentityToken {
            token: answer.secret,
        }));
    }
    Ok(Some(Secret::Basic {
        username: answer.username,
        password: answer.secret,
    }))
}

/// The key `login` writes for `registry`.
fn login_key(registry: &str) -> String {
    match normalise_registry(registry).as_deref() {
        Some("docker.io") => DOCKER_HUB_AUTH_KEY.into(),
        Some(h) => h.to_string(),
        None => registry.to_string(),
    }
}

fn check_registry(registry: &str) -> Result<(), RegistryError> {
    if normalise_registry(registry).is_none() {
        return Err(RegistryError::config(
            None,
            format!("{registry:?} is not a registry host (HOST[:PORT])"),
        ));
    }
    Ok(())
}

/// Store `username`/`password` for `registry` in `path` (created 0600 if missing).
///
/// Other registries' entries and unknown fields are kept; entries that are aliases of
/// `registry` (`docker.io` vs `https://index.docker.io/v1/`) are replaced by one. The file is
/// replaced atomically (temp file in the same directory, fsync, rename).
pub fn login(
    path: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), RegistryError> {
    check_registry(registry)?;
    if username.contains(':') {
        return Err(RegistryError::config(
            None,
            "the user name may not contain ':'",
        ));
    }
    let mut file = read_file(path)?.unwrap_or_default();
    let auths = file
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(RegistryError::config(
            Some(path.into()),
            "\"auths\" is not an object",
        ));
    };
    let want = normalise_registry(registry);
    let key = auths
        .keys()
        .find(|k| normalise_registry(k) == want)
        .cloned()
        .unwrap_or_else(|| login_key(registry));
    auths.retain(|k, _| k == &key || normalise_registry(k) != want);
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let entry = auths
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(e) = entry {
        e.insert("auth".into(), Value::String(encoded));
        e.remove("identitytoken");
    } else {
        let mut e = Map::new();
        e.insert("auth".into(), Value::String(encoded));
        *entry = Value::Object(e);
    }
    write_file(path, &file)
}

/// Remove `registry` (and its aliases) from `path`. Returns false when it had no entry.
pub fn logout(path: &Path, registry: &str) -> Result<bool, RegistryError> {
    check_registry(registry)?;
    let Some(mut file) = read_file(path)? else {
        return Ok(false);
    };
    let want = normalise_registry(registry);
    let Some(Value::Object(auths)) = file.get_mut("auths") else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| normalise_registry(k) != want);
    if auths.len() == before {
        return Ok(false);
    }
    write_file(path, &file)?;
    Ok(true)
}

fn write_file(path: &Path, file: &Map<String, Value>) -> Result<(), RegistryError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| RegistryError::io(format!("creating {}", dir.display()), e))?;
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(file.clone()))
        .map_err(|e| RegistryError::io("encoding credentials", std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let io = |what: &str, e| RegistryError::io(format!("{what} {}", path.display()), e);
    // tempfile creates the file 0600 in the target directory, so the rename is atomic and
    // the secret is never readable by others, not even briefly.
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(|e| io("creating a temp file next to", e))?;
    tmp.write_all(&bytes).map_err(|e| io("writing", e))?;
    tmp.as_file().sync_all().map_err(|e| io("syncing", e))?;
    tmp.persist(path).map_err(|e| io("replacing", e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_registry_keys() {
        for (k, want) in [
            ("https://index.docker.io/v1/", Some("docker.io")),
            ("index.docker.io", Some("docker.io")),
            ("registry-1.docker.io", Some("docker.io")),
            ("docker.io", Some("docker.io")),
            ("http://127.0.0.1:5000", Some("127.0.0.1:5000")),
            ("Quay.IO", Some("quay.io")),
            ("quay.io/org/repo", None),
            ("", None),
        ] {
            assert_eq!(normalise_registry(k).as_deref(), want, "{k}");
        }
    }

    fn parse(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn file_answers_in_docker_order() {
        let p = Path::new("/x");
        let f = parse(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"a.io":{"auth":"dTpw"},"b.io":{}},
                "credHelpers":{"a.io":"helper-a"},"credsStore":"store"}"#,
        );
        // credHelpers beat auths; auths beat credsStore; empty entries fall to credsStore.
        assert!(
            matches!(answer_of(p, &f, "a.io").unwrap(), FileAnswer::Helper(h) if h == "helper-a")
        );
        assert!(matches!(
            answer_of(p, &f, "docker.io").unwrap(),
            FileAnswer::Secret(Secret::Basic { username, password }) if username == "u" && password == "p"
        ));
        assert!(matches!(answer_of(p, &f, "b.io").unwrap(), FileAnswer::Helper(h) if h == "store"));
        let f = parse(r#"{"auths":{"c.io":{"auth":"bm9jb2xvbg=="}}}"#);
        assert!(
            answer_of(p, &f, "c.io").is_err(),
            "no ':' in the decoded auth"
        );
        let f = parse(r#"{"auths":{"c.io":{"identitytoken":"tok"}}}"#);
        assert!(matches!(
            answer_of(p, &f, "c.io").unwrap(),
            FileAnswer::Secret(Secret::IdentityToken { .. })
        ));
        assert!(matches!(
            answer_of(p, &f, "d.io").unwrap(),
            FileAnswer::Nothing
        ));
    }

    #[tokio::test]
    async fn first_file_with_an_answer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        let missing = dir.path().join("missing.json");
        std::fs::write(&a, r#"{"auths":{"other.io":{"auth":"eDp5"}}}"#).unwrap();
        std::fs::write(&b, r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#).unwrap();
        let found = find_credentials(&[missing, a.clone(), b.clone()], "r.io", &[])
            .await
            .unwrap();
        assert!(matches!(found, Some(Secret::Basic { username, .. }) if username == "u"));
        assert!(find_credentials(&[a], "r.io", &[]).await.unwrap().is_none());
        std::fs::write(&b, "{not json").unwrap();
        let err = find_credentials(std::slice::from_ref(&b), "r.io", &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("b.json"), "{err}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let t = Secret::IdentityToken {
            token: "tok123".into(),
        };
        assert!(!format!("{t:?}").contains("tok123"));
    }
}
