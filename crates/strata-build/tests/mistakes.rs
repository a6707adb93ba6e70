//! Containerfile mistakes caught early and named: a `COPY --from` that misses a stage, an
//! empty build arg that breaks a path, an unreadable directory in the context.

mod common;

use std::sync::Mutex;

use async_trait::async_trait;
use common::*;
use strata_build::{BaseResolver, BuildError};
use strata_image::{ImageError, ImageSource};

/// A resolver that records every name it is asked for.
struct Recording {
    inner: MapResolver,
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl BaseResolver for Recording {
    async fn open(&self, image: &str) -> Result<Box<dyn ImageSource>, ImageError> {
        self.asked.lock().unwrap().push(image.to_string());
        self.inner.open(image).await
    }
}

#[tokio::test]
async fn copy_from_a_stage_typo_fails_before_any_base_is_asked_for() {
    let bases = bases();
    let r = Recording {
        inner: MapResolver::with_bases(&bases),
        asked: Mutex::new(Vec::new()),
    };
    let c = Ctx::new();
    c.file("f", b"f\n");
    for (from, suggestion) in [
        ("buidler", "; did you mean \"builder\"?"),
        ("Builer", "; did you mean \"builder\"?"),
        ("7", ""),
        ("bad//name", " and it is not a valid image name either"),
    ] {
        let cf = format!(
            "FROM test/busybox:amd64 AS builder\n\
             COPY f /f\n\
             FROM test/busybox:amd64\n\
             COPY --from={from} /f /g\n"
        );
        let err = run_build(&c.options(&cf), &r).await.unwrap_err();
        assert!(
            matches!(&err, BuildError::UnknownStage { name, .. } if name == from),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "Containerfile:4: no stage {from:?} (stages: builder (0), 1){suggestion}"
            )),
            "{err}"
        );
        assert!(r.asked.lock().unwrap().is_empty(), "no base resolved");
    }
    // A value from a variable is checked once expanded, still before it is pulled.
    let cf = "FROM test/busybox:amd64 AS builder\n\
              FROM scratch\n\
              ARG SRC=buidler\n\
              COPY --from=$SRC /etc/passwd /p\n";
    let err = run_build(&c.options(cf), &r).await.unwrap_err();
    assert!(matches!(err, BuildError::UnknownStage { .. }), "{err}");
    assert!(
        !r.asked.lock().unwrap().iter().any(|n| n == "buidler"),
        "{:?}",
        r.asked
    );
    // Real image names are still images: with a registry path, and a bare name that is
    // no near miss of a stage.
    let cf = "FROM test/busybox:amd64 AS builder\n\
              FROM scratch\n\
              COPY --from=test/two-layers /etc/added /a\n\
              COPY --from=alpine /etc/os-release /b\n";
    let err = run_build(&c.options(cf), &r).await.unwrap_err();
    assert!(
        matches!(&err, BuildError::Image { image, .. } if image == "alpine"),
        "{err}"
    );
    assert!(
        r.asked
            .lock()
            .unwrap()
            .iter()
            .any(|n| n == "test/two-layers")
    );
}

#[tokio::test]
async fn an_empty_arg_that_breaks_a_path_is_named() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("build/linux/amd64/app", b"app\n");
    for (cf, want) in [
        (
            "FROM scratch\nARG OS=linux\nARG ARCH\nCOPY build/$OS/$ARCH/app /app\n",
            "Containerfile:4: ARG ARCH is not set, so the source \"build/$OS/$ARCH/app\" expands to \"build/linux//app\"; pass --build-arg ARCH=VALUE",
        ),
        (
            "FROM scratch\nARG DIR=\nCOPY build/linux/amd64/app /opt/${DIR}/bin/\n",
            "Containerfile:3: ARG DIR is empty, so the destination \"/opt/${DIR}/bin/\" expands to \"/opt//bin/\"",
        ),
        (
            "FROM scratch\nENV HOME=\nWORKDIR $HOME\n",
            "Containerfile:3: ENV HOME is empty, so WORKDIR \"$HOME\" expands to \"\"; set ENV HOME",
        ),
    ] {
        let err = run_build(&c.options(cf), &r).await.unwrap_err();
        assert!(matches!(err, BuildError::EmptyVariable { .. }), "{err}");
        assert!(err.to_string().starts_with(want), "{cf:?}:\n{err}");
    }
    // Given a value, the same file builds; an empty TARGETVARIANT is normal and not blamed.
    let mut o = c.options(
        "FROM scratch\nARG OS=linux\nARG ARCH\nARG TARGETVARIANT\n\
         COPY build/$OS/$ARCH/app /app/${TARGETVARIANT}/app\n",
    );
    o.build_args.insert("ARCH".into(), "amd64".into());
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        find(&layer_entries(&result, 0, 0), "app/app").data,
        b"app\n"
    );
}
