//! The Windows layer layout, entry by entry.
//!
//! Mirrors BuildKit's `util/winlayers/differ.go` (`makeWindowsLayer`, `prepareWinHeader`:
//! `Hives` then `Files` first, every path under `Files/`, `MSWINDOWS.fileattr` 16 for
//! directories and 32 for regular files, file type bits `0o40000` / `0o100000` in the mode,
//! hard link targets prefixed with `Files/`) with go-containerregistry's `mutate.Windows`
//! security descriptor (`userOwnerAndGroupSID`, `O:BUG:BU`) on every entry under `Files/`,
//! and without BuildKit's `LIBARCHIVE.creationtime` (hcsshim's `backuptar` falls back to the
//! mtime; leaving it out keeps layers reproducible). Symlink targets are not prefixed
//! (hcsshim turns them into reparse points). Ownership is 0:0 and no `SCHILY.xattr.*`.

mod common;

use common::gnu_tar;
use strata_archive::{
    DeviceKind, EntryKind, EntryMeta, LayerLayout, OwnerOverride, TarBuilder, TarOptions,
    TarReader, WINDOWS_RAWSD, write_tree,
};

const GGCR_USER_OWNER_AND_GROUP_SID: &str =
    "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==";

fn windows() -> TarOptions {
    TarOptions {
        layout: LayerLayout::Windows,
        // Ignored for Windows layers: always 0:0.
        owner: OwnerOverride::Set {
            uid: 1000,
            gid: 1000,
        },
        ..TarOptions::default()
    }
}

type Row = (
    String,
    EntryKind,
    u32,
    Vec<(String, String)>,
    Option<String>,
    u64,
);

fn rows(tar: &[u8]) -> Vec<Row> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        assert_eq!((e.uid, e.gid), (0, 0), "{:?}", e.path);
        assert!(e.uname.is_empty() && e.gname.is_empty());
        let pax = e
            .pax
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect();
        out.push((
            String::from_utf8(e.path).unwrap(),
            e.kind,
            e.mode,
            pax,
            e.link_target.map(|l| String::from_utf8(l).unwrap()),
            e.size,
        ));
    }
    out
}

fn rec(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn windows_layer_entry_by_entry() {
    assert_eq!(WINDOWS_RAWSD, GGCR_USER_OWNER_AND_GROUP_SID);
    let sd = WINDOWS_RAWSD;
    let mut t = TarBuilder::new(Vec::new(), windows());
    let mut meta = EntryMeta::with_mode(0o755);
    meta.uid = 42;
    meta.mtime = 1_700_000_000;
    meta.xattrs = vec![("user.x".into(), b"dropped".to_vec())];
    t.append_dir("/app/", &meta).unwrap();
    t.append_file("app/run.exe", &meta, 2, &b"MZ"[..]).unwrap();
    t.append_symlink("app/link", &EntryMeta::with_mode(0o777), "run.exe")
        .unwrap();
    t.append_hardlink("app/hard", &meta, "/app/run.exe")
        .unwrap();
    t.append_whiteout("old.txt").unwrap();
    let long = format!("app/{}.txt", "n".repeat(120));
    t.append_file(&long, &EntryMeta::with_mode(0o644), 0, &b""[..])
        .unwrap();
    // Windows cannot hold devices or FIFOs.
    assert!(
        t.append_device("dev/null", &meta, DeviceKind::Char, 1, 3)
            .is_err()
    );
    assert!(t.append_fifo("p", &meta).is_err());
    let tar = t.finish().unwrap();

    let dir_attrs = |with_sd: bool| {
        let mut v = vec![("MSWINDOWS.fileattr", "16")];
        if with_sd {
            v.push(("MSWINDOWS.rawsd", sd));
        }
        rec(&v)
    };
    let file_attrs = rec(&[("MSWINDOWS.fileattr", "32"), ("MSWINDOWS.rawsd", sd)]);
    let long_name = format!("Files/{long}");
    let mut long_records = file_attrs.clone();
    long_records.push(("path".into(), long_name.clone()));
    let expected: Vec<Row> = vec![
        (
            "Hives".into(),
            EntryKind::Directory,
            0o40555,
            dir_attrs(false),
            None,
            0,
        ),
        (
            "Files".into(),
            EntryKind::Directory,
            0o40555,
            dir_attrs(false),
            None,
            0,
        ),
        (
            "Files/app".into(),
            EntryKind::Directory,
            0o40755,
            dir_attrs(true),
            None,
            0,
        ),
        (
            "Files/app/run.exe".into(),
            EntryKind::Regular,
            0o100755,
            file_attrs.clone(),
            None,
            2,
        ),
        (
            "Files/app/link".into(),
            EntryKind::Symlink,
            0o777,
            rec(&[("MSWINDOWS.rawsd", sd)]),
            Some("run.exe".into()),
            0,
        ),
        (
            "Files/app/hard".into(),
            EntryKind::HardLink,
            0o755,
            rec(&[("MSWINDOWS.rawsd", sd)]),
            Some("Files/app/run.exe".into()),
            0,
        ),
        (
            "Files/.wh.old.txt".into(),
            EntryKind::Regular,
            0o100644,
            file_attrs.clone(),
            None,
            0,
        ),
        (
            long_name,
            EntryKind::Regular,
            0o100644,
            long_records,
            None,
            0,
        ),
    ];
    assert_eq!(rows(&tar), expected);

    // GNU tar reads it; every entry but the two roots is under Files/ (ggcr's own check).
    let (ok, out, err) = gnu_tar(&["-tf", "-"], &tar);
    assert!(ok, "{err}");
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(&names[..2], ["Hives", "Files"]);
    assert!(
        names[2..].iter().all(|n| n.starts_with("Files/")),
        "{names:?}"
    );
}

#[test]
fn windows_tree_and_empty_layer() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("bin")).unwrap();
    std::fs::write(src.path().join("bin/app.exe"), b"MZ..").unwrap();
    let mut t = TarBuilder::new(Vec::new(), windows());
    write_tree(src.path(), "", &mut t).unwrap();
    let tar = t.finish().unwrap();
    let names: Vec<String> = rows(&tar).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["Hives", "Files", "Files/bin", "Files/bin/app.exe"]);
    // Even an empty Windows layer has Hives and Files.
    let tar = TarBuilder::new(Vec::new(), windows()).finish().unwrap();
    let names: Vec<String> = rows(&tar).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["Hives", "Files"]);
}
