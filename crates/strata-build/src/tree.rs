//! An in-memory index of a rootfs (paths, types, metadata, which layer holds each file),
//! built from layer tar headers without extracting anything.
//!
//! COPY needs to know what the destination already is (a directory? a symlink to one?) and
//! `--chown` needs `/etc/passwd`; both are answered from this index. Paths are resolved the
//! way a safe extractor resolves them (`openat2(RESOLVE_IN_ROOT)`): symlinks are followed with
//! the rootfs as `/`, `..` never climbs above it.

use std::collections::BTreeMap;
use std::io::Read;

use strata_archive::LayerLayout;

/// Symlinks followed in one resolution before giving up (Linux's MAXSYMLINKS).
const MAX_SYMLINK_HOPS: usize = 40;

pub(crate) type Name = Vec<u8>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NodeMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl NodeMeta {
    fn default_dir() -> Self {
        NodeMeta {
            mode: 0o755,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Dir(BTreeMap<Name, Node>),
    /// A regular file whose bytes are in layer `layer` under its own path.
    File {
        layer: usize,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// A hard link written in layer `layer`, to the entry `target` (literal path).
    Hardlink {
        layer: usize,
        target: Vec<u8>,
    },
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub meta: NodeMeta,
}

impl Node {
    pub(crate) fn dir(meta: NodeMeta) -> Node {
        Node {
            kind: NodeKind::Dir(BTreeMap::new()),
            meta,
        }
    }
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_))
    }
}

/// One tar header of a layer, cleaned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    /// Components of the path (no `.`, no empty parts; `..` rejected at scan time).
    pub parts: Vec<Name>,
    pub kind: RawKind,
    pub meta: NodeMeta,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawKind {
    Dir,
    File(u64),
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Whiteout,
    Opaque,
    Other,
}

/// Split a path into clean components. `..` is refused (an entry never climbs).
pub(crate) fn split_clean(path: &[u8]) -> Option<Vec<Name>> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            _ => out.push(c.to_vec()),
        }
    }
    Some(out)
}

/// Read the headers of one layer tar (already decompressed) with strata's own bounded tar
/// reader. Windows layers: only `Files/…` entries are part of the filesystem (`Hives/`,
/// `UtilityVM/` are not), prefix removed.
pub(crate) fn scan_layer(
    reader: impl Read,
    layout: LayerLayout,
) -> Result<Vec<RawEntry>, strata_archive::ArchiveError> {
    let mut tar = strata_archive::TarReader::new(reader);
    let mut out = Vec::new();
    while let Some(entry) = tar.next_entry()? {
        let Some(mut parts) = split_clean(&entry.path) else {
            return Err(strata_archive::ArchiveError::Entry {
                entry: String::from_utf8_lossy(&entry.path).into_owned(),
                reason: "climbs out of the root".into(),
                source: None,
            });
        };
        if layout == LayerLayout::Windows {
            if parts.first().map(Vec::as_slice) != Some(b"Files".as_slice()) || parts.len() < 2 {
                continue;
            }
            parts.remove(0);
        }
        if parts.is_empty() {
            continue;
        }
        let meta = NodeMeta {
            mode: entry.mode & 0o7777,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
        };
        let leaf = parts.last().map(Vec::as_slice).unwrap_or_default();
        let kind = if leaf == b".wh..wh..opq" {
            parts.pop();
            RawKind::Opaque
        } else if let Some(name) = leaf.strip_prefix(b".wh.") {
            if name.is_empty() || name.starts_with(b".wh.") {
                // Bare or AUFS-internal whiteouts name nothing in the filesystem.
                continue;
            }
            let name = name.to_vec();
            parts.pop();
            parts.push(name);
            RawKind::Whiteout
        } else {
            use strata_archive::EntryKind as K;
            match entry.kind {
                K::Directory => RawKind::Dir,
                K::Regular => RawKind::File(entry.size),
                K::Symlink => RawKind::Symlink(entry.link_target.clone().unwrap_or_default()),
                K::HardLink => {
                    let target = entry.link_target.clone().unwrap_or_default();
                    let mut t = split_clean(&target).unwrap_or_default();
                    if layout == LayerLayout::Windows
                        && t.first().map(Vec::as_slice) == Some(b"Files".as_slice())
                    {
                        t.remove(0);
                    }
                    RawKind::Hardlink(t.join(&b'/'))
                }
                _ => RawKind::Other,
            }
        };
        out.push(RawEntry { parts, kind, meta });
    }
    // Drain: a caller's digest must cover every byte.
    tar.finish()?;
    Ok(out)
}

/// Why a path cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveError {
    TooManyLinks,
    /// A component in the middle is a file, not a directory.
    NotADirectory(Vec<Name>),
}

/// A rootfs index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tree {
    root: Node,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            root: Node::dir(NodeMeta::default_dir()),
        }
    }
}

