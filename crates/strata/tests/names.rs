//! One meaning for a bare image name in every command: the local store's image when the
//! store has the tag, else the registry's. Manifest lists do not shadow images; lookups that
//! fail say where they looked and what exists; platforms are matched one way everywhere.

mod common;

use std::path::Path;

use common::{Env, fixture_layout, layout_digest, layout_tags, push_image, windows_image};
use serde_json::Value;
use strata_spec::Platform;
use strata_testkit::{TestRegistry, busybox_image, busybox_index};

fn store(env: &Env) -> std::path::PathBuf {
    env.path("data/strata")
}

fn inspect_json(env: &Env, name: &str) -> Value {
    env.json(&["inspect", "--tls-verify=false", "--format", "json", name])
}

fn list_platforms(env: &Env, list: &str) -> Vec<String> {
    let v = env.json(&["manifest", "inspect", list]);
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p: Platform = serde_json::from_value(m["platform"].clone()).expect("platform");
            p.to_string()
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn bare_names_of_registry_images_work_everywhere_and_a_list_does_not_shadow_them() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    let name = format!("{host}/app:v1");
    push_image(&env, &busybox_index(), &format!("docker://{name}"));
    let index = busybox_index().digest().to_string();

    let check_image_commands = |round: &str| {
        let info = inspect_json(&env, &name);
        assert_eq!(info["name"], format!("docker://{name}"), "{round}");
        assert_eq!(info["digest"], index, "{round}");
        let out = env.path(&format!("out-{round}"));
        env.ok(&[
            "copy",
            "-q",
            "--all",
            "--tls-verify=false",
            &name,
            &format!("oci:{}:copied", out.display()),
        ]);
        assert_eq!(layout_digest(&out, "copied"), index, "{round}");
        let ctx = env.path(&format!("ctx-{round}"));
        std::fs::create_dir_all(&ctx).expect("mkdir");
        std::fs::write(ctx.join("hello.txt"), "hello\n").expect("write");
        std::fs::write(
            ctx.join("Containerfile"),
            format!("FROM {name}\nCOPY hello.txt /hello.txt\n"),
        )
        .expect("write");
        let built = env.path(&format!("built-{round}"));
        env.ok(&[
            "build",
            "-q",
            "--tls-verify=false",
            "--platform",
            "linux/arm64",
            "-o",
            &format!("oci:{}:b", built.display()),
            s(&ctx),
        ]);
        let built_info = env.json(&[
            "inspect",
            "--format",
            "json",
            &format!("oci:{}:b", built.display()),
        ]);
        let platform = built_info["platform"].as_str().expect("platform");
        assert!(platform.starts_with("linux/arm64"), "{round}: {platform}");
        assert_eq!(
            built_info["layers"].as_array().expect("layers").len(),
            busybox_image("arm64").layers().len() + 1,
            "{round}: the registry's busybox plus one layer"
        );
    };
    check_image_commands("before");

    // A list named like the image, made from the image by its bare name.
    env.ok(&["manifest", "create", "--tls-verify=false", &name, &name]);
    assert_eq!(
        list_platforms(&env, &name),
        ["linux/amd64", "linux/arm64/v8"]
    );
    assert!(
        !layout_tags(&store(&env)).contains(&name),
        "the list is not among the store's images: {:?}",
        layout_tags(&store(&env))
    );
    assert_eq!(
        layout_tags(&store(&env).join("manifest-lists")),
        std::slice::from_ref(&name)
    );
    check_image_commands("after");

    // The list still pushes: same entries in the same order, the same index.
    env.ok(&[
        "manifest",
        "push",
        "-q",
        "--tls-verify=false",
        &name,
        &format!("docker://{host}/app:list"),
    ]);
    let pushed = inspect_json(&env, &format!("docker://{host}/app:list"));
    assert_eq!(pushed["digest"], index);
}

