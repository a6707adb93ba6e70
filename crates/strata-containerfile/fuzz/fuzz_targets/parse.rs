//! `parse` never panics; what it returns is consistent with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_containerfile::{Instruction, InstructionKind, parse};

fn check(instruction: &Instruction, lines: usize) {
    assert!(instruction.span.line >= 1);
    assert!(instruction.span.line <= instruction.span.end_line);
    assert!(instruction.span.end_line <= lines);
    if let InstructionKind::Onbuild(inner) = &instruction.kind {
        assert!(!matches!(inner.kind, InstructionKind::Onbuild(_)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split_inclusive('\n').count().max(1);
    match parse(text) {
        Ok(file) => {
            assert!(!file.stages.is_empty());
            let mut last = 0;
            for instruction in &file.global_args {
                check(instruction, lines);
                assert!(instruction.span.line > last);
                last = instruction.span.end_line;
            }
            for (index, stage) in file.stages.iter().enumerate() {
                assert_eq!(stage.index, index);
                assert!(stage.span.line > last);
                last = stage.span.end_line;
                for instruction in &stage.instructions {
                    check(instruction, lines);
                    assert!(instruction.span.line > last);
                    last = instruction.span.end_line;
                }
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= lines + 1, "{e}"),
    }
});
