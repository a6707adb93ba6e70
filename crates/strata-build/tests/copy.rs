//! COPY from the build context: destination rules, globs, ignore files, symlinks, ownership,
//! modes, `--parents`, `--exclude`, `--link`, heredocs, hard links, and the context's walls
//! (RELIABILITY B1–B3).

mod common;

use common::*;
use strata_build::BuildError;

#[tokio::test]
async fn copy_dir_contents_file_and_dest_rules() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("app/main.sh", b"echo hi\n");
    c.file("app/lib/util.sh", b"util\n");
    c.file("README.md", b"# readme\n");
    c.file("conf/a.conf", b"a\n");
    let cf = "FROM test/busybox:amd64\n\
              COPY app /opt/app\n\
              COPY README.md /docs/\n\
              COPY README.md /existing\n\
              COPY README.md /renamed.md\n\
              WORKDIR /work\n\
              COPY conf rel/\n\
              COPY README.md .\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    let l1 = layer_entries(&result, 0, 1);
    assert_eq!(
        paths(&l1),
        [
            "opt/",
            "opt/app/",
            "opt/app/lib/",
            "opt/app/lib/util.sh",
            "opt/app/main.sh"
        ]
    );
    let main = find(&l1, "opt/app/main.sh");
    assert_eq!(main.data, b"echo hi\n");
    assert_eq!((main.uid, main.gid), (0, 0), "context files are 0:0");
    assert_eq!(main.mtime, 1_650_000_000, "mtime from the context");
    assert_eq!(
        paths(&layer_entries(&result, 0, 2)),
        ["docs/", "docs/README.md"]
    );
    assert_eq!(paths(&layer_entries(&result, 0, 3)), ["existing/README.md"]);
    assert_eq!(paths(&layer_entries(&result, 0, 4)), ["renamed.md"]);
    assert_eq!(
        paths(&layer_entries(&result, 0, 5)),
        ["work/", "work/rel/", "work/rel/a.conf"]
    );
    // work/ exists now (created by the COPY before): no entry for it.
    assert_eq!(paths(&layer_entries(&result, 0, 6)), ["work/README.md"]);
}

#[tokio::test]
async fn run_is_not_supported_yet_and_names_the_line() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let err = run_build(
        &c.options("FROM test/busybox:amd64\nENV A=1\nRUN echo hi\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::RunNotSupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("Containerfile:3") && msg.contains("RUN is not supported yet"),
        "{msg}"
    );
}

