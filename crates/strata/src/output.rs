//! Printing helpers: errors with hints, JSON, sizes.

use std::io::IsTerminal;

use serde::Serialize;

/// Print an error chain and, where we can tell, a hint about what to do.
pub fn print_error(e: &anyhow::Error) {
    let mut msg = format!("error: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!("\n  caused by: {c}"));
        }
    }
    eprintln!("{msg}");
    if let Some(h) = hint(&msg) {
        eprintln!("hint: {h}");
    }
}

fn hint(msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    if m.contains("invalid peer certificate") {
        Some(
            "to trust the registry's CA put it in DIR/ca.crt and pass --cert-dir DIR; \
             --tls-verify=false skips the check",
        )
    } else if m.contains("http response to https")
        || m.contains("invalid http version")
        || m.contains("tls handshake")
        || m.contains("record overflow")
        || m.contains("corrupt message")
    {
        Some("for a plain-HTTP registry pass --tls-verify=false")
    } else if m.contains("unauthorized")
        || m.contains("authentication required")
        || m.contains("401")
    {
        Some("log in with `strata login REGISTRY` or pass --creds USER:PASS / --authfile PATH")
    } else if m.contains("connection refused") {
        Some("is the registry running, and is the host:port right?")
    } else if m.contains("base image") && m.contains("no image for platform") {
        Some(
            "build only the platforms the base image has (--platform), or use a multi-platform base",
        )
    } else if m.contains("no image for platform") {
        Some("pick one of the available platforms with --platform, or copy everything with --all")
    } else if m.contains("larger than the limit") && m.contains("manifest") {
        Some("if the document is legitimate, raise the limit with --max-manifest-size BYTES")
    } else if m.contains("digest mismatch") {
        Some(
            "the content does not match its digest: the source is corrupt or was changed; nothing was written",
        )
    } else {
        None
    }
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
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
