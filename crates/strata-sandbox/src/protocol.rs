//! The parent ⇄ helper protocol over the control socket (the helper's fd 0 at start):
//! newline-terminated JSON. The parent sends one [`Request`]; the helper (and its pid-1
//! child until it execs) send [`Report`]s; the parent answers a [`Report::MapRequest`] with a
//! single byte, [`MAP_OK`] or [`MAP_FAILED`].

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::RunSpec;
use crate::error::WireError;
use crate::spec::StepStatus;

/// The hidden first argument that makes `init_if_requested` take over. Versioned so that a
/// binary upgraded between spawn and exec fails loudly instead of misreading the request.
pub(crate) const CHILD_ARG: &str = "--strata-sandbox-helper-v1";
/// Largest request accepted (the spec carries env, hosts, resolv.conf: small; a bound keeps a
/// confused peer from exhausting memory).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 << 20;
pub(crate) const MAP_OK: u8 = b'1';
pub(crate) const MAP_FAILED: u8 = b'0';

/// Which user namespace, if any, the helper enters, and how its ids are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum IdMode {
    /// Real root: no user namespace.
    Root,
    /// Unprivileged without subordinate ids: the helper maps container 0 to the caller's
    /// uid/gid itself (`setgroups` denied).
    Single { uid: u32, gid: u32 },
    /// Unprivileged with subordinate ids: the parent runs newuidmap/newgidmap; container
    /// ids `0..uid_count` / `0..gid_count` are mapped.
    Subordinate { uid_count: u32, gid_count: u32 },
}

impl IdMode {
    /// How many container uids and gids exist (for "not mapped" errors).
    pub(crate) fn mapped(self) -> (u32, u32) {
        match self {
            IdMode::Root => (u32::MAX, u32::MAX),
            IdMode::Single { .. } => (1, 1),
            IdMode::Subordinate {
                uid_count,
                gid_count,
            } => (uid_count, gid_count),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Task {
    Run(Box<RunSpec>),
    /// Mount an overlay over scratch dirs created in `dir` (then removed).
    ProbeOverlay {
        dir: PathBuf,
    },
    /// Remove a tree as the container's root (owner of every id in the mapping).
    Remove {
        path: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The parent's pid: the helper checks it is still its parent after arming the
    /// parent-death signal.
    pub parent_pid: i32,
    pub ids: IdMode,
    /// Mount overlayfs with one `lowerdir=` string, as on kernels before 6.8 (tests).
    pub legacy_overlay: bool,
    pub task: Task,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The helper entered a new user namespace; map it (newuidmap/newgidmap) and answer.
    MapRequest,
    /// Setup failed; nothing ran.
    Error(WireError),
    /// Mount targets created in a `Rootfs::Dir` (paths relative to the root) for the parent
    /// to remove after the run.
    CreatedTargets(Vec<String>),
    /// The step ended.
    Status(StepStatus),
    /// The step was killed because the helper was told to stop.
    Interrupted,
    /// A non-run task finished.
    Done,
}

pub(crate) fn write_message<T: Serialize>(mut w: impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    // One write call: reports from the helper and its child never interleave mid-line.
    w.write_all(&line)
}

/// Read one message; `Ok(None)` at end of stream.
pub(crate) fn read_message<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> io::Result<Option<T>> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            return serde_json::from_slice(&line[..pos])
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message too large",
            ));
        }
        let mut chunk = [0u8; 8192];
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated control message",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
