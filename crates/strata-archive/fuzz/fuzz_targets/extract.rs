//! Hostile layers against `extract_layer`. Oracle: no panic, and nothing outside the root
//! changes — the sentinel directory beside it keeps its one file, bytes and mode, and no
//! other name appears next to the root.
//!
//! Input: either raw bytes used as the tar stream, or (most of the time) a structured list
//! of entries assembled into a tar with valid checksums, with names and link targets drawn
//! from a dictionary of escape attempts (`..`, absolute paths, the sentinel's own path,
//! `.wh.` names) so the fuzzer spends its time on semantics rather than checksums.
#![no_main]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use strata_archive::{ExtractOptions, Ownership, TargetPolicy, WhiteoutMode, extract_layer};

#[derive(Arbitrary, Debug)]
enum Part {
    Word(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: Vec<Part>,
    flag: u8,
    link: Vec<Part>,
    data: Vec<u8>,
    /// A size that may disagree with the data.
    size_delta: i8,
    pax: Vec<(u8, Vec<Part>)>,
    mode: u16,
}

fn word(i: u8, probe: &str) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "a",
        "b",
        "..",
        ".",
        "/",
        "",
        ".wh.",
        ".wh..wh..opq",
        ".wh.a",
        "etc",
        "l",
        "d",
        "../probe",
        "../../..",
        "probe",
        "victim",
        "./",
        "//",
        ".wh..",
        "x/y",
    ];
    match i as usize % (WORDS.len() + 1) {
        n if n < WORDS.len() => WORDS[n].as_bytes().to_vec(),
        _ => probe.as_bytes().to_vec(),
    }
}

fn join(parts: &[Part], probe: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        match p {
            Part::Word(w) => out.extend(word(*w, probe)),
            Part::Raw(r) => out.extend(r.iter().take(40)),
        }
    }
    out
}

fn header(name: &[u8], flag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_entry_type(tar::EntryType::new(flag));
    h.set_size(size);
    h.set_mode(mode);
    h.set_cksum();
    *h.as_bytes()
}

fn pad(v: &mut Vec<u8>) {
    let rem = v.len() % 512;
    if rem != 0 {
        v.resize(v.len() + 512 - rem, 0);
    }
}

fn build(entries: &[Entry], probe: &str) -> Vec<u8> {
    const FLAGS: &[u8] = b"0125634xgLK7S";
    const KEYS: &[&str] = &[
        "path",
        "linkpath",
        "size",
        "SCHILY.xattr.user.a",
        "SCHILY.xattr.trusted.overlay.opaque",
        "mtime",
        "uid",
    ];
    let mut out = Vec::new();
    for e in entries.iter().take(64) {
        let name = join(&e.name, probe);
        let link = join(&e.link, probe);
        if !e.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in e.pax.iter().take(4) {
                let key = KEYS[*k as usize % KEYS.len()];
                let value = join(v, probe);
                let len_body = key.len() + value.len() + 3;
                let mut len = len_body + 1;
                while len_body + len.to_string().len() != len {
                    len = len_body + len.to_string().len();
                }
                body.extend(format!("{len} {key}=").as_bytes());
                body.extend(&value);
                body.push(b'\n');
            }
            out.extend(header(b"PaxHeaders/x", b'x', body.len() as u64, b"", 0o644));
            out.extend(&body);
            pad(&mut out);
        }
        let flag = FLAGS[e.flag as usize % FLAGS.len()];
        let data: &[u8] = &e.data[..e.data.len().min(4096)];
        let size = (data.len() as i64 + i64::from(e.size_delta)).max(0) as u64;
        out.extend(header(&name, flag, size, &link, u32::from(e.mode) & 0o7777));
        out.extend(data);
        pad(&mut out);
    }
    out.extend([0u8; 1024]);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("fz-")
        .tempdir_in(base)
        .unwrap();
    let root = dir.path().join("root");
    let probe = dir.path().join("probe");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&probe).unwrap();
    fs::write(probe.join("victim"), b"victim").unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o750)).unwrap();
    let probe_ino = fs::metadata(&probe).unwrap().ino();
    let probe_str = probe.display().to_string();
    if flags & 4 != 0 {
        // Pre-existing escape hatches inside the root, as an earlier layer would leave them.
        let _ = std::os::unix::fs::symlink(&probe, root.join("l"));
        let _ = std::os::unix::fs::symlink("../probe", root.join("etc"));
        let _ = std::os::unix::fs::symlink("../../../..", root.join("d"));
    }
    let tar = if flags & 8 != 0 {
        rest.to_vec()
    } else {
        let mut u = Unstructured::new(rest);
        let entries: Vec<Entry> = Vec::arbitrary(&mut u).unwrap_or_default();
        build(&entries, &probe_str)
    };
    let options = ExtractOptions {
        ownership: if flags & 1 != 0 {
            Ownership::Rootless
        } else {
            Ownership::Preserve
        },
        whiteouts: if flags & 2 != 0 {
            WhiteoutMode::OverlayConvert
        } else {
            WhiteoutMode::Apply
        },
        target: TargetPolicy::MayExist,
        max_uncompressed: Some(1 << 20),
    };
    let _ = extract_layer(&tar[..], &root, &options);
    if flags & 16 != 0 {
        // A second layer over the first.
        let _ = extract_layer(&tar[..], &root, &options);
    }

    // Oracle: the neighbourhood of the root is unchanged.
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["probe", "root"], "a name appeared next to the root");
    let md = fs::symlink_metadata(&probe).unwrap();
    assert!(
        md.is_dir() && md.ino() == probe_ino && md.mode() & 0o7777 == 0o750,
        "probe changed"
    );
    let inside: Vec<_> = fs::read_dir(&probe)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(inside, ["victim"], "probe contents changed");
    let v = fs::symlink_metadata(probe.join("victim")).unwrap();
    assert!(v.is_file() && v.nlink() == 1, "victim replaced or linked");
    assert_eq!(fs::read(probe.join("victim")).unwrap(), b"victim");
});
