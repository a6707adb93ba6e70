//! COPY/ADD sources: patterns → globbed, walked, hashed source items (blocking code).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use strata_containerfile::IgnoreMatcher;
use strata_spec::{Algorithm, Digest, DigestHasher};

use crate::copyplan::{ContentId, Owners, SourceItem};
use crate::hashcache::HashCache;
use crate::source::{
    FileKind, FileStat, GlobError, SourceRoot, WalkEntry, WalkFilter, clean_source,
};
use crate::tree::Name;
use crate::{BuildError, Location};

/// Read buffer for hashing.
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// A gathered source: a ready item, or a local archive ADD will unpack on a cache miss.
#[derive(Debug, Clone)]
pub(crate) enum Gathered {
    Item(SourceItem),
    Archive {
        root: Arc<SourceRoot>,
        rel: Vec<u8>,
        stat: FileStat,
        id: ContentId,
    },
}

/// Where sources are read from and how.
pub(crate) struct GatherRequest {
    pub root: Arc<SourceRoot>,
    /// The build context: `..` out of it is an error, `.dockerignore` applies, content is
    /// hashed. Otherwise (a stage, an image) `..` stops at `/` and content is identified
    /// by `root_key`.
    pub context: bool,
    pub root_key: Option<Digest>,
    pub ignore: Option<Arc<(IgnoreMatcher, String)>>,
    pub exclude: Option<IgnoreMatcher>,
    pub hashes: Arc<Mutex<HashCache>>,
    pub owners: Owners,
    /// ADD: local tar archives (plain or compressed) are unpacked.
    pub detect_archives: bool,
    pub at: Location,
    pub instruction: String,
    /// Where the sources are, for "not found" messages.
    pub place: String,
}

fn join_rel(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

fn split(rel: &[u8]) -> Vec<Name> {
    rel.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Is the regular file `rel` a tar archive, plain or compressed (gzip, zstd, xz, bzip2)?
pub(crate) fn looks_like_archive(root: &SourceRoot, rel: &[u8]) -> bool {
    let Ok(file) = root.open_file(rel) else {
        return false;
    };
    let Ok((_, mut reader)) = strata_archive::decompress_detect(file) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match reader.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return false,
        }
    }
    got == 512 && tar_header_checksum_ok(&block)
}

/// A tar header block whose checksum field matches its bytes (the test GNU tar and Go use).
fn tar_header_checksum_ok(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(stored) = u64::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                b as u64
            }
        })
        .sum();
    sum == stored
}

/// Hash `files` (root-relative path, stat) of the context, reusing the stat-keyed cache and
/// hashing the rest on every core.
pub(crate) fn hash_files(
    root: &SourceRoot,
    files: Vec<(Vec<u8>, FileStat)>,
    cache: &Mutex<HashCache>,
) -> Result<HashMap<Vec<u8>, Digest>, (Vec<u8>, io::Error)> {
    let mut out = HashMap::with_capacity(files.len());
    let mut todo = Vec::new();
    {
        let c = cache
            .lock()
            .map_err(|_| (Vec::new(), io::Error::other("hash cache lock poisoned")))?;
        for (rel, st) in files {
            match c.get(&rel, &st) {
                Some(d) => {
                    out.insert(rel, d);
                }
                None => todo.push((rel, st)),
            }
        }
    }
    if todo.is_empty() {
        return Ok(out);
    }
    let workers = strata_archive::default_workers().min(todo.len()).max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Digest)>> = Mutex::new(Vec::with_capacity(todo.len()));
    let failure: Mutex<Option<(Vec<u8>, io::Error)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; HASH_BUFFER_BYTES];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, st)) = todo.get(i) else {
                        return;
                    };
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    match hash_one(root, rel, st, &mut buf) {
                        Ok(d) => {
                            if let Ok(mut r) = results.lock() {
                                r.push((i, d));
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert((rel.clone(), e));
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(f) = failure.into_inner().ok().flatten() {
        return Err(f);
    }
    let now = crate::time::now_unix() as i64;
    let results = results.into_inner().unwrap_or_default();
    let mut c = cache
        .lock()
        .map_err(|_| (Vec::new(), io::Error::other("hash cache lock poisoned")))?;
    for (i, d) in results {
        let (rel, st) = &todo[i];
        c.put(rel, st, &d, now);
        out.insert(rel.clone(), d);
    }
    Ok(out)
}

fn hash_one(root: &SourceRoot, rel: &[u8], st: &FileStat, buf: &mut [u8]) -> io::Result<Digest> {
    use std::os::unix::fs::MetadataExt;
    let mut f = root.open_file(rel)?;
    let md = f.metadata()?;
    if !md.is_file()
        || md.len() != st.size
        || md.ino() != st.ino
        || md.mtime() != st.mtime
        || md.mtime_nsec() != st.mtime_nsec
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "changed while the build was reading it",
        ));
    }
    let mut h = DigestHasher::new(Algorithm::Sha256);
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    if total != st.size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "changed size while the build was reading it",
        ));
    }
    Ok(h.finish())
}

