//! The runtime `config.json` of an unpacked bundle, made from the image config the way umoci
//! does it (`oci/config/convert`): runc's defaults, then
//! - `process.args` = Entrypoint + Cmd, `process.env` = the image's Env (replacing defaults
//!   of the same name), `process.cwd` = WorkingDir or `/`, `process.terminal` = true;
//! - `process.user` resolved like runc/moby's `GetExecUser` through the rootfs's
//!   `/etc/passwd` and `/etc/group` (read inside the rootfs: a symlink there never leads
//!   out, and only a regular file of bounded size is read — CVE-2024-9676), `HOME` from the
//!   passwd entry;
//! - annotations: the image labels plus `org.opencontainers.image.{os,architecture,author,
//!   created,stopSignal,exposedPorts}`;
//! - every image volume becomes a tmpfs mount; no seccomp profile;
//! - rootless: no network namespace, a user namespace mapping the caller to root, `/sys`
//!   bind-mounted, no `gid=` mount options, no cgroup resources, no additional groups.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, Mount, Spec};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use strata_spec::ImageConfig;

use crate::ImageError;
use crate::tree::kind;

/// Largest `/etc/passwd` or `/etc/group` read (a real one is kilobytes; an image could
/// point it at something endless).
const MAX_ACCOUNT_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// runtime-spec version written (the one runc 1.1 implements).
const RUNTIME_SPEC_VERSION: &str = "1.0.2";

/// Default hostname of the container.
pub const DEFAULT_HOSTNAME: &str = "strata";

/// How the bundle will be run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuntimeMode {
    /// By root: all namespaces, devices cgroup rule, `gid=5` on devpts.
    #[default]
    Root,
    /// By an unprivileged user: a user namespace mapping `uid`/`gid` on the host to root.
    Rootless { uid: u32, gid: u32 },
}

impl RuntimeMode {
    /// Root when the caller is root, else rootless for the caller's ids.
    pub fn for_caller() -> RuntimeMode {
        if is_root() {
            RuntimeMode::Root
        } else {
            RuntimeMode::Rootless {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
            }
        }
    }
}

/// Is the effective user root?
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether the container process gets a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Terminal {
    /// No terminal: `runc run` works from scripts and pipes. (umoci and `runc spec` write
    /// `terminal: true`, which makes `runc run` fail with "open /dev/tty" without one.)
    #[default]
    None,
    /// `process.terminal = true` (interactive use).
    Allocate,
}

/// Options of [`runtime_spec`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub mode: RuntimeMode,
    pub hostname: String,
    pub terminal: Terminal,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            mode: RuntimeMode::Root,
            hostname: DEFAULT_HOSTNAME.to_string(),
            terminal: Terminal::None,
        }
    }
}

/// The spec as JSON with a stable order: annotations by key, capability sets sorted
/// (`oci-spec` keeps both in hashed collections).
pub fn spec_json(spec: &Spec) -> Result<Vec<u8>, ImageError> {
    let mut value = serde_json::to_value(spec)
        .map_err(|e| ImageError::Unsupported(format!("runtime config: {e}")))?;
    if let Some(a) = value.get_mut("annotations").and_then(|a| a.as_object_mut()) {
        a.sort_keys();
    }
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_vec_pretty(&value)
        .map_err(|e| ImageError::Unsupported(format!("runtime config: {e}")))
}

/// `USER` resolution is shared with `RUN` (strata-sandbox): one implementation of runc's
/// `GetExecUser` rules, in strata-spec.
pub use strata_spec::{ExecUser, resolve_user};

/// Read `rel` (e.g. `etc/passwd`) inside `rootfs`: symlinks resolved with the rootfs as
/// `/`, only a regular file, at most [`MAX_ACCOUNT_FILE_BYTES`]. `None` when missing.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, ImageError> {
    let root = rustix::fs::openat(
        rustix::fs::CWD,
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io(format!("opening {}", rootfs.display()), io::Error::from(e)))?;
    let fd = match rustix::fs::openat2(
        root.as_fd(),
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return Ok(None);
        }
        Err(e) => {
            return Err(ImageError::io(
                format!("opening /{rel} in the rootfs"),
                io::Error::from(e),
            ));
        }
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| ImageError::io(format!("stat /{rel} in the rootfs"), io::Error::from(e)))?;
    if kind(&st) != FileType::RegularFile {
        return Err(ImageError::Unsupported(format!(
            "/{rel} in the image is not a regular file: not read"
        )));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_ACCOUNT_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ImageError::io(format!("reading /{rel} in the rootfs"), e))?;
    if text.len() as u64 > MAX_ACCOUNT_FILE_BYTES {
        return Err(ImageError::TooLarge {
            what: format!("/{rel} in the image"),
            limit: MAX_ACCOUNT_FILE_BYTES,
        });
    }
    Ok(Some(text))
}

fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    let prefix = format!("{name}=");
    match env.iter_mut().find(|e| e.starts_with(&prefix)) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// The runtime spec for running `config` from the rootfs at `rootfs` (named `rootfs` in
