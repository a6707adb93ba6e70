//! The sandbox helper for strata-build's tests: `strata_sandbox` runs each RUN step in a
//! fresh copy of a binary whose `main` calls `init_if_requested()` before anything else,
//! which a libtest binary cannot do. strata itself uses its own executable.

fn main() {
    strata_sandbox::init_if_requested();
    eprintln!("strata-build-sandbox-helper: only started by strata-sandbox");
    std::process::exit(2);
}
