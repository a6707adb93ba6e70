//! `IgnoreMatcher::parse` never panics; matching never panics; pruning is sound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_containerfile::IgnoreMatcher;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(matcher) = IgnoreMatcher::parse(text) else {
        return;
    };
    // Paths made from the patterns themselves, and their children.
    for line in text.lines().take(16) {
        let path = line.trim().trim_start_matches('!');
        let excluded = matcher.is_excluded(path);
        let may = matcher.may_include_below(path);
        for child in ["x", "a/b", ".git"] {
            let below = format!("{}/{child}", path.trim_end_matches('/'));
            if excluded && !may {
                assert!(matcher.is_excluded(&below), "{path:?} pruned but {below:?} included");
            }
        }
    }
});
