//! Flag values: `RUN --mount=…`, HEALTHCHECK durations, `--chmod`.

use std::time::Duration;

/// A `RUN --mount=` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Mount {
    /// `type=bind` (the default type): read-only unless `rw`.
    Bind {
        target: String,
        /// Path in the context or the `from` stage/image (default: its root).
        source: Option<String>,
        from: Option<String>,
        read_write: bool,
    },
    /// `type=cache`: read-write unless `ro`; `id` defaults to the target.
    Cache {
        target: String,
        id: Option<String>,
        sharing: CacheSharing,
        from: Option<String>,
        source: Option<String>,
        read_only: bool,
        /// Mode of a new cache directory (Docker's default: 0755).
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// `type=tmpfs`.
    Tmpfs {
        target: String,
        /// `size=` in bytes (`64m`, `1g`: binary multiples).
        size: Option<u64>,
    },
    /// `type=secret`. `id` is resolved: `id=`, else `source=`, else the target's file name.
    Secret {
        id: String,
        /// As written; `None` means `/run/secrets/<id>` unless only `env` is set.
        target: Option<String>,
        /// Expose the secret as this environment variable.
        env: Option<String>,
        required: bool,
        /// Default 0400.
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `type=ssh`. `id` `None` means `default`; `target` `None` means the agent socket path
    /// the engine picks.
    Ssh {
        id: Option<String>,
        target: Option<String>,
        required: bool,
    },
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Split one CSV record (Go `encoding/csv` rules: `"…"` quoting with `""` for a quote; a
/// quote inside an unquoted field is an error).
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = value.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quote in mount options".to_string()),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
            match chars.get(i) {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {
                    fields.push(field);
                    i += 1;
                }
                Some(_) => return Err("extraneous text after a quoted mount option".to_string()),
            }
        } else {
            let mut comma = false;
            while let Some(&c) = chars.get(i) {
                i += 1;
                match c {
                    ',' => {
                        comma = true;
                        break;
                    }
                    '"' => return Err("bare quote in mount options".to_string()),
                    _ => field.push(c),
                }
            }
            fields.push(field);
            if !comma {
                return Ok(fields);
            }
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {value}")),
    }
}

fn parse_id(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .map_err(|_| format!("invalid value for {key}: {value}"))
}

/// Parse a `--mount` value (already expanded), with BuildKit's rules: comma-separated
/// `key=value` options (CSV quoting), keys case-insensitive, `type` first where other options
/// depend on it.
pub fn parse_mount(value: &str) -> Result<Mount, String> {
    parse_mount_fields(value, None)
}

/// Parse a raw `--mount` value as BuildKit does at build time: split into options first, then
/// expand each option's value in the stage's scope (so a value that expands to a comma stays
/// one value). Use this rather than expanding the whole string.
///
/// ```
/// use strata_containerfile::{parse_mount_expanding, Mount};
/// let lookup = |n: &str| (n == "CACHE").then(|| "/root/.cache".to_string());
/// let mount = parse_mount_expanding("type=cache,target=$CACHE", &lookup, '\\').unwrap();
/// assert!(matches!(mount, Mount::Cache { target, .. } if target == "/root/.cache"));
/// ```
pub fn parse_mount_expanding(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Mount, String> {
    let expand = |text: &str| crate::expand(text, lookup, escape).map_err(|e| e.to_string());
    parse_mount_fields(value, Some(&expand))
}

type FieldExpander<'a> = &'a dyn Fn(&str) -> Result<String, String>;

fn parse_mount_fields(value: &str, expander: Option<FieldExpander>) -> Result<Mount, String> {
    if value.is_empty() {
        return Err("empty mount value".to_string());
    }
    let mut kind = MountType::Bind;
    let mut from = None;
    let mut source = None;
    let mut target = None;
    let mut read_only: Option<bool> = None;
    let mut required = false;
    let mut size = None;
    let mut id = None;
    let mut sharing = None;
    let mut mode = None;
    let mut uid = None;
    let mut gid = None;
    let mut env = None;

    for field in csv_fields(value)? {
        let Some((key, val)) = field.split_once('=') else {
            match field.to_ascii_lowercase().as_str() {
                "" => continue,
                "readonly" | "ro" => read_only = Some(true),
                "readwrite" | "rw" => read_only = Some(false),
                "required" if matches!(kind, MountType::Secret | MountType::Ssh) => required = true,
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        kind.name()
                    ));
                }
                _ => return Err(format!("invalid field '{field}': must be a key=value pair")),
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        let expanded;
        let val = match expander {
            Some(expand) => {
                expanded = expand(val)?;
                expanded.as_str()
            }
            None => val,
        };
        match key.as_str() {
            "type" => {
                kind = match val.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type {val:?}")),
                }
            }
            "from" => from = Some(val.to_string()),
            "source" | "src" => source = Some(val.to_string()),
            "target" | "dst" | "destination" | "dest" => target = Some(val.to_string()),
            "readonly" | "ro" => read_only = Some(parse_bool(&key, val)?),
            "readwrite" | "rw" => read_only = Some(!parse_bool(&key, val)?),
            "required" => {
                if !matches!(kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        kind.name()
                    ));
                }
                required = parse_bool(&key, val)?;
            }
            "size" => {
                if kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key 'size' for mount type '{}'",
                        kind.name()
                    ));
                }
                size = Some(parse_ram_bytes(val).ok_or(format!("invalid value for size: {val}"))?);
            }
            "id" => id = Some(val.to_string()),
            "sharing" => {
                if kind != MountType::Cache {
                    return Err(format!(
                        "invalid cache sharing set for {} mount",
                        kind.name()
                    ));
                }
                sharing = Some(match val.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(format!("unsupported sharing value {val:?}")),
                });
            }
            "mode" => {
                mode = Some(
                    u32::from_str_radix(val, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or(format!("invalid value {val} for mode"))?,
                );
            }
            "uid" => uid = Some(parse_id(&key, val)?),
            "gid" => gid = Some(parse_id(&key, val)?),
            "env" => {
                if kind != MountType::Secret {
                    return Err(format!(
                        "unexpected key 'env' for mount type '{}'",
                        kind.name()
                    ));
                }
                env = Some(val.to_string());
            }
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }

    if !matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
        for (name, set) in [
            ("mode", mode.is_some()),
            ("uid", uid.is_some()),
            ("gid", gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for {:?} type mounts",
                    kind.name()
                ));
            }
        }
    }
    if sharing.is_some() && kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            kind.name()
        ));
    }
    let needs_target = |target: Option<String>| {
        target
            .filter(|t| !t.is_empty())
            .ok_or(format!("{} mount requires a target", kind.name()))
    };
    Ok(match kind {
        MountType::Bind => Mount::Bind {
            target: needs_target(target)?,
            source,
            from,
            read_write: read_only == Some(false),
        },
        MountType::Cache => Mount::Cache {
            target: needs_target(target)?,
            id,
            sharing: sharing.unwrap_or_default(),
            from,
            source,
            read_only: read_only == Some(true),
            mode,
            uid,
            gid,
        },
        MountType::Tmpfs => Mount::Tmpfs {
            target: needs_target(target)?,
            size,
        },
        MountType::Secret => {
            if from.is_some() {
                return Err("secret mount should not have a from".to_string());
            }
            if source.is_some() && id.is_some() {
                return Err("both source and id can't be set on a secret mount".to_string());
            }
            let id = match (id, source, &target) {
                (Some(id), _, _) | (None, Some(id), _) => id,
                (None, None, Some(target)) => target
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                (None, None, None) => {
                    return Err(
                        "invalid secret mount: one of id, source, target required".to_string()
                    );
                }
            };
            if id.is_empty() {
                return Err("invalid secret mount: empty id".to_string());
            }
            Mount::Secret {
                id,
                target,
                env,
                required,
                mode: mode.unwrap_or(0o400),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
            }
        }
        MountType::Ssh => Mount::Ssh {
            id,
            target,
            required,
        },
    })
}

