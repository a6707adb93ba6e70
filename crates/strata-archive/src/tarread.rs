//! A streaming tar reader with bounded metadata and one reading of every ambiguous case.
//!
//! The `tar` crate reads PAX and GNU long-name bodies into memory without a limit (a 1 GiB
//! PAX record is a 1 GiB allocation) and accepts archives that other readers parse
//! differently. This reader frames the archive itself and uses [`tar::Header`] only to
//! decode fields. Rules, chosen so that every tool that reads a layer sees the same entries
//! (RELIABILITY A17, A18) — when readers disagree, the archive is refused:
//!
//! - a PAX `size` overrides the header size (as GNU tar, Go and the `tar` crate do); a PAX
//!   header's own size is its header size, never a PAX value;
//! - entries that carry no data (hard links, symlinks, devices, FIFOs, directories) must
//!   declare size 0: Go's `archive/tar` (containerd, ggcr) ignores their size field while
//!   GNU tar and the `tar` crate skip that many bytes, so data there could smuggle entries;
//! - two PAX headers, or two GNU long names, for one entry; a PAX `path` together with a
//!   GNU long name; a global PAX header setting `path`, `linkpath` or `size`; malformed PAX
//!   records or numbers: all errors;
//! - PAX bodies are limited to [`MAX_PAX_BYTES`], GNU long names to [`MAX_LONG_NAME_BYTES`];
//! - the archive ends at two zero blocks or at end of stream on a block boundary; a single
//!   zero block followed by a header is an error (entries hidden behind it);
//! - header checksums are verified (unsigned or signed sums, as GNU tar accepts);
//! - GNU sparse files (old `S` type or PAX `GNU.sparse.*`) and multi-volume entries are
//!   refused: extracting them naively would write the sparse map as file content.
//!
//! Bytes after the end of the archive are not entries; [`TarReader::finish`] reads them to
//! the end (so digests computed below cover the whole stream) and reports them.

use std::io::{self, Read};

use crate::error::{ArchiveError, Result};

/// Largest PAX extended header body accepted (xattrs are at most 64 KiB each on Linux; a
/// real header is a few hundred bytes).
pub const MAX_PAX_BYTES: u64 = 1 << 20;
/// Largest GNU long name or long link body accepted (Linux paths are at most 4 KiB).
pub const MAX_LONG_NAME_BYTES: u64 = 64 << 10;
const BLOCK: usize = 512;
/// Scratch buffer for skipping data.
const SKIP_BUFFER_BYTES: usize = 64 * 1024;

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// `0`, NUL (old tars) or `7` (contiguous file).
    Regular,
    Directory,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// Any other type flag; its data (size bytes) is skipped by readers.
    Other(u8),
}

impl EntryKind {
    /// Types that never carry data.
    pub fn is_header_only(self) -> bool {
        matches!(
            self,
            EntryKind::Directory
                | EntryKind::Symlink
                | EntryKind::HardLink
                | EntryKind::CharDevice
                | EntryKind::BlockDevice
                | EntryKind::Fifo
        )
    }
    /// The type flag byte this kind is written with.
    pub fn type_flag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
            EntryKind::Other(b) => b,
        }
    }
}

/// One entry's header, with PAX and GNU extensions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The name as stored (not normalised; may start with `./` or `/`).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Bytes of data that follow (0 for header-only kinds).
    pub size: u64,
    /// Permission bits and, for some writers (Windows layers), file type bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (PAX fractions dropped, negative times read as 0).
    pub mtime: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// Target of a symlink or hard link.
    pub link_target: Option<Vec<u8>>,
    /// Major and minor number of a device.
    pub device: Option<(u32, u32)>,
    /// `SCHILY.xattr.*` records: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every PAX record of the entry in archive order (including the ones decoded above).
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the entry's first header (extension headers included) in the stream.
    pub offset: u64,
}

impl TarEntry {
    /// The value of a PAX record of this entry.
    pub fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        self.pax
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// What followed the end of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailing {
    /// Bytes after the end-of-archive marker (zero padding included).
    pub bytes: u64,
    /// Whether any of them is not zero.
    pub non_zero: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Entries,
    End,
}

/// Streaming tar reader (see the module docs for the rules it enforces).
pub struct TarReader<R> {
    inner: R,
    position: u64,
    remaining: u64,
    padding: u64,
    max_bytes: Option<u64>,
    state: State,
    scratch: Vec<u8>,
}

