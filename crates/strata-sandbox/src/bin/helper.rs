//! Test and benchmark driver for strata-sandbox (strata itself re-executes its own binary).
//!
//! - as the sandbox helper: `init_if_requested()` takes over (hidden argument);
//! - `strata-sandbox-helper run SPEC.json`: run the spec (JSON of `RunSpec`), stream the
//!   step's output to stderr, print the outcome as JSON on stdout (`{"ok": RunOutcome}` or
//!   `{"error": "…"}`), exit 0. SIGINT/SIGTERM call `interrupt_all()`.
//! - `strata-sandbox-helper remove PATH`, `probe-overlay DIR`: the other entry points.

use std::io::Write;

fn main() {
    strata_sandbox::init_if_requested();
    let args: Vec<String> = std::env::args().collect();
    let out = match args.get(1).map(String::as_str) {
        Some("run") if args.len() == 3 => run(&args[2]),
        Some("remove") if args.len() == 3 => result(
            strata_sandbox::Sandbox::new()
                .remove(args[2].as_ref())
                .map(|()| "removed"),
        ),
        Some("probe-overlay") if args.len() == 3 => result(
            strata_sandbox::Sandbox::new()
                .probe_overlay(args[2].as_ref())
                .map(|()| "overlay works"),
        ),
        _ => {
            eprintln!(
                "usage: strata-sandbox-helper run SPEC.json | remove PATH | probe-overlay DIR"
            );
            std::process::exit(2);
        }
    };
    println!("{out}");
}

fn result<T: serde::Serialize>(r: Result<T, strata_sandbox::SandboxError>) -> serde_json::Value {
    match r {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            serde_json::json!({ "error": chain, "kind": format!("{e:?}").split([' ', '{', '(']).next().unwrap_or("") })
        }
    }
}

fn run(spec_path: &str) -> serde_json::Value {
    let text = match std::fs::read_to_string(spec_path) {
        Ok(t) => t,
        Err(e) => return serde_json::json!({ "error": format!("reading {spec_path}: {e}") }),
    };
    let mut spec: strata_sandbox::RunSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return serde_json::json!({ "error": format!("parsing {spec_path}: {e}") }),
    };
    spec.output = strata_sandbox::OutputSink::callback(|chunk| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(chunk);
        let _ = err.flush();
    });
    // Ctrl-C / SIGTERM: stop the step, let `run` return and report.
    if let Some(mut signalled) = signals::install() {
        let _ = std::thread::Builder::new().spawn(move || {
            let mut byte = [0u8; 1];
            if std::io::Read::read(&mut signalled, &mut byte).is_ok() {
                strata_sandbox::interrupt_all();
            }
        });
    }
    result(strata_sandbox::Sandbox::new().run(&spec))
}

mod signals {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicI32, Ordering};

    static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn on_signal(_sig: libc::c_int) {
        let fd = PIPE_WRITE.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; the buffer is a valid one-byte static.
            unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
        }
    }

    /// Handle SIGINT/SIGTERM by writing to a pipe; returns its read end.
    pub fn install() -> Option<std::fs::File> {
        let (read_end, write_end) = rustix::pipe::pipe().ok()?;
        PIPE_WRITE.store(write_end.as_raw_fd(), Ordering::SeqCst);
        std::mem::forget(write_end); // lives as long as the process, for the handler
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: sigaction is plain old data (zeroed is valid); the handler only calls
            // write(2) on a descriptor that is never closed.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        Some(std::fs::File::from(read_end))
    }
}