/// Docker's `units.RAMInBytes`: a number (fraction allowed), an optional space, an optional
/// `k/m/g/t/p` (binary multiples, case-insensitive), optional `i`, optional `b`.
fn parse_ram_bytes(value: &str) -> Option<u64> {
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(number_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut rest = unit.as_str();
    let mut multiplier: u64 = 1;
    if let Some(first) = rest.chars().next() {
        let power = match first {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(power) = power {
            multiplier = 1024u64.pow(power);
            rest = &rest[1..];
        }
    }
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    let rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() {
        return None;
    }
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// Parse a Go-style duration (`30s`, `1m30s`, `500ms`, `1.5h`, `0`), as Docker's HEALTHCHECK
/// flags use. Negative durations are rejected.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {value:?} (use a number and a unit: 30s, 1m30s, 500ms)");
    let text = value.strip_prefix('+').unwrap_or(value);
    if text.starts_with('-') {
        return Err(format!("negative duration {value:?}"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {value:?}")),
            _ => return Err(format!("unknown unit {unit:?} in duration {value:?}")),
        };
        // Digits past what a u128 of nanoseconds can hold are overflow, not precision.
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut amount = int.checked_mul(nanos_per_unit).ok_or_else(bad)?;
        let mut scale = nanos_per_unit;
        for digit in frac_part.chars().take(30) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            amount += u128::from(digit.to_digit(10).unwrap_or(0)) * scale;
        }
        total = total.checked_add(amount).ok_or_else(bad)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// What a [`Chmod`] is applied to (symbolic `X` differs for directories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
}

/// Permission classes of a symbolic clause.
const CLASS_USER: u8 = 1;
const CLASS_GROUP: u8 = 2;
const CLASS_OTHER: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perms {
    /// `r`, `w`, `x`, `X`, `s`, `t` letters.
    Letters {
        read: bool,
        write: bool,
        execute: bool,
        /// `X`: execute for directories and already-executable files.
        search: bool,
        set_id: bool,
        sticky: bool,
    },
    /// `g=u`: copy another class's current bits.
    Copy(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    op: char,
    perms: Perms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    /// Classes named (0: none named, which means all).
    who: u8,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChmodRepr {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// A `COPY`/`ADD --chmod` value: octal (`0755`) or chmod(1) symbolic (`+x`, `g=u`,
/// `u=rwX,go=rX`), as BuildKit accepts since Dockerfile 1.14. Symbolic modes transform each
/// entry's source mode, so they are applied per entry with [`Chmod::apply`]. The symbolic
/// rules are BSD `setmode`'s (BuildKit uses a port of it): no class named means all classes
/// (no umask), `s` sets set-user/group-ID for the named classes, `t` is ignored for `o` alone.
///
/// ```
/// use strata_containerfile::{Chmod, EntryKind};
/// let chmod = Chmod::parse("u=rwX,go=rX").unwrap();
/// assert_eq!(chmod.apply(0o600, EntryKind::File), 0o644);
/// assert_eq!(chmod.apply(0o700, EntryKind::File), 0o755);
/// assert_eq!(chmod.apply(0o700, EntryKind::Directory), 0o755);
/// assert_eq!(Chmod::parse("0755").unwrap().octal(), Some(0o755));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    repr: ChmodRepr,
}

impl Chmod {
    /// Parse an octal or symbolic mode.
    pub fn parse(value: &str) -> Result<Chmod, String> {
        if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
            return parse_chmod(value).map(|mode| Chmod {
                repr: ChmodRepr::Octal(mode),
            });
        }
        parse_symbolic(value)
            .map(|clauses| Chmod {
                repr: ChmodRepr::Symbolic(clauses),
            })
            .ok_or_else(|| {
                format!(
                    "invalid --chmod value {value:?}: use an octal mode (0755) or a symbolic one (u+x, g=u, u=rwX,go=rX)"
                )
            })
    }

    /// The mode when it does not depend on the source (octal), else `None`.
    pub fn octal(&self) -> Option<u32> {
        match self.repr {
            ChmodRepr::Octal(mode) => Some(mode),
            ChmodRepr::Symbolic(_) => None,
        }
    }

    /// The mode an entry gets, from its source permission bits (`mode & 0o7777` is used).
    pub fn apply(&self, mode: u32, kind: EntryKind) -> u32 {
        let clauses = match &self.repr {
            ChmodRepr::Octal(mode) => return *mode,
            ChmodRepr::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            let classes = if clause.who == 0 {
                CLASS_USER | CLASS_GROUP | CLASS_OTHER
            } else {
                clause.who
            };
            let has = |class: u8| classes & class != 0;
            let rwx_mask = (if has(CLASS_USER) { 0o700 } else { 0 })
                | (if has(CLASS_GROUP) { 0o070 } else { 0 })
                | (if has(CLASS_OTHER) { 0o007 } else { 0 });
            let id_mask = (if has(CLASS_USER) { 0o4000 } else { 0 })
                | (if has(CLASS_GROUP) { 0o2000 } else { 0 });
            for action in &clause.actions {
                let bits = match &action.perms {
                    Perms::Letters {
                        read,
                        write,
                        execute,
                        search,
                        set_id,
                        sticky,
                    } => {
                        let searchable = kind == EntryKind::Directory || mode & 0o111 != 0;
                        let mut bits = (if *read { 0o444 } else { 0 })
                            | (if *write { 0o222 } else { 0 })
                            | (if *execute || (*search && searchable) {
                                0o111
                            } else {
                                0
                            });
                        bits &= rwx_mask;
                        if *set_id {
                            bits |= id_mask;
                        }
                        // BSD: the sticky bit is ignored when only "other" is named.
                        if *sticky && (clause.who == 0 || clause.who & !CLASS_OTHER != 0) {
                            bits |= 0o1000;
                        }
                        bits
                    }
                    Perms::Copy(class) => {
                        let shift = match *class {
                            CLASS_USER => 6,
                            CLASS_GROUP => 3,
                            _ => 0,
                        };
                        (((mode >> shift) & 0o7) * 0o111) & rwx_mask
                    }
                };
                mode = match action.op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !(rwx_mask | id_mask)) | bits,
                };
            }
        }
        mode
    }
}

/// `clause[,clause…]`, clause = `[ugoa]*` then one or more `[+-=]` actions, each followed by
/// `[rwxXst]*` or one of `u`/`g`/`o` (copy).
fn parse_symbolic(value: &str) -> Option<Vec<Clause>> {
    let mut clauses = Vec::new();
    for text in value.split(',') {
        let mut chars = text.chars().peekable();
        let mut who = 0;
        while let Some(&c) = chars.peek() {
            who |= match c {
                'u' => CLASS_USER,
                'g' => CLASS_GROUP,
                'o' => CLASS_OTHER,
                'a' => CLASS_USER | CLASS_GROUP | CLASS_OTHER,
                _ => break,
            };
            chars.next();
        }
        let mut actions = Vec::new();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return None;
            }
            let copy = match chars.peek() {
                Some('u') => Some(CLASS_USER),
                Some('g') => Some(CLASS_GROUP),
                Some('o') => Some(CLASS_OTHER),
                _ => None,
            };
            if let Some(class) = copy {
                chars.next();
                actions.push(Action {
                    op,
                    perms: Perms::Copy(class),
                });
                continue;
            }
            let (mut read, mut write, mut execute, mut search, mut set_id, mut sticky) =
                (false, false, false, false, false, false);
            while let Some(&c) = chars.peek() {
                match c {
                    'r' => read = true,
                    'w' => write = true,
                    'x' => execute = true,
                    'X' => search = true,
                    's' => set_id = true,
                    't' => sticky = true,
                    _ => break,
                }
                chars.next();
            }
            actions.push(Action {
                op,
                perms: Perms::Letters {
                    read,
                    write,
                    execute,
                    search,
                    set_id,
                    sticky,
                },
            });
        }
        if actions.is_empty() {
            return None;
        }
        clauses.push(Clause { who, actions });
    }
    Some(clauses)
}

