//! Stages and args: multi-stage builds, `--target`, unused stages, build args (flags and
//! files), predefined platform args, metadata instructions, ONBUILD, labels and annotations,
//! `COPY --from` (stage, index, image), the RUN slot.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use strata_build::{BuildError, Rootfs, RunExecutor, RunFailure, RunFailureKind, RunRequest};

#[tokio::test]
async fn multi_stage_target_and_unused_stages_are_not_built() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("src/main.c", b"int main;\n");
    // `never` names an image the resolver does not know: building it would fail.
    let cf = "FROM test/does-not-exist AS never\n\
              COPY src /src\n\
              FROM test/busybox:amd64 AS builder\n\
              COPY src /build/src\n\
              FROM builder AS tester\n\
              COPY src/main.c /test.c\n\
              FROM scratch AS final\n\
              COPY --from=builder /build/src/main.c /app/main.c\n\
              COPY --from=1 /etc/passwd /etc/passwd\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    let m = manifest_of(&result.layout, &result.images[0].manifest);
    assert_eq!(m.layers.len(), 2, "scratch + two COPY --from layers");
    assert_eq!(
        find(&layer_entries(&result, 0, 0), "app/main.c").data,
        b"int main;\n"
    );
    assert_eq!(
        find(&layer_entries(&result, 0, 1), "etc/passwd").data,
        PASSWD.as_bytes()
    );

    let mut o = c.options(cf);
    o.target = Some("tester".into());
    let (t, _) = run_build(&o, &r).await.unwrap();
    let m = manifest_of(&t.layout, &t.images[0].manifest);
    assert_eq!(
        m.layers.len(),
        3,
        "busybox + builder's COPY + tester's COPY"
    );
    assert_eq!(paths(&layer_entries(&t, 0, -1)), ["test.c"]);

    o.target = Some("nope".into());
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(matches!(err, BuildError::TargetNotFound { .. }), "{err}");
    assert!(err.to_string().contains("builder"), "{err}");
    o.target = Some("never".into());
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(err.to_string().contains("test/does-not-exist"), "{err}");
}

#[tokio::test]
async fn copy_from_stage_keeps_owners_and_from_an_image() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("f", b"f\n");
    let cf = "FROM test/busybox:amd64 AS a\n\
              COPY --chown=1000:1001 f /owned/f\n\
              FROM scratch\n\
              COPY --from=a /owned /o\n\
              COPY --from=a --chown=5:5 /owned/f /c\n\
              COPY --from=test/two-layers /etc/added /from-image\n";
    let (result, _) = run_build(&c.options(cf), &r).await.unwrap();
    let o = layer_entries(&result, 0, 0);
    // The destination directory is created as root; copied files keep their owners.
    assert_eq!(
        (find(&o, "o/").uid, find(&o, "o/f").uid, find(&o, "o/f").gid),
        (0, 1000, 1001)
    );
    let c2 = layer_entries(&result, 0, 1);
    assert_eq!((c2[0].uid, c2[0].gid), (5, 5));
    assert_eq!(
        find(&layer_entries(&result, 0, 2), "from-image").data,
        b"second layer\n"
    );
    let err = run_build(&c.options("FROM scratch AS a\nCOPY --from=a /x /y\n"), &r)
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::StageCycle { .. }), "{err}");
}

