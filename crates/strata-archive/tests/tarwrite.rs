//! Tar writer: determinism, PAX (long names, big files, xattrs), hard links, symlinks,
//! special files, whiteouts, overlay diffs; round trips through `extract_layer` and GNU tar
//! with `find -printf`-style listings compared.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use strata_archive::{
    Compression, EntryKind, EntryMeta, ExtractOptions, LayerWriter, NameMode, OwnerOverride,
    TarBuilder, TarOptions, TarReader, decompress, extract_layer, write_overlay_diff, write_tree,
};
use strata_spec::Digest;

fn tar_of(dir: &Path, options: TarOptions) -> Vec<u8> {
    let mut t = TarBuilder::new(Vec::new(), options);
    write_tree(dir, "", &mut t).unwrap();
    t.finish().unwrap()
}

fn entries(tar: &[u8]) -> Vec<strata_archive::TarEntry> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        out.push(e);
    }
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The same logical tree, created in `order` (names created in different orders give
/// different readdir orders and inode numbers).
fn make_tree(root: &Path, reverse: bool, mtime: i64) {
    let mut names: Vec<String> = (0..40)
        .map(|i| format!("f{:02}-{}", i, "x".repeat(i % 7)))
        .collect();
    if reverse {
        names.reverse();
    }
    fs::create_dir_all(root.join("sub/inner")).unwrap();
    for n in &names {
        fs::write(root.join("sub").join(n), n.as_bytes()).unwrap();
        set_mtime(&root.join("sub").join(n), mtime);
    }
    fs::write(root.join("top"), b"top").unwrap();
    symlink("sub/f00-", root.join("link")).unwrap();
    for p in ["top", "link", "sub/inner", "sub", ""] {
        set_mtime(&root.join(p), mtime);
    }
}

#[test]
fn deterministic_whatever_the_readdir_order_times_and_owners() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_tree(a.path(), false, 1_700_000_000);
    make_tree(b.path(), true, 1_800_000_000);
    if is_root() {
        // Different owners on one side; normalised by the owner override.
        for e in fs::read_dir(b.path().join("sub")).unwrap() {
            rustix::fs::chownat(
                rustix::fs::CWD,
                e.unwrap().path(),
                Some(rustix::fs::Uid::from_raw(1234)),
                Some(rustix::fs::Gid::from_raw(99)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }
    let options = TarOptions {
        owner: OwnerOverride::Set { uid: 0, gid: 0 },
        mtime_clamp: Some(1_600_000_000),
        ..TarOptions::default()
    };
    let ta = tar_of(a.path(), options.clone());
    // Reading files changes atimes; they are never written.
    for e in fs::read_dir(a.path().join("sub")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            fs::read(p).unwrap();
        }
    }
    let tb = tar_of(b.path(), options.clone());
    assert_eq!(ta, tb, "same tree, different bytes");
    assert_eq!(ta, tar_of(a.path(), options));
    let es = entries(&ta);
    let names: Vec<String> = es
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names[..3], ["link", "sub/", "sub/f00-"]);
    assert!(
        es.iter()
            .all(|e| e.mtime == 1_600_000_000 && e.uid == 0 && e.gid == 0)
    );
    // No atime/ctime records anywhere.
    assert!(
        es.iter()
            .all(|e| e.pax.iter().all(|(k, _)| k != b"atime" && k != b"ctime"))
    );
    // Without the clamp, mtimes are kept.
    let unclamped = tar_of(a.path(), TarOptions::default());
    assert!(entries(&unclamped).iter().all(|e| e.mtime == 1_700_000_000));
}

#[test]
fn long_names_and_link_targets_use_pax() {
    let dir = tempfile::tempdir().unwrap();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    fs::create_dir(dir.path().join(&long_dir)).unwrap();
    fs::write(dir.path().join(&long_file), b"long").unwrap();
    let target = format!("../{}", "t".repeat(200));
    symlink(&target, dir.path().join("sym")).unwrap();
    fs::hard_link(dir.path().join(&long_file), dir.path().join("hard")).unwrap();
    let tar = tar_of(dir.path(), TarOptions::default());
    let es = entries(&tar);
    let by_name = |n: &str| {
        es.iter()
            .find(|e| e.path == n.as_bytes())
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(by_name(&format!("{long_dir}/")).kind, EntryKind::Directory);
    assert_eq!(by_name(&long_file).size, 4);
    assert_eq!(
        by_name("sym").link_target.as_deref(),
        Some(target.as_bytes())
    );
    // The long name sorts first: it is the copy, `hard` links to it (a long PAX linkpath).
    assert_eq!(by_name(&long_file).kind, EntryKind::Regular);
    assert_eq!(by_name("hard").kind, EntryKind::HardLink);
    assert_eq!(
        by_name("hard").link_target.as_deref(),
        Some(long_file.as_bytes())
    );
    assert!(by_name("hard").pax_value(b"linkpath").is_some());
    // GNU tar reads the same names.
    let (ok, out, err) = gnu_tar(&["-tf", "-"], &tar);
    assert!(ok, "{err}");
    let gnu: Vec<&str> = out.lines().collect();
    assert!(gnu.contains(&long_file.as_str()), "{out}");
    // Round trip.
    let sb = Sandbox::new();
    extract_layer(&tar[..], &sb.root, &ExtractOptions::default()).unwrap();
    assert_eq!(fs::read(sb.root.join(&long_file)).unwrap(), b"long");
    assert_eq!(
        fs::read_link(sb.path("sym")).unwrap().display().to_string(),
        target
    );
}

/// A writer into a child process's stdin.
fn pipe_to(cmd: &mut Command) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Keeps the first and last 64 KiB of what is written and leaves a hole in between:
/// enough to hold every header of an archive whose middle is one all-zero file.
struct HeadTail {
    file: fs::File,
    written: u64,
    tail: Vec<u8>,
}

const EDGE: usize = 64 << 10;

impl Write for HeadTail {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written < EDGE as u64 {
            let n = buf.len().min(EDGE - self.written as usize);
            self.file.write_all(&buf[..n])?;
        }
        self.written += buf.len() as u64;
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 4 * EDGE {
            self.tail.drain(..self.tail.len() - EDGE);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HeadTail {
    fn finish(mut self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        let keep = self.tail.len().min(EDGE);
        let start = self.written - keep as u64;
        self.file
            .seek(SeekFrom::Start(start.max(EDGE as u64).min(self.written)))?;
        let skip = (EDGE as u64).saturating_sub(start) as usize;
        self.file
            .write_all(&self.tail[self.tail.len() - keep + skip.min(keep)..])?;
        self.file.set_len(self.written)?;
        Ok(self.written)
    }
}

#[test]
fn file_over_8_gib_gets_a_pax_size() {
    const BIG: u64 = (8 << 30) + 1; // one byte past the ustar size field
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::File::create(src.join("big"))
        .unwrap()
        .set_len(BIG)
        .unwrap(); // sparse
    fs::write(src.join("small"), b"after the big one").unwrap();
    let archive = dir.path().join("archive.tar");
    let out = HeadTail {
        file: fs::File::create(&archive).unwrap(),
        written: 0,
        tail: Vec::new(),
    };
    let mut t = TarBuilder::new(out, TarOptions::default());
    write_tree(&src, "", &mut t).unwrap();
    let len = t.finish().unwrap().finish().unwrap();
    assert!(len > BIG);
    // GNU tar (seeking over the data of a regular-file archive).
    let out = Command::new("tar")
        .args(["-tvf"])
        .arg(&archive)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains(&format!(" {BIG} ")), "{listing}");
    assert!(
        listing.lines().last().unwrap().ends_with(" small"),
        "{listing}"
    );
    let (ok, out, err) = gnu_tar(&["-xOf", archive.to_str().unwrap(), "small"], b"");
    assert!(ok, "{err}");
    assert_eq!(out, "after the big one");
    // Our reader, streaming through the 8 GiB (the hole is produced in memory rather than
    // read from the sparse file: same bytes, less time).
    let mut head = vec![0u8; EDGE];
    let mut tail = vec![0u8; EDGE];
    {
        use std::io::{Seek, SeekFrom};
        let mut f = fs::File::open(&archive).unwrap();
        f.read_exact(&mut head).unwrap();
        f.seek(SeekFrom::Start(len - EDGE as u64)).unwrap();
        f.read_exact(&mut tail).unwrap();
    }
    struct Zeros(u64);
    impl Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len() as u64).min(self.0) as usize;
            buf[..n].fill(0);
            self.0 -= n as u64;
            Ok(n)
        }
    }
    let stream = io::Cursor::new(head)
        .chain(Zeros(len - 2 * EDGE as u64))
        .chain(io::Cursor::new(tail));
    let mut r = TarReader::new(stream);
    let big = r.next_entry().unwrap().unwrap();
    assert_eq!((big.path.as_slice(), big.size), (&b"big"[..], BIG));
    assert_eq!(big.pax_value(b"size"), Some(BIG.to_string().as_bytes()));
    let small = r.next_entry().unwrap().unwrap();
    assert_eq!(small.path, b"small");
    let mut data = Vec::new();
    r.data().read_to_end(&mut data).unwrap();
    assert_eq!(data, b"after the big one");
    assert!(r.next_entry().unwrap().is_none());
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(path, name, &mut buf[..])
        .ok()
        .map(|n| buf[..n].to_vec())
}

