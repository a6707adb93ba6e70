//! The containers tools' registry configuration: `registries.conf` (containers-registries.conf(5),
//! version 2 and the legacy version 1) and `certs.d` directories (containers-certs.d(5)).
//!
//! # Which files
//!
//! [`ConfPaths::from_env`] picks them as containers/image does:
//! - `$CONTAINERS_REGISTRIES_CONF` set: that file alone (no drop-ins, no alias cache), so a
//!   one-off or test configuration is exactly what is read;
//! - else `$HOME/.config/containers/registries.conf` when it exists, with the drop-ins of
//!   `$HOME/.config/containers/registries.conf.d`;
//! - else `/etc/containers/registries.conf`, with the drop-ins of
//!   `/etc/containers/registries.conf.d` and then `$HOME/.config/containers/registries.conf.d`.
//!
//! Drop-ins are the `*.conf` files of a directory in file-name order; a later file wins: a
//! `[[registry]]` with the same `prefix` replaces the earlier one, a set
//! `unqualified-search-registries` or `short-name-mode` replaces the earlier value, aliases
//! are merged key by key (an empty value erases one). The short-name alias cache podman writes
//! (`/var/cache/containers/short-name-aliases.conf` for root, else
//! `${XDG_CACHE_HOME:-~/.cache}/containers/short-name-aliases.conf`) is read last and wins.
//!
//! # Lookups
//!
//! - [`RegistriesConf::find`]: the `[[registry]]` whose `prefix` is the longest match of an
//!   image name (`*.example.com` matches any subdomain's host).
//! - [`RegistriesConf::pull_sources`]: where a pull goes, in order: the entry's mirrors
//!   (subject to `mirror-by-digest-only` / `pull-from-mirror`), then its `location`; a
//!   `blocked` entry is [`RegistryError::Blocked`], naming the file. Pushes use none of this
//!   (as in containers/image: redirection and mirrors apply to reads only).
//! - [`RegistriesConf::insecure_host`]: is a host (`host[:port]`) marked insecure, and by
//!   which file. TLS settings are per host: an `insecure` namespace entry makes its host
//!   insecure, as do a mirror's `insecure` and the strata configuration's per-registry
//!   `tls-verify = false` ([`RegistriesConf::set_host_tls_verify`]).
//! - [`CertDirs::host_certs`]: the CA files (`*.crt`) and client certificate (`*.cert` +
//!   `*.key`) for a host, from the first of `$HOME/.config/containers/certs.d/HOST[:PORT]`,
//!   `/etc/containers/certs.d/HOST[:PORT]`, `/etc/docker/certs.d/HOST[:PORT]` that exists, or
//!   from one flat directory (`--cert-dir`).
//! - [`RegistriesConf::short_names`]: the aliases and `unqualified-search-registries` for
//!   resolving bare names.
//!
//! ```
//! use std::path::Path;
//! use strata_registry::config::RegistriesConf;
//! let conf = RegistriesConf::parse(
//!     "[[registry]]\nlocation = \"localhost:5000\"\ninsecure = true\n",
//!     Path::new("registries.conf"),
//! )
//! .unwrap();
//! assert!(conf.insecure_host("localhost:5000").is_some());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_spec::Reference;

use crate::RegistryError;
use crate::auth::{env_path, home};

