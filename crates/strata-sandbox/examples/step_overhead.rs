//! Per-step cost of strata-sandbox, for bench/sandbox-vs-buildah.sh.
//!
//! `cargo run --release -p strata-sandbox --example step_overhead -- ROOTFS [N] [LOOP_RUNS] [LOOP]`
//! runs `true` N times (default 50) and the 1000-file loop LOOP_RUNS times (default 5) over
//! the busybox root filesystem ROOTFS as lower layer, each with a fresh upper/work pair
//! (created and removed outside the timing), and prints mean and median milliseconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata_sandbox::{RunSpec, Sandbox, StepDirs};

fn time_runs(sandbox: &Sandbox, lower: &Path, cmd: &str, n: usize) -> Vec<f64> {
    let scratch = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let dirs = StepDirs::create(scratch.path()).expect("step dirs");
        let spec = RunSpec::shell(dirs.overlay(vec![lower.to_path_buf()]), cmd);
        let start = Instant::now();
        let outcome = sandbox.run(&spec).expect("run");
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(outcome.success(), "{outcome:?}");
        sandbox.remove(dirs.base()).expect("remove");
    }
    ms
}

fn report(name: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        return;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "{name}: n={} mean={mean:.2} ms median={:.2} ms min={:.2} ms max={:.2} ms",
        ms.len(),
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    );
}

fn main() {
    strata_sandbox::init_if_requested();
    let args: Vec<String> = std::env::args().collect();
    let lower = PathBuf::from(
        args.get(1)
            .expect("usage: step_overhead ROOTFS [N] [LOOP_RUNS]"),
    );
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let loops: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let sandbox = Sandbox::new();
    report("true", time_runs(&sandbox, &lower, "true", n));
    report(
        "1000 files",
        time_runs(
            &sandbox,
            &lower,
            "for i in $(seq 1 1000); do echo $i > /tmp/f$i; done",
            loops,
        ),
    );
}