#[tokio::test]
async fn globs_match_per_component_like_go() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    for f in [
        "a.txt",
        "b.txt",
        "c.md",
        "sub/d.txt",
        "sub/e.md",
        ".hidden.txt",
    ] {
        c.file(f, f.as_bytes());
    }
    let cf = "FROM test/busybox:amd64\nCOPY *.txt /g/\nCOPY s?b/*.txt /h\nCOPY [ab].txt /one/\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    // `*` matches dot files too (Go), never crosses `/`.
    assert_eq!(
        paths(&layer_entries(&result, 0, 1)),
        ["g/", "g/.hidden.txt", "g/a.txt", "g/b.txt"]
    );
    // One match with a wildcard and no trailing slash: the file is the destination.
    assert_eq!(paths(&layer_entries(&result, 0, 2)), ["h"]);
    assert_eq!(
        paths(&layer_entries(&result, 0, 3)),
        ["one/", "one/a.txt", "one/b.txt"]
    );
    let err = run_build(
        &c.options("FROM test/busybox:amd64\nCOPY *.nothing /x/\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::SourceNotFound { .. }), "{err}");
    assert!(err.to_string().contains("Containerfile:2"), "{err}");
    let err = run_build(&c.options("FROM test/busybox:amd64\nCOPY [a.txt /x/\n"), &r)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid wildcard"), "{err}");
}

#[tokio::test]
async fn b3_dockerignore_excludes_and_explicit_ignored_source_errors() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("secret", b"TOKEN=hunter2\n");
    c.file("x.log", b"log\n");
    c.file("keep.log", b"keep\n");
    c.file("src/app.rs", b"fn main() {}\n");
    c.file("src/target/big.o", b"obj\n");
    c.file(".dockerignore", b"secret\n*.log\n!keep.log\nsrc/target\n");
    let cf = "FROM test/busybox:amd64\nCOPY . /all/\nCOPY *.log /logs/\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    let all = layer_entries(&result, 0, 1);
    assert_eq!(
        paths(&all),
        [
            "all/",
            "all/.dockerignore",
            "all/keep.log",
            "all/src/",
            "all/src/app.rs"
        ]
    );
    assert!(
        all.iter()
            .all(|e| !String::from_utf8_lossy(&e.data).contains("hunter2"))
    );
    assert_eq!(
        paths(&layer_entries(&result, 0, 2)),
        ["logs/", "logs/keep.log"]
    );
    let err = run_build(&c.options("FROM test/busybox:amd64\nCOPY secret /\n"), &r)
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Ignored { .. }), "{err}");
    assert!(err.to_string().contains(".dockerignore"), "{err}");

    // `<Containerfile>.dockerignore` beside the Containerfile wins over the context's.
    let cf_dir = c.dir.path().join("files");
    std::fs::create_dir_all(&cf_dir).unwrap();
    std::fs::write(
        cf_dir.join("Containerfile"),
        "FROM test/busybox:amd64\nCOPY . /all/\n",
    )
    .unwrap();
    std::fs::write(
        cf_dir.join("Containerfile.dockerignore"),
        "src\n.dockerignore\n",
    )
    .unwrap();
    let mut o = c.options("");
    o.containerfile = strata_build::ContainerfileSource::Path(cf_dir.join("Containerfile"));
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        paths(&layer_entries(&result, 0, 1)),
        ["all/", "all/keep.log", "all/secret", "all/x.log"]
    );
}