/// Largest configuration file read (registries.conf files with every shortname alias are
/// ~30 KiB; this is generous and still bounded).
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Environment variable naming the one registries.conf to read.
pub const REGISTRIES_CONF_ENV: &str = "CONTAINERS_REGISTRIES_CONF";
pub const SYSTEM_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
pub const SYSTEM_REGISTRIES_CONF_DIR: &str = "/etc/containers/registries.conf.d";
/// Relative to `$HOME`.
const USER_REGISTRIES_CONF: &str = ".config/containers/registries.conf";
const USER_REGISTRIES_CONF_DIR: &str = ".config/containers/registries.conf.d";
const ROOT_ALIAS_CACHE: &str = "/var/cache/containers/short-name-aliases.conf";
const ALIAS_CACHE_FILE: &str = "containers/short-name-aliases.conf";
/// Relative to `$HOME`; searched before the system directories.
const USER_CERTS_D: &str = ".config/containers/certs.d";
pub const SYSTEM_CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// Which mirrors serve which pulls (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// `short-name-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShortNameMode {
    Enforcing,
    Permissive,
    Disabled,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]` table (or an entry made from a version 1 list), with the file it came
/// from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryEntry {
    pub prefix: String,
    /// Empty only for a wildcard prefix without a location (no rewrite).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
    pub origin: PathBuf,
}

/// A value and the file that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: PathBuf,
}

/// The merged registries configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistriesConf {
    /// The files read, in order (missing optional files are not listed).
    pub files: Vec<PathBuf>,
    /// Sorted by prefix.
    pub registries: Vec<RegistryEntry>,
    pub unqualified_search_registries: Option<Sourced<Vec<String>>>,
    pub short_name_mode: Option<Sourced<ShortNameMode>>,
    pub aliases: BTreeMap<String, Sourced<String>>,
    /// Per-host TLS verification set outside registries.conf (strata's own configuration);
    /// these win over registries.conf's `insecure`.
    pub tls_verify: BTreeMap<String, Sourced<bool>>,
}

/// What bare-name resolution needs from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShortNameSettings {
    /// Short name → fully qualified name (no tag or digest).
    pub aliases: BTreeMap<String, String>,
    pub search_registries: Vec<String>,
    /// `None`: not set (containers/image then behaves as `permissive`).
    pub mode: Option<ShortNameMode>,
}

/// One place a pull may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The physical reference (after `location` rewriting).
    pub reference: Reference,
    /// From a `[[registry.mirror]]`, not the primary location.
    pub mirror: bool,
}

/// The files [`RegistriesConf::load`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfPaths {
    pub main: Option<PathBuf>,
    /// The main file was named explicitly: missing is an error.
    pub main_required: bool,
    pub dropin_dirs: Vec<PathBuf>,
    pub alias_cache: Option<PathBuf>,
}

impl ConfPaths {
    /// containers/image's choice of files (see the module documentation).
    pub fn from_env() -> ConfPaths {
        if let Some(path) = env_path(REGISTRIES_CONF_ENV) {
            return ConfPaths {
                main: Some(path),
                main_required: true,
                dropin_dirs: Vec::new(),
                alias_cache: None,
            };
        }
        let alias_cache = if rustix::process::geteuid().is_root() {
            Some(PathBuf::from(ROOT_ALIAS_CACHE))
        } else {
            env_path("XDG_CACHE_HOME")
                .or_else(|| home().map(|h| h.join(".cache")))
                .map(|c| c.join(ALIAS_CACHE_FILE))
        };
        let home = home();
        if let Some(user) = home.as_ref().map(|h| h.join(USER_REGISTRIES_CONF))
            && user.is_file()
        {
            return ConfPaths {
                main: Some(user),
                main_required: false,
                dropin_dirs: home
                    .iter()
                    .map(|h| h.join(USER_REGISTRIES_CONF_DIR))
                    .collect(),
                alias_cache,
            };
        }
        let mut dropin_dirs = vec![PathBuf::from(SYSTEM_REGISTRIES_CONF_DIR)];
        dropin_dirs.extend(home.map(|h| h.join(USER_REGISTRIES_CONF_DIR)));
        ConfPaths {
            main: Some(PathBuf::from(SYSTEM_REGISTRIES_CONF)),
            main_required: false,
            dropin_dirs,
            alias_cache,
        }
    }
}

// ---- the TOML shapes ----

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    aliases: Option<BTreeMap<String, String>>,
    /// Version 1.
    registries: Option<RawV1>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    mirror_by_digest_only: Option<bool>,
    #[serde(default)]
    mirror: Vec<RawMirror>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// Keys containers tools know but strata does not use: not worth a warning.
const KNOWN_IGNORED_KEYS: &[&str] = &["credential-helpers", "additional-layer-store-auth-helper"];

fn warn_unknown(path: &Path, table: &str, other: &BTreeMap<String, toml::Value>) {
    for key in other.keys() {
        if !KNOWN_IGNORED_KEYS.contains(&key.as_str()) {
            tracing::warn!(file = %path.display(), "{table}: unknown key {key:?} ignored");
        }
    }
}

/// One file's settings, before merging.
#[derive(Default)]
struct Partial {
    registries: Vec<RegistryEntry>,
    search: Option<Vec<String>>,
    mode: Option<ShortNameMode>,
    /// An empty value erases an alias of an earlier file.
    aliases: BTreeMap<String, String>,
}

fn bad(path: &Path, message: impl Into<String>) -> RegistryError {
    RegistryError::config(Some(path.to_path_buf()), message)
}

/// `location`: no scheme, no trailing slash.
fn clean_location(path: &Path, what: &str, location: &str) -> Result<String, RegistryError> {
    let l = location.trim_end_matches('/');
    if l.starts_with("http://") || l.starts_with("https://") {
        return Err(bad(
            path,
            format!(
                "{what} {location:?}: a location must not contain a scheme (http:// or https://)"
            ),
        ));
    }
    Ok(l.to_string())
}

fn host_of(location: &str) -> &str {
    location.split('/').next().unwrap_or(location)
}

/// A host name without its port (`[::1]:5000` → `[::1]`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

fn looks_like_domain(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn parse_partial(text: &str, path: &Path) -> Result<Partial, RegistryError> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| bad(path, e.to_string().trim_end().to_string()))?;
    warn_unknown(path, "registries.conf", &raw.other);
    let mut out = Partial {
        search: raw.unqualified_search_registries,
        ..Partial::default()
    };
    out.mode = match raw.short_name_mode.as_deref() {
        None | Some("") => None,
        Some("enforcing") => Some(ShortNameMode::Enforcing),
        Some("permissive") => Some(ShortNameMode::Permissive),
        Some("disabled") => Some(ShortNameMode::Disabled),
        Some(other) => {
            return Err(bad(
                path,
                format!("short-name-mode {other:?}: expected enforcing, permissive or disabled"),
            ));
        }
    };
    let is_v2 = out.search.is_some() || !raw.registry.is_empty() || raw.aliases.is_some();
    if let Some(v1) = raw.registries {
        if is_v2 {
            return Err(bad(
                path,
                "mixes the version 1 [registries.*] tables with version 2 keys",
            ));
        }
        let list = |l: Option<RawV1List>| l.map(|l| l.registries).unwrap_or_default();
        out.search = Some(list(v1.search));
        let mut by_location: BTreeMap<String, RegistryEntry> = BTreeMap::new();
        for (insecure, locations) in [(true, list(v1.insecure)), (false, list(v1.block))] {
            for location in locations {
                let location = clean_location(path, "registry", &location)?;
                let e = by_location
                    .entry(location.clone())
                    .or_insert_with(|| RegistryEntry {
                        prefix: location.clone(),
                        location,
                        insecure: false,
                        blocked: false,
                        mirror_by_digest_only: false,
                        mirrors: Vec::new(),
                        origin: path.to_path_buf(),
                    });
                if insecure {
                    e.insecure = true;
                } else {
                    e.blocked = true;
                }
            }
        }
        out.registries = by_location.into_values().collect();
        return Ok(out);
    }
    for r in raw.registry {
        warn_unknown(path, "[[registry]]", &r.other);
        let location = match &r.location {
            Some(l) => clean_location(path, "location", l)?,
            None => String::new(),
        };
        let prefix = match r.prefix.as_deref().map(|p| p.trim_end_matches('/')) {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => location.clone(),
        };
        if prefix.is_empty() {
            return Err(bad(path, "[[registry]] without prefix or location"));
        }
        if let Some(rest) = prefix.strip_prefix("*.") {
            if rest.is_empty() || rest.contains(['*', '/', '@']) || rest.contains(':') {
                return Err(bad(
                    path,
                    format!(
                        "prefix {prefix:?}: a wildcard prefix is *.HOST with nothing after the host"
                    ),
                ));
            }
            if !location.is_empty() {
                return Err(bad(
                    path,
                    format!("prefix {prefix:?}: a wildcard prefix cannot have a location"),
                ));
            }
        } else if prefix.contains('*') {
            return Err(bad(
                path,
                format!("prefix {prefix:?}: a wildcard is only allowed as a leading *."),
            ));
        }
        let location = if location.is_empty() && !prefix.starts_with("*.") {
            prefix.clone()
        } else {
            location
        };
        if out.registries.iter().any(|e| e.prefix == prefix) {
            return Err(bad(
                path,
                format!("prefix {prefix:?} is defined more than once"),
            ));
        }
        let mut mirrors = Vec::new();
        for m in r.mirror {
            warn_unknown(path, "[[registry.mirror]]", &m.other);
            let pull_from_mirror = match m.pull_from_mirror.as_deref() {
                None | Some("") | Some("all") => PullFromMirror::All,
                Some("digest-only") => PullFromMirror::DigestOnly,
                Some("tag-only") => PullFromMirror::TagOnly,
                Some(other) => {
                    return Err(bad(
                        path,
                        format!(
                            "mirror {:?}: pull-from-mirror {other:?}: expected all, digest-only or tag-only",
                            m.location
                        ),
                    ));
                }
            };
            if r.mirror_by_digest_only.is_some() && pull_from_mirror != PullFromMirror::All {
                return Err(bad(
                    path,
                    format!(
                        "prefix {prefix:?}: pull-from-mirror cannot be combined with mirror-by-digest-only"
                    ),
                ));
            }
            mirrors.push(Mirror {
                location: clean_location(path, "mirror location", &m.location)?,
                insecure: m.insecure,
                pull_from_mirror,
            });
        }
        out.registries.push(RegistryEntry {
            prefix,
            location,
            insecure: r.insecure,
            blocked: r.blocked,
            mirror_by_digest_only: r.mirror_by_digest_only.unwrap_or(false),
            mirrors,
            origin: path.to_path_buf(),
        });
    }
    for (name, value) in raw.aliases.unwrap_or_default() {
        check_alias(path, &name, &value)?;
        out.aliases.insert(name, value);
    }
    Ok(out)
}

/// containers-registries.conf(5): the name is a short name, the value fully qualified;
/// neither has a tag or digest.
fn check_alias(path: &Path, name: &str, value: &str) -> Result<(), RegistryError> {
    let first = name.split('/').next().unwrap_or_default();
    if name.is_empty()
        || name.contains(['@', ':'])
        || (name.contains('/') && looks_like_domain(first))
    {
        return Err(bad(
            path,
            format!(
                "alias {name:?}: the name must be a short name without registry, tag or digest"
            ),
        ));
    }
    if value.is_empty() {
        return Ok(());
    }
    let (domain, rest) = value.split_once('/').unwrap_or((value, ""));
    if !looks_like_domain(domain) || rest.is_empty() || value.contains('@') || rest.contains(':') {
        return Err(bad(
            path,
            format!(
                "alias {name:?} = {value:?}: the value must be a fully qualified name (REGISTRY/REPO) without tag or digest"
            ),
        ));
    }
    Ok(())
}

fn read_capped(path: &Path) -> Result<Option<String>, RegistryError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()), e)),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| RegistryError::io(format!("reading {}", path.display()), e))?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(bad(
            path,
            format!("larger than the limit of {MAX_CONFIG_FILE_BYTES} bytes"),
        ));
    }
    Ok(Some(text))
}

/// The `*.conf` files of `dir`, in file-name order (a missing directory has none).
fn dropins(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RegistryError::io(format!("listing {}", dir.display()), e)),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf") && !p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// How much of `name` (a reference as text) `prefix` matches, or `None`.
fn match_prefix(name: &str, prefix: &str) -> Option<usize> {
    if let Some(suffix) = prefix.strip_prefix('*') {
        // `*.example.com`: the host (without port) ends in `.example.com`.
        let host = host_of(name);
        let bare = strip_port(host);
        return (bare.len() > suffix.len() && bare.ends_with(suffix)).then_some(host.len());
    }
    let rest = name.strip_prefix(prefix)?;
    match rest.chars().next() {
        None | Some('/') | Some('@') => Some(prefix.len()),
        // A tag after a repository; after a bare host it would be a port.
        Some(':') if prefix.contains('/') => Some(prefix.len()),
        Some(_) => None,
    }
}

impl RegistriesConf {
    /// The configuration of [`ConfPaths::from_env`].
    pub fn load() -> Result<RegistriesConf, RegistryError> {
        Self::load_from(&ConfPaths::from_env())
    }

    pub fn load_from(paths: &ConfPaths) -> Result<RegistriesConf, RegistryError> {
        let mut conf = RegistriesConf::default();
        if let Some(main) = &paths.main {
            match read_capped(main)? {
                Some(text) => conf.merge(parse_partial(&text, main)?, main),
                None if paths.main_required => {
                    return Err(bad(
                        main,
                        format!("does not exist (named by ${REGISTRIES_CONF_ENV})"),
                    ));
                }
                None => {}
            }
        }
        for dir in &paths.dropin_dirs {
            for file in dropins(dir)? {
                if let Some(text) = read_capped(&file)? {
                    conf.merge(parse_partial(&text, &file)?, &file);
                }
            }
        }
        if let Some(cache) = &paths.alias_cache
            && let Some(text) = read_capped(cache)?
        {
            let p = parse_partial(&text, cache)?;
            conf.merge(
                Partial {
                    aliases: p.aliases,
                    ..Partial::default()
                },
                cache,
            );
        }
        Ok(conf)
    }

    /// One file's configuration (`path` names it in errors and origins).
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConf, RegistryError> {
        let mut conf = RegistriesConf::default();
        conf.merge(parse_partial(text, path)?, path);
        Ok(conf)
    }

    fn merge(&mut self, p: Partial, path: &Path) {
        self.files.push(path.to_path_buf());
        for entry in p.registries {
            self.registries.retain(|e| e.prefix != entry.prefix);
            self.registries.push(entry);
        }
        self.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let sourced = |value| Sourced {
            value,
            origin: path.to_path_buf(),
        };
        if let Some(s) = p.search {
            self.unqualified_search_registries = Some(sourced(s));
        }
        if let Some(m) = p.mode {
            self.short_name_mode = Some(Sourced {
                value: m,
                origin: path.to_path_buf(),
            });
        }
        for (name, value) in p.aliases {
            if value.is_empty() {
                self.aliases.remove(&name);
            } else {
                self.aliases.insert(
                    name,
                    Sourced {
                        value,
                        origin: path.to_path_buf(),
                    },
                );
            }
        }
    }

    /// Set a host's TLS verification from another configuration file (strata's); it wins
    /// over registries.conf for that host.
    pub fn set_host_tls_verify(&mut self, host: &str, verify: bool, origin: &Path) {
        self.tls_verify.insert(
            host.to_string(),
            Sourced {
                value: verify,
                origin: origin.to_path_buf(),
            },
        );
    }

    /// The entry with the longest prefix matching `name` (`host/repo[:tag][@digest]`).
    pub fn find_name(&self, name: &str) -> Option<&RegistryEntry> {
        self.registries
            .iter()
            .filter(|e| match_prefix(name, &e.prefix).is_some())
            .max_by_key(|e| e.prefix.len())
    }

    pub fn find(&self, reference: &Reference) -> Option<&RegistryEntry> {
        self.find_name(&reference.to_string())
    }

    /// Where a pull of `reference` goes, in order: mirrors, then the primary location. A
    /// reference no entry matches has itself as its only source.
    pub fn pull_sources(&self, reference: &Reference) -> Result<Vec<PullSource>, RegistryError> {
        let text = reference.to_string();
        let Some(entry) = self.find_name(&text) else {
            return Ok(vec![PullSource {
                reference: reference.clone(),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(RegistryError::Blocked {
                reference: text,
                prefix: entry.prefix.clone(),
                path: entry.origin.clone(),
            });
        }
        let matched = match_prefix(&text, &entry.prefix).unwrap_or(0);
        let rewrite = |location: &str| -> Result<Reference, RegistryError> {
            if location.is_empty() {
                return Ok(reference.clone());
            }
            let target = format!("{location}{}", &text[matched..]);
            target.parse().map_err(|source| RegistryError::Spec {
                what: format!(
                    "{text} rewritten by prefix {:?} of {} to {target:?}",
                    entry.prefix,
                    entry.origin.display()
                ),
                source,
            })
        };
        let digested = reference.digest().is_some();
        let mut out = Vec::new();
        for m in &entry.mirrors {
            let wanted = if entry.mirror_by_digest_only {
                digested
            } else {
                match m.pull_from_mirror {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => digested,
                    PullFromMirror::TagOnly => !digested,
                }
            };
            if wanted {
                out.push(PullSource {
                    reference: rewrite(&m.location)?,
                    mirror: true,
                });
            }
        }
        out.push(PullSource {
            reference: rewrite(&entry.location)?,
            mirror: false,
        });
        Ok(out)
    }

    /// Is `host` (`host[:port]`) to be reached without TLS verification (plain HTTP
    /// allowed)? `Some` names why (the file and entry); `None` when nothing says so.
    pub fn insecure_host(&self, host: &str) -> Option<String> {
        if let Some(v) = self.tls_verify.get(host) {
            return (!v.value)
                .then(|| format!("tls-verify = false for {host} in {}", v.origin.display()));
        }
        for e in &self.registries {
            let wildcard = e.prefix.starts_with("*.") && match_prefix(host, &e.prefix).is_some();
            if e.insecure
                && (host_of(&e.location) == host || host_of(&e.prefix) == host || wildcard)
            {
                return Some(format!(
                    "[[registry]] prefix {:?} has insecure = true in {}",
                    e.prefix,
                    e.origin.display()
                ));
            }
            if let Some(m) = e
                .mirrors
                .iter()
                .find(|m| m.insecure && host_of(&m.location) == host)
            {
                return Some(format!(
                    "mirror {:?} of prefix {:?} has insecure = true in {}",
                    m.location,
                    e.prefix,
                    e.origin.display()
                ));
            }
        }
        None
    }

    /// Does the configuration say `host` must be verified even where registries.conf marks
    /// it insecure (strata's `tls-verify = true` for that host)?
    pub fn verify_forced(&self, host: &str) -> bool {
        self.tls_verify.get(host).is_some_and(|v| v.value)
    }

    /// Aliases, search registries and mode for bare-name resolution.
    pub fn short_names(&self) -> ShortNameSettings {
        ShortNameSettings {
            aliases: self
                .aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
            search_registries: self
                .unqualified_search_registries
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default(),
            mode: self.short_name_mode.as_ref().map(|m| m.value),
        }
    }
}

/// Where per-host certificates are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertDirs {
    /// `DIR/HOST[:PORT]/` of the first of these directories where it exists.
    PerHost(Vec<PathBuf>),
    /// This directory for every host (`--cert-dir`).
    Flat(PathBuf),
}

impl Default for CertDirs {
    /// `$HOME/.config/containers/certs.d`, `/etc/containers/certs.d`, `/etc/docker/certs.d`.
    fn default() -> Self {
        let mut dirs: Vec<PathBuf> = home().map(|h| h.join(USER_CERTS_D)).into_iter().collect();
        dirs.extend(SYSTEM_CERTS_D.iter().map(PathBuf::from));
        CertDirs::PerHost(dirs)
    }
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostCerts {
    /// The directory they came from.
    pub dir: Option<PathBuf>,
    /// `*.crt`: CA certificates trusted for this host, in addition to the system's.
    pub ca_certs: Vec<PathBuf>,
    /// `NAME.cert` + `NAME.key`.
    pub client_cert: Option<ClientCert>,
}

impl CertDirs {
    /// The directory holding `host`'s certificates, if any.
    pub fn dir_for(&self, host: &str) -> Option<PathBuf> {
        match self {
            CertDirs::Flat(d) => Some(d.clone()),
            CertDirs::PerHost(dirs) => dirs.iter().map(|d| d.join(host)).find(|d| d.is_dir()),
        }
    }

    /// `host`'s CA files and client certificate. A `NAME.key` without `NAME.cert`, or the
    /// reverse, is an error naming the file.
    pub fn host_certs(&self, host: &str) -> Result<HostCerts, RegistryError> {
        let Some(dir) = self.dir_for(host) else {
            return Ok(HostCerts::default());
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            RegistryError::io(format!("listing certificates in {}", dir.display()), e)
        })?;
        let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        let mut out = HostCerts {
            dir: Some(dir.clone()),
            ..HostCerts::default()
        };
        for f in &files {
            let ext = f.extension().and_then(|x| x.to_str()).unwrap_or_default();
            match ext {
                "crt" => out.ca_certs.push(f.clone()),
                "cert" => {
                    let key = f.with_extension("key");
                    if !key.is_file() {
                        return Err(bad(
                            f,
                            format!("client certificate without its key {}", key.display()),
                        ));
                    }
                    if out.client_cert.is_none() {
                        out.client_cert = Some(ClientCert {
                            cert: f.clone(),
                            key,
                        });
                    }
                }
                "key" => {
                    let cert = f.with_extension("cert");
                    if !cert.is_file() {
                        return Err(bad(
                            f,
                            format!("client key without its certificate {}", cert.display()),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

impl fmt::Display for PullFromMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullFromMirror::All => "all",
            PullFromMirror::DigestOnly => "digest-only",
            PullFromMirror::TagOnly => "tag-only",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        RegistriesConf::parse(text, Path::new("/etc/test.conf")).unwrap()
    }

    fn sources(c: &RegistriesConf, r: &str) -> Vec<String> {
        c.pull_sources(&r.parse().unwrap())
            .unwrap()
            .into_iter()
            .map(|s| s.reference.to_string())
            .collect()
    }

    #[test]
    fn prefix_matching_is_by_component_and_longest_wins() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com"
location = "a.local"
[[registry]]
prefix = "example.com/foo"
location = "b.local/bar"
[[registry]]
prefix = "*.wild.io"
insecure = true
"#,
        );
        let find = |n: &str| c.find_name(n).map(|e| e.prefix.as_str());
        assert_eq!(find("example.com/foo/x:1"), Some("example.com/foo"));
        assert_eq!(find("example.com/foo:1"), Some("example.com/foo"));
        assert_eq!(find("example.com/foobar:1"), Some("example.com"));
        assert_eq!(
            find("example.com:5000/foo:1"),
            None,
            "a port is another host"
        );
        assert_eq!(find("example.comx/foo:1"), None);
        assert_eq!(find("a.wild.io/x:1"), Some("*.wild.io"));
        assert_eq!(find("b.a.wild.io:443/x:1"), Some("*.wild.io"));
        assert_eq!(find("wild.io/x:1"), None, "the wildcard needs a subdomain");
        assert_eq!(
            sources(&c, "example.com/foo/img:v1"),
            ["b.local/bar/img:v1"]
        );
        assert_eq!(sources(&c, "example.com/other:v1"), ["a.local/other:v1"]);
        assert_eq!(
            sources(&c, "x.wild.io/img:v1"),
            ["x.wild.io/img:v1"],
            "no rewrite"
        );
        assert!(c.insecure_host("x.wild.io").is_some());
        assert!(c.insecure_host("wild.io").is_none());
    }

    #[test]
    fn mirrors_by_digest_and_tag() {
        let c = conf(
            r#"
[[registry]]
prefix = "docker.io"
location = "registry.local:5000"
[[registry.mirror]]
location = "m1.local/hub"
[[registry.mirror]]
location = "m2.local"
pull-from-mirror = "digest-only"
insecure = true
[[registry.mirror]]
location = "m3.local"
pull-from-mirror = "tag-only"
[[registry]]
prefix = "quay.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "q.local"
"#,
        );
        assert_eq!(
            sources(&c, "busybox"),
            [
                "m1.local/hub/library/busybox:latest",
                "m3.local/library/busybox:latest",
                "registry.local:5000/library/busybox:latest"
            ]
        );
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        let got = sources(&c, &d);
        assert_eq!(got.len(), 3);
        assert!(got[0].starts_with("m1.local/hub/library/busybox@sha256:"));
        assert!(got[1].starts_with("m2.local/library/busybox@"));
        assert!(got[2].starts_with("registry.local:5000/"));
        assert_eq!(sources(&c, "quay.io/a/b:1"), ["quay.io/a/b:1"]);
        assert_eq!(
            sources(&c, &format!("quay.io/a/b@sha256:{}", "b".repeat(64))).len(),
            2
        );
        assert!(
            c.insecure_host("m2.local")
                .unwrap()
                .contains("/etc/test.conf")
        );
        assert!(c.insecure_host("m1.local").is_none());
        assert!(c.insecure_host("registry.local:5000").is_none());
    }

    #[test]
    fn blocked_names_the_file() {
        let c = conf("[[registry]]\nprefix = \"evil.io\"\nblocked = true\n");
        let e = c.pull_sources(&"evil.io/x:1".parse().unwrap()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("evil.io/x:1") && text.contains("/etc/test.conf"),
            "{text}"
        );
        assert!(c.pull_sources(&"good.io/x:1".parse().unwrap()).is_ok());
    }

    #[test]
    fn version_1_lists() {
        let c = conf(
            "[registries.search]\nregistries = ['r1.io', 'r2.io']\n[registries.insecure]\nregistries = ['127.0.0.1:5000']\n[registries.block]\nregistries = ['bad.io']\n",
        );
        assert_eq!(c.short_names().search_registries, ["r1.io", "r2.io"]);
        assert!(c.insecure_host("127.0.0.1:5000").is_some());
        assert!(c.pull_sources(&"bad.io/x".parse().unwrap()).is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e =
            RegistriesConf::parse("a = 1\n[[registry]\n", Path::new("/x/bad.conf")).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("/x/bad.conf: "), "{text}");
        assert!(text.contains("line 2"), "{text}");
        for bad_text in [
            "[[registry]]\nprefix = \"*.a.io/x\"\n",
            "[[registry]]\nprefix = \"*.a.io\"\nlocation = \"b.io\"\n",
            "[[registry]]\nlocation = \"https://a.io\"\n",
            "[[registry]]\nlocation = \"a.io\"\n[[registry]]\nlocation = \"a.io\"\n",
            "[[registry]]\nlocation = \"a.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"tag-only\"\n",
            "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n",
            "short-name-mode = \"loud\"\n",
            "[aliases]\n\"quay.io/x\" = \"quay.io/x/y\"\n",
            "[aliases]\n\"x\" = \"y\"\n",
            "[aliases]\n\"x\" = \"quay.io/x:1\"\n",
            "unqualified-search-registries = ['a.io']\n[registries.search]\nregistries = ['b.io']\n",
        ] {
            let e = RegistriesConf::parse(bad_text, Path::new("/x/bad.conf")).unwrap_err();
            assert!(
                e.to_string().starts_with("/x/bad.conf: "),
                "{bad_text}: {e}"
            );
        }
    }

    #[test]
    fn files_merge_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        let d = dir.path().join("registries.conf.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            &main,
            "unqualified-search-registries = ['a.io']\n[aliases]\nold = 'a.io/old'\ngone = 'a.io/gone'\n[[registry]]\nlocation = 'x.io'\ninsecure = true\n",
        )
        .unwrap();
        std::fs::write(
            d.join("20-b.conf"),
            "unqualified-search-registries = ['c.io']\n",
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.conf"),
            "unqualified-search-registries = ['b.io']\nshort-name-mode = 'enforcing'\n[aliases]\ngone = ''\nnew = 'b.io/new'\n[[registry]]\nlocation = 'x.io'\n",
        )
        .unwrap();
        std::fs::write(d.join("ignored.txt"), "not toml [").unwrap();
        let cache = dir.path().join("short-name-aliases.conf");
        std::fs::write(&cache, "[aliases]\nnew = 'cache.io/new'\n").unwrap();
        let c = RegistriesConf::load_from(&ConfPaths {
            main: Some(main.clone()),
            main_required: false,
            dropin_dirs: vec![d.clone(), dir.path().join("missing")],
            alias_cache: Some(cache.clone()),
        })
        .unwrap();
        assert_eq!(
            c.files,
            [
                main.clone(),
                d.join("10-a.conf"),
                d.join("20-b.conf"),
                cache.clone()
            ]
        );
        let s = c.short_names();
        assert_eq!(s.search_registries, ["c.io"]);
        assert_eq!(
            c.unqualified_search_registries.as_ref().unwrap().origin,
            d.join("20-b.conf")
        );
        assert_eq!(s.mode, Some(ShortNameMode::Enforcing));
        assert_eq!(s.aliases.get("old").map(String::as_str), Some("a.io/old"));
        assert_eq!(
            s.aliases.get("new").map(String::as_str),
            Some("cache.io/new")
        );
        assert!(!s.aliases.contains_key("gone"));
        assert!(
            c.insecure_host("x.io").is_none(),
            "the drop-in's x.io replaced the main one"
        );
        let missing = RegistriesConf::load_from(&ConfPaths {
            main: Some(dir.path().join("nope.conf")),
            main_required: true,
            ..ConfPaths::default()
        })
        .unwrap_err();
        assert!(missing.to_string().contains("nope.conf"), "{missing}");
    }

    #[test]
    fn tls_verify_overrides_win() {
        let mut c = conf("[[registry]]\nlocation = 'x.io'\ninsecure = true\n");
        assert!(c.insecure_host("x.io").is_some());
        c.set_host_tls_verify("x.io", true, Path::new("/s/config.toml"));
        assert!(c.insecure_host("x.io").is_none());
        assert!(c.verify_forced("x.io"));
        c.set_host_tls_verify("y.io", false, Path::new("/s/config.toml"));
        assert!(c.insecure_host("y.io").unwrap().contains("/s/config.toml"));
    }

    #[test]
    fn certs_d_files() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("b").join("reg.io:5000");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        for f in ["ca.crt", "client.cert", "client.key", "README"] {
            std::fs::write(host.join(f), "x").unwrap();
        }
        let dirs = CertDirs::PerHost(vec![dir.path().join("a"), dir.path().join("b")]);
        let c = dirs.host_certs("reg.io:5000").unwrap();
        assert_eq!(c.ca_certs, [host.join("ca.crt")]);
        assert_eq!(c.client_cert.unwrap().key, host.join("client.key"));
        assert_eq!(dirs.host_certs("other.io").unwrap(), HostCerts::default());
        std::fs::write(host.join("lone.key"), "x").unwrap();
        let e = dirs.host_certs("reg.io:5000").unwrap_err();
        assert!(e.to_string().contains("lone.key"), "{e}");
        let flat = CertDirs::Flat(dir.path().join("a"));
        assert_eq!(
            flat.host_certs("anything").unwrap().dir,
            Some(dir.path().join("a"))
        );
    }
}
