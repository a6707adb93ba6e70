//! ADD: local archives in every compression are unpacked (safely), other files are copied;
//! http(s) URLs are fetched with `--checksum` verified before anything is committed,
//! `Last-Modified` as mtime, redirects to other schemes refused (RELIABILITY B8).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use strata_build::BuildError;
use strata_spec::Digest;

fn archive_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, uid) in [
        ("top/", None, 0u64),
        ("top/file", Some(&b"unpacked\n"[..]), 123),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_500_000_000);
        match data {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o640);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, path, d).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Compress `input` next to itself with `tool` (a missing or failing tool fails the test:
/// skipping would leave that compression untested).
fn compress_with(tool: &str, input: &Path) {
    have(tool);
    run(tool, &["-k", "-f", "-q", input.to_str().unwrap()]);
}

#[tokio::test]
async fn local_archives_are_unpacked_in_every_compression() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let tar_path = c.file("app.tar", &archive_tar());
    c.file("app.tar.gz", &gzip(&archive_tar()));
    let mut names = vec!["app.tar".to_string(), "app.tar.gz".to_string()];
    for (tool, ext) in [("xz", "xz"), ("bzip2", "bz2"), ("zstd", "zst")] {
        compress_with(tool, &tar_path);
        set_mtime(&c.ctx().join(format!("app.tar.{ext}")), 1_650_000_000);
        names.push(format!("app.tar.{ext}"));
    }
    c.file("notes.txt.gz", &gzip(b"just text\n"));
    let mut cf = String::from("FROM test/busybox:amd64\n");
    for (i, n) in names.iter().enumerate() {
        cf.push_str(&format!("ADD {n} /x{i}/\n"));
    }
    cf.push_str("ADD notes.txt.gz /notes/\nADD --unpack=false app.tar.gz /packed/\n");
    let (result, _) = run_build(&c.options(&cf), &r).await.unwrap();
    for (i, name) in names.iter().enumerate() {
        let e = layer_entries(&result, 0, 1 + i as isize);
        let f = find(&e, &format!("x{i}/top/file"));
        assert_eq!(f.data, b"unpacked\n", "{name}");
        assert_eq!(
            (f.uid, f.mode, f.mtime),
            (123, 0o640, 1_500_000_000),
            "archive metadata kept"
        );
    }
    // One blob for the same unpacked content, whatever the compression... of the same dest.
    let notes = layer_entries(&result, 0, -2);
    assert_eq!(
        paths(&notes),
        ["notes/", "notes/notes.txt.gz"],
        "a compressed non-tar is copied"
    );
    let packed = layer_entries(&result, 0, -1);
    assert_eq!(
        find(&packed, "packed/app.tar.gz").data,
        gzip(&archive_tar())
    );
}

#[tokio::test]
async fn hostile_archives_stay_inside() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let probe = c.dir.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    // Escape by `..`: refused, naming the entry.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    {
        let name = b"../../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
    }
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    c.file("dotdot.tar", &b.into_inner().unwrap());
    let err = run_build(
        &c.options("FROM test/busybox:amd64\nADD dotdot.tar /x/\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("evil"), "{err}");
    // Symlink to the probe, then a file through it: lands inside the unpacked tree.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "l", probe.to_str().unwrap()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "l/pwn", &b"pwn"[..]).unwrap();
    c.file("link.tar", &b.into_inner().unwrap());
    let result = run_build(
        &c.options("FROM test/busybox:amd64\nADD link.tar /y/\n"),
        &r,
    )
    .await;
    assert!(
        std::fs::read_dir(&probe).unwrap().next().is_none(),
        "nothing written outside"
    );
    if let Ok((result, _)) = result {
        let e = layer_entries(&result, 0, -1);
        assert!(
            e.iter()
                .all(|e| e.data != b"pwn" || e.path.starts_with("y/")),
            "{:?}",
            paths(&e)
        );
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 with scripted routes; counts requests.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn serve() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).is_err() || l == "\r\n" || l.is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = match path.as_str() {
                "/files/tool.txt" => (
                    "200 OK",
                    vec!["Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT".into()],
                    b"downloaded tool\n".to_vec(),
                ),
                "/redirect-file" => (
                    "302 Found",
                    vec!["Location: file:///etc/passwd".into()],
                    Vec::new(),
                ),
                "/redirect-ok" => (
                    "302 Found",
                    vec!["Location: /files/tool.txt".into()],
                    Vec::new(),
                ),
                _ => ("404 Not Found", vec![], b"nope".to_vec()),
            };
            let mut resp = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for h in headers {
                resp.push_str(&h);
                resp.push_str("\r\n");
            }
            resp.push_str("\r\n");
            let _ = stream.write_all(resp.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    Server { port, hits }
}

fn blobs(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn b8_urls_checksums_redirects() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let s = serve();
    let base = format!("http://127.0.0.1:{}", s.port);
    let good = Digest::sha256_of(b"downloaded tool\n");
    let cf = format!(
        "FROM scratch\nADD {base}/files/tool.txt /dl/\nADD --checksum={good} {base}/redirect-ok /checked\n"
    );
    let (result, _) = run_build(&c.options(&cf), &r).await.unwrap();
    let e = layer_entries(&result, 0, 0);
    let f = find(&e, "dl/tool.txt");
    assert_eq!(
        (f.data.as_slice(), f.mode, f.mtime),
        (&b"downloaded tool\n"[..], 0o600, 1_445_412_480)
    );
    assert_eq!(
        find(&layer_entries(&result, 0, 1), "checked").data,
        b"downloaded tool\n"
    );

    // With --checksum a cached step never contacts the server.
    let only_checked = format!("FROM scratch\nADD --checksum={good} {base}/redirect-ok /checked\n");
    run_build(&c.options(&only_checked), &r).await.unwrap();
    let before = s.hits.load(Ordering::SeqCst);
    let (_, events) = run_build(&c.options(&only_checked), &r).await.unwrap();
    assert_eq!(events.step_counts(), (0, 1));
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        before,
        "no request for a cached checksummed ADD"
    );

    // A wrong checksum fails before anything is committed.
    let bad = Digest::sha256_of(b"something else");
    let blobs_before = blobs(&c.out());
    let err = run_build(
        &c.options(&format!(
            "FROM scratch\nADD --checksum={bad} {base}/files/tool.txt /x\n"
        )),
        &r,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&good.to_string()), "{err}");
    assert_eq!(
        blobs(&c.out()),
        blobs_before,
        "no blob from the unverified download"
    );

    for (path, want) in [("/redirect-file", "refused"), ("/missing", "404")] {
        let err = run_build(
            &c.options(&format!("FROM scratch\nADD {base}{path} /x\n")),
            &r,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BuildError::Fetch { .. }), "{err}");
        assert!(
            err.to_string().contains(want) && err.to_string().contains(":2"),
            "{err}"
        );
    }
    let err = run_build(
        &c.options("FROM scratch\nADD git@github.com:a/b.git /src\n"),
        &r,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("git"), "{err}");
}