/// A tree with most things a layer can hold.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/ssl")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("var/empty")).unwrap();
    fs::write(root.join("etc/hostname"), b"box\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("usr/bin/tool"), vec![0x7f; 70_000]).unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(root.join("usr/bin/g"), b"g").unwrap();
    fs::set_permissions(root.join("usr/bin/g"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(root.join("var/empty"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("etc/ssl"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    symlink("/etc/passwd", root.join("etc/abs-link")).unwrap();
    symlink("../usr/bin", root.join("etc/rel-link")).unwrap();
    symlink("dangling/target", root.join("etc/dangling")).unwrap();
    fs::write(root.join("etc/ünïcödé name"), b"u").unwrap();
    let long = root.join("usr").join("l".repeat(180));
    fs::write(&long, b"long").unwrap();
    set_xattr(&root.join("etc/hostname"), "user.origin", b"test\x00binary");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("var/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("var/null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            root.join("etc/hostname"),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1001)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
    // Set modes again (umask) and times last, deepest first.
    fs::set_permissions(root.join("var/fifo"), fs::Permissions::from_mode(0o640)).unwrap();
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        all.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_650_000_000 + i as i64);
    }
}

#[test]
fn round_trip_through_extract_layer_and_gnu_tar() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let tar = tar_of(src.path(), TarOptions::default());
    let expected = listing(src.path(), true);

    let ours = Sandbox::new();
    extract_layer(&tar[..], &ours.root, &ExtractOptions::default()).unwrap();
    assert_eq!(
        listing(&ours.root, true),
        expected,
        "extract_layer differs from the source"
    );

    let gnu = tempfile::tempdir().unwrap();
    let mut args = vec!["-x", "-f", "-", "-C"];
    let dest = gnu.path().display().to_string();
    args.push(&dest);
    args.extend(["--xattrs", "--xattrs-include=*", "--numeric-owner"]);
    if is_root() {
        args.push("--same-owner");
    }
    args.push("-p");
    let (ok, _, err) = gnu_tar(&args, &tar);
    assert!(ok, "GNU tar: {err}");
    assert_eq!(
        listing(gnu.path(), true),
        expected,
        "GNU tar differs from the source"
    );

    // Hard links share an inode, xattrs survived.
    let a = fs::metadata(ours.path("usr/bin/tool")).unwrap();
    let b = fs::metadata(ours.path("usr/bin/tool-alias")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        get_xattr(&ours.path("etc/hostname"), "user.origin"),
        Some(b"test\x00binary".to_vec())
    );
    assert_eq!(
        get_xattr(&gnu.path().join("etc/hostname"), "user.origin"),
        Some(b"test\x00binary".to_vec())
    );

    // GNU tar's listing of our archive and our reader agree on names, types and sizes.
    let (ok, out, _) = gnu_tar(&["-tvf", "-", "--quoting-style=literal"], &tar);
    assert!(ok);
    let gnu_names: Vec<String> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f[5..].join(" ");
            let name = name
                .split(" -> ")
                .next()
                .unwrap()
                .split(" link to ")
                .next()
                .unwrap()
                .to_string();
            format!("{} {} {}", &f[0][..1], f[2], name)
        })
        .collect();
    let our_names: Vec<String> = entries(&tar)
        .iter()
        .map(|e| {
            let t = match e.kind {
                EntryKind::Directory => "d",
                EntryKind::Symlink => "l",
                EntryKind::HardLink => "h",
                EntryKind::CharDevice => "c",
                EntryKind::BlockDevice => "b",
                EntryKind::Fifo => "p",
                _ => "-",
            };
            let size = if e.kind == EntryKind::CharDevice {
                "1,3".to_string()
            } else {
                e.size.to_string()
            };
            format!("{t} {size} {}", String::from_utf8_lossy(&e.path))
        })
        .collect();
    assert_eq!(our_names, gnu_names);
}

