//! Foreign-architecture steps: is there a qemu-user binfmt_misc handler the sandbox can use?
//!
//! Inside the container's root the interpreter path of a handler (`/usr/bin/qemu-aarch64-static`,
//! `/usr/libexec/qemu-binfmt/aarch64-binfmt-P`) does not exist, so only handlers registered
//! with the `F` (fix binary) flag work: the kernel opened their interpreter at registration.
//! Handlers are matched by the ELF header they claim (class, byte order, `e_machine`), not
//! by name, so registrations from qemu-user-static, qemu-user-binfmt, tonistiigi/binfmt or a
//! hand-written line are all recognised.

use std::fs;
use std::path::Path;

use crate::SandboxError;

/// Where the kernel exposes binfmt_misc.
pub(crate) const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

struct ArchInfo {
    /// The OCI/Go name.
    oci: &'static str,
    /// qemu's name (`qemu-<this>`, `/usr/lib/binfmt.d/qemu-<this>.conf`).
    qemu: &'static str,
    /// ELF class: 1 = 32-bit, 2 = 64-bit.
    class: u8,
    /// ELF data: 1 = little endian, 2 = big endian.
    data: u8,
    machine: u16,
}

const ARCHES: &[ArchInfo] = &[
    ArchInfo {
        oci: "amd64",
        qemu: "x86_64",
        class: 2,
        data: 1,
        machine: 62,
    },
    ArchInfo {
        oci: "arm64",
        qemu: "aarch64",
        class: 2,
        data: 1,
        machine: 183,
    },
    ArchInfo {
        oci: "arm",
        qemu: "arm",
        class: 1,
        data: 1,
        machine: 40,
    },
    ArchInfo {
        oci: "386",
        qemu: "i386",
        class: 1,
        data: 1,
        machine: 3,
    },
    ArchInfo {
        oci: "ppc64le",
        qemu: "ppc64le",
        class: 2,
        data: 1,
        machine: 21,
    },
    ArchInfo {
        oci: "s390x",
        qemu: "s390x",
        class: 2,
        data: 2,
        machine: 22,
    },
    ArchInfo {
        oci: "riscv64",
        qemu: "riscv64",
        class: 2,
        data: 1,
        machine: 243,
    },
    ArchInfo {
        oci: "mips64le",
        qemu: "mips64el",
        class: 2,
        data: 1,
        machine: 8,
    },
    ArchInfo {
        oci: "loong64",
        qemu: "loongarch64",
        class: 2,
        data: 1,
        machine: 258,
    },
];

/// Normalise the spellings seen in images and on hosts to the OCI name.
pub(crate) fn normalize(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" => "amd64".into(),
        "aarch64" | "arm64" => "arm64".into(),
        "armhf" | "armel" | "arm" | "armv7" | "armv7l" | "armv6l" => "arm".into(),
        "i386" | "i486" | "i586" | "i686" | "386" | "x86" => "386".into(),
        "powerpc64le" | "ppc64le" => "ppc64le".into(),
        "riscv64" => "riscv64".into(),
        "s390x" => "s390x".into(),
        "mips64el" | "mips64le" => "mips64le".into(),
        "loongarch64" | "loong64" => "loong64".into(),
        other => other.into(),
    }
}

pub(crate) fn host_arch() -> String {
    strata_spec::Platform::host().architecture
}

/// Host/target pairs the CPU runs natively (no emulation needed).
fn runs_natively(host: &str, target: &str) -> bool {
    host == target || matches!((host, target), ("amd64", "386") | ("arm64", "arm"))
}

struct Handler {
    name: String,
    enabled: bool,
    flags: String,
    interpreter: String,
}