#[test]
fn the_store_wins_when_it_has_the_tag() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let name = format!("{}/app:v1", registry.host());
    push_image(&env, &busybox_image("amd64"), &format!("docker://{name}"));
    // A bare destination is the store; a bare source found only at the registry is pulled.
    env.ok(&["copy", "-q", "--tls-verify=false", &name, &name]);
    assert!(layout_tags(&store(&env)).contains(&name));
    // The registry moves on; the store's copy is what the bare name means now.
    push_image(&env, &busybox_image("arm64"), &format!("docker://{name}"));
    let info = inspect_json(&env, &name);
    assert_eq!(info["name"], name);
    assert_eq!(info["digest"], busybox_image("amd64").digest().to_string());
    let info = inspect_json(&env, &format!("docker://{name}"));
    assert_eq!(info["digest"], busybox_image("arm64").digest().to_string());
}

#[test]
fn a_failed_lookup_names_every_place_and_suggests_what_exists() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    push_image(
        &env,
        &busybox_image("amd64"),
        &format!("docker://{host}/app:v1"),
    );
    push_image(
        &env,
        &busybox_image("amd64"),
        &format!("docker://{host}/app:v2"),
    );
    let src = fixture_layout(&env);
    env.ok(&[
        "copy",
        "-q",
        &format!("oci:{}:multi", src.display()),
        &format!("{host}/app:v3"),
    ]);

    let err = env.fails(&["inspect", "--tls-verify=false", &format!("{host}/app:v9")]);
    let store_path = store(&env).display().to_string();
    assert!(
        err.contains(&format!(
            "not in the local store ({store_path}) as {host}/app:v9"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("not at docker://{host}/app:v9")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "hint: the local store has {host}/app with tag(s) v3"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("docker://{host}/app has tag(s) v1, v2")),
        "{err}"
    );

    // A near-miss of a store name.
    let err = env.fails(&[
        "copy",
        "--tls-verify=false",
        &format!("{host}/ap:v3"),
        "oci:/nowhere",
    ]);
    assert!(
        err.contains(&format!("did you mean {host}/app:v3?")),
        "{err}"
    );

    // Names under localhost/ stay local.
    let err = env.fails(&["inspect", "localhost/nope:1"]);
    assert!(
        err.contains("not in the local store")
            && err.contains("names under localhost/ are never looked up in a registry"),
        "{err}"
    );

    // A layout directory named without oci:.
    let err = env.fails(&["inspect", s(&src)]);
    assert!(
        err.contains(&format!("did you mean oci:{}?", src.display())),
        "{err}"
    );

    // build --pull never keeps bare names local and says how to reach the registry.
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Containerfile"), format!("FROM {host}/app:v1\n")).expect("write");
    let err = env.fails(&["build", "--pull", "never", s(&ctx)]);
    assert!(
        err.contains(&format!(
            "not in the local store ({store_path}) as {host}/app:v1"
        )) && err.contains(&format!("did you mean docker://{host}/app:v1?")),
        "{err}"
    );
    assert!(!err.contains("not at docker://"), "never is never: {err}");
}

#[test]
fn manifest_remove_takes_the_platforms_strata_prints() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    push_image(
        &env,
        &busybox_index(),
        &format!("docker://{host}/app:linux"),
    );
    push_image(
        &env,
        &windows_image("10.0.17763.1757", 1),
        &format!("docker://{host}/app:ltsc2019"),
    );
    push_image(
        &env,
        &windows_image("10.0.20348.2113", 2),
        &format!("docker://{host}/app:ltsc2022"),
    );
    let list = "localhost/app:multi";
    env.ok(&[
        "manifest",
        "create",
        "--tls-verify=false",
        list,
        &format!("{host}/app:linux"),
        &format!("{host}/app:ltsc2019"),
        &format!("{host}/app:ltsc2022"),
    ]);
    assert_eq!(
        list_platforms(&env, list),
        [
            "linux/amd64",
            "linux/arm64/v8",
            "windows/amd64:10.0.17763.1757",
            "windows/amd64:10.0.20348.2113"
        ]
    );

    // Several Windows versions: refused, listing them.
    let err = env.fails(&["manifest", "remove", list, "windows/amd64"]);
    assert!(
        err.contains("matches 2 entries")
            && err.contains("windows/amd64:10.0.17763.1757, windows/amd64:10.0.20348.2113"),
        "{err}"
    );
    // Nothing there: refused, listing every entry.
    let err = env.fails(&["manifest", "remove", list, "linux/s390x"]);
    assert!(
        err.contains("no entry for platform linux/s390x")
            && err.contains("linux/amd64, linux/arm64/v8, windows/amd64:10.0.17763.1757"),
        "{err}"
    );

    env.ok(&["manifest", "remove", list, "linux/arm64/v8"]);
    env.ok(&["manifest", "remove", list, "windows/amd64:10.0.17763"]);
    assert_eq!(
        list_platforms(&env, list),
        ["linux/amd64", "windows/amd64:10.0.20348.2113"]
    );
}

