//! Printing helpers: errors with hints, JSON, sizes.

use std::borrow::Cow;
use std::io::IsTerminal;

use serde::Serialize;
use strata_build::BuildError;
use strata_copy::CopyError;
use strata_image::ImageError;
use strata_registry::{ConnectionFailure, RegistryError};
use strata_store::StoreError;

/// Print an error chain, each cause once, and, where the error's type tells, a hint about
/// what to do.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {}", error_lines(e).join("\n  caused by: "));
    // A bare name that was looked up and not found says where it looked.
    let lookup_hint = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::resolve::NotFound>())
        .and_then(crate::resolve::NotFound::hint);
    for h in lookup_hint.into_iter().chain(hint(e).map(str::to_string)) {
        eprintln!("hint: {h}");
    }
}

/// The lines of an error chain: a cause whose text an earlier line already says is left out
/// (contexts that repeat their source, `Connection refused (os error 111)` under "connection
/// refused"); below a registry connection error only the root cause is kept (reqwest's and
/// hyper's layers in between say nothing more). Every line is [`terminal_safe`].
fn error_lines(e: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut chain = e.chain();
    while let Some(cause) = chain.next() {
        push_once(&mut lines, cause.to_string());
        if matches!(
            cause.downcast_ref::<RegistryError>(),
            Some(RegistryError::Connection { .. })
        ) {
            if let Some(root) = chain.last() {
                push_once(&mut lines, root.to_string());
            }
            break;
        }
    }
    lines
}

fn push_once(lines: &mut Vec<String>, text: String) {
    // Lower case, without the errno suffix std adds.
    fn key(s: &str) -> String {
        let s = s.trim();
        let s = match s.rfind(" (os error ") {
            Some(i) if s.ends_with(')') => &s[..i],
            _ => s,
        };
        s.to_lowercase()
    }
    let k = key(&text);
    if k.is_empty() || lines.iter().any(|l| key(l).contains(&k)) {
        return;
    }
    lines.push(terminal_safe(&text).into_owned());
}

/// A hint for the first error in the chain whose type calls for one. Decided on types, never
/// on message text (a tag or a registry message may say anything, "401" included).
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().find_map(|cause| {
        if let Some(r) = cause.downcast_ref::<RegistryError>() {
            return registry_hint(r);
        }
        if let Some(b) = cause.downcast_ref::<BuildError>() {
            return match b {
                BuildError::PlatformNotFound { .. } => Some(
                    "build only the platforms the base image has (--platform), or use a multi-platform base",
                ),
                _ => None,
            };
        }
        match cause.downcast_ref::<CopyError>() {
            Some(CopyError::PlatformNotFound { .. }) => {
                return Some(
                    "pick one of the available platforms with --platform, or copy everything with --all",
                );
            }
            Some(CopyError::PlatformMismatch { .. }) => {
                return Some(
                    "the image has one platform only: drop --platform to copy or inspect it as it is",
                );
            }
            _ => {}
        }
        if let Some(ImageError::DigestMismatch { .. }) = cause.downcast_ref::<ImageError>() {
            return Some(DIGEST_HINT);
        }
        if let Some(StoreError::DigestMismatch { .. }) = cause.downcast_ref::<StoreError>() {
            return Some(DIGEST_HINT);
        }
        None
    })
}

// Not "nothing was written": a failed copy may have stored other blobs already.
const DIGEST_HINT: &str =
    "the content does not match its digest: the source is corrupt or was changed";

fn registry_hint(e: &RegistryError) -> Option<&'static str> {
    match e {
        RegistryError::Unauthorized { .. } => Some(
            "log in with `strata login REGISTRY`, or pass --creds USER[:PASS] or --authfile PATH",
        ),
        RegistryError::CredentialsRefused { .. } => Some(
            "check the user name and password (log in again with `strata login REGISTRY`, or fix --creds / --authfile)",
        ),
        RegistryError::ManifestTooLarge { .. } => {
            Some("if the document is legitimate, raise the limit with --max-manifest-size BYTES")
        }
        RegistryError::DigestMismatch { .. } => Some(DIGEST_HINT),
        RegistryError::Blocked { .. } => Some(
            "the registries configuration forbids pulling it; `strata config IMAGE` shows the entry",
        ),
        RegistryError::Connection { .. } => match e.connection_failure()? {
            ConnectionFailure::Refused => {
                Some("is the registry running, and is the host:port right?")
            }
            ConnectionFailure::UnknownHost => Some("is the registry host name spelled right?"),
            ConnectionFailure::Tls => Some(
                "for a plain-HTTP registry pass --tls-verify=false or mark it insecure in registries.conf; for a private CA put it in certs.d/HOST:PORT/ca.crt or pass --cert-dir (see `strata config HOST`)",
            ),
            _ => None,
        },
        _ => None,
    }
}

