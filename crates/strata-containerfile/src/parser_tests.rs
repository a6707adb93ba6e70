//! Table-driven tests of the parser: every instruction, flag, form and error.

use crate::{
    AddInstr, ArgDecl, CommandForm, CopyInstr, Healthcheck, Heredoc, Instruction, InstructionKind,
    KeyValue, ParseError, RunInstr, Source, parse,
};

/// Parse `FROM scratch` + `body`, return the stage's instructions.
fn stage(body: &str) -> Vec<Instruction> {
    let text = format!("FROM scratch\n{body}");
    match parse(&text) {
        Ok(mut file) => file.stages.remove(0).instructions,
        Err(e) => panic!("{text:?} failed: {e}"),
    }
}

/// The single instruction after `FROM scratch`.
fn one(body: &str) -> Instruction {
    let mut instructions = stage(body);
    assert_eq!(instructions.len(), 1, "{body:?} → {instructions:#?}");
    instructions.remove(0)
}

fn kind(body: &str) -> InstructionKind {
    one(body).kind
}

/// The error for `FROM scratch` + `body`.
fn fails(body: &str) -> ParseError {
    let text = format!("FROM scratch\n{body}");
    match parse(&text) {
        Ok(file) => panic!("{text:?} should fail, got {file:#?}"),
        Err(e) => e,
    }
}

/// Expected ARG declarations: (name, default).
type ArgRow = &'static [(&'static str, Option<&'static str>)];
/// Expected heredocs: (name, content, expand).
type HeredocRow = &'static [(&'static str, &'static str, bool)];

fn s(text: &str) -> String {
    text.to_string()
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: s(key),
        value: s(value),
    }
}

fn shell(text: &str) -> CommandForm {
    CommandForm::Shell(s(text))
}

fn exec(args: &[&str]) -> CommandForm {
    CommandForm::Exec(args.iter().map(|a| s(a)).collect())
}

fn paths(sources: &[&str]) -> Vec<Source> {
    sources.iter().map(|p| Source::Path(s(p))).collect()
}

// ---------------------------------------------------------------- directives