#[tokio::test]
async fn args_predefined_and_metadata_instructions() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let args_file = c.dir.path().join("args.env");
    std::fs::write(&args_file, "# build args\nFROM_FILE=file\nOVERRIDE=file\n").unwrap();
    let cf = "ARG BASE=test/busybox:amd64\n\
              FROM $BASE\n\
              ARG FROM_FILE OVERRIDE UNSET=dflt\n\
              ARG TARGETARCH TARGETPLATFORM BUILDOS\n\
              ENV A=$FROM_FILE B=${OVERRIDE} C=$UNSET ARCH=$TARGETARCH PLAT=$TARGETPLATFORM BOS=$BUILDOS\n\
              LABEL org.example.v=\"1 2\" arch=$TARGETARCH\n\
              WORKDIR /app\n\
              WORKDIR sub\n\
              USER app:staff\n\
              EXPOSE 80 53/udp 8000-8001\n\
              VOLUME /data\n\
              VOLUME [\"/logs\"]\n\
              STOPSIGNAL SIGTERM\n\
              HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD wget -q localhost\n\
              SHELL [\"/bin/sh\", \"-ec\"]\n\
              ENTRYPOINT echo hi\n\
              ONBUILD COPY . /onbuild\n\
              MAINTAINER someone\n";
    let mut o = c.options(cf);
    o.build_arg_files = vec![args_file];
    o.build_args = map(&[("OVERRIDE", "flag"), ("UNUSED", "x")]);
    o.labels = map(&[("org.example.extra", "yes")]);
    let (result, events) = run_build(&o, &r).await.unwrap();
    let m = manifest_of(&result.layout, &result.images[0].manifest);
    let config = config_of(&result.layout, &m);
    let rt = config.config.clone().unwrap();
    let env = rt.env.clone().unwrap();
    for want in [
        "A=file",
        "B=flag",
        "C=dflt",
        "ARCH=amd64",
        "PLAT=linux/amd64",
        "BOS=linux",
    ] {
        assert!(env.contains(&want.to_string()), "{want} not in {env:?}");
    }
    assert!(env[0].starts_with("PATH="), "base env first: {env:?}");
    let labels = rt.labels.clone().unwrap();
    assert_eq!(labels["org.example.v"], "1 2");
    assert_eq!(labels["arch"], "amd64");
    assert_eq!(labels["org.example.extra"], "yes");
    assert_eq!(rt.working_dir.as_deref(), Some("/app/sub"));
    assert_eq!(rt.user.as_deref(), Some("app:staff"));
    let ports: Vec<&String> = rt.exposed_ports.as_ref().unwrap().keys().collect();
    assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    let vols: Vec<&String> = rt.volumes.as_ref().unwrap().keys().collect();
    assert_eq!(vols, ["/data", "/logs"]);
    assert_eq!(rt.stop_signal.as_deref(), Some("SIGTERM"));
    let hc = rt.healthcheck.clone().unwrap();
    assert_eq!(hc.test.unwrap(), ["CMD-SHELL", "wget -q localhost"]);
    assert_eq!(
        (hc.interval, hc.timeout, hc.retries),
        (Some(30_000_000_000), Some(5_000_000_000), Some(3))
    );
    assert_eq!(rt.shell.clone().unwrap(), ["/bin/sh", "-ec"]);
    // Shell form uses the SHELL; the inherited CMD is dropped by ENTRYPOINT.
    assert_eq!(
        rt.entrypoint.clone().unwrap(),
        ["/bin/sh", "-ec", "echo hi"]
    );
    assert_eq!(rt.cmd, None);
    assert_eq!(rt.on_build.clone().unwrap(), ["COPY . /onbuild"]);
    assert_eq!(config.author.as_deref(), Some("someone"));
    // History: base entry, then one per instruction (ARG excluded), all empty.
    let created: Vec<&str> = config
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .collect();
    assert_eq!(created[0], "base layer 0");
    assert!(created.contains(&"WORKDIR sub"));
    assert!(
        config.history[1..]
            .iter()
            .all(|h| h.empty_layer == Some(true))
    );
    let warned = events.all().iter().any(|e| {
        matches!(e,
        strata_build::BuildEvent::Warning { message } if message.contains("UNUSED"))
    });
    assert!(warned, "unused build arg reported");
}

#[tokio::test]
async fn onbuild_triggers_run_in_the_child() {
    let bases = bases();
    let c = Ctx::new();
    c.file("payload", b"from the child context\n");
    let parent_out = c.dir.path().join("parent");
    let mut o =
        c.options("FROM test/busybox:amd64\nONBUILD COPY payload /triggered\nCMD [\"sh\"]\n");
    o.output = strata_build::Output::Layout(parent_out.clone());
    o.tags = vec!["parent".into()];
    let r = MapResolver::with_bases(&bases);
    run_build(&o, &r).await.unwrap();
    let mut r2 = r.clone();
    r2.names
        .insert("test/parent".into(), (parent_out, "parent".into()));
    let (child, _) = run_build(&c.options("FROM test/parent\nLABEL child=1\n"), &r2)
        .await
        .unwrap();
    assert_eq!(
        find(&layer_entries(&child, 0, -1), "triggered").data,
        b"from the child context\n"
    );
    let config = config_of(
        &child.layout,
        &manifest_of(&child.layout, &child.images[0].manifest),
    );
    assert_eq!(
        config.config.unwrap().on_build,
        None,
        "triggers are consumed"
    );
}

