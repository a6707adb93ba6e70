//! `interrupt_all` is process-wide and final, so it gets a test binary of its own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strata_sandbox::SandboxError;
use strata_testkit::processes_with;

#[test]
fn interrupt_all_in_process_returns_interrupted() {
    let f = Fixture::new();
    let marker = format!("1000.{}3", std::process::id());
    let spec = f.spec(&format!("echo started; sleep {marker}"));
    let runner = std::thread::spawn(move || sandbox().run(&spec));
    // Wait until the step runs (no timing assertion: just polling for the process).
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    strata_sandbox::interrupt_all();
    match runner.join().unwrap() {
        Err(SandboxError::Interrupted) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new());
    // interrupt_all is process-wide and final: new runs are refused.
    assert!(matches!(
        sandbox().run(&f.spec("true")),
        Err(SandboxError::Interrupted)
    ));
}