#[test]
fn platform_of_a_single_image_must_match() {
    let env = Env::new();
    let dir = env.path("single");
    busybox_image("amd64")
        .write_oci_layout(&dir, "t")
        .expect("layout");
    let single = format!("oci:{}:t", dir.display());
    let out = env.path("out");
    let dest = format!("oci:{}:t", out.display());

    let err = env.fails(&["copy", "--platform", "linux/arm64", &single, &dest]);
    assert!(
        err.contains(&format!(
            "{single} is a single-platform image for linux/amd64, not linux/arm64"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: the image has one platform only"),
        "{err}"
    );
    assert!(layout_tags(&out).is_empty(), "nothing copied");

    let err = env.fails(&["inspect", "--platform", "linux/arm64", &single]);
    assert!(
        err.contains("single-platform image for linux/amd64, not linux/arm64"),
        "{err}"
    );

    env.ok(&["copy", "-q", "--platform", "linux/amd64", &single, &dest]);
    assert_eq!(
        layout_digest(&out, "t"),
        busybox_image("amd64").digest().to_string()
    );
}

#[test]
fn an_old_style_list_in_the_store_is_moved_aside() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let name = format!("{}/app:v1", registry.host());
    push_image(&env, &busybox_index(), &format!("docker://{name}"));
    // What an older `strata manifest create` left: the index among the store's images, its
    // entries elsewhere.
    let src = fixture_layout(&env);
    env.ok(&[
        "copy",
        "-q",
        "--all",
        &format!("oci:{}:multi", src.display()),
        &name,
    ]);
    for arch in ["amd64", "arm64"] {
        let d = busybox_image(arch).digest();
        std::fs::remove_file(store(&env).join("blobs/sha256").join(d.encoded()))
            .expect("remove entry");
    }

    // Image commands look past it to the registry.
    let info = inspect_json(&env, &name);
    assert_eq!(info["name"], format!("docker://{name}"));

    // The manifest commands find it and move it out of the image namespace.
    let out = env.output(&["manifest", "inspect", &name]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("moved manifest list"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!layout_tags(&store(&env)).contains(&name));
    assert_eq!(
        layout_tags(&store(&env).join("manifest-lists")),
        std::slice::from_ref(&name)
    );
    assert_eq!(
        list_platforms(&env, &name),
        ["linux/amd64", "linux/arm64/v8"]
    );
}

#[test]
fn ls_and_gc_take_oci_layout_names() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let plain = env.ok(&["ls", s(&src)]);
    assert!(plain.contains("multi"), "{plain}");
    assert_eq!(env.ok(&["ls", &format!("oci:{}", src.display())]), plain);
    env.ok(&["gc", &format!("oci:{}", src.display())]);
    let err = env.fails(&["ls", &format!("oci:{}:multi", src.display())]);
    assert!(err.contains("not one tag"), "{err}");
    let err = env.fails(&["ls", "docker://127.0.0.1:1/app"]);
    assert!(err.contains("strata tags"), "{err}");
}

#[test]
fn pull_always_still_takes_localhost_names_from_the_store() {
    let env = Env::new();
    let src = fixture_layout(&env);
    env.ok(&[
        "copy",
        "-q",
        "--all",
        &format!("oci:{}:multi", src.display()),
        "localhost/base:1",
    ]);
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Containerfile"), "FROM localhost/base:1\n").expect("write");
    let out = env.path("out");
    env.ok(&[
        "build",
        "-q",
        "--pull",
        "always",
        "--platform",
        "linux/arm64",
        "-o",
        &format!("oci:{}:b", out.display()),
        s(&ctx),
    ]);
    let info = env.json(&[
        "inspect",
        "--format",
        "json",
        &format!("oci:{}:b", out.display()),
    ]);
    assert_eq!(
        info["layers"].as_array().expect("layers").len(),
        busybox_image("arm64").layers().len()
    );
}