/// the bundle).
pub fn runtime_spec(
    config: &ImageConfig,
    rootfs: &Path,
    options: &RuntimeOptions,
) -> Result<Spec, ImageError> {
    if config.os != "linux" {
        return Err(ImageError::Unsupported(format!(
            "cannot make a runtime config for os {:?} (only linux)",
            config.os
        )));
    }
    let mut spec = match options.mode {
        RuntimeMode::Root => Spec::default(),
        RuntimeMode::Rootless { uid, gid } => {
            let mut s = Spec::rootless(uid, gid);
            s.set_process(Some(Default::default()));
            s.set_root(Some(Default::default()));
            s.set_annotations(Some(Default::default()));
            s
        }
    };
    spec.set_version(RUNTIME_SPEC_VERSION.to_string());
    spec.set_hostname(Some(options.hostname.clone()));
    let mut root = oci_spec::runtime::Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(false));
    spec.set_root(Some(root));

    let rc = config.config.clone().unwrap_or_default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(options.terminal == Terminal::Allocate));
    process.set_cwd(PathBuf::from(
        rc.working_dir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or("/"),
    ));
    let mut env = process.env().clone().unwrap_or_default();
    for e in rc.env.as_deref().unwrap_or_default() {
        let Some((name, value)) = e.split_once('=') else {
            return Err(ImageError::Unsupported(format!(
                "image config Env entry {e:?} has no '='"
            )));
        };
        if name.is_empty() {
            return Err(ImageError::Unsupported(format!(
                "image config Env entry {e:?} has an empty name"
            )));
        }
        set_env(&mut env, name, value);
    }
    let mut args: Vec<String> = rc.entrypoint.clone().unwrap_or_default();
    args.extend(rc.cmd.clone().unwrap_or_default());
    if !args.is_empty() {
        process.set_args(Some(args));
    }

    let user_spec = rc.user.clone().unwrap_or_default();
    let passwd = read_in_root(rootfs, "etc/passwd")?;
    let group = read_in_root(rootfs, "etc/group")?;
    let user = resolve_user(&user_spec, passwd.as_deref(), group.as_deref())
        .map_err(|e| ImageError::Unsupported(format!("image config User {user_spec:?}: {e}")))?;
    let mut u = oci_spec::runtime::User::default();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    if matches!(options.mode, RuntimeMode::Root) {
        u.set_additional_gids(Some(user.additional_gids.clone()));
    }
    process.set_user(u);
    if !user.home.is_empty() {
        set_env(&mut env, "HOME", &user.home);
    }
    process.set_env(Some(env));
    spec.set_process(Some(process));

    let mut annotations: HashMap<String, String> = config.labels().into_iter().collect();
    annotations.insert("org.opencontainers.image.os".into(), config.os.clone());
    annotations.insert(
        "org.opencontainers.image.architecture".into(),
        config.architecture.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.author".into(),
        config.author.clone().unwrap_or_default(),
    );
    annotations.insert(
        "org.opencontainers.image.created".into(),
        config.created.clone().unwrap_or_default(),
    );
    annotations.insert(
        "org.opencontainers.image.stopSignal".into(),
        rc.stop_signal.clone().unwrap_or_default(),
    );
    let ports: Vec<String> = rc
        .exposed_ports
        .clone()
        .unwrap_or_default()
        .into_keys()
        .collect();
    annotations.insert(
        "org.opencontainers.image.exposedPorts".into(),
        ports.join(","),
    );
    spec.set_annotations(Some(annotations));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for volume in rc.volumes.clone().unwrap_or_default().into_keys() {
        mounts.push(mount(
            &volume,
            "tmpfs",
            "none",
            &["rw", "nosuid", "nodev", "noexec", "relatime"],
        ));
    }
    spec.set_mounts(Some(mounts));

    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
        if let Some(resources) = linux.resources_mut() {
            // runc's default: deny every device, the runtime adds its default ones.
            let mut deny = LinuxDeviceCgroup::default();
            deny.set_allow(false);
            deny.set_access(Some("rwm".to_string()));
            resources.set_devices(Some(vec![deny]));
        }
        // Rootless: Spec::rootless already maps uid/gid to root in a user namespace.
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n";

    #[test]
    fn resolves_users_like_getexecuser() {
        let r = |s| resolve_user(s, Some(PASSWD), Some(GROUP));
        let root = r("").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let app = r("app").unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![10, 29]);
        assert_eq!(app.home, "/home/app");
        let by_number = r("1000").unwrap();
        assert_eq!(by_number.home, "/home/app");
        let explicit = r("app:wheel").unwrap();
        assert_eq!((explicit.gid, explicit.additional_gids.len()), (10, 0));
        let numeric = r("4242:4343").unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.home.as_str()),
            (4242, 4343, "/")
        );
        assert!(r("ghost").is_err());
        assert!(r("app:ghosts").is_err());
        assert!(r("4294967295").is_err());
        // No passwd at all: numbers only.
        assert_eq!(resolve_user("7:8", None, None).unwrap().uid, 7);
        assert!(resolve_user("app", None, None).is_err());
    }
}