/// Text that came from an image or a registry (tags, labels, Env, annotations, platform
/// strings, error messages), made safe to print on a terminal: control characters (C0,
/// DEL, C1: the start of every escape sequence), line and paragraph separators and the
/// bidirectional overrides are shown as escapes (`\n`, `\t`, `\x1b`, `\u{202e}`), so an
/// image cannot move the cursor, rewrite lines or forge output. `--format json` needs none
/// of this (JSON escapes control characters itself).
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && unsafe_char(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `println!` that never panics: standard output closed by its reader (`| head`) ends strata
/// quietly, as it ends other Unix tools; any other failure to write is reported.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The exit status of a process ended by SIGPIPE (128 + 13), as a shell reports it.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Write to standard output for [`outln!`].
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// A command's error that is only a write to a closed standard output (the commands that
/// stream their output with `?` return the bare I/O error; everything else adds context).
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().count() == 1
        && e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Human size: 1.5 MiB.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Progress is drawn only for a terminal on stderr.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_safe_escapes_what_drives_a_terminal() {
        assert!(matches!(
            terminal_safe("plain tag-1.0 ünïcode"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            terminal_safe("a\x1b[2J\x1b]0;pwned\x07b\nc\rd\te\x7f\u{9b}31m\u{202e}f"),
            "a\\x1b[2J\\x1b]0;pwned\\x07b\\nc\\rd\\te\\x7f\\u{9b}31m\\u{202e}f"
        );
    }

    #[test]
    fn each_cause_is_printed_once() {
        let e = anyhow::Error::from(std::io::Error::from_raw_os_error(111))
            .context("127.0.0.1:9: ping /v2/: connection refused")
            .context("opening docker://127.0.0.1:9/a:b")
            .context("opening docker://127.0.0.1:9/a:b");
        assert_eq!(
            error_lines(&e),
            [
                "opening docker://127.0.0.1:9/a:b",
                "127.0.0.1:9: ping /v2/: connection refused"
            ]
        );
    }

    #[test]
    fn hints_follow_types_not_text() {
        let not_found = RegistryError::NotFound {
            host: "r.example".into(),
            what: "manifest a:401".into(),
        };
        assert_eq!(hint(&anyhow::Error::from(not_found)), None);
        let http = RegistryError::Http {
            host: "r.example".into(),
            what: "tag list of a".into(),
            status: 500,
            code: None,
            message: "upstream said 401 unauthorized".into(),
            request_id: None,
            attempts: 1,
        };
        assert_eq!(hint(&anyhow::Error::from(http)), None);
        let unauthorized = RegistryError::Unauthorized {
            registry: "r.example".into(),
            detail: "manifest a:b: authentication required".into(),
        };
        assert!(
            hint(&anyhow::Error::from(unauthorized).context("opening docker://r.example/a:b"))
                .is_some_and(|h| h.contains("strata login"))
        );
        let refused = RegistryError::CredentialsRefused {
            registry: "r.example".into(),
            user: Some("alice".into()),
            detail: "x".into(),
        };
        assert!(
            hint(&anyhow::Error::from(refused)).is_some_and(|h| h.contains("check the user name"))
        );
        // A layout's oversized manifest is not about --max-manifest-size; a registry's is.
        let layout = ImageError::TooLarge {
            what: "manifest sha256:00".into(),
            limit: 4,
        };
        assert_eq!(hint(&anyhow::Error::from(layout)), None);
        let token = RegistryError::TooLarge {
            what: "token for repository:a:pull from auth.example".into(),
            limit: 4,
        };
        assert_eq!(hint(&anyhow::Error::from(token)), None);
        let manifest = RegistryError::ManifestTooLarge {
            what: "manifest a:b from r.example".into(),
            limit: 4,
        };
        let wrapped = ImageError::from(manifest);
        assert!(
            hint(&anyhow::Error::from(wrapped)).is_some_and(|h| h.contains("--max-manifest-size"))
        );
    }
}