#[tokio::test]
async fn errors_name_the_line() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    for (cf, want) in [
        (
            "FROM test/busybox:amd64\nCOPY --from=nostage /x /y\n",
            "nostage",
        ),
        ("FROM test/busybox:amd64\nEXPOSE 99999\n", "Containerfile:2"),
        (
            "FROM test/busybox:amd64\nCOPY missing /x\n",
            "Containerfile:2",
        ),
        (
            "FROM test/busybox:amd64\nCOPY https://example.com/x /x\n",
            "use ADD",
        ),
        (
            "FROM test/busybox:amd64\nENV A=${B:?must be set}\n",
            "Containerfile:2",
        ),
    ] {
        let err = run_build(&c.options(cf), &r).await.unwrap_err();
        assert!(err.to_string().contains(want), "{cf:?}: {err}");
    }
    let err = run_build(&c.options("FROM test/busybox:amd64\nFROOM x\n"), &r)
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Parse { .. }), "{err}");
}

/// A RUN executor that writes what the sandbox would, straight into the overlay upper dir:
/// proves the slot (layers as lower dirs in, layer out) without a sandbox.
struct FakeRun;

#[async_trait]
impl RunExecutor for FakeRun {
    async fn overlay_available(&self, _dir: &std::path::Path) -> Result<(), String> {
        Ok(())
    }

    async fn run(&self, req: &RunRequest) -> Result<(), RunFailure> {
        let Rootfs::Overlay { lower, upper, .. } = &req.rootfs else {
            return Err(RunFailure::setup("expected an overlay root"));
        };
        // The lower dirs hold the stage's files (the base busybox and earlier layers).
        let passwd = lower
            .iter()
            .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())
            .ok_or_else(|| RunFailure::setup("no etc/passwd in the lower dirs"))?;
        if req.args.last().map(String::as_str) == Some("exit 3") {
            return Err(RunFailure {
                kind: RunFailureKind::Exited(3),
                message: "command failed".into(),
                output_tail: vec!["boom".into()],
            });
        }
        std::fs::create_dir_all(upper.join("out")).unwrap();
        std::fs::write(
            upper.join("out/result"),
            format!(
                "{}|{}|{}|{}",
                req.args.join(" "),
                req.workdir,
                req.env.join(","),
                passwd.lines().count()
            ),
        )
        .unwrap();
        Ok(())
    }
}

#[tokio::test]
async fn run_slot_turns_the_upper_dir_into_a_cached_layer() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let cf = "FROM test/busybox:amd64\nARG V=1\nWORKDIR /w\nRUN make all\n";
    let mut o = c.options(cf);
    o.run_executor = Some(Arc::new(FakeRun));
    let (result, events) = run_build(&o, &r).await.unwrap();
    let e = layer_entries(&result, 0, -1);
    assert_eq!(paths(&e), ["out/", "out/result"]);
    let text = String::from_utf8_lossy(&find(&e, "out/result").data).into_owned();
    assert!(text.starts_with("/bin/sh -c make all|/w|"), "{text}");
    assert!(text.contains("V=1") && text.ends_with("|3"), "{text}");
    assert_eq!(events.step_counts(), (1, 0));
    let (again, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(layer_digests(&again), layer_digests(&result));
    assert_eq!(
        events.step_counts(),
        (0, 1),
        "RUN cached by command, env, workdir"
    );
    let mut o2 = c.options("FROM test/busybox:amd64\nRUN exit 3\n");
    o2.run_executor = Some(Arc::new(FakeRun));
    let err = run_build(&o2, &r).await.unwrap_err();
    assert!(
        err.to_string().contains("code 3")
            && err.to_string().contains(":2")
            && err.to_string().contains("boom"),
        "{err}"
    );
}