fn malformed(offset: u64, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Tar {
        offset,
        reason: reason.into(),
    }
}

fn padding_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Parse a PAX body into records (strict: `"<len> <key>=<value>\n"`, len counts itself).
fn parse_pax(mut data: &[u8], offset: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let bad = |why: &str| malformed(offset, format!("malformed PAX record: {why}"));
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let digits = &data[..space];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("length is not a decimal number"));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("length out of range"))?;
        if len <= space + 1 || len > data.len() {
            return Err(bad("length does not fit the header"));
        }
        let record = &data[space + 1..len];
        let Some(record) = record.strip_suffix(b"\n") else {
            return Err(bad("record does not end with a newline"));
        };
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no '='"))?;
        if eq == 0 {
            return Err(bad("empty key"));
        }
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn parse_decimal(value: &[u8], key: &str, offset: u64) -> Result<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(malformed(
            offset,
            format!(
                "PAX {key} is not a decimal number: {:?}",
                String::from_utf8_lossy(value)
            ),
        ));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(offset, format!("PAX {key} out of range")))
}

/// PAX times: `[-]seconds[.fraction]`. Negative times read as 0 (the epoch).
fn parse_time(value: &[u8], offset: u64) -> Result<u64> {
    let (negative, rest) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(malformed(offset, "PAX mtime is not a number"));
    }
    let secs = parse_decimal(secs, "mtime", offset)?;
    Ok(if negative { 0 } else { secs })
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, None)
    }

    /// A reader that fails with [`ArchiveError::Limit`] once more than `max_bytes` bytes
    /// were read from `inner` (decompression bombs, RELIABILITY A19).
    pub fn with_limit(inner: R, max_bytes: Option<u64>) -> Self {
        TarReader {
            inner,
            position: 0,
            remaining: 0,
            padding: 0,
            max_bytes,
            state: State::Entries,
            scratch: Vec::new(),
        }
    }

    /// Bytes read from the underlying stream so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.position += n as u64;
                    if let Some(limit) = self.max_bytes
                        && self.position > limit
                    {
                        return Err(ArchiveError::Limit {
                            what: "uncompressed layer",
                            limit,
                        });
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::from_io("reading layer tar", e)),
            }
        }
    }

    /// Fill `buf` completely; `Ok(false)` on a clean end of stream before the first byte.
    fn read_full(&mut self, buf: &mut [u8], what: &str) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_inner(&mut buf[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(malformed(
                    self.position,
                    format!("archive truncated in {what}"),
                ));
            }
            filled += n;
        }
        Ok(true)
    }

    fn skip(&mut self, mut count: u64, what: &str) -> Result<()> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; SKIP_BUFFER_BYTES];
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = (|| {
            while count > 0 {
                let want = count.min(scratch.len() as u64) as usize;
                let n = self.read_inner(&mut scratch[..want])?;
                if n == 0 {
                    return Err(malformed(
                        self.position,
                        format!("archive truncated in {what}"),
                    ));
                }
                count -= n as u64;
            }
            Ok(())
        })();
        self.scratch = scratch;
        result
    }

    /// Read an extension header's body (bounded) and its padding.
    fn read_body(&mut self, size: u64, limit: u64, what: &'static str) -> Result<Vec<u8>> {
        if size > limit {
            return Err(ArchiveError::Limit { what, limit });
        }
        let mut body = vec![0u8; size as usize];
        if !self.read_full(&mut body, what)? && size > 0 {
            return Err(malformed(
                self.position,
                format!("archive truncated in {what}"),
            ));
        }
        self.skip(padding_of(size), what)?;
        Ok(body)
    }

    /// The next entry, after skipping what is left of the previous one; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.state == State::End {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(rest, "entry data")?;

        let entry_offset = self.position;
        let mut pax_local: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut block = [0u8; BLOCK];
        loop {
            let offset = self.position;
            let pending = pax_local.is_some() || long_name.is_some() || long_link.is_some();
            if !self.read_full(&mut block, "a header")? {
                if pending {
                    return Err(malformed(offset, "extension header without an entry"));
                }
                self.state = State::End;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                if pending {
                    return Err(malformed(offset, "extension header without an entry"));
                }
                // Second end block, or end of stream, closes the archive; anything else
                // would be entries that some readers stop before and others show.
                let mut second = [0u8; BLOCK];
                if self.read_full(&mut second, "the end-of-archive marker")?
                    && second.iter().any(|&b| b != 0)
                {
                    return Err(malformed(
                        offset,
                        "a single zero block followed by more headers",
                    ));
                }
                self.state = State::End;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            check_checksum(&block, offset)?;
            let flag = block[156];
            let size = numeric(&block[124..136], "size", offset)?;
            match flag {
                b'x' => {
                    if pax_local.is_some() {
                        return Err(malformed(offset, "two PAX headers for one entry"));
                    }
                    let body = self.read_body(size, MAX_PAX_BYTES, "PAX extended header")?;
                    pax_local = Some(parse_pax(&body, offset)?);
                }
                b'g' => {
                    let body = self.read_body(size, MAX_PAX_BYTES, "PAX global header")?;
                    for (key, _) in parse_pax(&body, offset)? {
                        if matches!(key.as_slice(), b"path" | b"linkpath" | b"size")
                            || key.starts_with(b"GNU.sparse.")
                        {
                            return Err(malformed(
                                offset,
                                format!(
                                    "global PAX header sets {:?} (readers disagree on it)",
                                    String::from_utf8_lossy(&key)
                                ),
                            ));
                        }
                    }
                }
                b'L' | b'K' => {
                    let slot = if flag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(malformed(offset, "two GNU long names for one entry"));
                    }
                    let mut body = self.read_body(size, MAX_LONG_NAME_BYTES, "GNU long name")?;
                    if let Some(nul) = body.iter().position(|&b| b == 0) {
                        body.truncate(nul);
                    }
                    let slot = if flag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    *slot = Some(body);
                }
                _ => {
                    let entry = self.build_entry(
                        header,
                        flag,
                        size,
                        entry_offset,
                        offset,
                        pax_local.unwrap_or_default(),
                        long_name,
                        long_link,
                    )?;
                    self.remaining = entry.size;
                    self.padding = padding_of(entry.size);
                    return Ok(Some(entry));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_entry(
        &mut self,
        header: &tar::Header,
        flag: u8,
        header_size: u64,
        entry_offset: u64,
        offset: u64,
        pax: Vec<(Vec<u8>, Vec<u8>)>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<TarEntry> {
        let mut kind = match flag {
            b'0' | 0 | b'7' => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'S' => return Err(malformed(offset, "GNU sparse files are not supported")),
            b'M' | b'V' => {
                return Err(malformed(offset, "multi-volume archives are not supported"));
            }
            other => EntryKind::Other(other),
        };
        let block = header.as_bytes();
        let mode = numeric(&block[100..108], "mode", offset)?;
        let mut entry = TarEntry {
            path: header.path_bytes().into_owned(),
            kind,
            size: header_size,
            mode: u32::try_from(mode).map_err(|_| malformed(offset, "mode out of range"))?,
            uid: numeric(&block[108..116], "uid", offset)?,
            gid: numeric(&block[116..124], "gid", offset)?,
            mtime: numeric(&block[136..148], "mtime", offset)?,
            uname: header
                .username_bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            gname: header
                .groupname_bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            link_target: None,
            device: None,
            xattrs: Vec::new(),
            pax: Vec::new(),
            offset: entry_offset,
        };
        let mut pax_path = None;
        let mut pax_link = None;
        for (key, value) in &pax {
            match key.as_slice() {
                b"path" => pax_path = Some(value.clone()),
                b"linkpath" => pax_link = Some(value.clone()),
                b"size" => entry.size = parse_decimal(value, "size", offset)?,
                b"uid" => entry.uid = parse_decimal(value, "uid", offset)?,
                b"gid" => entry.gid = parse_decimal(value, "gid", offset)?,
                b"mtime" => entry.mtime = parse_time(value, offset)?,
                b"uname" => entry.uname = value.clone(),
                b"gname" => entry.gname = value.clone(),
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(malformed(offset, "GNU sparse files are not supported"));
                }
                k => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        entry.xattrs.push((name.to_vec(), value.clone()));
                    }
                }
            }
        }
        entry.pax = pax;
        match (pax_path, long_name) {
            (Some(_), Some(_)) => {
                return Err(malformed(offset, "both a PAX path and a GNU long name"));
            }
            (Some(p), None) | (None, Some(p)) => entry.path = p,
            (None, None) => {}
        }
        if entry.path.contains(&0) {
            return Err(malformed(offset, "entry name contains NUL"));
        }
        if entry.path.is_empty() {
            return Err(malformed(offset, "entry with an empty name"));
        }
        // Old tars mark directories with a trailing slash on a regular-file type.
        if kind == EntryKind::Regular && entry.path.ends_with(b"/") {
            if entry.size != 0 {
                return Err(malformed(
                    offset,
                    "regular file named like a directory carries data",
                ));
            }
            kind = EntryKind::Directory;
            entry.kind = kind;
        }
        if kind.is_header_only() && entry.size != 0 {
            return Err(ArchiveError::entry(
                &entry.path,
                format!(
                    "a {kind:?} entry declares {} data bytes (tar readers disagree on such entries)",
                    entry.size
                ),
                None,
            ));
        }
        if matches!(kind, EntryKind::Symlink | EntryKind::HardLink) {
            let target = match (pax_link, long_link) {
                (Some(_), Some(_)) => {
                    return Err(malformed(offset, "both a PAX linkpath and a GNU long link"));
                }
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => header
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            };
            if target.contains(&0) {
                return Err(ArchiveError::entry(
                    &entry.path,
                    "link target contains NUL",
                    None,
                ));
            }
            entry.link_target = Some(target);
        }
        if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            let number = |range: std::ops::Range<usize>, what| {
                numeric(&block[range], what, offset).and_then(|n| {
                    u32::try_from(n).map_err(|_| malformed(offset, format!("{what} out of range")))
                })
            };
            entry.device = Some((
                number(329..337, "device major")?,
                number(337..345, "device minor")?,
            ));
        }
        Ok(entry)
    }

    /// Read data of the current entry; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = self.remaining.min(buf.len() as u64) as usize;
        let n = self.read_inner(&mut buf[..want])?;
        if n == 0 {
            return Err(malformed(self.position, "archive truncated in entry data"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The current entry's data as a reader (errors are [`ArchiveError`]s inside
    /// `io::Error`; [`ArchiveError::from_io`] unwraps them).
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { reader: self }
    }

    /// Bytes of the current entry not read yet.
    pub fn data_remaining(&self) -> u64 {
        self.remaining
    }

    /// Read everything after the end of the archive (call after `next_entry` returned
    /// `None`) and return the stream and what followed the end marker.
    pub fn finish(mut self) -> Result<(R, Trailing)> {
        if self.state != State::End {
            while self.next_entry()?.is_some() {}
        }
        let mut trailing = Trailing::default();
        let mut buf = vec![0u8; SKIP_BUFFER_BYTES];
        loop {
            let n = self.read_inner(&mut buf)?;
            if n == 0 {
                break;
            }
            trailing.bytes += n as u64;
            trailing.non_zero |= buf[..n].iter().any(|&b| b != 0);
        }
        Ok((self.inner, trailing))
    }
}

/// A numeric header field: octal (surrounding spaces and NULs ignored, empty = 0, as Go
/// reads it) or GNU base-256 (high bit set; negative values refused).
fn numeric(field: &[u8], what: &str, offset: u64) -> Result<u64> {
    let bad = || malformed(offset, format!("bad {what} field"));
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return Err(bad());
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(bad)?;
        }
        return Ok(value);
    }
    let trimmed: &[u8] = {
        let start = field
            .iter()
            .position(|&b| b != b' ' && b != 0)
            .unwrap_or(field.len());
        let end = field
            .iter()
            .rposition(|&b| b != b' ' && b != 0)
            .map_or(start, |e| e + 1);
        &field[start..end]
    };
    if trimmed.is_empty() {
        return Ok(0);
    }
    if !trimmed.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(bad());
    }
    std::str::from_utf8(trimmed)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 8).ok())
        .ok_or_else(bad)
}