/// Glob, filter, walk and identify every pattern.
pub(crate) fn gather(
    req: &GatherRequest,
    patterns: &[String],
) -> Result<Vec<Gathered>, BuildError> {
    let at = &req.at;
    let bad = |msg: String| BuildError::instruction(at, &req.instruction, msg);
    let ignore = req.ignore.as_deref();
    let mut gathered: Vec<Gathered> = Vec::new();
    for pattern in patterns {
        let Some((parts, pivot)) = clean_source(pattern, !req.context) else {
            return Err(BuildError::OutsideContext {
                at: at.clone(),
                path: pattern.clone(),
            });
        };
        let wild = parts.iter().any(|p| crate::glob::is_wild(p));
        let matches = req.root.glob(&parts).map_err(|e| match e {
            GlobError::BadPattern => bad(format!("invalid wildcard pattern {pattern:?}")),
            GlobError::Io(e) => {
                BuildError::io(req.root.path(), format!("reading source {pattern}"), e)
            }
        })?;
        let mut kept = Vec::new();
        for m in matches {
            let shown = String::from_utf8_lossy(&m).into_owned();
            if req.context
                && !m.is_empty()
                && let Some(ig) = ignore
                && ig.0.is_excluded(&shown)
            {
                if !wild {
                    // Explicitly named but ignored: an error, never a silent copy
                    // (RELIABILITY B3, buildah #2060).
                    return Err(BuildError::Ignored {
                        at: at.clone(),
                        path: pattern.clone(),
                        ignore_file: ig.1.clone(),
                    });
                }
                continue;
            }
            kept.push(m);
        }
        if kept.is_empty() {
            return Err(BuildError::SourceNotFound {
                at: at.clone(),
                what: "source",
                path: pattern.clone(),
                hint: format!(" in {}", req.place),
            });
        }
        let mut any = false;
        for m in kept {
            let named = m.clone();
            let mut m = m;
            let mut st = req
                .root
                .lstat(&m)
                .map_err(|e| {
                    BuildError::io(
                        req.root.path(),
                        format!("stat {}", String::from_utf8_lossy(&m)),
                        e,
                    )
                })?
                .ok_or_else(|| BuildError::SourceNotFound {
                    at: at.clone(),
                    what: "source",
                    path: String::from_utf8_lossy(&m).into_owned(),
                    hint: format!(" in {} (it disappeared)", req.place),
                })?;
            let comps = split(&named);
            if !req.context && st.kind == FileKind::Symlink {
                // From a stage or an image, a source that is a symlink is followed inside that
                // rootfs (BuildKit's FollowSymlinks); the name stays the one written. Context
                // symlinks are copied as symlinks (RELIABILITY B2).
                if let Some(target) = req.root.resolve(&m).map_err(|e| {
                    BuildError::io(
                        req.root.path(),
                        format!("resolving {}", String::from_utf8_lossy(&m)),
                        e,
                    )
                })? && let Some(tst) = req.root.lstat(&target).map_err(|e| {
                    BuildError::io(
                        req.root.path(),
                        format!("stat {}", String::from_utf8_lossy(&target)),
                        e,
                    )
                })? {
                    m = target;
                    st = tst;
                }
            }
            let parents_rel: Vec<Name> = match pivot {
                Some(p) => comps.get(p..).map(<[Name]>::to_vec).unwrap_or_default(),
                None => comps.clone(),
            };
            if st.kind == FileKind::Dir {
                let filter = WalkFilter {
                    ignore: if req.context {
                        ignore.map(|i| &i.0)
                    } else {
                        None
                    },
                    exclude: req.exclude.as_ref(),
                };
                let children = req.root.walk(&m, &filter).map_err(|e| {
                    // Name the directory that failed, which may be deep below the source.
                    let failure = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<crate::source::WalkFailure>());
                    match failure {
                        Some(f) => BuildError::io(
                            req.root
                                .path()
                                .join(String::from_utf8_lossy(&f.path).as_ref()),
                            f.what,
                            io::Error::new(f.source.kind(), f.source.to_string()),
                        ),
                        None => BuildError::io(
                            req.root.path().join(String::from_utf8_lossy(&m).as_ref()),
                            "cannot read source directory",
                            e,
                        ),
                    }
                })?;
                let children = Arc::new(children.into_iter().map(|c| (c, None)).collect());
                gathered.push(Gathered::Item(SourceItem::Dir {
                    root: Arc::clone(&req.root),
                    parents_rel,
                    stat: st,
                    children,
                    rel: m,
                    owners: req.owners,
                }));
                any = true;
                continue;
            }
            if let Some(ex) = &req.exclude {
                let name = comps
                    .last()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                if ex.is_excluded(&shown_rel(&m)) || ex.is_excluded(&name) {
                    continue;
                }
            }
            let link = if st.kind == FileKind::Symlink {
                Some(req.root.read_link(&m).map_err(|e| {
                    BuildError::io(
                        req.root.path(),
                        format!("readlink {}", String::from_utf8_lossy(&m)),
                        e,
                    )
                })?)
            } else {
                None
            };
            if req.detect_archives && st.kind == FileKind::File && looks_like_archive(&req.root, &m)
            {
                gathered.push(Gathered::Archive {
                    root: Arc::clone(&req.root),
                    rel: m,
                    stat: st,
                    id: ContentId::Digest(Digest::sha256_of(b"")),
                });
                any = true;
                continue;
            }
            gathered.push(Gathered::Item(SourceItem::Entry {
                root: Arc::clone(&req.root),
                rel: m.clone(),
                parents_rel,
                entry: WalkEntry {
                    rel: Vec::new(),
                    stat: st,
                    link,
                },
                id: None,
                owners: req.owners,
            }));
            any = true;
        }
        if !any {
            return Err(BuildError::SourceNotFound {
                at: at.clone(),
                what: "source",
                path: pattern.clone(),
                hint: format!(" in {} (everything it matches is excluded)", req.place),
            });
        }
    }
    identify(req, &mut gathered)?;
    Ok(gathered)
}

