//! Failures as the user sees them: fast, naming the host, each cause once, hints chosen by
//! what failed (not by words in the message), image strings that cannot drive the terminal.

mod common;

use common::Env;
use strata_testkit::TestRegistry;

/// Every line of `stderr` once (no cause printed twice).
fn assert_no_repeated_lines(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let text = l.trim_start().trim_start_matches("caused by: ");
        assert!(
            !lines[..i]
                .iter()
                .any(|p| p.trim_start().trim_start_matches("caused by: ") == text),
            "line {l:?} printed twice:\n{stderr}"
        );
    }
}

#[test]
fn refused_connection_fails_at_once_naming_host_and_port() {
    let env = Env::new();
    let host = format!("127.0.0.1:{}", strata_testkit::closed_loopback_port());
    let err = env.fails(&["inspect", &format!("docker://{host}/app:v1")]);
    assert!(
        err.contains(&format!("{host}: ping /v2/: connection refused")),
        "{err}"
    );
    assert!(!err.contains("attempts"), "not retried: {err}");
    assert!(
        err.contains("hint: is the registry running, and is the host:port right?"),
        "{err}"
    );
    assert_no_repeated_lines(&err);
}

#[test]
fn unknown_host_fails_naming_it() {
    let env = Env::new();
    let host = "no-such-registry.strata-test.invalid";
    let err = env.fails(&["inspect", &format!("docker://{host}/app:v1")]);
    assert!(
        err.contains(&format!("{host}: ping /v2/: unknown host")),
        "{err}"
    );
    assert!(
        err.contains("hint: is the registry host name spelled right?"),
        "{err}"
    );
    assert_no_repeated_lines(&err);
}

#[test]
fn wrong_password_says_the_credentials_were_refused() {
    let env = Env::new();
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret-pw");
    let image = format!("docker://{}/app:v1", registry.host());
    let err = env.fails(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:wrong-pw",
        &image,
    ]);
    assert!(
        err.contains(&format!(
            "{}: the credentials of user \"alice\" were refused",
            registry.host()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: check the user name and password"),
        "{err}"
    );
    assert!(!err.contains("log in with"), "{err}");
    assert!(!err.contains("wrong-pw"), "{err}");
    assert_no_repeated_lines(&err);
    // No credentials at all: that is the "log in" case.
    let err = env.fails(&["inspect", "--tls-verify=false", &image]);
    assert!(
        err.contains("hint: log in with `strata login REGISTRY`"),
        "{err}"
    );
    // `strata login` with the wrong password says the same, and writes nothing.
    let err = env.fails(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "nope",
        &registry.host(),
    ]);
    assert!(
        err.contains("the credentials of user \"alice\" were refused"),
        "{err}"
    );
}

#[test]
fn no_login_hint_for_errors_that_merely_mention_401() {
    let env = Env::new();
    let registry = TestRegistry::start();
    // A tag named 401 that does not exist: a 404, whatever its text says.
    let err = env.fails(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/app401/x:401", registry.host()),
    ]);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(!err.contains("hint:"), "{err}");
}

#[test]
fn creds_without_password_and_no_terminal_says_how_to_pass_it() {
    let env = Env::new();
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret-pw");
    let out = env
        .strata()
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice",
            &format!("docker://{}/app:v1", registry.host()),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--creds alice: no password, and standard input is not a terminal")
            && err.contains("--creds alice:PASSWORD"),
        "{err}"
    );
}

#[test]
fn oversized_layout_manifest_gets_no_max_manifest_size_hint() {
    let env = Env::new();
    // The path says "manifests": words in the message must not pick the hint.
    let src = env.path("manifests");
    std::fs::rename(common::fixture_layout(&env), &src).unwrap();
    // Replace the index's manifest blob with a 5 MiB one under its own (valid) digest.
    let big = vec![b' '; 5 << 20];
    let digest = common::sha256_hex(&big);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(src.join("blobs/sha256").join(hex), &big).unwrap();
    let index_path = src.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.clone().into();
    index["manifests"][0]["size"] = big.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = env.fails(&["inspect", &format!("oci:{}:multi", src.display())]);
    assert!(err.contains("larger than the limit"), "{err}");
    assert!(!err.contains("--max-manifest-size"), "{err}");
}

