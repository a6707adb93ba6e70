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

/// Segments: what one stream captures, another takes as is, with the same result as
/// compressing it there; `gzip -t` and a decoder accept both.
mod segments {
    use std::sync::{Arc, Mutex};

    use strata_archive::{GZIP_BLOCK_BYTES, ParallelGzEncoder, SegmentCapture};

    #[derive(Default)]
    struct Kept {
        pieces: Vec<(u64, Vec<u8>)>,
        complete: Vec<(u64, u32, u64)>,
    }
    struct Capture(Arc<Mutex<Kept>>);
    impl SegmentCapture for Capture {
        fn piece(&mut self, id: u64, deflate: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().pieces.push((id, deflate.to_vec()));
            Ok(())
        }
        fn complete(&mut self, id: u64, crc: u32, len: u64) -> std::io::Result<()> {
            self.0.lock().unwrap().complete.push((id, crc, len));
            Ok(())
        }
    }

    fn data(seed: u8, len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like runs with a changing counter.
        (0..len)
            .map(|i| b"abcdefghij klmnop\n"[(i / 7 + seed as usize) % 18] ^ ((i / 4096) as u8 & 3))
            .collect()
    }

    /// prefix, segment(file), suffix, with `file` compressed here (capturing as id 7).
    fn compressed(
        workers: usize,
        prefix: &[u8],
        file: &[u8],
        suffix: &[u8],
        kept: &Arc<Mutex<Kept>>,
    ) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::with_workers(Vec::new(), 1, workers);
        enc.set_capture(Box::new(Capture(kept.clone())));
        std::io::Write::write_all(&mut enc, prefix).unwrap();
        enc.begin_segment(Some(7)).unwrap();
        std::io::Write::write_all(&mut enc, file).unwrap();
        enc.end_segment().unwrap();
        std::io::Write::write_all(&mut enc, suffix).unwrap();
        enc.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
        out
    }

    #[test]
    fn a_captured_segment_is_the_same_bytes_in_another_stream() {
        // Sizes around the block size: inside one block, exactly two blocks, more.
        for len in [20_000, 2 * GZIP_BLOCK_BYTES, 2 * GZIP_BLOCK_BYTES + 12_345] {
            let file = data(3, len);
            let (a_pre, a_suf) = (data(1, 5000), data(2, 700));
            let (b_pre, b_suf) = (data(9, GZIP_BLOCK_BYTES + 77), data(5, 100));
            let kept_a = Arc::new(Mutex::new(Kept::default()));
            let a = compressed(3, &a_pre, &file, &a_suf, &kept_a);
            assert_eq!(gunzip(&a), [&a_pre[..], &file, &a_suf].concat());
            let kept_b = Arc::new(Mutex::new(Kept::default()));
            let b = compressed(1, &b_pre, &file, &b_suf, &kept_b);
            assert_eq!(gunzip(&b), [&b_pre[..], &file, &b_suf].concat());

            let (ka, kb) = (kept_a.lock().unwrap(), kept_b.lock().unwrap());
            assert!(ka.pieces.iter().all(|(id, _)| *id == 7));
            let seg_a: Vec<u8> = ka.pieces.iter().flat_map(|(_, p)| p.clone()).collect();
            let seg_b: Vec<u8> = kb.pieces.iter().flat_map(|(_, p)| p.clone()).collect();
            assert_eq!(
                seg_a, seg_b,
                "segment of {len} bytes differs between streams"
            );
            let crc = crc32fast::hash(&file);
            assert_eq!(ka.complete, vec![(7, crc, len as u64)]);

            // Stream B again, taking the segment A captured instead of compressing it.
            let mut enc = ParallelGzEncoder::with_workers(Vec::new(), 1, 2);
            std::io::Write::write_all(&mut enc, &b_pre).unwrap();
            enc.begin_segment(None).unwrap();
            for (i, chunk) in seg_a.chunks(100_000).enumerate() {
                let (c, l) = if i == 0 { (crc, len as u64) } else { (0, 0) };
                enc.push_precompressed(chunk.to_vec(), c, l).unwrap();
            }
            enc.end_segment().unwrap();
            std::io::Write::write_all(&mut enc, &b_suf).unwrap();
            let pushed = enc.finish().unwrap();
            assert_eq!(
                pushed, b,
                "pushed segment gives other bytes than compressing it"
            );
            let gz = super::tool(&["gzip", "-dc"], &pushed);
            assert_eq!(gz, [&b_pre[..], &file, &b_suf].concat());
        }
    }

    #[test]
    fn precompressed_bytes_outside_a_segment_are_refused() {
        let mut enc = ParallelGzEncoder::with_workers(Vec::new(), 1, 2);
        assert!(enc.push_precompressed(vec![0], 0, 0).is_err());
        enc.begin_segment(None).unwrap();
        std::io::Write::write_all(&mut enc, b"x").unwrap();
        assert!(enc.push_precompressed(vec![0], 0, 0).is_err());
        assert!(enc.begin_segment(None).is_err());
    }
}