fn shown_rel(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

/// Give every regular file a content id: hashed (context) or named within the root's key.
fn identify(req: &GatherRequest, gathered: &mut [Gathered]) -> Result<(), BuildError> {
    let id_within = |rel: &[u8]| -> Option<ContentId> {
        req.root_key.as_ref().map(|k| ContentId::Within {
            root_key: k.clone(),
            rel: rel.to_vec(),
        })
    };
    if !req.context {
        for g in gathered.iter_mut() {
            match g {
                Gathered::Item(SourceItem::Dir { children, rel, .. }) => {
                    for (c, id) in Arc::make_mut(children).iter_mut() {
                        if c.stat.kind == FileKind::File {
                            *id = id_within(&join_rel(rel, &c.rel));
                        }
                    }
                }
                Gathered::Item(SourceItem::Entry { rel, id, entry, .. }) => {
                    if entry.stat.kind == FileKind::File {
                        *id = id_within(rel);
                    }
                }
                Gathered::Archive { rel, id, .. } => {
                    if let Some(i) = id_within(rel) {
                        *id = i;
                    }
                }
                Gathered::Item(SourceItem::Inline { .. }) => {}
            }
        }
        return Ok(());
    }
    // Known hashes come from the stat-keyed cache; unknown ones are hashed while the layer is
    // written (ContentId::Pending), except archives ADD unpacks, whose digest names their
    // content before anything is written.
    let mut archives: Vec<(Vec<u8>, FileStat)> = Vec::new();
    {
        let cache = req
            .hashes
            .lock()
            .map_err(|_| BuildError::Internal("hash cache lock poisoned".into()))?;
        // Three cases: a trusted hash; a file seen before with this very stat (racily clean:
        // hashed now, because a cached step may match); a new or changed file (hashed while
        // the layer is written: no cached step can match stats never seen).
        let mut eager: Vec<(Vec<u8>, FileStat)> = Vec::new();
        let mut known = |rel: &[u8], st: &FileStat| -> ContentId {
            match cache.get(rel, st) {
                Some(d) => ContentId::Digest(d),
                None if cache.seen(rel, st) => {
                    eager.push((rel.to_vec(), *st));
                    ContentId::pending(st)
                }
                None => ContentId::pending(st),
            }
        };
        for g in gathered.iter_mut() {
            match g {
                Gathered::Item(SourceItem::Dir { children, rel, .. }) => {
                    for (c, id) in Arc::make_mut(children).iter_mut() {
                        if c.stat.kind == FileKind::File {
                            *id = Some(known(&join_rel(rel, &c.rel), &c.stat));
                        }
                    }
                }
                Gathered::Item(SourceItem::Entry { rel, id, entry, .. }) => {
                    if entry.stat.kind == FileKind::File {
                        *id = Some(known(rel, &entry.stat));
                    }
                }
                Gathered::Archive { rel, stat, .. } => archives.push((rel.clone(), *stat)),
                Gathered::Item(SourceItem::Inline { .. }) => {}
            }
        }
        archives.extend(eager);
    }
    if archives.is_empty() {
        return Ok(());
    }
    let hashes = hash_files(&req.root, archives, &req.hashes).map_err(|(rel, e)| {
        BuildError::io(
            req.root.path().join(String::from_utf8_lossy(&rel).as_ref()),
            "cannot read source file",
            e,
        )
    })?;
    for g in gathered.iter_mut() {
        if let Gathered::Archive { rel, id, .. } = g
            && let Some(d) = hashes.get(rel.as_slice())
        {
            *id = ContentId::Digest(d.clone());
        }
    }
    resolve_pending(gathered, &hashes);
    Ok(())
}

/// Replace pending ids by the digests computed while writing (`hashes`: root-relative path →
/// SHA-256). Returns false if one is still missing.
pub(crate) fn resolve_pending(
    gathered: &mut [Gathered],
    hashes: &HashMap<Vec<u8>, Digest>,
) -> bool {
    // Hard links are written once: their other names get the digest by inode.
    let mut by_inode: HashMap<(u64, u64), Digest> = HashMap::new();
    let mut note = |rel: &[u8], id: &Option<ContentId>| {
        if let Some(ContentId::Pending { dev, ino, .. }) = id
            && let Some(d) = hashes.get(rel)
        {
            by_inode.insert((*dev, *ino), d.clone());
        }
    };
    for g in gathered.iter() {
        match g {
            Gathered::Item(SourceItem::Dir { children, rel, .. }) => {
                for (c, id) in children.iter() {
                    note(&join_rel(rel, &c.rel), id);
                }
            }
            Gathered::Item(SourceItem::Entry { rel, id, .. }) => note(rel, id),
            _ => {}
        }
    }
    let mut complete = true;
    let mut fill = |rel: &[u8], id: &mut Option<ContentId>| {
        if let Some(ContentId::Pending { dev, ino, .. }) = id {
            match hashes.get(rel).or_else(|| by_inode.get(&(*dev, *ino))) {
                Some(d) => *id = Some(ContentId::Digest(d.clone())),
                None => complete = false,
            }
        }
    };
    for g in gathered.iter_mut() {
        match g {
            // (Only copy-on-write the shared list when something in it is pending.)
            Gathered::Item(SourceItem::Dir { children, rel, .. })
                if children
                    .iter()
                    .any(|(_, id)| id.as_ref().is_some_and(ContentId::is_pending)) =>
            {
                for (c, id) in Arc::make_mut(children).iter_mut() {
                    fill(&join_rel(rel, &c.rel), id);
                }
            }
            Gathered::Item(SourceItem::Entry { rel, id, .. }) => fill(rel, id),
            _ => {}
        }
    }
    complete
}

/// Does any source still wait for its hash?
pub(crate) fn has_pending(gathered: &[Gathered]) -> bool {
    gathered.iter().any(|g| match g {
        Gathered::Item(SourceItem::Dir { children, .. }) => children
            .iter()
            .any(|(_, id)| id.as_ref().is_some_and(ContentId::is_pending)),
        Gathered::Item(SourceItem::Entry { id, .. }) => {
            id.as_ref().is_some_and(ContentId::is_pending)
        }
        _ => false,
    })
}

/// Expand `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` in a heredoc body (quotes
/// are content there and stay; `\$` is a literal dollar).
pub(crate) fn expand_heredoc(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{')
            && let Some(close) = chars[i + 2..].iter().position(|&c| c == '}')
        {
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            i += close + 3;
            let (name, op, word) = if let Some(p) = inner.find(":-") {
                (&inner[..p], Some('-'), &inner[p + 2..])
            } else if let Some(p) = inner.find(":+") {
                (&inner[..p], Some('+'), &inner[p + 2..])
            } else {
                (inner.as_str(), None, "")
            };
            let value = lookup(name).filter(|v| !v.is_empty());
            match op {
                Some('-') => out.push_str(&value.unwrap_or_else(|| word.to_string())),
                Some('+') => {
                    if value.is_some() {
                        out.push_str(word);
                    }
                }
                _ => out.push_str(&lookup(name).unwrap_or_default()),
            }
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < chars.len() && is_name(chars[end]) {
            end += 1;
        }
        if end == start {
            out.push('$');
            i += 1;
            continue;
        }
        let name: String = chars[start..end].iter().collect();
        out.push_str(&lookup(&name).unwrap_or_default());
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_expansion() {
        let look = |n: &str| match n {
            "A" => Some("1".to_string()),
            "E" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand_heredoc(
                "a=$A b=${A} c=${X:-d} e=${A:+y} f=${E:-z} '$A' \\$A $",
                &look
            ),
            "a=1 b=1 c=d e=y f=z '1' $A $"
        );
    }

    #[test]
    fn detects_tar_headers() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut block = [0u8; 512];
        block.copy_from_slice(&bytes[..512]);
        assert!(tar_header_checksum_ok(&block));
        block[0] ^= 1;
        assert!(!tar_header_checksum_ok(&block));
        assert!(!tar_header_checksum_ok(&[0u8; 512]));
    }
}
