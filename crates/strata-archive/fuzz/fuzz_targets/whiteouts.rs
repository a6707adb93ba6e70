//! The whiteout planner against a model of OCI layer semantics.
//!
//! Input: up to four layers of operations (files, directories, whiteouts, opaque markers)
//! on a small name space (`a`, `b`, `c`, depth ≤ 3), written with `TarBuilder` and applied
//! with `extract_layer` (whiteouts applied). Oracle: the tree on disk equals the model —
//! whiteouts and opaque markers remove *lower* content only, whatever their position in
//! the layer; entries then apply in order (last wins, a non-directory in the way of a path
//! becomes a directory, a file replaces a whole directory).
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata_archive::{
    EntryMeta, ExtractOptions, TarBuilder, TarOptions, TargetPolicy, extract_layer,
};

#[derive(Arbitrary, Debug)]
enum Op {
    File(Vec<u8>, u8),
    Dir(Vec<u8>),
    Whiteout(Vec<u8>),
    Opaque(Vec<u8>),
}

type P = Vec<String>;

fn path(sel: &[u8]) -> P {
    let mut p: P = sel
        .iter()
        .take(3)
        .map(|b| ["a", "b", "c"][*b as usize % 3].to_string())
        .collect();
    if p.is_empty() {
        p.push("a".into());
    }
    p
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(u8),
    Dir,
}

fn remove_tree(tree: &mut BTreeMap<P, Node>, p: &P) {
    tree.retain(|k, _| !k.starts_with(p));
}

fn remove_children(tree: &mut BTreeMap<P, Node>, p: &P) {
    tree.retain(|k, _| !(k.starts_with(p) && k.len() > p.len()));
}

fn ensure_parents(tree: &mut BTreeMap<P, Node>, p: &P) {
    for i in 1..p.len() {
        let q = p[..i].to_vec();
        match tree.get(&q) {
            Some(Node::Dir) => {}
            Some(Node::File(_)) | None => {
                tree.insert(q, Node::Dir);
            }
        }
    }
}

fn apply(tree: &mut BTreeMap<P, Node>, ops: &[Op]) {
    // Whiteouts and opaque markers hide what the lower layers hold.
    let lower = tree.clone();
    for op in ops {
        match op {
            Op::Whiteout(s) => remove_tree(tree, &path(s)),
            Op::Opaque(s) => {
                let p = path(s);
                if lower.get(&p) == Some(&Node::Dir) {
                    remove_children(tree, &p);
                }
            }
            _ => {}
        }
    }
    for op in ops {
        match op {
            Op::File(s, c) => {
                let p = path(s);
                ensure_parents(tree, &p);
                remove_tree(tree, &p);
                tree.insert(p, Node::File(*c));
            }
            Op::Dir(s) => {
                let p = path(s);
                ensure_parents(tree, &p);
                if tree.get(&p) != Some(&Node::Dir) {
                    remove_tree(tree, &p);
                    tree.insert(p, Node::Dir);
                }
            }
            _ => {}
        }
    }
}

fn read_tree(root: &Path, prefix: &mut P, out: &mut BTreeMap<P, Node>) {
    for e in fs::read_dir(root.join(prefix.join("/"))).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        prefix.push(name);
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            out.insert(prefix.clone(), Node::Dir);
            read_tree(root, prefix, out);
        } else {
            let bytes = fs::read(e.path()).unwrap();
            out.insert(
                prefix.clone(),
                Node::File(bytes.first().copied().unwrap_or(0)),
            );
        }
        prefix.pop();
    }
}

fuzz_target!(|layers: Vec<Vec<Op>>| {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("fzw-")
        .tempdir_in(base)
        .unwrap();
    let root = dir.path();
    let mut model = BTreeMap::new();
    let options = ExtractOptions {
        target: TargetPolicy::MayExist,
        ..ExtractOptions::default()
    };
    for ops in layers.iter().take(4) {
        let ops = &ops[..ops.len().min(12)];
        let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
        for op in ops {
            match op {
                Op::File(s, c) => t
                    .append_file(
                        path(s).join("/"),
                        &EntryMeta::with_mode(0o644),
                        1,
                        &[*c][..],
                    )
                    .unwrap(),
                Op::Dir(s) => t
                    .append_dir(path(s).join("/"), &EntryMeta::with_mode(0o755))
                    .unwrap(),
                Op::Whiteout(s) => t.append_whiteout(path(s).join("/")).unwrap(),
                Op::Opaque(s) => t.append_opaque(path(s).join("/")).unwrap(),
            }
        }
        let tar = t.finish().unwrap();
        extract_layer(&tar[..], root, &options).unwrap();
        apply(&mut model, ops);
        let mut disk = BTreeMap::new();
        read_tree(root, &mut Vec::new(), &mut disk);
        assert_eq!(disk, model, "layers so far: {layers:?}");
    }
});