#[tokio::test]
async fn b2_context_symlinks_are_copied_as_symlinks() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("d/real.txt", b"real\n");
    std::os::unix::fs::symlink("/etc/shadow", c.ctx().join("leak")).unwrap();
    std::os::unix::fs::symlink("../../secret", c.ctx().join("d/rel")).unwrap();
    std::os::unix::fs::symlink("/etc", c.ctx().join("etcdir")).unwrap();
    let cf = "FROM test/busybox:amd64\nCOPY . /s/\nCOPY leak /x\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    let s = layer_entries(&result, 0, 1);
    let leak = find(&s, "s/leak");
    assert_eq!(
        (leak.kind, leak.link.as_deref()),
        ('l', Some("/etc/shadow"))
    );
    let rel = find(&s, "s/d/rel");
    assert_eq!((rel.kind, rel.link.as_deref()), ('l', Some("../../secret")));
    assert_eq!(find(&s, "s/etcdir").kind, 'l');
    let x = layer_entries(&result, 0, 2);
    assert_eq!((x[0].path.as_str(), x[0].kind), ("x", 'l'));
    // A path through a symlink to /etc resolves inside the context: the host's file is never read.
    let err = run_build(
        &c.options("FROM test/busybox:amd64\nCOPY etcdir/passwd /p\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::SourceNotFound { .. }), "{err}");
}

#[tokio::test]
async fn b1_sources_outside_the_context_are_errors() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("a", b"a");
    std::fs::write(c.dir.path().join("outside"), b"outside").unwrap();
    for cf in [
        "FROM test/busybox:amd64\nCOPY ../outside /\n",
        "FROM test/busybox:amd64\nADD ../../outside /\n",
        "FROM test/busybox:amd64\nCOPY a/../../outside /\n",
    ] {
        let err = run_build(&c.options(cf), &r).await.unwrap_err();
        assert!(
            matches!(err, BuildError::OutsideContext { .. }),
            "{cf}: {err}"
        );
    }
    // A leading / is the context root (Docker): the host's /etc/passwd is never read.
    let err = run_build(
        &c.options("FROM test/busybox:amd64\nCOPY /etc/passwd /\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::SourceNotFound { .. }), "{err}");
    let (result, _) = run_build(&c.options("FROM test/busybox:amd64\nCOPY /a /b\n"), &r)
        .await
        .unwrap();
    assert_eq!(find(&layer_entries(&result, 0, 1), "b").data, b"a");
}

#[tokio::test]
async fn chown_by_name_through_the_stage_passwd_and_chmod() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("f", b"f\n");
    c.file("d/x", b"x\n");
    let cf = "FROM test/busybox:amd64\n\
              COPY --chown=app:staff f /f1\n\
              COPY --chown=1234 f /f2\n\
              COPY --chown=app f /f3\n\
              COPY --chmod=0600 f /f4\n\
              COPY --chmod=u=rwX,go=rX --chown=65534:50 d /new/deep/\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    let e = |n: isize| layer_entries(&result, 0, n);
    let f1 = &e(1)[0];
    assert_eq!((f1.uid, f1.gid), (1000, 50));
    let f2 = &e(2)[0];
    assert_eq!((f2.uid, f2.gid), (1234, 1234));
    let f3 = &e(3)[0];
    assert_eq!(
        (f3.uid, f3.gid),
        (1000, 1000),
        "user without group: gid = uid (Docker)"
    );
    assert_eq!(e(4)[0].mode, 0o600);
    let l5 = e(5);
    assert_eq!(paths(&l5), ["new/", "new/deep/", "new/deep/x"]);
    assert!(
        l5.iter().all(|x| (x.uid, x.gid) == (65534, 50)),
        "--chown applies to created parents"
    );
    assert_eq!(find(&l5, "new/").mode, 0o755, "created parents are 0755");
    assert_eq!(
        find(&l5, "new/deep/x").mode,
        0o644,
        "symbolic chmod on a 0644 file"
    );

    let err = run_build(
        &c.options("FROM test/busybox:amd64\nCOPY --chown=ghost f /f\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::UnknownOwner { .. }), "{err}");
    assert!(
        err.to_string().contains("ghost") && err.to_string().contains(":2"),
        "{err}"
    );
    // scratch has no /etc/passwd: names cannot be resolved, numbers can.
    let err = run_build(&c.options("FROM scratch\nCOPY --chown=app f /f\n"), &r)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no /etc/passwd"), "{err}");
    run_build(&c.options("FROM scratch\nCOPY --chown=7:8 f /f\n"), &r)
        .await
        .unwrap();
}

#[tokio::test]
async fn chown_reads_passwd_from_the_layers_not_the_host() {
    // The base's second layer whites out /etc/group: a group name cannot be resolved.
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("f", b"f");
    let err = run_build(
        &c.options("FROM test/two-layers\nCOPY --chown=app:staff f /f\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no /etc/group"), "{err}");
    let (result, _) = run_build(
        &c.options("FROM test/two-layers\nCOPY --chown=app f /f\n"),
        &r,
    )
    .await
    .unwrap();
    assert_eq!(layer_entries(&result, 0, -1)[0].uid, 1000);
}

#[tokio::test]
async fn parents_exclude_and_heredocs() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("x/a.txt", b"a");
    c.file("y/z/b.txt", b"b");
    c.file("dir/keep.c", b"c");
    c.file("dir/junk.tmp", b"t");
    c.file("dir/skip/s", b"s");
    let cf = "FROM test/busybox:amd64\n\
              ARG NAME=world\n\
              COPY --parents x/a.txt y/./z/b.txt /dst/\n\
              COPY --exclude=*.tmp --exclude=skip dir /e/\n\
              COPY <<EOF /etc/motd\n\
              hello $NAME \"quoted\"\n\
              EOF\n\
              COPY <<'EOF' /raw/\n\
              keep $NAME\n\
              EOF\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    assert_eq!(
        paths(&layer_entries(&result, 0, 1)),
        ["dst/", "dst/x/", "dst/x/a.txt", "dst/z/", "dst/z/b.txt"]
    );
    assert_eq!(paths(&layer_entries(&result, 0, 2)), ["e/", "e/keep.c"]);
    let motd = layer_entries(&result, 0, 3);
    assert_eq!(motd[0].path, "etc/motd");
    assert_eq!(
        String::from_utf8_lossy(&motd[0].data),
        "hello world \"quoted\"\n"
    );
    let raw = layer_entries(&result, 0, 4);
    assert_eq!(paths(&raw), ["raw/", "raw/EOF"]);
    assert_eq!(String::from_utf8_lossy(&raw[1].data), "keep $NAME\n");
}

#[tokio::test]
async fn link_layers_do_not_depend_on_the_base() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("f", b"linked\n");
    let (a, _) = run_build(
        &c.options("FROM test/busybox:amd64\nCOPY --link f /lib/f\n"),
        &r,
    )
    .await
    .unwrap();
    let (b, _) = run_build(
        &c.options("FROM test/two-layers\nCOPY --link f /lib/f\n"),
        &r,
    )
    .await
    .unwrap();
    let la = a.images[0].layers.last().unwrap();
    let lb = b.images[0].layers.last().unwrap();
    assert_eq!(
        la.digest, lb.digest,
        "one blob for the --link layer on two bases"
    );
    // --link does not follow the base's lib -> usr/lib symlink: the path is as written.
    assert_eq!(paths(&layer_entries(&a, 0, -1)), ["lib/", "lib/f"]);
    // Without --link, the destination resolves through the symlink.
    let (n, _) = run_build(&c.options("FROM test/busybox:amd64\nCOPY f /lib/\n"), &r)
        .await
        .unwrap();
    assert_eq!(paths(&layer_entries(&n, 0, -1)), ["usr/lib/f"]);
}