fn check_checksum(block: &[u8; BLOCK], offset: u64) -> Result<()> {
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let stored = std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        .ok_or_else(|| malformed(offset, "header checksum field is not octal"))?;
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    if stored == unsigned || i64::from(stored) == i64::from(signed) {
        Ok(())
    } else {
        Err(malformed(offset, "header checksum mismatch"))
    }
}

/// Reader over the current entry's data.
pub struct EntryData<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf).map_err(ArchiveError::into_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, flag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::new(flag));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        *h.as_bytes()
    }

    fn pax_body(records: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in records {
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while body + len.to_string().len() != len {
                len = body + len.to_string().len();
            }
            out.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
        }
        out
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    fn list(archive: &[u8]) -> Result<Vec<(String, u64)>> {
        let mut r = TarReader::new(archive);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push((String::from_utf8_lossy(&e.path).into_owned(), e.size));
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn pax_size_overrides_header_size() {
        let mut a = Vec::new();
        let pax = pax_body(&[("size", "5")]);
        a.extend(header("PaxHeaders/f", b'x', pax.len() as u64));
        a.extend(padded(&pax));
        a.extend(header("f", b'0', 0));
        a.extend(padded(b"hello"));
        a.extend([0u8; 1024]);
        assert_eq!(list(&a).unwrap(), vec![("f".into(), 5)]);
    }

    #[test]
    fn rejects_bad_pax_and_duplicates() {
        for body in [
            &b"5 a=b"[..],
            b"x a=b\n",
            b"100 a=b\n",
            b"6 =ab\n",
            b"6 abc\n",
        ] {
            let mut a = Vec::new();
            a.extend(header("x", b'x', body.len() as u64));
            a.extend(padded(body));
            a.extend(header("f", b'0', 0));
            assert!(list(&a).is_err(), "{body:?}");
        }
        let pax = pax_body(&[("size", "1x")]);
        let mut a = Vec::new();
        a.extend(header("x", b'x', pax.len() as u64));
        a.extend(padded(&pax));
        a.extend(header("f", b'0', 0));
        assert!(list(&a).is_err());
        let mut a = Vec::new();
        for _ in 0..2 {
            a.extend(header("x", b'x', pax.len() as u64));
            a.extend(padded(&pax));
        }
        a.extend(header("f", b'0', 0));
        assert!(list(&a).is_err());
    }

    #[test]
    fn header_only_entries_must_be_empty() {
        let mut a = Vec::new();
        a.extend(header("l", b'2', 512));
        a.extend([0u8; 512]);
        let err = list(&a).unwrap_err();
        assert!(err.to_string().contains("disagree"), "{err}");
    }

    #[test]
    fn checksum_and_truncation() {
        let mut h = header("f", b'0', 3);
        h[0] = b'g';
        assert!(list(&h).is_err());
        let mut a = header("f", b'0', 1000).to_vec();
        a.extend([1u8; 100]);
        let err = list(&a).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn end_markers_and_trailing_data() {
        let mut a = header("f", b'0', 0).to_vec();
        a.extend([0u8; 1024]);
        a.extend(b"junk");
        let mut r = TarReader::new(&a[..]);
        assert!(r.next_entry().unwrap().is_some());
        assert!(r.next_entry().unwrap().is_none());
        let (_, trailing) = r.finish().unwrap();
        assert_eq!(
            trailing,
            Trailing {
                bytes: 4,
                non_zero: true
            }
        );
        // A lone zero block then another header.
        let mut a = header("f", b'0', 0).to_vec();
        a.extend([0u8; 512]);
        a.extend(header("hidden", b'0', 0));
        assert!(list(&a).is_err());
        // End of stream without end blocks is fine.
        assert_eq!(list(&header("f", b'0', 0)).unwrap().len(), 1);
    }

    #[test]
    fn limits_bound_memory() {
        let mut a = header("x", b'x', MAX_PAX_BYTES + 1).to_vec();
        a.extend([b'1'; 512]);
        assert!(matches!(list(&a), Err(ArchiveError::Limit { .. })));
        let a = header("././@LongLink", b'L', MAX_LONG_NAME_BYTES + 1);
        assert!(matches!(list(&a), Err(ArchiveError::Limit { .. })));
        let mut a = header("f", b'0', 4096).to_vec();
        a.extend([7u8; 4096]);
        let mut r = TarReader::with_limit(&a[..], Some(1000));
        r.next_entry().unwrap();
        let mut sink = Vec::new();
        let err = io::copy(&mut r.data(), &mut sink).unwrap_err();
        assert!(matches!(
            ArchiveError::from_io("x", err),
            ArchiveError::Limit { limit: 1000, .. }
        ));
    }
}