#[test]
fn symlinks_are_never_followed() {
    let src = tempfile::tempdir().unwrap();
    symlink("/etc/passwd", src.path().join("passwd")).unwrap();
    symlink("/etc", src.path().join("etcdir")).unwrap();
    let tar = tar_of(src.path(), TarOptions::default());
    let es = entries(&tar);
    assert_eq!(es.len(), 2);
    assert!(
        es.iter()
            .all(|e| e.kind == EntryKind::Symlink && e.size == 0)
    );
    let passwd = fs::read(Path::new("/etc/passwd")).unwrap();
    assert!(
        !tar.windows(passwd.len().min(32))
            .any(|w| w == &passwd[..passwd.len().min(32)])
    );
}

#[test]
fn whiteout_and_opaque_entries() {
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    t.append_whiteout("/a/b/gone").unwrap();
    t.append_whiteout("top").unwrap();
    t.append_opaque("a/dir/").unwrap();
    t.append_opaque("").unwrap();
    let tar = t.finish().unwrap();
    let names: Vec<Vec<u8>> = entries(&tar).into_iter().map(|e| e.path).collect();
    assert_eq!(
        names,
        [
            &b"a/b/.wh.gone"[..],
            b".wh.top",
            b"a/dir/.wh..wh..opq",
            b".wh..wh..opq"
        ]
    );
}

