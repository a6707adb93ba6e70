//! Deterministic mutation testing (runs in `cargo test`, unlike the `cargo fuzz` targets in
//! `fuzz/`): corpus files and word lists mutated with Containerfile-shaped fragments must
//! never panic the parser, the expander or the ignore matcher, and what they return must be
//! consistent with the input.

use strata_containerfile::{IgnoreMatcher, InstructionKind, expand, expand_words, parse};

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "\\\n",
    "`\n",
    "\n",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "EOF\n",
    "\tEOF\n",
    "\"",
    "'",
    "[",
    "]",
    "[\"a\", \"b\"]",
    "${",
    "}",
    "${A:-",
    "${A#",
    "${A/",
    "$",
    "--",
    "--mount=",
    "--from=x ",
    "#",
    "# escape=`\n",
    "FROM x\n",
    "FROM a AS b\n",
    "ONBUILD ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "HEALTHCHECK ",
    "CMD ",
    "=",
    " ",
    "\r\n",
    "\u{FEFF}",
    "é",
    "\u{0}",
    "!",
    "**",
    "*",
    "?",
    "\\",
    "/",
    "..",
    "./",
];

fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if !chars.is_empty() => {
                let end = (at + rng.below(16)).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            1 if at < chars.len() => {
                chars[at] = char::from(rng.below(128) as u8);
            }
            _ => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                chars.splice(at..at, fragment.chars());
            }
        }
    }
    chars.into_iter().collect()
}

fn corpus() -> Vec<String> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn mutated_containerfiles_never_panic() {
    let corpus = corpus();
    let mut rng = Rng(0x5eed_0001);
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..3000 {
        let base = &corpus[rng.below(corpus.len())];
        let text = mutate(&mut rng, base);
        let lines = text.split_inclusive('\n').count().max(1);
        match parse(&text) {
            Ok(file) => {
                ok += 1;
                let mut last = 0;
                let all =
                    file.global_args
                        .iter()
                        .map(|i| i.span)
                        .chain(file.stages.iter().flat_map(|s| {
                            std::iter::once(s.span).chain(s.instructions.iter().map(|i| i.span))
                        }));
                for span in all {
                    assert!(
                        span.line > last && span.line <= span.end_line && span.end_line <= lines
                    );
                    last = span.end_line;
                }
                for stage in &file.stages {
                    for instruction in &stage.instructions {
                        if let InstructionKind::Onbuild(inner) = &instruction.kind {
                            assert!(!matches!(inner.kind, InstructionKind::Onbuild(_)));
                        }
                    }
                }
            }
            Err(e) => {
                errors += 1;
                assert!(e.line >= 1 && e.line <= lines + 1, "{e} in {text:?}");
                assert!(!e.message.is_empty());
            }
        }
    }
    // Both outcomes are exercised, or the mutations are not doing their job.
    assert!(ok > 300 && errors > 300, "ok {ok}, errors {errors}");
}

#[test]
fn mutated_words_never_panic() {
    let lookup = |name: &str| match name {
        "A" => Some("a b  c".to_string()),
        "P" => Some("/usr/local/bin:/usr/bin".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let seeds = [
        "he${XXX:-${PWD:-yyy}}xx",
        "\"$A\" '$A' \\$A ${A:+x} ${A-y}",
        "${P%%:*} ${P##*/} ${P//:/ } ${P/#x/y}",
        "C:\\path\\`$A",
        "${EMPTY:?must be set}",
    ];
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..5000 {
        let seed = seeds[rng.below(seeds.len())];
        let word = mutate(&mut rng, seed);
        for escape in ['\\', '`'] {
            let one = expand(&word, &lookup, escape);
            let many = expand_words(&word, &lookup, escape);
            assert_eq!(one.is_ok(), many.is_ok(), "{word:?}");
        }
    }
}

#[test]
fn mutated_ignore_files_never_panic_and_pruning_stays_sound() {
    let seed = "node_modules\n!node_modules/keep\n**/*.log\n[a-c]?x\n/abs/path\n./rel/../x\n# c\n";
    let mut rng = Rng(0x5eed_0003);
    let mut parsed = 0;
    for _ in 0..3000 {
        let text = mutate(&mut rng, seed);
        let Ok(matcher) = IgnoreMatcher::parse(&text) else {
            continue;
        };
        parsed += 1;
        for line in text.lines().take(8) {
            let dir = line.trim().trim_start_matches('!').trim_end_matches('/');
            if dir.is_empty() || dir.contains("..") {
                continue;
            }
            if matcher.is_excluded(dir) && !matcher.may_include_below(dir) {
                for child in ["keep", "x", "a/b.log", "node_modules/keep"] {
                    let below = format!("{dir}/{child}");
                    assert!(
                        matcher.is_excluded(&below),
                        "{text:?}: {dir} pruned, {below} included"
                    );
                }
            }
        }
    }
    assert!(parsed > 1000, "only {parsed} parsed");
}

#[test]
fn hostile_sizes_stay_linear_and_on_the_stack() {
    // 50,000 instructions.
    let mut text = String::from("FROM x\n");
    for i in 0..50_000 {
        text.push_str(&format!("RUN echo {i}\n"));
    }
    assert_eq!(parse(&text).unwrap().stages[0].instructions.len(), 50_000);
    // One instruction continued over 200,000 lines.
    let text = format!("FROM x\nRUN a{}\n", " \\\n b".repeat(200_000));
    let file = parse(&text).unwrap();
    assert_eq!(file.stages[0].instructions[0].span.end_line, 200_002);
    // A heredoc of 200,000 lines.
    let text = format!("FROM x\nRUN <<EOF\n{}EOF\n", "line\n".repeat(200_000));
    let file = parse(&text).unwrap();
    let InstructionKind::Run(run) = &file.stages[0].instructions[0].kind else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content.len(), 1_000_000);
    // 100,000 nested substitutions in a RUN line: no heredoc scan overflow, parse succeeds.
    let text = format!(
        "FROM x\nRUN {}{}\n",
        "${A:-".repeat(100_000),
        "}".repeat(100_000)
    );
    assert!(parse(&text).is_ok());
    // A pattern of 100,000 components, and a deep directory.
    let pattern = format!("!{}", "a/".repeat(100_000));
    let matcher = IgnoreMatcher::parse(&format!("a\n{pattern}\n**/deep\n")).unwrap();
    let deep_dir = vec!["a"; 50_000].join("/");
    assert!(matcher.is_excluded(&deep_dir));
    assert!(matcher.may_include_below(&deep_dir));
    let other = format!("b/{}", vec!["c"; 50_000].join("/"));
    assert!(!matcher.may_include_below(&other));
}