impl Tree {
    /// The node at these literal components (no symlink following).
    pub(crate) fn get(&self, parts: &[Name]) -> Option<&Node> {
        let mut node = &self.root;
        for p in parts {
            match &node.kind {
                NodeKind::Dir(children) => node = children.get(p)?,
                _ => return None,
            }
        }
        Some(node)
    }

    fn get_mut(&mut self, parts: &[Name]) -> Option<&mut Node> {
        let mut node = &mut self.root;
        for p in parts {
            match &mut node.kind {
                NodeKind::Dir(children) => node = children.get_mut(p)?,
                _ => return None,
            }
        }
        Some(node)
    }

    /// Resolve `path` inside the rootfs like `RESOLVE_IN_ROOT`: symlinks in the middle are
    /// followed (absolute targets from the rootfs root), the last component only when
    /// `follow_last`; `..` stops at the root. Components after the first missing one are
    /// appended literally. Returns the resolved components and the node, if it exists.
    pub(crate) fn resolve(
        &self,
        parts: &[Name],
        follow_last: bool,
    ) -> Result<(Vec<Name>, Option<&Node>), ResolveError> {
        let mut queue: std::collections::VecDeque<Name> = parts.iter().cloned().collect();
        let mut stack: Vec<Name> = Vec::new();
        let mut hops = 0;
        let mut missing = false;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                stack.pop();
                continue;
            }
            stack.push(c);
            if missing {
                continue;
            }
            let last = queue.is_empty();
            match self.get(&stack) {
                None => missing = true,
                Some(node) => match &node.kind {
                    NodeKind::Symlink(target) if !last || follow_last => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(ResolveError::TooManyLinks);
                        }
                        stack.pop();
                        if target.starts_with(b"/") {
                            stack.clear();
                        }
                        for t in target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
                            queue.push_front(t.to_vec());
                        }
                    }
                    NodeKind::Dir(_) => {}
                    _ if !last => return Err(ResolveError::NotADirectory(stack)),
                    _ => {}
                },
            }
        }
        let node = if missing { None } else { self.get(&stack) };
        Ok((stack, node))
    }

    /// The directory at `parts` (resolved, following symlinks), created (0755) when missing.
    /// Non-directories in the way are replaced, as an extractor does (RELIABILITY A14).
    fn ensure_dir(&mut self, parts: &[Name]) -> Vec<Name> {
        let resolved = match self.resolve(parts, true) {
            Ok((r, _)) => r,
            Err(_) => parts.to_vec(),
        };
        let mut node = &mut self.root;
        for p in &resolved {
            let NodeKind::Dir(children) = &mut node.kind else {
                // Cannot happen: every node walked through is made a directory below.
                break;
            };
            let child = children
                .entry(p.clone())
                .or_insert_with(|| Node::dir(NodeMeta::default_dir()));
            if !child.is_dir() {
                *child = Node::dir(NodeMeta::default_dir());
            }
            node = child;
        }
        resolved
    }

    /// Put `node` at `parts` (parents resolved through symlinks and created as needed). A
    /// directory replacing a directory keeps its children.
    pub(crate) fn insert(&mut self, parts: &[Name], node: Node) {
        let Some((leaf, parent)) = parts.split_last() else {
            if let NodeKind::Dir(_) = node.kind {
                self.root.meta = node.meta;
            }
            return;
        };
        let parent = self.ensure_dir(parent);
        let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(&parent)
        else {
            return;
        };
        match (children.get_mut(leaf), node) {
            (
                Some(
                    existing @ Node {
                        kind: NodeKind::Dir(_),
                        ..
                    },
                ),
                Node {
                    kind: NodeKind::Dir(_),
                    meta,
                },
            ) => existing.meta = meta,
            (_, node) => {
                children.insert(leaf.clone(), node);
            }
        }
    }

    /// Remove whatever is at `parts` (parents resolved through symlinks).
    pub(crate) fn remove(&mut self, parts: &[Name]) {
        let Some((leaf, parent)) = parts.split_last() else {
            return;
        };
        let Ok((parent, Some(_))) = self.resolve(parent, true) else {
            return;
        };
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(&parent)
        {
            children.remove(leaf);
        }
    }

    fn clear_dir(&mut self, parts: &[Name]) {
        let Ok((resolved, Some(_))) = self.resolve(parts, true) else {
            return;
        };
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(&resolved)
        {
            children.clear();
        }
    }

    /// Apply one layer's entries: whiteouts and opaque markers hide lower content first (they
    /// never hide this layer's own entries), then the entries are added in order.
    pub(crate) fn apply_layer(&mut self, entries: &[RawEntry], layer: usize) {
        for e in entries {
            match e.kind {
                RawKind::Whiteout => self.remove(&e.parts),
                RawKind::Opaque => self.clear_dir(&e.parts),
                _ => {}
            }
        }
        for e in entries {
            let kind = match &e.kind {
                RawKind::Whiteout | RawKind::Opaque => continue,
                RawKind::Dir => NodeKind::Dir(BTreeMap::new()),
                RawKind::File(size) => NodeKind::File { layer, size: *size },
                RawKind::Symlink(t) => NodeKind::Symlink(t.clone()),
                RawKind::Hardlink(t) => NodeKind::Hardlink {
                    layer,
                    target: t.clone(),
                },
                RawKind::Other => NodeKind::Other,
            };
            self.insert(&e.parts, Node { kind, meta: e.meta });
        }
    }

    /// Where the bytes of the regular file at `path` are: (layer, literal path in that layer),
    /// following symlinks and hard links. `None` when it is not a regular file.
    pub(crate) fn file_location(&self, path: &[u8]) -> Option<(usize, Vec<u8>, u64)> {
        let parts = split_clean(path)?;
        let (resolved, node) = self.resolve(&parts, true).ok()?;
        match &node?.kind {
            NodeKind::File { layer, size } => Some((*layer, resolved.join(&b'/'), *size)),
            NodeKind::Hardlink { layer, target } => {
                // The link's target is normally an earlier entry of the same layer; its size
                // is that entry's.
                let tparts = split_clean(target)?;
                let size = match self.get(&tparts).map(|n| &n.kind) {
                    Some(NodeKind::File { size, .. }) => *size,
                    _ => 0,
                };
                Some((*layer, target.clone(), size))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> Vec<Name> {
        split_clean(p.as_bytes()).unwrap()
    }

    fn entry(p: &str, kind: RawKind) -> RawEntry {
        RawEntry {
            parts: parts(p),
            kind,
            meta: NodeMeta {
                mode: 0o755,
                ..Default::default()
            },
        }
    }

    fn usrmerge() -> Tree {
        let mut t = Tree::default();
        t.apply_layer(
            &[
                entry("usr", RawKind::Dir),
                entry("usr/bin", RawKind::Dir),
                entry("usr/bin/sh", RawKind::File(10)),
                entry("bin", RawKind::Symlink(b"usr/bin".to_vec())),
                entry("abs", RawKind::Symlink(b"/usr".to_vec())),
                entry("up", RawKind::Symlink(b"../../../../usr".to_vec())),
                entry("loop", RawKind::Symlink(b"loop".to_vec())),
                entry("etc/passwd", RawKind::File(5)),
            ],
            0,
        );
        t
    }

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let t = usrmerge();
        let (r, n) = t.resolve(&parts("bin/sh"), true).unwrap();
        assert_eq!(r, parts("usr/bin/sh"));
        assert!(matches!(n.unwrap().kind, NodeKind::File { .. }));
        let (r, _) = t.resolve(&parts("abs/bin"), true).unwrap();
        assert_eq!(r, parts("usr/bin"));
        // `..` never climbs above the root.
        let (r, n) = t.resolve(&parts("up/bin"), true).unwrap();
        assert_eq!(r, parts("usr/bin"));
        assert!(n.unwrap().is_dir());
        // The last component is followed only when asked.
        let (r, n) = t.resolve(&parts("bin"), false).unwrap();
        assert_eq!(r, parts("bin"));
        assert!(matches!(n.unwrap().kind, NodeKind::Symlink(_)));
        // Missing tails are kept literally.
        let (r, n) = t.resolve(&parts("bin/new/x"), true).unwrap();
        assert_eq!(r, parts("usr/bin/new/x"));
        assert!(n.is_none());
        assert_eq!(
            t.resolve(&parts("loop/x"), true),
            Err(ResolveError::TooManyLinks)
        );
        assert!(matches!(
            t.resolve(&parts("etc/passwd/x"), true),
            Err(ResolveError::NotADirectory(_))
        ));
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let mut t = usrmerge();
        t.apply_layer(
            &[
                entry("etc/passwd", RawKind::Whiteout),
                entry("usr/bin", RawKind::Opaque),
                entry("usr/bin/new", RawKind::File(1)),
                entry("bin/viaLink", RawKind::File(2)),
            ],
            1,
        );
        assert!(t.get(&parts("etc/passwd")).is_none());
        assert!(t.get(&parts("usr/bin/sh")).is_none());
        assert!(t.get(&parts("usr/bin/new")).is_some());
        // Entries under a symlinked parent land at the link's target, as extraction does.
        assert!(t.get(&parts("usr/bin/viaLink")).is_some());
        assert_eq!(
            t.file_location(b"/bin/new"),
            Some((1, b"usr/bin/new".to_vec(), 1))
        );
    }

    #[test]
    fn scans_a_windows_layer() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in [
            ("Hives/", tar::EntryType::Directory),
            ("Files/", tar::EntryType::Directory),
            ("Files/Windows/", tar::EntryType::Directory),
            ("Files/Windows/win.ini", tar::EntryType::Regular),
            ("UtilityVM/Files/x", tar::EntryType::Regular),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &[][..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let entries = scan_layer(bytes.as_slice(), LayerLayout::Windows).unwrap();
        let names: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8(e.parts.join(&b'/')).unwrap())
            .collect();
        assert_eq!(names, ["Windows", "Windows/win.ini"]);
    }
}