#[test]
fn names_and_big_ids() {
    let mut t = TarBuilder::new(
        Vec::new(),
        TarOptions {
            names: NameMode::Include,
            ..TarOptions::default()
        },
    );
    let meta = EntryMeta {
        mode: 0o644,
        uid: 5_000_000, // beyond the 7-digit octal field
        gid: 7,
        mtime: 1,
        uname: Some("alice".into()),
        gname: Some("a-group-name-longer-than-thirty-two-bytes".into()),
        xattrs: vec![],
    };
    t.append_file("f", &meta, 0, &b""[..]).unwrap();
    let tar = t.finish().unwrap();
    let e = &entries(&tar)[0];
    assert_eq!((e.uid, e.gid), (5_000_000, 7));
    assert_eq!(e.uname, b"alice");
    assert_eq!(e.gname, b"a-group-name-longer-than-thirty-two-bytes");
    let (ok, out, err) = gnu_tar(&["-tvf", "-"], &tar);
    assert!(ok, "{err}");
    assert!(
        out.contains("alice/a-group-name-longer-than-thirty-two-bytes"),
        "{out}"
    );
}

#[test]
fn layer_writer_digests_and_outside_decoders() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let tar = tar_of(src.path(), TarOptions::default());
    for compression in [
        Compression::None,
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
    ] {
        let mut t = TarBuilder::new(
            LayerWriter::new(Vec::new(), compression).unwrap(),
            TarOptions::default(),
        );
        write_tree(src.path(), "", &mut t).unwrap();
        let (info, blob) = t.finish().unwrap().finish().unwrap();
        assert_eq!(info.digest, Digest::sha256_of(&blob), "{compression:?}");
        assert_eq!(info.size, blob.len() as u64);
        assert_eq!(info.diff_id.0, Digest::sha256_of(&tar), "{compression:?}");
        assert_eq!(info.uncompressed_size, tar.len() as u64);
        assert_eq!(info.media_type, compression.media_type());
        let mut back = Vec::new();
        decompress(&blob[..], compression.layer_compression())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, tar);
        let tools: &[&[&str]] = match compression {
            Compression::Gzip { .. } => &[&["gzip", "-t"], &["pigz", "-t"]],
            Compression::Zstd { .. } => &[&["zstd", "-t", "-q"]],
            Compression::None => &[],
        };
        for tool in tools {
            let (child, mut stdin) = pipe_to(Command::new(tool[0]).args(&tool[1..]));
            stdin.write_all(&blob).unwrap();
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{tool:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Compression::Gzip { .. } = compression {
            // Another independent decoder (CPython's zlib), and a single-member check.
            let (child, mut stdin) = pipe_to(Command::new("python3").args([
                "-c",
                "import sys,zlib,hashlib;d=sys.stdin.buffer.read();o=zlib.decompressobj(31);\
                 t=o.decompress(d)+o.flush();assert o.unused_data==b'',len(o.unused_data);\
                 print(hashlib.sha256(t).hexdigest())",
            ]));
            stdin.write_all(&blob).unwrap();
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                info.diff_id.0.encoded()
            );
        }
    }
}

