//! Decoders for ADD of local archives: formats produced by the real tools, detected by
//! magic, also when the source hands out bytes one at a time.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use strata_archive::{DetectedFormat, ParallelGzEncoder, decompress_detect};

fn tool(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} is installed (scripts/install-deps.sh): {e}", args[0]));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "{args:?}");
    out.stdout
}

/// A source that returns one byte per read.
struct Trickle<R>(R);
impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn decodes_what_the_real_tools_write() {
    let data: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let cases = [
        (DetectedFormat::Gzip, tool(&["gzip", "-c"], &data)),
        (
            DetectedFormat::Gzip,
            tool(&["pigz", "-c", "-p", "2"], &data),
        ),
        (DetectedFormat::Zstd, tool(&["zstd", "-c", "-q"], &data)),
        (DetectedFormat::Xz, tool(&["xz", "-c"], &data)),
        (DetectedFormat::Bzip2, tool(&["bzip2", "-c"], &data)),
        (DetectedFormat::Plain, data.clone()),
    ];
    for (format, blob) in cases {
        for trickle in [false, true] {
            let source: Box<dyn Read + Send> = if trickle {
                Box::new(Trickle(io::Cursor::new(blob.clone())))
            } else {
                Box::new(io::Cursor::new(blob.clone()))
            };
            let (found, mut reader) = decompress_detect(source).unwrap();
            assert_eq!(found, format);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{format:?} trickle={trickle}");
        }
    }
    // Concatenated streams (xz, bzip2 multi-stream) decode fully too.
    let mut two = tool(&["xz", "-c"], b"one ");
    two.extend(tool(&["xz", "-c"], b"two"));
    let mut out = Vec::new();
    decompress_detect(io::Cursor::new(two))
        .unwrap()
        .1
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, b"one two");
    // Tiny inputs shorter than any magic are plain.
    let (format, mut r) = decompress_detect(&b"ab"[..]).unwrap();
    assert_eq!(format, DetectedFormat::Plain);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"ab");
}

#[test]
fn xz_dictionary_beyond_the_memory_cap_is_refused() {
    // xz --lzma2=dict=1536MiB declares a 1.5 GiB dictionary; decoding needs that much.
    let blob = tool(&["xz", "-c", "--lzma2=preset=0,dict=1536MiB"], b"tiny");
    let (_, mut r) = decompress_detect(io::Cursor::new(blob)).unwrap();
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("mem"), "{err}");
}

#[test]
fn parallel_gzip_is_one_member_gzip_accepts() {
    let data = vec![b'z'; 3 << 20];
    let mut enc = ParallelGzEncoder::with_workers(Vec::new(), 6, 2);
    enc.write_all(&data).unwrap();
    let gz = enc.finish().unwrap();
    // `gzip -l` reports the uncompressed size from the single trailer.
    let listing = String::from_utf8(tool(&["gzip", "-l"], &gz)).unwrap();
    assert!(listing.contains(&(3 << 20).to_string()), "{listing}");
    assert_eq!(tool(&["gzip", "-dc"], &gz), data);
}
