//! Runnable busybox images made at test time from Debian's static busybox (no internet):
//! linux/amd64 from `/bin/busybox` (package `busybox-static`), linux/arm64 from the arm64
//! build that `scripts/install-deps.sh` unpacks to [`ARM64_BUSYBOX`].

use std::io::Write;
use std::path::PathBuf;

use strata_spec::{Descriptor, Digest, MediaType};

use crate::fixtures::TestImage;

/// Where `scripts/install-deps.sh` puts the aarch64 static busybox.
pub const ARM64_BUSYBOX: &str = "/var/cache/strata-tests/arm64/bin/busybox";
/// Fixed mtime of every entry, so the images are reproducible.
const MTIME: u64 = 1_700_000_000;

/// The static busybox binary for `arch` (`amd64` or `arm64`); panics with the fix when missing.
pub fn busybox_binary(arch: &str) -> PathBuf {
    let path = match arch {
        "amd64" if std::env::consts::ARCH == "x86_64" => PathBuf::from("/bin/busybox"),
        "arm64" if std::env::consts::ARCH == "aarch64" => PathBuf::from("/bin/busybox"),
        "arm64" => PathBuf::from(
            std::env::var("STRATA_TEST_BUSYBOX_ARM64").unwrap_or_else(|_| ARM64_BUSYBOX.into()),
        ),
        other => panic!("no busybox fixture for architecture {other}"),
    };
    assert!(
        path.is_file(),
        "{} missing: run scripts/install-deps.sh (installs busybox-static and unpacks the arm64 build)",
        path.display()
    );
    path
}

/// Applet names of the host busybox (`busybox --list`), listed once per process.
pub fn applets() -> &'static [String] {
    static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let out = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap_or_else(|e| {
                panic!("/bin/busybox --list: {e} (apt-get install busybox-static)")
            });
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|a| !a.is_empty() && *a != "busybox")
            .map(str::to_string)
            .collect()
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The uncompressed rootfs tar: busybox, its applet links, /etc/passwd and /etc/group, /tmp.
pub fn busybox_rootfs_tar(arch: &str) -> Vec<u8> {
    let binary = std::fs::read(busybox_binary(arch)).expect("read busybox");
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        tar.append_data(&mut h, path, std::io::empty())
            .expect("tar");
    };
    for (d, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/bin/", 0o755),
        ("var/", 0o755),
        ("var/tmp/", 0o1777),
    ] {
        dir(&mut tar, d, mode);
    }
    let mut h = header(tar::EntryType::Regular, 0o755, binary.len() as u64);
    tar.append_data(&mut h, "bin/busybox", binary.as_slice())
        .expect("tar");
    for a in applets() {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{a}"), "busybox")
            .expect("tar");
    }
    let files: [(&str, &[u8]); 2] = [
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
    ];
    for (p, content) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64);
        tar.append_data(&mut h, p, content).expect("tar");
    }
    tar.into_inner().expect("tar")
}

/// A runnable busybox OCI image for `arch` (`amd64` or `arm64`), one gzip layer,
/// `Cmd ["sh"]`.
pub fn busybox_image(arch: &str) -> TestImage {
    let raw = busybox_rootfs_tar(arch);
    let diff_id = Digest::sha256_of(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let layer_descriptor = Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, &layer);
    let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
    if arch == "arm64" {
        platform["variant"] = "v8".into();
    }
    let mut config = serde_json::json!({
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "strata-testkit busybox"}]
    });
    for (k, v) in platform.as_object().expect("object") {
        config[k] = v.clone();
    }
    crate::fixtures::image_of(&config, vec![(layer_descriptor, layer)])
}

/// An OCI index of the amd64 and arm64 busybox images.
pub fn busybox_index() -> TestImage {
    crate::fixtures::index_of(&[busybox_image("amd64"), busybox_image("arm64")])
}
