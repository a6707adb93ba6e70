//! Test helpers: hand-made tar blocks (so malicious archives are built at run time), a
//! sentinel directory outside the extraction root with a snapshot of everything about it,
//! tree listings in `find -printf` style, and GNU tar as an outside judge.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};
use strata_archive::{ArchiveError, ExtractOptions, ExtractStats, TargetPolicy, extract_layer};

/// One 512-byte ustar header with raw fields (no name checks: `..` and `/` are allowed).
pub fn header(name: &[u8], flag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_entry_type(tar::EntryType::new(flag));
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    *h.as_bytes()
}

pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A tar archive assembled block by block.
#[derive(Default, Clone)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }
    fn pad(&mut self) {
        let rem = self.bytes.len() % 512;
        if rem != 0 {
            self.bytes.resize(self.bytes.len() + 512 - rem, 0);
        }
    }
    pub fn block(mut self, h: [u8; 512]) -> Self {
        self.bytes.extend_from_slice(&h);
        self
    }
    pub fn data(mut self, data: &[u8]) -> Self {
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_mode(name, data, 0o644)
    }
    pub fn file_mode(self, name: &str, data: &[u8], mode: u32) -> Self {
        self.block(header(name.as_bytes(), b'0', data.len() as u64, b"", mode))
            .data(data)
    }
    pub fn dir(self, name: &str, mode: u32) -> Self {
        self.block(header(name.as_bytes(), b'5', 0, b"", mode))
    }
    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.block(header(name.as_bytes(), b'2', 0, target.as_bytes(), 0o777))
    }
    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.block(header(name.as_bytes(), b'1', 0, target.as_bytes(), 0o644))
    }
    pub fn node(self, name: &str, flag: u8, major: u32, minor: u32, mode: u32) -> Self {
        let mut h =
            tar::Header::from_byte_slice(&header(name.as_bytes(), flag, 0, b"", mode)).clone();
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.block(*h.as_bytes())
    }
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let body = pax_records(records);
        self.block(header(
            b"PaxHeaders.0/x",
            b'x',
            body.len() as u64,
            b"",
            0o644,
        ))
        .data(&body)
    }
    pub fn end(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }
}

/// A fresh extraction root beside a sentinel directory, and a snapshot of everything
/// outside the root.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub probe: PathBuf,
    before: BTreeMap<String, String>,
}

/// Everything observable about a path: type, mode, owner, inode, size, content, target.
fn describe(path: &Path) -> String {
    let md = fs::symlink_metadata(path).unwrap();
    let ft = md.file_type();
    let extra = if ft.is_file() {
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    } else if ft.is_symlink() {
        fs::read_link(path).unwrap().display().to_string()
    } else {
        String::new()
    };
    format!(
        "{:o} {}:{} ino={} nlink={} size={} mtime={} {}",
        md.mode(),
        md.uid(),
        md.gid(),
        md.ino(),
        md.nlink(),
        md.len(),
        md.mtime(),
        extra
    )
}

/// Snapshot of a tree (not following symlinks), skipping `skip`.
pub fn snapshot(top: &Path, skip: Option<&Path>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        if Some(p.as_path()) == skip {
            continue;
        }
        out.insert(p.display().to_string(), describe(&p));
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("strata-x-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let probe = dir.path().join("probe");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&probe).unwrap();
        fs::write(probe.join("victim"), b"probe victim\n").unwrap();
        fs::set_permissions(probe.join("victim"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::create_dir(probe.join("sub")).unwrap();
        fs::write(probe.join("sub/keep"), b"keep\n").unwrap();
        fs::set_permissions(&probe, fs::Permissions::from_mode(0o750)).unwrap();
        let before = snapshot(dir.path(), Some(&root));
        Sandbox {
            dir,
            root,
            probe,
            before,
        }
    }

    /// The probe path as a string (for symlink targets).
    pub fn probe_str(&self) -> String {
        self.probe.display().to_string()
    }

    /// Nothing outside the root changed: same paths, bytes, modes, owners, inodes.
    pub fn assert_outside_untouched(&self) {
        let after = snapshot(self.dir.path(), Some(&self.root));
        assert_eq!(self.before, after, "something outside the root changed");
    }

    pub fn extract(&self, tar: &[u8]) -> Result<ExtractStats, ArchiveError> {
        self.extract_with(tar, &layer_options())
    }

    pub fn extract_with(
        &self,
        tar: &[u8],
        options: &ExtractOptions,
    ) -> Result<ExtractStats, ArchiveError> {
        extract_layer(tar, &self.root, options)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Options for layers on top of others (the root may be non-empty).
pub fn layer_options() -> ExtractOptions {
    ExtractOptions {
        target: TargetPolicy::MayExist,
        ..Default::default()
    }
}

/// `find -printf '%P %y %m %U:%G %s %l <sha256>'`-style listing of a tree, sorted; with
/// `times`, mtimes of non-directories too.
pub fn listing(root: &Path, times: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_file() {
            "f"
        } else if ft.is_fifo() {
            "p"
        } else if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            "s"
        };
        let extra = if ft.is_file() {
            hex::encode(Sha256::digest(fs::read(&p).unwrap()))
        } else if ft.is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("{}:{}", libc_major(md.rdev()), libc_minor(md.rdev()))
        } else {
            String::new()
        };
        if !rel.is_empty() {
            let time = if times && !ft.is_dir() {
                format!(" t={}", md.mtime())
            } else {
                String::new()
            };
            let size = if ft.is_file() { md.len() } else { 0 };
            out.push(format!(
                "{rel} {kind} {:o} {}:{} {size} {extra}{time}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ));
        }
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

pub fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}
pub fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// Run GNU tar with `args`, feeding `input` on stdin; returns (status ok, stdout, stderr).
pub fn gnu_tar(args: &[&str], input: &[u8]) -> (bool, String, String) {
    let mut child = Command::new("tar")
        .args(args)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU tar is installed (scripts/install-deps.sh)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