/// `--chmod` value: octal (`755`, `0644`, up to `7777`) → mode bits. Symbolic forms
/// (`u+x`) are rejected here because they need each entry's source mode: use [`Chmod`].
pub fn parse_chmod(value: &str) -> Result<u32, String> {
    if value.is_empty() {
        return Err("empty --chmod value".to_string());
    }
    if !value.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "--chmod value {value:?} is not octal (symbolic modes need Chmod::parse and the source mode)"
        ));
    }
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "invalid --chmod value {value:?}: not an octal mode up to 7777"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn mounts() {
        let cases: Vec<(&str, Mount)> = vec![
            (
                "target=/src",
                Mount::Bind {
                    target: s("/src"),
                    source: None,
                    from: None,
                    read_write: false,
                },
            ),
            (
                "type=bind,from=build,source=/out,target=/in,rw",
                Mount::Bind {
                    target: s("/in"),
                    source: Some(s("/out")),
                    from: Some(s("build")),
                    read_write: true,
                },
            ),
            (
                "type=bind,src=.,dst=/x,readwrite=true",
                Mount::Bind {
                    target: s("/x"),
                    source: Some(s(".")),
                    from: None,
                    read_write: true,
                },
            ),
            (
                "type=cache,target=/root/.cache/go-build",
                Mount::Cache {
                    target: s("/root/.cache/go-build"),
                    id: None,
                    sharing: CacheSharing::Shared,
                    from: None,
                    source: None,
                    read_only: false,
                    mode: None,
                    uid: None,
                    gid: None,
                },
            ),
            (
                "TYPE=Cache,id=apt,sharing=locked,target=/var/cache/apt,mode=0700,uid=100,gid=101,ro",
                Mount::Cache {
                    target: s("/var/cache/apt"),
                    id: Some(s("apt")),
                    sharing: CacheSharing::Locked,
                    from: None,
                    source: None,
                    read_only: true,
                    mode: Some(0o700),
                    uid: Some(100),
                    gid: Some(101),
                },
            ),
            (
                "type=tmpfs,target=/tmp,size=64m",
                Mount::Tmpfs {
                    target: s("/tmp"),
                    size: Some(64 * 1024 * 1024),
                },
            ),
            (
                "type=secret,id=npmrc,target=/root/.npmrc,required",
                Mount::Secret {
                    id: s("npmrc"),
                    target: Some(s("/root/.npmrc")),
                    env: None,
                    required: true,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ),
            (
                "type=secret,target=/run/secrets/token.txt",
                Mount::Secret {
                    id: s("token.txt"),
                    target: Some(s("/run/secrets/token.txt")),
                    env: None,
                    required: false,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ),
            (
                "type=secret,source=aws,env=AWS_CREDS,mode=0440,uid=1000,required=false",
                Mount::Secret {
                    id: s("aws"),
                    target: None,
                    env: Some(s("AWS_CREDS")),
                    required: false,
                    mode: 0o440,
                    uid: 1000,
                    gid: 0,
                },
            ),
            (
                "type=ssh",
                Mount::Ssh {
                    id: None,
                    target: None,
                    required: false,
                },
            ),
            (
                "type=ssh,id=github,required=true",
                Mount::Ssh {
                    id: Some(s("github")),
                    target: None,
                    required: true,
                },
            ),
            (
                "type=bind,\"target=/a,b\"",
                Mount::Bind {
                    target: s("/a,b"),
                    source: None,
                    from: None,
                    read_write: false,
                },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_mount(value), Ok(expected), "{value}");
        }
    }

    #[test]
    fn mount_values_expand_after_splitting() {
        let lookup = |name: &str| match name {
            "T" => Some("cache".to_string()),
            "DIR" => Some("/a,b".to_string()),
            "ID" => Some("go-build".to_string()),
            _ => None,
        };
        let mount = parse_mount_expanding("type=$T,target=$DIR,id=${ID}-1", &lookup, '\\').unwrap();
        assert_eq!(
            mount,
            Mount::Cache {
                target: s("/a,b"),
                id: Some(s("go-build-1")),
                sharing: CacheSharing::Shared,
                from: None,
                source: None,
                read_only: false,
                mode: None,
                uid: None,
                gid: None,
            }
        );
        let e = parse_mount_expanding("target=${X:?X needed}", &lookup, '\\').unwrap_err();
        assert!(e.contains("X needed"), "{e}");
        // Without expansion, `$T` is not a mount type.
        assert!(parse_mount("type=$T,target=/x").is_err());
    }

    #[test]
    fn mount_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("type=volume,target=/x", "unsupported mount type"),
            ("type=bind", "requires a target"),
            ("type=cache,target=", "requires a target"),
            ("target=/x,foo=bar", "unexpected key 'foo'"),
            ("target=/x,bogus", "key=value"),
            ("type=bind,target=/x,required", "'required'"),
            ("required,type=secret,id=x", "'required'"),
            ("type=bind,target=/x,size=1m", "'size'"),
            ("type=tmpfs,target=/x,size=lots", "invalid value for size"),
            ("type=bind,target=/x,sharing=locked", "sharing"),
            ("type=cache,target=/x,sharing=sometimes", "sharing"),
            ("type=tmpfs,target=/x,mode=0700", "mode not allowed"),
            ("type=bind,target=/x,uid=1", "uid not allowed"),
            ("type=cache,target=/x,mode=999", "mode"),
            ("type=cache,target=/x,uid=-1", "uid"),
            ("type=cache,target=/x,ro=maybe", "invalid value for ro"),
            ("type=secret", "one of id, source, target"),
            ("type=secret,id=a,source=b", "both source and id"),
            ("type=secret,id=a,from=x", "should not have a from"),
            ("type=cache,target=/x,env=A", "'env'"),
            ("\"target=/x", "unterminated quote"),
            ("target=/x\"y", "bare quote"),
            ("\"target=/x\"y", "extraneous"),
        ];
        for (value, message) in cases {
            let e = parse_mount(value).unwrap_err();
            assert!(e.contains(message), "{value:?}: {e}");
        }
    }

    #[test]
    fn ram_sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("64k", Some(65536)),
            ("64K", Some(65536)),
            ("64kb", Some(65536)),
            ("64KiB", Some(65536)),
            ("1.5g", Some(1_610_612_736)),
            ("2 m", Some(2 * 1024 * 1024)),
            ("1t", Some(1 << 40)),
            ("", None),
            ("m", None),
            ("1x", None),
            ("-1m", None),
            ("1.m", None),
            ("99999999999999999999p", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_ram_bytes(value), *expected, "{value:?}");
        }
    }

    #[test]
    fn durations_like_go() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", ms(500)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", ms(500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("+5s", Duration::from_secs(5)),
            ("0s", Duration::ZERO),
            ("1.0000000001s", Duration::new(1, 0)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_duration(value), Ok(*expected), "{value:?}");
        }
        for value in [
            "",
            "5",
            "s",
            "1d",
            "-5s",
            ".s",
            "1.2.3s",
            "5 s",
            "99999999999999999999999999999h",
        ] {
            assert!(parse_duration(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn chmod_values() {
        let cases: &[(&str, Option<u32>)] = &[
            ("755", Some(0o755)),
            ("0644", Some(0o644)),
            ("4755", Some(0o4755)),
            ("7777", Some(0o7777)),
            ("0", Some(0)),
            ("10000", None),
            ("888", None),
            ("u+x", None),
            ("a=rX", None),
            ("", None),
            ("-755", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_chmod(value).ok(), *expected, "{value:?}");
        }
        assert!(parse_chmod("u+x").unwrap_err().contains("symbolic"));
    }

    #[test]
    fn symbolic_chmod_like_bsd_setmode() {
        use EntryKind::{Directory as D, File as F};
        // (mode spec, source mode, kind, result)
        let cases: &[(&str, u32, EntryKind, u32)] = &[
            ("0755", 0o600, F, 0o755),
            ("644", 0o777, D, 0o644),
            ("+x", 0o644, F, 0o755),
            ("u+x", 0o644, F, 0o744),
            ("go-w", 0o666, F, 0o644),
            ("a+rX", 0o600, F, 0o644),
            ("a+rX", 0o700, F, 0o755),
            ("a+rX", 0o700, D, 0o755),
            ("u=rwX,go=rX", 0o777, F, 0o755),
            ("u=rwX,go=rX", 0o666, F, 0o644),
            ("u=rwX,go=rX", 0o600, D, 0o755),
            ("g=u", 0o640, F, 0o660),
            ("g=u", 0o750, D, 0o770),
            ("go=u-w", 0o750, F, 0o755),
            ("u+r-w", 0o200, F, 0o400),
            ("o=", 0o777, F, 0o770),
            ("=r", 0o4755, F, 0o444),
            ("a=,u=rw", 0o777, F, 0o600),
            ("u+s", 0o755, F, 0o4755),
            ("g+s", 0o755, D, 0o2755),
            ("+s", 0o755, F, 0o6755),
            ("+t", 0o755, D, 0o1755),
            ("o+t", 0o755, D, 0o755),
            ("u-s", 0o4755, F, 0o755),
            ("ug+rw,o-rwx", 0o604, F, 0o660),
        ];
        for (spec, mode, kind, expected) in cases {
            let chmod = Chmod::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(
                chmod.apply(*mode, *kind),
                *expected,
                "{spec} on {mode:o} ({kind:?})"
            );
        }
        assert_eq!(Chmod::parse("0644").unwrap().octal(), Some(0o644));
        assert_eq!(Chmod::parse("+x").unwrap().octal(), None);
        for bad in [
            "", "u", "a", "u+q", "x+r", "u+x,", ",u+x", "99", "10000", "u+x y", "u+X7", "0o755",
        ] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?}");
        }
    }
}