#[tokio::test]
async fn hardlinks_long_names_and_gnu_tar_agree() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let a = c.file("h/a", b"same inode\n");
    std::fs::hard_link(&a, c.ctx().join("h/b")).unwrap();
    let long = format!("h/{}", "n".repeat(150));
    c.file(&long, b"long\n");
    let (result, _) = run_build(&c.options("FROM test/busybox:amd64\nCOPY h /h\n"), &r)
        .await
        .unwrap();
    let e = layer_entries(&result, 0, -1);
    assert_eq!(find(&e, "h/a").kind, 'f');
    let b = find(&e, "h/b");
    assert_eq!((b.kind, b.link.as_deref()), ('h', Some("h/a")));
    assert!(
        find(&e, &format!("h/{}", "n".repeat(150)))
            .pax
            .iter()
            .any(|(k, _)| k == "path")
    );
    have("tar");
    let m = manifest_of(&result.layout, &result.images[0].manifest);
    let blob = result
        .layout
        .join("blobs/sha256")
        .join(m.layers.last().unwrap().digest.encoded());
    let listing = run("tar", &["-tzvf", blob.to_str().unwrap()]);
    assert!(listing.contains(&"n".repeat(150)), "{listing}");
    assert!(listing.contains("h/b link to h/a"), "{listing}");
}

#[tokio::test]
async fn an_output_layout_inside_the_context_is_not_copied() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("app.txt", b"app\n");
    let mut o = c.options("FROM test/busybox:amd64\nCOPY . /all/\n");
    o.output = strata_build::Output::Layout(c.ctx().join("out"));
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        paths(&layer_entries(&result, 0, -1)),
        ["all/", "all/app.txt"]
    );
    // And again, now that the layout (and its cache) exist inside the context.
    let (again, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        paths(&layer_entries(&again, 0, -1)),
        ["all/", "all/app.txt"]
    );
}