#[test]
fn ls_and_inspect_escape_control_characters_from_the_image() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // A label and an Env value carrying escape sequences (clear screen, set the window
    // title, colour).
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nLABEL evil=\"a\x1b[2J\x1b]0;pwned\x07b\"\nENV HACK=\"1\x1b[31m2\"\n",
    )
    .unwrap();
    env.ok(&[
        "build",
        "-q",
        "-t",
        "localhost/evil:1",
        ctx.to_str().unwrap(),
    ]);
    // And a tag with an ESC sequence and a newline, as a hostile layout may carry.
    let index_path = env.path("data/strata/index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let evil_tag = "t\x1b[1A\x1b[2Kfake\nline";
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = evil_tag.into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let ls = env.ok(&["ls"]);
    assert!(!ls.contains('\x1b'), "{ls:?}");
    assert!(
        ls.contains("t\\x1b[1A\\x1b[2Kfake\\nline  sha256:"),
        "{ls:?}"
    );
    assert_eq!(ls.lines().count(), 2, "{ls:?}");
    // JSON keeps the exact string (JSON escapes it).
    let json = env.json(&["ls", "--format", "json"]);
    assert_eq!(json[0]["tag"], evil_tag);

    let layout = format!("oci:{}", env.path("data/strata").display());
    let inspect = env.ok(&["inspect", &layout]);
    assert!(
        !inspect.contains('\x1b') && !inspect.contains('\x07'),
        "{inspect:?}"
    );
    assert!(
        inspect.contains("  evil=a\\x1b[2J\\x1b]0;pwned\\x07b\n"),
        "{inspect}"
    );
    assert!(inspect.contains("  HACK=1\\x1b[31m2\n"), "{inspect}");
    let json = env.json(&["inspect", "--format", "json", &layout]);
    assert_eq!(json["labels"]["evil"], "a\x1b[2J\x1b]0;pwned\x07b");
}

#[test]
fn unreadable_context_sub_directory_is_named() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("src/locked")).unwrap();
    std::fs::write(ctx.join("src/locked/secret"), "x").unwrap();
    std::fs::write(ctx.join("src/ok"), "ok").unwrap();
    std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ctx.join("src/locked"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // Tests run as root: without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH mode 000 holds.
    let out = std::process::Command::new("setpriv")
        .arg("--bounding-set=-dac_override,-dac_read_search")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["build", "-q", "-o"])
        .arg(format!("oci:{}:x", env.path("out").display()))
        .arg(&ctx)
        .env("HOME", env.path("home"))
        .env("XDG_DATA_HOME", env.path("data"))
        .output()
        .unwrap();
    std::fs::set_permissions(
        ctx.join("src/locked"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: {}: cannot open directory\n  caused by: Permission denied",
            ctx.join("src/locked").display()
        )),
        "{err}"
    );
}

/// Run `strata ARGS` on a pseudo-terminal (`script`), answer the prompt that starts with
/// `prompt` with `answer` once it is shown (the echo is off by then), and return everything
/// the terminal showed and whether strata succeeded.
fn on_a_terminal(env: &Env, args: &[&str], prompt: &str, answer: &str) -> (String, bool) {
    use std::io::{Read, Write};
    let command = std::iter::once(env!("CARGO_BIN_EXE_strata"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("HOME", env.path("home"))
        .env("XDG_RUNTIME_DIR", env.path("runtime"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut shown = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&shown).contains(prompt) {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&shown));
        shown.extend_from_slice(&buf[..n]);
    }
    // Past the prompt the echo is being turned off; give it a moment before typing.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    stdout.read_to_end(&mut shown).unwrap();
    drop(stdin);
    let ok = child.wait().unwrap().success();
    (String::from_utf8_lossy(&shown).into_owned(), ok)
}

#[test]
fn creds_without_password_prompts_on_the_terminal_without_echo() {
    let env = Env::new();
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret-pw");
    // Accepted: the registry then says the image is not there (a 404, not a 401).
    let (shown, ok) = on_a_terminal(
        &env,
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice",
            &format!("docker://{}/app:v1", registry.host()),
        ],
        "Password for alice: ",
        "s3cret-pw",
    );
    assert!(!ok);
    assert!(shown.contains("not found"), "{shown}");
    assert!(!shown.contains("refused"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "password echoed: {shown}");
    // `strata login` asks the same way.
    let (shown, ok) = on_a_terminal(
        &env,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            &registry.host(),
        ],
        "Password: ",
        "s3cret-pw",
    );
    assert!(ok, "{shown}");
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "password echoed: {shown}");
}