#[test]
fn directives_at_the_top_are_read() {
    let file =
        parse("# syntax=docker/dockerfile:1.7\n# escape=`\n#check = skip=all\nFROM x\n").unwrap();
    assert_eq!(
        file.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(file.directives.escape, '`');
    assert_eq!(file.directives.check.as_deref(), Some("skip=all"));
    // Keys are case-insensitive, spaces around `=` allowed, leading blanks ignored.
    let file = parse("  #  ESCAPE = `\n# Syntax=a/b\nFROM x\n").unwrap();
    assert_eq!(file.directives.escape, '`');
    assert_eq!(file.directives.syntax.as_deref(), Some("a/b"));
}

#[test]
fn directives_after_anything_else_are_comments() {
    let cases = [
        "FROM x\n# escape=`\n",
        "# a comment\n# escape=`\nFROM x\n",
        "\n# escape=`\nFROM x\n",
        "# unknown=1\n# escape=`\nFROM x\n",
        "#escape\n# escape=`\nFROM x\n",
    ];
    for text in cases {
        let file = parse(text).unwrap();
        assert_eq!(file.directives.escape, '\\', "{text:?}");
    }
    let file = parse("# syntax=x\n\n# check=y\nFROM x\n").unwrap();
    assert_eq!(file.directives.syntax.as_deref(), Some("x"));
    assert_eq!(file.directives.check, None);
}

#[test]
fn bad_directives_are_errors_with_their_line() {
    let e = parse("# escape=\\\n# escape=`\nFROM x\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("only one escape"), "{e}");
    let e = parse("# syntax=a\n# escape=x\nFROM x\n").unwrap_err();
    assert_eq!((e.line, e.text.as_str()), (2, "x"));
    assert!(e.message.contains("invalid escape"), "{e}");
}

#[test]
fn byte_order_mark_is_ignored() {
    let file = parse("\u{FEFF}# escape=`\nFROM x\n").unwrap();
    assert_eq!(file.directives.escape, '`');
}

// ---------------------------------------------------------------- lines

#[test]
fn continuations_join_lines_and_keep_spans() {
    let text = "FROM x\nRUN apt-get update && \\\n    apt-get install -y \\\n      curl\nUSER me\n";
    let file = parse(text).unwrap();
    let run = &file.stages[0].instructions[0];
    assert_eq!((run.span.line, run.span.end_line), (2, 4));
    assert_eq!(
        run.original,
        "RUN apt-get update &&     apt-get install -y       curl"
    );
    assert_eq!(
        run.kind,
        InstructionKind::Run(RunInstr {
            command: shell("apt-get update &&     apt-get install -y       curl"),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    let user = &file.stages[0].instructions[1];
    assert_eq!((user.span.line, user.span.end_line), (5, 5));
}

#[test]
fn comments_and_blank_lines_inside_continuations_are_skipped() {
    let text = "FROM x\nRUN a \\\n# a comment\n  # indented comment\n\n   \n  b\nENV K=V\n";
    let file = parse(text).unwrap();
    let run = &file.stages[0].instructions[0];
    assert_eq!(run.original, "RUN a   b");
    assert_eq!((run.span.line, run.span.end_line), (2, 7));
    assert_eq!(file.stages[0].instructions[1].span.line, 8);
}

#[test]
fn continuation_rules() {
    // (body after FROM, expected original)
    let cases: &[(&str, &str)] = &[
        // Blanks after the escape are ignored.
        ("RUN a \\  \t\n b\n", "RUN a  b"),
        // An escaped escape at the end is not a continuation.
        ("RUN echo \\\\\nUSER u\n", "RUN echo \\\\"),
        // The last line may end in an escape.
        ("RUN a \\", "RUN a"),
        // CRLF line endings.
        ("RUN a \\\r\n b\r\n", "RUN a  b"),
        // A `#` after other text is not a comment.
        ("RUN echo # not a comment\n", "RUN echo # not a comment"),
    ];
    for (body, original) in cases {
        let first = &stage(body)[0];
        assert_eq!(first.original, *original, "{body:?}");
    }
}

#[test]
fn backtick_escape_for_windows_files() {
    let text = "# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022\nCOPY C:\\src\\app `\n     C:\\app\\\nRUN dir c:\\\n";
    let file = parse(text).unwrap();
    let stage = &file.stages[0];
    assert_eq!(
        stage.instructions[0].kind,
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["C:\\src\\app"]),
            dest: s("C:\\app\\"),
            ..CopyInstr::default()
        })
    );
    assert_eq!(
        (
            stage.instructions[0].span.line,
            stage.instructions[0].span.end_line
        ),
        (3, 4)
    );
    // With a backtick escape, a trailing backslash is an ordinary character.
    assert_eq!(
        stage.instructions[1].kind,
        InstructionKind::Run(RunInstr {
            command: shell("dir c:\\"),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
}

#[test]
fn instruction_names_are_case_insensitive() {
    let file = parse("from x As Build\nrun echo\nCmd [\"a\"]\nwOrKdIr /w\n").unwrap();
    assert_eq!(file.stages[0].from.alias.as_deref(), Some("build"));
    assert_eq!(file.stages[0].original, "from x As Build");
    let kinds: Vec<_> = file.stages[0]
        .instructions
        .iter()
        .map(|i| &i.kind)
        .collect();
    assert!(matches!(kinds[0], InstructionKind::Run(_)));
    assert!(matches!(
        kinds[1],
        InstructionKind::Cmd(CommandForm::Exec(_))
    ));
    assert_eq!(kinds[2], &InstructionKind::Workdir(s("/w")));
}

// ---------------------------------------------------------------- FROM, stages, ARG

#[test]
fn from_forms() {
    let file = parse(
        "ARG BASE=debian\nFROM --platform=$BUILDPLATFORM golang:1.22 AS Build\nFROM ${BASE}:12\nFROM build AS final\n",
    )
    .unwrap();
    assert_eq!(file.global_args.len(), 1);
    let [a, b, c] = &file.stages[..] else {
        panic!("three stages expected")
    };
    assert_eq!((a.index, b.index, c.index), (0, 1, 2));
    assert_eq!(a.from.image, "golang:1.22");
    assert_eq!(a.from.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(a.from.alias.as_deref(), Some("build"));
    assert_eq!(a.span.line, 2);
    assert_eq!(
        a.original,
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS Build"
    );
    assert_eq!(b.from.image, "${BASE}:12");
    assert_eq!(b.from.alias, None);
    assert_eq!(c.from.image, "build");
}

#[test]
fn from_errors() {
    let cases: &[(&str, &str)] = &[
        ("FROM\n", "one or three"),
        ("FROM a b\n", "one or three"),
        ("FROM a AS\n", "one or three"),
        ("FROM a TO b\n", "one or three"),
        ("FROM a AS 1st\n", "invalid name"),
        ("FROM a AS b@c\n", "invalid name"),
        ("FROM --plat=x a\n", "unknown flag"),
        ("FROM --platform a\n", "missing a value"),
        ("FROM a AS x\nFROM b AS X\n", "duplicate stage name"),
    ];
    for (text, message) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(message), "{text:?}: {e}");
    }
    let e = parse("FROM a AS x\nRUN y\nFROM b AS x\n").unwrap_err();
    assert_eq!((e.line, e.text.as_str()), (3, "x"));
}

#[test]
fn arg_forms() {
    let cases: &[(&str, ArgRow)] = &[
        ("ARG A", &[("A", None)]),
        ("ARG A=1", &[("A", Some("1"))]),
        ("ARG A=", &[("A", Some(""))]),
        ("ARG A B=2 C", &[("A", None), ("B", Some("2")), ("C", None)]),
        (
            "ARG A=\"x y\" B='z'",
            &[("A", Some("\"x y\"")), ("B", Some("'z'"))],
        ),
        ("ARG A=a\\ b", &[("A", Some("a\\ b"))]),
        ("ARG A=x=y", &[("A", Some("x=y"))]),
        ("ARG A=${B:-c}", &[("A", Some("${B:-c}"))]),
    ];
    for (body, decls) in cases {
        let expected: Vec<ArgDecl> = decls
            .iter()
            .map(|(n, d)| ArgDecl {
                name: s(n),
                default: d.map(s),
            })
            .collect();
        assert_eq!(kind(body), InstructionKind::Arg(expected), "{body:?}");
    }
    assert!(fails("ARG\n").message.contains("at least one"));
    let e = fails("ARG =x\n");
    assert!(e.message.contains("blank"), "{e}");
    assert_eq!(e.text, "=x");
}

#[test]
fn only_arg_may_precede_from() {
    let file = parse("# comment\nARG A=1\nARG B\nFROM x\nARG A\n").unwrap();
    assert_eq!(file.global_args.len(), 2);
    assert_eq!(file.global_args[1].span.line, 3);
    assert_eq!(file.stages[0].instructions.len(), 1);
    for text in [
        "RUN x\nFROM y\n",
        "ENV A=1\nFROM y\n",
        "ARG A\nLABEL a=b\nFROM y\n",
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("before the first FROM"), "{text:?}: {e}");
    }
    let e = parse("ARG A\nCOPY a b\nFROM y\n").unwrap_err();
    assert_eq!((e.line, e.text.as_str()), (2, "COPY a b"));
}

#[test]
fn files_without_stages_are_errors() {
    for text in ["", "\n\n", "# only a comment\n", "# syntax=x\n"] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("no instructions"), "{text:?}: {e}");
    }
    let e = parse("ARG A\nARG B\n").unwrap_err();
    assert!(e.message.contains("no FROM"), "{e}");
    assert_eq!(e.line, 2);
}

// ---------------------------------------------------------------- ENV, LABEL

#[test]
fn env_and_label_forms() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("ENV A=1", &[("A", "1")]),
        ("ENV A=1 B=2", &[("A", "1"), ("B", "2")]),
        ("ENV A=\"x y\" B=z\\ w", &[("A", "\"x y\""), ("B", "z\\ w")]),
        ("ENV A=", &[("A", "")]),
        ("ENV A=\"\"", &[("A", "\"\"")]),
        ("ENV PATH=/x:$PATH", &[("PATH", "/x:$PATH")]),
        // Legacy form: one pair, the value is the rest of the line as written.
        ("ENV A value with  spaces", &[("A", "value with  spaces")]),
        ("ENV A \"quoted value\"", &[("A", "\"quoted value\"")]),
        ("ENV A=b=c", &[("A", "b=c")]),
    ];
    for (body, pairs) in cases {
        let expected: Vec<KeyValue> = pairs.iter().map(|(k, v)| kv(k, v)).collect();
        assert_eq!(kind(body), InstructionKind::Env(expected), "{body:?}");
    }
    assert_eq!(
        kind("LABEL org.opencontainers.image.title=\"My app\" version=1.0"),
        InstructionKind::Label(vec![
            kv("org.opencontainers.image.title", "\"My app\""),
            kv("version", "1.0")
        ])
    );
    assert_eq!(
        kind("LABEL \"com.example.vendor\"=\"ACME\""),
        InstructionKind::Label(vec![kv("\"com.example.vendor\"", "\"ACME\"")])
    );
    assert_eq!(
        kind("LABEL maintainer Jane Doe"),
        InstructionKind::Label(vec![kv("maintainer", "Jane Doe")])
    );
}

