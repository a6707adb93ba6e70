//! `USER` resolution from the root filesystem's `/etc/passwd` and `/etc/group`, following
//! runc's `GetExecUser` rules (what Docker, BuildKit and buildah do):
//!
//! - `""` means uid 0; a name must be in `/etc/passwd`; a number need not be (gid 0, home `/`);
//! - `user:group` takes the group from `/etc/group` (name or gid) or as a number, and then no
//!   supplementary groups are added;
//! - otherwise, when the user was found in `/etc/passwd`, its primary gid comes from there and
//!   the supplementary groups are the `/etc/group` entries listing the user's name.
//!
//! The files are read by the caller (inside the root: strata-sandbox for `RUN`, strata-image
//! for a bundle's `config.json`); this module is pure.

/// Largest id accepted (runc's bound: ids are signed 32-bit in many tools).
const MAX_ID: u64 = i32::MAX as u64;
/// Most supplementary groups a process can have (NGROUPS_MAX).
const MAX_GROUPS: usize = 65536;

/// The ids a process runs with for a `USER` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the `/etc/group` entries naming the user), in file order.
    pub additional_gids: Vec<u32>,
    /// From `/etc/passwd`; `/` when the user is not there or has none.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (v <= MAX_ID).then_some(v as u32)
}

/// The `:`-separated fields of each line of `/etc/passwd` or `/etc/group`, skipping comments
/// and blank lines.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.is_empty() {
            return None;
        }
        Some(line.split(':').collect())
    })
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    records(text).filter_map(|f| {
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: parse_id(f[2])?,
            gid: parse_id(f[3])?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    records(text).filter_map(|f| {
        if f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: parse_id(f[2])?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`). `passwd`/`group` are the
/// files' contents, `None` when the image has none. The error is the reason, for the caller
/// to put in its own error.
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, String> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    if group_arg == Some("") {
        return Err("empty group after ':'".to_string());
    }
    let numeric_user = parse_id(user_arg);
    if numeric_user.is_none() && user_arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("uid {user_arg} out of range (0-{MAX_ID})"));
    }

    let mut resolved = ExecUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    let found = passwd.and_then(|text| {
        passwd_entries(text).find(|e| e.name == user_arg || Some(e.uid) == numeric_user)
    });
    let matched_name = match &found {
        Some(e) => {
            resolved.uid = e.uid;
            resolved.gid = e.gid;
            if !e.home.is_empty() {
                resolved.home = e.home.to_string();
            }
            Some(e.name.to_string())
        }
        None => match numeric_user {
            Some(uid) => {
                resolved.uid = uid;
                None
            }
            None => {
                return Err(format!(
                    "unable to find user {user_arg}: no matching entries in passwd file{}",
                    if passwd.is_none() {
                        " (the image has no /etc/passwd)"
                    } else {
                        ""
                    }
                ));
            }
        },
    };

    match group_arg {
        Some(g) => {
            let numeric_group = parse_id(g);
            if numeric_group.is_none() && g.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("gid {g} out of range (0-{MAX_ID})"));
            }
            let found = group.and_then(|text| {
                group_entries(text).find(|e| e.name == g || Some(e.gid) == numeric_group)
            });
            resolved.gid = match (found, numeric_group) {
                (Some(e), _) => e.gid,
                (None, Some(gid)) => gid,
                (None, None) => {
                    return Err(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ));
                }
            };
        }
        None => {
            if let (Some(name), Some(text)) = (matched_name, group) {
                for e in group_entries(text) {
                    if e.members.contains(&name.as_str())
                        && !resolved.additional_gids.contains(&e.gid)
                    {
                        resolved.additional_gids.push(e.gid);
                        if resolved.additional_gids.len() >= MAX_GROUPS {
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1::/usr/sbin:/bin/false\n\
        broken line\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,app\n\
        app:x:1001:\n\
        audio:x:29:app\n\
        staff:x:50:\n\
        nogroup:x:65534:\n";

    fn r(spec: &str) -> Result<ExecUser, String> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn table() {
        let cases: &[(&str, u32, u32, &[u32], &str)] = &[
            ("", 0, 0, &[10], "/root"),
            ("root", 0, 0, &[10], "/root"),
            ("0", 0, 0, &[10], "/root"),
            ("app", 1000, 1001, &[10, 29], "/home/app"),
            ("1000", 1000, 1001, &[10, 29], "/home/app"),
            ("app:staff", 1000, 50, &[], "/home/app"),
            ("app:50", 1000, 50, &[], "/home/app"),
            ("app:4242", 1000, 4242, &[], "/home/app"),
            ("4242", 4242, 0, &[], "/"),
            ("4242:4243", 4242, 4243, &[], "/"),
            ("nobody", 65534, 65534, &[], "/nonexistent"),
            ("daemon", 1, 1, &[], "/usr/sbin"),
        ];
        for (spec, uid, gid, groups, home) in cases {
            let got = r(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(
                (
                    got.uid,
                    got.gid,
                    got.additional_gids.as_slice(),
                    got.home.as_str()
                ),
                (*uid, *gid, *groups, *home),
                "{spec}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            r("ghost")
                .unwrap_err()
                .contains("unable to find user ghost")
        );
        assert!(
            r("app:ghosts")
                .unwrap_err()
                .contains("unable to find group ghosts")
        );
        assert!(r("99999999999").unwrap_err().contains("out of range"));
        assert!(r("app:").unwrap_err().contains("empty group"));
        let none = resolve_user("app", None, None).unwrap_err();
        assert!(none.contains("no /etc/passwd"), "{none}");
    }

    #[test]
    fn numeric_users_work_without_files() {
        let got = resolve_user("123:456", None, None).unwrap();
        assert_eq!((got.uid, got.gid, got.home.as_str()), (123, 456, "/"));
        let root = resolve_user("", None, None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