/// Some MiB of mixed, partly compressible bytes.
fn mixed(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (x >> 60) < 6 {
            out.extend_from_slice(b"lorem ipsum dolor sit amet ");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// About `len` bytes of real executables and libraries: the kind of data where a reused
/// zlib-rs compressor was found to give history-dependent output.
fn real_binaries(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    for dir in [
        "/usr/bin",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib",
        "/usr/sbin",
    ] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if out.len() >= len {
                return out;
            }
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
                && let Ok(bytes) = fs::read(&p)
            {
                out.extend_from_slice(&bytes[..bytes.len().min(len - out.len())]);
            }
        }
    }
    out
}

#[test]
fn compressed_bytes_do_not_depend_on_worker_count() {
    let mut data = real_binaries(40 << 20);
    data.extend(mixed(8 << 20));
    for compression in [
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
        Compression::Zstd { level: -1 },
    ] {
        let mut outputs = Vec::new();
        for workers in [1, 2, 4, 2] {
            let mut w = LayerWriter::with_workers(Vec::new(), compression, workers).unwrap();
            for chunk in data.chunks(100_003) {
                w.write_all(chunk).unwrap();
            }
            let (info, blob) = w.finish().unwrap();
            assert_eq!(info.diff_id.0, Digest::sha256_of(&data));
            outputs.push((workers, blob));
        }
        for (workers, blob) in &outputs[1..] {
            assert!(
                blob == &outputs[0].1,
                "{compression:?}: 1 vs {workers} workers"
            );
        }
        let mut back = Vec::new();
        decompress(&outputs[0].1[..], compression.layer_compression())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
    }
}