#[test]
fn env_and_label_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("ENV\n", "at least one", "ENV"),
        ("ENV A\n", "two arguments", "ENV A"),
        ("ENV A=1 B\n", "can't find =", "B"),
        ("ENV =1\n", "blank", "=1"),
        ("LABEL\n", "at least one", "LABEL"),
        ("LABEL a=b c\n", "can't find =", "c"),
        ("ENV --x=1 A=1\n", "unknown flag", "--x=1"),
    ];
    for (body, message, text) in cases {
        let e = fails(body);
        assert!(e.message.contains(message), "{body:?}: {e}");
        assert_eq!(e.text, *text, "{body:?}");
        assert_eq!(e.line, 2);
    }
}

// ---------------------------------------------------------------- COPY, ADD

#[test]
fn copy_forms_and_flags() {
    assert_eq!(
        kind("COPY a b /dst/"),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["a", "b"]),
            dest: s("/dst/"),
            ..CopyInstr::default()
        })
    );
    assert_eq!(
        kind(
            "COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=tmp ./src/ /app/"
        ),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["./src/"]),
            dest: s("/app/"),
            from: Some(s("build")),
            chown: Some(s("app:app")),
            chmod: Some(s("0755")),
            link: true,
            excludes: vec![s("*.md"), s("tmp")],
            parents: true,
        })
    );
    // JSON form: paths with spaces.
    assert_eq!(
        kind("COPY [\"my file\", \"other\", \"/dst dir/\"]"),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["my file", "other"]),
            dest: s("/dst dir/"),
            ..CopyInstr::default()
        })
    );
    // Bool flags take explicit values; quotes in flag values are removed.
    assert_eq!(
        kind("COPY --link=false --chown=\"a b\" x y"),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["x"]),
            dest: s("y"),
            chown: Some(s("a b")),
            ..CopyInstr::default()
        })
    );
    // Symbolic modes (Dockerfile 1.14) are accepted and kept as written.
    let InstructionKind::Copy(copy) = kind("COPY --chmod=u=rwX,go=rX . /app") else {
        panic!()
    };
    assert_eq!(copy.chmod.as_deref(), Some("u=rwX,go=rX"));
    // Variables are kept for the engine to expand.
    assert_eq!(
        kind("COPY --from=$STAGE --chmod=$MODE ${SRC} $DST"),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["${SRC}"]),
            dest: s("$DST"),
            from: Some(s("$STAGE")),
            chmod: Some(s("$MODE")),
            ..CopyInstr::default()
        })
    );
}

