//! Rootless id mapping: which ids the user namespace gets.
//!
//! - as root: no user namespace at all;
//! - a user without `/etc/subuid` *and* `/etc/subgid` ranges: one id, container 0 = the
//!   caller (what `unshare -r` does). Everything the step creates is owned by the caller;
//!   `chown` to any other id fails (EINVAL), `USER` other than root fails with
//!   [`crate::SandboxError::UserNotMapped`], supplementary groups are not set;
//! - a user with ranges: container 0 = the caller, container 1.. = the ranges in order, set
//!   by the setuid helpers newuidmap/newgidmap (Debian package `uidmap`) like podman and
//!   buildah. `chown`, `USER nobody` and supplementary groups work; files of container id
//!   N > 0 are owned on the host by the N-th subordinate id, which the caller cannot read or
//!   remove without entering the namespace ([`crate::Sandbox::remove`] does that).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::SandboxError;
use crate::protocol::IdMode;

/// The kernel accepts at most this many lines in uid_map/gid_map.
const MAX_MAP_LINES: usize = 340;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// Ranges of `/etc/subuid`-format `text` for the user `name` / `id`, in file order.
pub(crate) fn parse_subids(text: &str, name: Option<&str>, id: u32) -> Vec<SubRange> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != id && Some(who) != name {
                return None;
            }
            let r = SubRange {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            };
            (r.count > 0).then_some(r)
        })
        .take(MAX_MAP_LINES - 1)
        .collect()
}

/// The caller's user name from the host's `/etc/passwd` (newuidmap matches names too).
fn host_user_name(uid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()? == uid.to_string()).then(|| name.to_string())
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// What [`decide`] found, for the parent.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub mode: IdMode,
    uid: u32,
    gid: u32,
    sub_uids: Vec<SubRange>,
    sub_gids: Vec<SubRange>,
    newuidmap: Option<PathBuf>,
    newgidmap: Option<PathBuf>,
}

pub(crate) fn decide() -> Result<Mapping, SandboxError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let mut m = Mapping {
        mode: IdMode::Root,
        uid,
        gid,
        sub_uids: Vec::new(),
        sub_gids: Vec::new(),
        newuidmap: None,
        newgidmap: None,
    };
    if uid == 0 {
        return Ok(m);
    }
    let name = host_user_name(uid);
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    m.sub_uids = parse_subids(&read("/etc/subuid"), name.as_deref(), uid);
    m.sub_gids = parse_subids(&read("/etc/subgid"), name.as_deref(), uid);
    if m.sub_uids.is_empty() || m.sub_gids.is_empty() {
        m.mode = IdMode::Single { uid, gid };
        return Ok(m);
    }
    m.newuidmap = find_in_path("newuidmap");
    m.newgidmap = find_in_path("newgidmap");
    if m.newuidmap.is_none() || m.newgidmap.is_none() {
        return Err(SandboxError::IdMap {
            tool: "newuidmap".into(),
            detail: "subordinate ids are configured in /etc/subuid and /etc/subgid but \
                     newuidmap/newgidmap are not installed (Debian package uidmap)"
                .into(),
        });
    }
    let total = |r: &[SubRange]| r.iter().fold(1u32, |acc, r| acc.saturating_add(r.count));
    m.mode = IdMode::Subordinate {
        uid_count: total(&m.sub_uids),
        gid_count: total(&m.sub_gids),
    };
    Ok(m)
}

fn map_args(pid: i32, host: u32, ranges: &[SubRange]) -> Vec<String> {
    let mut args = vec![pid.to_string(), "0".into(), host.to_string(), "1".into()];
    let mut next = 1u32;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next = next.saturating_add(r.count);
    }
    args
}

/// Run newuidmap and newgidmap for the helper `pid` (in a new, unmapped user namespace).
pub(crate) fn apply(m: &Mapping, pid: i32) -> Result<(), SandboxError> {
    let tools = [
        (&m.newuidmap, map_args(pid, m.uid, &m.sub_uids)),
        (&m.newgidmap, map_args(pid, m.gid, &m.sub_gids)),
    ];
    for (tool, args) in tools {
        let Some(tool) = tool else {
            continue;
        };
        let name = tool
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = Command::new(tool)
            .args(&args)
            .output()
            .map_err(|e| SandboxError::IdMap {
                tool: name.clone(),
                detail: format!("cannot run {}: {e}", tool.display()),
            })?;
        if !out.status.success() {
            return Err(SandboxError::IdMap {
                tool: name,
                detail: format!(
                    "`{} {}` failed ({}): {}",
                    tool.display(),
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines_by_name_or_uid() {
        let text = "alice:100000:65536\n1000:300000:10\nbob:200000:65536\nmalformed\nalice:x:1\nalice:500000:0\n";
        assert_eq!(
            parse_subids(text, Some("alice"), 1000),
            vec![
                SubRange {
                    start: 100000,
                    count: 65536
                },
                SubRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert_eq!(parse_subids(text, None, 1001), vec![]);
        assert_eq!(
            map_args(42, 1000, &parse_subids(text, Some("alice"), 1000)),
            [
                "42", "0", "1000", "1", "1", "100000", "65536", "65537", "300000", "10"
            ]
        );
    }
}
