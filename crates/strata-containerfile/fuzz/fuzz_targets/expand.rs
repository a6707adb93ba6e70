//! `expand` / `expand_words` never panic, with either escape character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_containerfile::{expand, expand_words};

fn lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("a b  c".to_string()),
        "EMPTY" => Some(String::new()),
        "P" => Some("/usr/local/bin:/usr/bin".to_string()),
        "U" => Some("안녕 ${A}".to_string()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(rest) else {
        return;
    };
    let escape = if first & 1 == 0 { '\\' } else { '`' };
    let single = expand(word, &lookup, escape);
    let words = expand_words(word, &lookup, escape);
    // Both scan the same text the same way: they fail together.
    assert_eq!(single.is_ok(), words.is_ok(), "{word:?}");
});