#[test]
fn add_flags() {
    assert_eq!(
        kind(
            "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --chown=1:2 --chmod=644 --link --keep-git-dir --unpack=false --exclude=x https://example.com/a.tar.gz /a/"
        ),
        InstructionKind::Add(AddInstr {
            copy: CopyInstr {
                sources: paths(&["https://example.com/a.tar.gz"]),
                dest: s("/a/"),
                chown: Some(s("1:2")),
                chmod: Some(s("644")),
                link: true,
                excludes: vec![s("x")],
                ..CopyInstr::default()
            },
            checksum: Some(s(
                "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"
            )),
            keep_git_dir: true,
            unpack: Some(false),
        })
    );
    let InstructionKind::Add(add) = kind("ADD --unpack a.tar /x") else {
        panic!()
    };
    assert_eq!(add.unpack, Some(true));
    let InstructionKind::Add(add) = kind("ADD a.tar /x") else {
        panic!()
    };
    assert_eq!(
        (add.unpack, add.keep_git_dir, add.checksum),
        (None, false, None)
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let cases: &[(&str, &str, &str)] = &[
        ("COPY --frm=x a b\n", "unknown flag", "--frm=x"),
        ("ADD --from=x a b\n", "unknown flag", "--from=x"),
        ("ADD --parents a b\n", "unknown flag", "--parents"),
        ("COPY --from=a --from=b x y\n", "duplicate flag", "--from=b"),
        ("COPY --link --link x y\n", "duplicate flag", "--link"),
        ("COPY --from x y\n", "missing a value", "--from"),
        ("COPY --link= x y\n", "missing a value", "--link="),
        ("COPY --link=yes x y\n", "boolean", "--link=yes"),
        ("COPY --chmod=u+q x y\n", "symbolic", "u+q"),
        ("COPY --chmod=99 x y\n", "octal", "99"),
        (
            "RUN --mount=type=foo,target=/x make\n",
            "unsupported mount type",
            "type=foo,target=/x",
        ),
        ("RUN --network=bridge make\n", "network", "bridge"),
        ("RUN --security=root make\n", "security", "root"),
        ("RUN --foo make\n", "unknown flag", "--foo"),
        ("CMD --help\n", "unknown flag", "--help"),
        ("WORKDIR --x=1 /a\n", "unknown flag", "--x=1"),
    ];
    for (body, message, text) in cases {
        let e = fails(body);
        assert!(e.message.contains(message), "{body:?}: {e}");
        assert_eq!(e.text, *text, "{body:?}");
    }
}

#[test]
fn copy_needs_a_destination() {
    for body in [
        "COPY\n",
        "COPY a\n",
        "ADD a\n",
        "COPY [\"a\"]\n",
        "COPY --from=x a\n",
    ] {
        let e = fails(body);
        assert!(e.message.contains("at least two"), "{body:?}: {e}");
    }
    let e = fails("COPY [\"a\", 1]\n");
    assert!(e.message.contains("strings only"), "{e}");
}

#[test]
fn flags_end_at_double_dash_and_first_operand() {
    assert_eq!(
        kind("COPY -- --weird-name /dst"),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["--weird-name"]),
            dest: s("/dst"),
            ..CopyInstr::default()
        })
    );
    assert_eq!(
        kind("COPY a --from=x /dst"),
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["a", "--from=x"]),
            dest: s("/dst"),
            ..CopyInstr::default()
        })
    );
}