#[test]
fn overlay_upper_dir_becomes_a_layer() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lower = work.path().join("lower");
    let upper = work.path().join("upper");
    let wd = work.path().join("work");
    let merged = work.path().join("merged");
    for d in [&lower, &upper, &wd, &merged] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(lower.join("etc/conf.d")).unwrap();
    fs::write(lower.join("etc/conf.d/a"), b"a").unwrap();
    fs::write(lower.join("etc/conf.d/b"), b"b").unwrap();
    fs::write(lower.join("etc/keep"), b"keep").unwrap();
    fs::write(lower.join("etc/gone"), b"gone").unwrap();
    fs::write(lower.join("etc/modify"), b"old").unwrap();
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off",
            lower.display(),
            upper.display(),
            wd.display()
        ))
        .arg(&merged)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("skipped: overlay mount not available");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        fs::remove_file(merged.join("etc/gone")).unwrap();
        fs::write(merged.join("etc/modify"), b"new").unwrap();
        fs::remove_dir_all(merged.join("etc/conf.d")).unwrap();
        fs::create_dir(merged.join("etc/conf.d")).unwrap(); // opaque now
        fs::write(merged.join("etc/conf.d/c"), b"c").unwrap();
        fs::write(merged.join("new"), b"new").unwrap();
        listing(&merged, false)
    });
    let _ = Command::new("umount").arg(&merged).status();
    let merged_view = result.unwrap();
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    write_overlay_diff(&upper, &mut t).unwrap();
    let layer = t.finish().unwrap();
    let names: Vec<String> = entries(&layer)
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
    assert!(
        names.contains(&"etc/conf.d/.wh..wh..opq".to_string()),
        "{names:?}"
    );
    // Lower + diff, applied, is what the overlay showed.
    let applied = tempfile::tempdir().unwrap();
    let base = tar_of(&lower, TarOptions::default());
    extract_layer(&base[..], applied.path(), &ExtractOptions::default()).unwrap();
    extract_layer(&layer[..], applied.path(), &layer_options()).unwrap();
    assert_eq!(listing(applied.path(), false), merged_view);
}

#[test]
fn devices_round_trip_as_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    t.append_device(
        "dev/sda",
        &EntryMeta::with_mode(0o660),
        strata_archive::DeviceKind::Block,
        8,
        0,
    )
    .unwrap();
    t.append_device(
        "dev/tty",
        &EntryMeta::with_mode(0o666),
        strata_archive::DeviceKind::Char,
        5,
        0,
    )
    .unwrap();
    t.append_fifo("dev/p", &EntryMeta::with_mode(0o600))
        .unwrap();
    let tar = t.finish().unwrap();
    let sb = Sandbox::new();
    extract_layer(&tar[..], &sb.root, &ExtractOptions::default()).unwrap();
    let l = listing(&sb.root, false);
    assert!(l.contains(&"dev/sda b 660 0:0 0 8:0".to_string()), "{l:?}");
    assert!(l.contains(&"dev/tty c 666 0:0 0 5:0".to_string()), "{l:?}");
    assert!(l.contains(&"dev/p p 600 0:0 0 ".to_string()), "{l:?}");
}

#[test]
fn directories_and_prefixes() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"f").unwrap();
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    t.append_dir("/", &EntryMeta::with_mode(0o755)).unwrap();
    write_tree(src.path(), "/app/", &mut t).unwrap();
    let tar = t.finish().unwrap();
    let names: Vec<Vec<u8>> = entries(&tar).into_iter().map(|e| e.path).collect();
    assert_eq!(names, [&b"./"[..], b"app/", b"app/f"]);
    // A layer that would climb is never written.
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    assert!(write_tree(src.path(), "../x", &mut t).is_err());
}

#[test]
fn file_data_not_matching_its_header_size_is_an_error_naming_the_file() {
    let meta = EntryMeta::with_mode(0o644);
    // A reader shorter than the announced size (the file shrank).
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    let err = t
        .append_file("dir/short", &meta, 10, &b"abc"[..])
        .unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("dir/short") && text.contains("shrank") && text.contains("3 of 10"),
        "{text}"
    );
    // A writer reporting more than the announced size (the file grew).
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    let err = t
        .append_file_with("dir/long", &meta, 2, |w| {
            w.write_all(b"abcd")?;
            Ok(4)
        })
        .unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("dir/long") && text.contains("grew") && text.contains("4 of 2"),
        "{text}"
    );
    // The exact size is accepted and reads back.
    let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
    t.append_file_with("dir/exact", &meta, 3, |w| {
        w.write_all(b"xyz")?;
        Ok(3)
    })
    .unwrap();
    let tar = t.finish().unwrap();
    let listed: Vec<(Vec<u8>, u64)> = entries(&tar)
        .into_iter()
        .map(|e| (e.path, e.size))
        .collect();
    assert_eq!(listed, [(b"dir/exact".to_vec(), 3)]);
}