fn parse_handler(name: &str, text: &str, info: &ArchInfo) -> Option<Handler> {
    let mut enabled = false;
    let mut flags = String::new();
    let mut interpreter = String::new();
    let mut offset = None;
    let mut magic = None;
    for line in text.lines() {
        if line == "enabled" {
            enabled = true;
        } else if let Some(v) = line.strip_prefix("flags: ") {
            flags = v.to_string();
        } else if let Some(v) = line.strip_prefix("interpreter ") {
            interpreter = v.to_string();
        } else if let Some(v) = line.strip_prefix("offset ") {
            offset = v.trim().parse::<u32>().ok();
        } else if let Some(v) = line.strip_prefix("magic ") {
            magic = decode_hex(v.trim());
        }
    }
    let magic = magic?;
    if offset != Some(0) || magic.len() < 20 || &magic[..4] != b"\x7fELF" {
        return None;
    }
    let machine = if magic[5] == 2 {
        u16::from_be_bytes([magic[18], magic[19]])
    } else {
        u16::from_le_bytes([magic[18], magic[19]])
    };
    (magic[4] == info.class && magic[5] == info.data && machine == info.machine).then(|| Handler {
        name: name.to_string(),
        enabled,
        flags,
        interpreter,
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Check that a step for `arch` can run on this host, reading binfmt_misc at `binfmt_dir`.
pub(crate) fn check(arch: &str, binfmt_dir: &Path) -> Result<(), SandboxError> {
    let target = normalize(arch);
    let host = host_arch();
    if runs_natively(&host, &target) {
        return Ok(());
    }
    let fail = |problem: String, fix: String| SandboxError::ForeignArch {
        arch: target.clone(),
        host_arch: host.clone(),
        problem,
        fix,
    };
    let Some(info) = ARCHES.iter().find(|a| a.oci == target) else {
        return Err(fail(
            format!("unknown architecture {arch:?}"),
            format!(
                "use one of {}",
                ARCHES.iter().map(|a| a.oci).collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let register = format!(
        "apt-get install qemu-user-static && \
         (test -e {BINFMT_DIR}/register || mount -t binfmt_misc binfmt_misc {BINFMT_DIR}) && \
         /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-{q}.conf \
         (without systemd: grep -v '^#' /usr/lib/binfmt.d/qemu-{q}.conf > {BINFMT_DIR}/register)",
        q = info.qemu
    );
    match fs::read_to_string(binfmt_dir.join("status")) {
        Err(_) => {
            return Err(fail(
                format!("binfmt_misc is not mounted at {}", binfmt_dir.display()),
                register,
            ));
        }
        Ok(s) if s.trim() != "enabled" => {
            return Err(fail(
                "binfmt_misc is disabled".to_string(),
                format!("echo 1 > {BINFMT_DIR}/status"),
            ));
        }
        Ok(_) => {}
    }
    let mut handlers = Vec::new();
    if let Ok(dir) = fs::read_dir(binfmt_dir) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "status" || name == "register" {
                continue;
            }
            if let Ok(text) = fs::read_to_string(entry.path())
                && let Some(h) = parse_handler(&name, &text, info)
            {
                handlers.push(h);
            }
        }
    }
    handlers.sort_by_key(|h| (!h.enabled, !h.flags.contains('F')));
    match handlers.first() {
        None => Err(fail(
            format!("no binfmt_misc handler is registered for linux/{target} ELF binaries"),
            register,
        )),
        Some(h) if !h.enabled => Err(fail(
            format!("the binfmt_misc handler {} is disabled", h.name),
            format!("echo 1 > {BINFMT_DIR}/{}", h.name),
        )),
        Some(h) if !h.flags.contains('F') => Err(fail(
            format!(
                "the binfmt_misc handler {} (interpreter {}) lacks the F (fix binary) flag, so its \
                 interpreter cannot be found inside the container",
                h.name, h.interpreter
            ),
            format!(
                "echo -1 > {BINFMT_DIR}/{} && register it again with the F flag: {register}",
                h.name
            ),
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "magic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn dir_with(entries: &[(&str, String)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("status"), "enabled\n").unwrap();
        fs::write(d.path().join("register"), "").unwrap();
        for (name, text) in entries {
            fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn handler(enabled: &str, flags: &str) -> String {
        format!(
            "{enabled}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n{AARCH64}"
        )
    }

    #[test]
    fn normalises_spellings() {
        assert_eq!(normalize("x86_64"), "amd64");
        assert_eq!(normalize("aarch64"), "arm64");
        assert_eq!(normalize("ARM64"), "arm64");
        assert_eq!(normalize("i686"), "386");
    }

    #[test]
    fn registered_fix_binary_handler_passes() {
        if host_arch() == "arm64" {
            return; // arm64 is native there; the table below is for other hosts
        }
        let d = dir_with(&[("whatever-name", handler("enabled", "POF"))]);
        check("arm64", d.path()).unwrap();
    }

    #[test]
    fn problems_are_named_with_a_fix() {
        if host_arch() == "arm64" {
            return;
        }
        let cases = [
            (dir_with(&[]), "no binfmt_misc handler", "qemu-aarch64.conf"),
            (
                dir_with(&[("qemu-aarch64", handler("disabled", "POF"))]),
                "is disabled",
                "echo 1 >",
            ),
            (
                dir_with(&[("qemu-aarch64", handler("enabled", "OC"))]),
                "lacks the F (fix binary) flag",
                "echo -1 >",
            ),
        ];
        for (d, problem, fix) in cases {
            let e = check("arm64", d.path()).unwrap_err().to_string();
            assert!(e.contains(problem), "{e}");
            assert!(e.contains(fix), "{e}");
        }
        // A handler for another machine does not count.
        let arm32 = handler("enabled", "F").replace("b700", "2800");
        let d = dir_with(&[("qemu-aarch64", arm32)]);
        let e = check("arm64", d.path()).unwrap_err().to_string();
        assert!(e.contains("no binfmt_misc handler"), "{e}");
        let missing = tempfile::tempdir().unwrap();
        let e = check("arm64", &missing.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not mounted"), "{e}");
    }

    #[test]
    fn native_and_unknown() {
        check(&host_arch(), Path::new("/nonexistent")).unwrap();
        let e = check("vax", Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown architecture"), "{e}");
    }
}