// ---------------------------------------------------------------- RUN

#[test]
fn run_forms_and_flags() {
    assert_eq!(
        kind("RUN [\"/bin/sh\", \"-c\", \"echo hi\"]"),
        InstructionKind::Run(RunInstr {
            command: exec(&["/bin/sh", "-c", "echo hi"]),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    assert_eq!(
        kind(
            "RUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok --network=none --security=insecure make"
        ),
        InstructionKind::Run(RunInstr {
            command: shell("make"),
            mounts: vec![
                s("type=cache,target=/root/.cache,sharing=locked"),
                s("type=secret,id=tok")
            ],
            network: Some(s("none")),
            security: Some(s("insecure")),
            heredocs: vec![],
        })
    );
    // Variables in a mount are left for the engine.
    let InstructionKind::Run(run) = kind("RUN --mount=type=$T,target=/x true") else {
        panic!()
    };
    assert_eq!(run.mounts, vec![s("type=$T,target=/x")]);
}

#[test]
fn json_form_only_for_json_arrays_of_strings() {
    let cases: &[(&str, CommandForm)] = &[
        ("CMD [\"a\", \"b\"]", exec(&["a", "b"])),
        ("CMD   [ \"a\" ]  ", exec(&["a"])),
        ("CMD []", exec(&[])),
        ("CMD [\"a\\\"q\", \"\\u00e9\"]", exec(&["a\"q", "é"])),
        // Not JSON: shell form, as written.
        ("CMD [a, b]", shell("[a, b]")),
        ("CMD ['a']", shell("['a']")),
        ("CMD [\"a\",]", shell("[\"a\",]")),
        ("CMD echo [\"a\"]", shell("echo [\"a\"]")),
        ("CMD", shell("")),
        ("ENTRYPOINT [\"/entry\"]", exec(&["/entry"])),
        ("ENTRYPOINT exec /entry \"$@\"", shell("exec /entry \"$@\"")),
        // Like Docker (Go's json.Decoder), text after the array is ignored.
        ("CMD [\"a\"] b", exec(&["a"])),
    ];
    for (body, form) in cases {
        let got = match kind(body) {
            InstructionKind::Cmd(f) | InstructionKind::Entrypoint(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(&got, form, "{body:?}");
    }
    for body in ["CMD [1]\n", "ENTRYPOINT [\"a\", true]\n", "RUN [null]\n"] {
        assert!(fails(body).message.contains("strings only"), "{body:?}");
    }
}

#[test]
fn run_errors() {
    for body in ["RUN\n", "RUN []\n", "RUN --network=none\n"] {
        assert!(
            fails(body).message.contains("requires a command"),
            "{body:?}"
        );
    }
}

// ---------------------------------------------------------------- heredocs

fn heredoc(name: &str, content: &str, expand: bool) -> Heredoc {
    Heredoc {
        name: s(name),
        content: s(content),
        expand,
    }
}

#[test]
fn run_heredocs() {
    let text = "FROM x\nRUN <<EOF\napt-get update\napt-get install -y curl\nEOF\nUSER u\n";
    let file = parse(text).unwrap();
    let run = &file.stages[0].instructions[0];
    assert_eq!((run.span.line, run.span.end_line), (2, 5));
    assert_eq!(run.original, "RUN <<EOF");
    assert_eq!(
        run.kind,
        InstructionKind::Run(RunInstr {
            command: shell("<<EOF"),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![heredoc(
                "EOF",
                "apt-get update\napt-get install -y curl\n",
                true
            )],
        })
    );
    assert_eq!(file.stages[0].instructions[1].span.line, 6);
}

#[test]
fn heredoc_variants() {
    // (body, expected heredocs)
    let cases: &[(&str, HeredocRow)] = &[
        (
            "RUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n",
            &[("EOF", "echo a\necho b\n", true)],
        ),
        (
            "RUN <<\"EOF\"\necho $HOME\nEOF\n",
            &[("EOF", "echo $HOME\n", false)],
        ),
        (
            "RUN <<'EOF'\necho $HOME\nEOF\n",
            &[("EOF", "echo $HOME\n", false)],
        ),
        ("RUN <<E\"O\"F\nx\nEOF\n", &[("EOF", "x\n", false)]),
        (
            "RUN python3 <<EOF\nprint('hi')\nEOF\n",
            &[("EOF", "print('hi')\n", true)],
        ),
        (
            "RUN <<A cat /dev/stdin - <<B\none\nA\ntwo\nB\n",
            &[("A", "one\n", true), ("B", "two\n", true)],
        ),
        (
            "RUN 3<<EOF cat /dev/fd/3\nx\nEOF\n",
            &[("EOF", "x\n", true)],
        ),
        (
            "RUN cat <<EOF > /f\n\nblank line above\nEOF\n",
            &[("EOF", "\nblank line above\n", true)],
        ),
        // Body lines are not comments, continuations or instructions.
        (
            "RUN <<EOF\n# not a comment \\\nFROM x\nEOF\n",
            &[("EOF", "# not a comment \\\nFROM x\n", true)],
        ),
        (
            "RUN --mount=type=cache,target=/c <<EOF\nmake\nEOF\n",
            &[("EOF", "make\n", true)],
        ),
        // A continued line opens its heredocs after the last continuation line.
        ("RUN cat \\\n  <<EOF\nx\nEOF\n", &[("EOF", "x\n", true)]),
        // The terminator must be alone on its line (a `<<-` one may be tab-indented).
        ("RUN <<EOF\n EOF\nEOF\n", &[("EOF", " EOF\n", true)]),
        // CRLF bodies keep their line endings; the terminator matches without them.
        ("RUN <<EOF\r\nx\r\nEOF\r\n", &[("EOF", "x\r\n", true)]),
    ];
    for (body, docs) in cases {
        let InstructionKind::Run(run) = kind(body) else {
            panic!("{body:?}")
        };
        let expected: Vec<Heredoc> = docs.iter().map(|(n, c, e)| heredoc(n, c, *e)).collect();
        assert_eq!(run.heredocs, expected, "{body:?}");
    }
}

#[test]
fn not_heredocs() {
    for body in [
        "RUN echo \"<<EOF\"\n",
        "RUN echo '<<EOF'\n",
        "RUN [\"cat\", \"<<EOF\"]\n",
        "RUN cat<<EOF\n",
        "RUN echo a<<b\n",
        "RUN echo <<\n",
        "RUN echo \"unclosed <<EOF\n",
        "CMD cat <<EOF\n",
        "ENV A=<<EOF\n",
    ] {
        let file = parse(&format!("FROM x\n{body}USER u\n")).unwrap();
        let instructions = &file.stages[0].instructions;
        assert_eq!(instructions.len(), 2, "{body:?}");
        if let InstructionKind::Run(run) = &instructions[0].kind {
            assert!(run.heredocs.is_empty(), "{body:?}");
        }
    }
}

#[test]
fn copy_heredocs() {
    let text = "FROM x\nCOPY --chmod=755 <<EOF /usr/local/bin/hello\n#!/bin/sh\necho hello\nEOF\n";
    let file = parse(text).unwrap();
    let copy = &file.stages[0].instructions[0];
    assert_eq!((copy.span.line, copy.span.end_line), (2, 5));
    assert_eq!(
        copy.kind,
        InstructionKind::Copy(CopyInstr {
            sources: vec![Source::Heredoc(heredoc(
                "EOF",
                "#!/bin/sh\necho hello\n",
                true
            ))],
            dest: s("/usr/local/bin/hello"),
            chmod: Some(s("755")),
            ..CopyInstr::default()
        })
    );
    let InstructionKind::Copy(copy) = kind("COPY a <<ONE <<'TWO' /dst/\n1 $X\nONE\n2 $X\nTWO\n")
    else {
        panic!()
    };
    assert_eq!(
        copy.sources,
        vec![
            Source::Path(s("a")),
            Source::Heredoc(heredoc("ONE", "1 $X\n", true)),
            Source::Heredoc(heredoc("TWO", "2 $X\n", false)),
        ]
    );
    let InstructionKind::Add(add) = kind("ADD <<-EOF /f\n\tindented\n\tEOF\n") else {
        panic!()
    };
    assert_eq!(
        add.copy.sources,
        vec![Source::Heredoc(heredoc("EOF", "indented\n", true))]
    );
}

#[test]
fn heredoc_errors() {
    let e = parse("FROM x\nRUN <<EOF\necho never closed\n").unwrap_err();
    assert_eq!((e.line, e.text.as_str()), (2, "RUN <<EOF"));
    assert!(e.message.contains("unterminated heredoc"), "{e}");
    let e = parse("FROM x\nRUN <<-EOF\n  EOF\n").unwrap_err();
    assert!(
        e.message.contains("unterminated"),
        "spaces are not tabs: {e}"
    );
    let e = fails("COPY a <<EOF\nx\nEOF\n");
    assert!(e.message.contains("heredoc as a destination"), "{e}");
}

// ---------------------------------------------------------------- simple instructions

#[test]
fn one_operand_instructions_take_the_rest_of_the_line() {
    let cases: &[(&str, InstructionKind)] = &[
        ("WORKDIR /app", InstructionKind::Workdir(s("/app"))),
        ("WORKDIR /my app", InstructionKind::Workdir(s("/my app"))),
        ("WORKDIR $HOME/x", InstructionKind::Workdir(s("$HOME/x"))),
        ("USER app:app", InstructionKind::User(s("app:app"))),
        ("USER 1000", InstructionKind::User(s("1000"))),
        (
            "STOPSIGNAL SIGTERM",
            InstructionKind::StopSignal(s("SIGTERM")),
        ),
        (
            "MAINTAINER Jane Doe <jane@example.com>",
            InstructionKind::Maintainer(s("Jane Doe <jane@example.com>")),
        ),
        (
            "EXPOSE 80 443/tcp 53/udp $PORT",
            InstructionKind::Expose(vec![s("80"), s("443/tcp"), s("53/udp"), s("$PORT")]),
        ),
        ("VOLUME /data", InstructionKind::Volume(vec![s("/data")])),
        (
            "VOLUME /a /b",
            InstructionKind::Volume(vec![s("/a"), s("/b")]),
        ),
        (
            "VOLUME [\"/a b\", \"/c\"]",
            InstructionKind::Volume(vec![s("/a b"), s("/c")]),
        ),
        (
            "SHELL [\"powershell\", \"-Command\"]",
            InstructionKind::Shell(vec![s("powershell"), s("-Command")]),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(&kind(body), expected, "{body:?}");
    }
}

#[test]
fn missing_operands_are_errors() {
    let cases: &[(&str, &str)] = &[
        ("WORKDIR\n", "WORKDIR requires exactly one argument"),
        ("USER\n", "USER requires exactly one argument"),
        ("STOPSIGNAL\n", "STOPSIGNAL requires exactly one argument"),
        ("MAINTAINER\n", "MAINTAINER requires exactly one argument"),
        ("EXPOSE\n", "EXPOSE requires at least one argument"),
        ("VOLUME\n", "VOLUME requires at least one argument"),
        ("VOLUME []\n", "VOLUME requires at least one argument"),
        ("VOLUME [\"\"]\n", "empty string"),
        ("SHELL\n", "JSON form"),
        ("SHELL /bin/bash -c\n", "JSON form"),
        ("SHELL []\n", "at least one"),
        ("SHELL [1]\n", "strings only"),
        ("ONBUILD\n", "at least one"),
        ("HEALTHCHECK\n", "at least one"),
    ];
    for (body, message) in cases {
        let e = fails(body);
        assert!(e.message.contains(message), "{body:?}: {e}");
        assert_eq!(e.line, 2, "{body:?}");
    }
}

#[test]
fn unknown_instruction_is_an_error_naming_it() {
    let e = parse("FROM x\nRUN a\n\nFORM y\n").unwrap_err();
    assert_eq!((e.line, e.text.as_str()), (4, "FORM"));
    assert!(e.message.contains("unknown instruction"));
    assert_eq!(e.to_string(), "line 4: unknown instruction: FORM");
    let e = parse("FROM x\nRUN a \\\n  b\nCOPY\n").unwrap_err();
    assert_eq!(e.line, 4);
}

// ---------------------------------------------------------------- HEALTHCHECK

#[test]
fn healthcheck_forms() {
    assert_eq!(
        kind("HEALTHCHECK NONE"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        kind("HEALTHCHECK none"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        kind(
            "HEALTHCHECK --interval=30s --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1"
        ),
        InstructionKind::Healthcheck(Healthcheck::Check {
            command: shell("curl -f http://localhost/ || exit 1"),
            interval: Some(s("30s")),
            timeout: Some(s("3s")),
            start_period: Some(s("1m30s")),
            start_interval: Some(s("500ms")),
            retries: Some(3),
        })
    );
    assert_eq!(
        kind("HEALTHCHECK cmd [\"/health\", \"-q\"]"),
        InstructionKind::Healthcheck(Healthcheck::Check {
            command: exec(&["/health", "-q"]),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        })
    );
}

#[test]
fn healthcheck_errors() {
    let cases: &[(&str, &str)] = &[
        ("HEALTHCHECK NONE x\n", "takes no arguments"),
        ("HEALTHCHECK CMD\n", "missing command"),
        ("HEALTHCHECK CMD []\n", "missing command"),
        ("HEALTHCHECK RUN x\n", "unknown type"),
        ("HEALTHCHECK --interval=5 CMD x\n", "missing unit"),
        ("HEALTHCHECK --interval=0s CMD x\n", "less than 1ms"),
        ("HEALTHCHECK --timeout=10parsecs CMD x\n", "unknown unit"),
        ("HEALTHCHECK --retries=0 CMD x\n", "at least 1"),
        ("HEALTHCHECK --retries=three CMD x\n", "number"),
        ("HEALTHCHECK --every=1s CMD x\n", "unknown flag"),
    ];
    for (body, message) in cases {
        let e = fails(body);
        assert!(e.message.contains(message), "{body:?}: {e}");
    }
}

// ---------------------------------------------------------------- ONBUILD

#[test]
fn onbuild_parses_its_trigger() {
    let instruction = one("ONBUILD COPY --from=builder . /app");
    assert_eq!(instruction.original, "ONBUILD COPY --from=builder . /app");
    let InstructionKind::Onbuild(trigger) = instruction.kind else {
        panic!()
    };
    assert_eq!(trigger.original, "COPY --from=builder . /app");
    assert_eq!(
        trigger.kind,
        InstructionKind::Copy(CopyInstr {
            sources: paths(&["."]),
            dest: s("/app"),
            from: Some(s("builder")),
            ..CopyInstr::default()
        })
    );
    let InstructionKind::Onbuild(trigger) = kind("onbuild run echo hi") else {
        panic!()
    };
    assert_eq!(trigger.original, "run echo hi");
}

#[test]
fn onbuild_heredoc_trigger_keeps_its_body() {
    let instruction = one("ONBUILD RUN <<EOF\necho built\nEOF\n");
    assert_eq!(instruction.span.end_line, 4);
    let InstructionKind::Onbuild(trigger) = instruction.kind else {
        panic!()
    };
    // The stored trigger is re-parseable with its body (what Docker puts in OnBuild).
    assert_eq!(trigger.original, "RUN <<EOF\necho built\nEOF");
    let InstructionKind::Run(run) = &trigger.kind else {
        panic!()
    };
    assert_eq!(run.heredocs, vec![heredoc("EOF", "echo built\n", true)]);
    let reparsed = parse(&format!("FROM x\n{}\n", trigger.original)).unwrap();
    assert_eq!(reparsed.stages[0].instructions[0].kind, trigger.kind);
}

#[test]
fn onbuild_errors() {
    let cases: &[(&str, &str)] = &[
        ("ONBUILD ONBUILD RUN x\n", "ONBUILD ONBUILD"),
        ("ONBUILD FROM x\n", "FROM isn't allowed"),
        ("onbuild maintainer me\n", "MAINTAINER isn't allowed"),
        ("ONBUILD FOO bar\n", "unknown instruction"),
        ("ONBUILD COPY a\n", "at least two"),
        ("ONBUILD RUN --bad x\n", "unknown flag"),
    ];
    for (body, message) in cases {
        let e = fails(body);
        assert!(e.message.contains(message), "{body:?}: {e}");
        assert_eq!(e.line, 2);
    }
}

// ---------------------------------------------------------------- whole files

#[test]
fn several_cmds_are_kept_like_docker() {
    // Docker only warns about a second CMD in a stage; the last one wins at build time.
    let instructions = stage("CMD [\"a\"]\nCMD b\n");
    assert_eq!(instructions.len(), 2);
    assert_eq!(instructions[1].kind, InstructionKind::Cmd(shell("b")));
}

#[test]
fn errors_never_panic_on_odd_input() {
    let inputs = [
        "FROM x\nRUN \\",
        "FROM x\n\\\nRUN a\n",
        "FROM x\nRUN <<\n",
        "FROM x\nCOPY <<EOF\n",
        "FROM x\nCOPY <<EOF <<EOF /d\nEOF\n",
        "FROM x\nRUN --mount=\"type=cache\n",
        "FROM x\nENV \"\n",
        "FROM x\nLABEL '\n",
        "FROM x\nHEALTHCHECK --interval=99999999999999999999h CMD x\n",
        "FROM x\nHEALTHCHECK --retries=99999999999 CMD x\n",
        "FROM x\nEXPOSE \u{b}\n",
        "FROM \u{0}\n",
        "\u{FEFF}",
        "FROM x\nONBUILD ONBUILD\n",
        "FROM x\nRUN <<\u{0}\n",
    ];
    for text in inputs {
        let _ = parse(text);
    }
    // A heredoc opened twice with the same name reads two bodies.
    let file = parse("FROM x\nCOPY <<EOF <<EOF /d\none\nEOF\ntwo\nEOF\n").unwrap();
    let InstructionKind::Copy(copy) = &file.stages[0].instructions[0].kind else {
        panic!()
    };
    assert_eq!(copy.sources.len(), 2);
}

#[test]
fn b9_git_ref_with_dashes_is_an_operand_not_a_flag() {
    // RELIABILITY B9 (CVE-2019-13139): a git ref that looks like an option stays a source.
    let InstructionKind::Add(add) =
        kind("ADD https://github.com/x/y.git#--upload-pack=touch_/tmp/probe:dir /src")
    else {
        panic!()
    };
    assert_eq!(
        add.copy.sources,
        paths(&["https://github.com/x/y.git#--upload-pack=touch_/tmp/probe:dir"])
    );
    assert_eq!(add.copy.dest, "/src");
}
