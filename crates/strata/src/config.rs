//! strata's own configuration file (defaults for flags) and the registries configuration of
//! the containers tools, loaded once per process.
//!
//! Files: `$STRATA_CONFIG` alone when set; else `/etc/strata/config.toml`, then
//! `${XDG_CONFIG_HOME:-~/.config}/strata/config.toml` (a key in the later file wins). Flags
//! beat these; these beat the built-in defaults.
//!
//! ```toml
//! retry-times = 3
//! jobs = 8
//! compression = "zstd"
//! platforms = ["linux/amd64", "linux/arm64"]
//! store = "/var/lib/strata"
//! [registry."registry.lan:5000"]
//! tls-verify = false
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_registry::config::{RegistriesConf, Sourced};

use crate::cli::CompressionKind;

/// Environment variable naming the one strata configuration file to read.
pub const CONFIG_ENV: &str = "STRATA_CONFIG";
pub const SYSTEM_CONFIG: &str = "/etc/strata/config.toml";
/// Largest configuration file read (a few lines are expected).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Attempts per request when neither flag nor file says.
pub const DEFAULT_RETRY_TIMES: u32 = 5;

/// The settings of strata's configuration files, each with the file that set it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    pub retry_times: Option<Sourced<u32>>,
    pub jobs: Option<Sourced<usize>>,
    pub compression: Option<Sourced<CompressionKind>>,
    pub platforms: Option<Sourced<Vec<String>>>,
    pub store: Option<Sourced<PathBuf>>,
    /// Per registry host: verify TLS or not (wins over registries.conf).
    pub tls_verify: BTreeMap<String, Sourced<bool>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSettings {
    retry_times: Option<u32>,
    jobs: Option<usize>,
    compression: Option<String>,
    platforms: Option<Vec<String>>,
    store: Option<PathBuf>,
    #[serde(default)]
    registry: BTreeMap<String, RawRegistry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRegistry {
    tls_verify: Option<bool>,
}

/// The files read, in order (see the module documentation).
pub fn config_files() -> (Vec<PathBuf>, bool) {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return (vec![PathBuf::from(p)], true);
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .map(|c| c.join("strata/config.toml"));
    let mut files = vec![PathBuf::from(SYSTEM_CONFIG)];
    files.extend(user);
    (files, false)
}

fn read_file(path: &Path) -> anyhow::Result<Option<String>> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_CONFIG_BYTES,
        "{}: larger than the limit of {MAX_CONFIG_BYTES} bytes",
        path.display()
    );
    Ok(Some(text))
}

impl Settings {
    pub fn load() -> anyhow::Result<Settings> {
        let (files, required) = config_files();
        let mut settings = Settings::default();
        for path in files {
            match read_file(&path)? {
                Some(text) => settings.merge(&text, &path)?,
                None if required => {
                    anyhow::bail!(
                        "{}: does not exist (named by ${CONFIG_ENV})",
                        path.display()
                    )
                }
                None => {}
            }
        }
        Ok(settings)
    }

    /// Apply one file on top of what is there.
    pub fn merge(&mut self, text: &str, path: &Path) -> anyhow::Result<()> {
        let raw: RawSettings = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let sourced = |value| Sourced {
            value,
            origin: path.to_path_buf(),
        };
        let bad = |what: String| anyhow::anyhow!("{}: {what}", path.display());
        if let Some(n) = raw.retry_times {
            if n == 0 {
                return Err(bad("retry-times must be at least 1".into()));
            }
            self.retry_times = Some(sourced(n));
        }
        if let Some(n) = raw.jobs {
            if n == 0 {
                return Err(bad("jobs must be at least 1".into()));
            }
            self.jobs = Some(Sourced {
                value: n,
                origin: path.to_path_buf(),
            });
        }
        if let Some(c) = raw.compression {
            let kind = <CompressionKind as clap::ValueEnum>::from_str(&c, false)
                .map_err(|_| bad(format!("compression {c:?}: expected gzip, zstd or none")))?;
            self.compression = Some(Sourced {
                value: kind,
                origin: path.to_path_buf(),
            });
        }
        if let Some(list) = raw.platforms {
            for p in &list {
                p.parse::<strata_spec::Platform>()
                    .map_err(|e| bad(format!("platforms: {p:?}: {e}")))?;
            }
            self.platforms = Some(Sourced {
                value: list,
                origin: path.to_path_buf(),
            });
        }
        if let Some(store) = raw.store {
            if !store.is_absolute() {
                return Err(bad(format!(
                    "store {}: must be an absolute path",
                    store.display()
                )));
            }
            self.store = Some(Sourced {
                value: store,
                origin: path.to_path_buf(),
            });
        }
        for (host, r) in raw.registry {
            if let Some(v) = r.tls_verify {
                self.tls_verify.insert(
                    host,
                    Sourced {
                        value: v,
                        origin: path.to_path_buf(),
                    },
                );
            }
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static REGISTRIES: OnceLock<Result<Arc<RegistriesConf>, String>> = OnceLock::new();

/// Load strata's configuration for this process (once, before any command runs) and apply
/// the settings that are not flags (`store`).
pub fn init() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    if let Some(store) = &settings.store {
        strata_store::set_default_store_path(store.value.clone());
    }
    let _ = SETTINGS.set(settings);
    Ok(())
}

/// strata's configuration (empty before [`init`]).
pub fn settings() -> &'static Settings {
    static EMPTY: OnceLock<Settings> = OnceLock::new();
    SETTINGS
        .get()
        .unwrap_or_else(|| EMPTY.get_or_init(Settings::default))
}

/// registries.conf with strata's per-registry `tls-verify` on top, loaded on first use.
pub fn registries() -> anyhow::Result<Arc<RegistriesConf>> {
    REGISTRIES
        .get_or_init(|| {
            let mut conf = RegistriesConf::load().map_err(|e| e.to_string())?;
            for (host, v) in &settings().tls_verify {
                conf.set_host_tls_verify(host, v.value, &v.origin);
            }
            Ok(Arc::new(conf))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_per_key_and_errors_name_the_file() {
        let mut s = Settings::default();
        s.merge(
            "retry-times = 2\njobs = 3\n[registry.\"a.io\"]\ntls-verify = false\n",
            Path::new("/etc/strata/config.toml"),
        )
        .unwrap();
        s.merge(
            "jobs = 7\ncompression = \"zstd\"\n",
            Path::new("/u/config.toml"),
        )
        .unwrap();
        assert_eq!(s.retry_times.as_ref().unwrap().value, 2);
        assert_eq!(s.jobs.as_ref().unwrap().value, 7);
        assert_eq!(s.jobs.as_ref().unwrap().origin, Path::new("/u/config.toml"));
        assert_eq!(s.compression.as_ref().unwrap().value, CompressionKind::Zstd);
        assert!(!s.tls_verify["a.io"].value);
        for bad in [
            "jobs = 0\n",
            "compression = \"lz4\"\n",
            "platforms = [\"linux\"]\n",
            "store = \"relative\"\n",
            "retry_times = 3\n",
            "[registry.\"a.io\"]\ninsecure = true\n",
            "jobs = \n",
        ] {
            let e = Settings::default()
                .merge(bad, Path::new("/x/config.toml"))
                .unwrap_err();
            assert!(e.to_string().starts_with("/x/config.toml: "), "{bad}: {e}");
        }
    }
}
