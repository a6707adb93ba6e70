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
    assert_eq!(paths(&l1), ["opt/", "opt/app/", "opt/app/lib/", "opt/app/lib/util.sh", "opt/app/main.sh"]);
    let main = find(&l1, "opt/app/main.sh");
    assert_eq!(main.data, b"echo hi\n");
    assert_eq!((main.uid, main.gid), (0, 0), "context files are 0:0");
    assert_eq!(main.mtime, 1_650_000_000, "mtime from the context");
    assert_eq!(paths(&layer_entries(&result, 0, 2)), ["docs/", "docs/README.md"]);
    assert_eq!(paths(&layer_entries(&result, 0, 3)), ["existing/README.md"]);
    assert_eq!(paths(&layer_entries(&result, 0, 4)), ["renamed.md"]);
    assert_eq!(paths(&layer_entries(&result, 0, 5)), ["work/", "work/rel/", "work/rel/a.conf"]);
    // work/ exists now (created by the COPY before): no entry for it.
    assert_eq!(paths(&layer_entries(&result, 0, 6)), ["work/README.md"]);
}

#[tokio::test]
async fn run_is_not_supported_yet_and_names_the_line() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let err = run_build(&c.options("FROM test/busybox:amd64\nENV A=1\nRUN echo hi\n"), &r)
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::RunNotSupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Containerfile:3") && msg.contains("RUN is not supported yet"), "{msg}");
}
