//! Reading extended attributes of open files, growing the buffer as the kernel asks.

use std::io;
use std::os::fd::BorrowedFd;

/// First buffer size for names and values; most fit.
const XATTR_BUFFER_BYTES: usize = 1024;

/// The NUL-separated names of an open file's xattrs (empty where the filesystem has none).
pub fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut names = vec![0u8; XATTR_BUFFER_BYTES];
    loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                return Ok(names);
            }
            Err(rustix::io::Errno::RANGE) => {
                let size = rustix::fs::flistxattr_query(fd).map_err(io::Error::from)?;
                names = vec![0u8; size.max(names.len() * 2)];
            }
            // Filesystems without xattrs.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// The value of xattr `name` of an open file; `None` if it has none of that name.
pub fn get(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; XATTR_BUFFER_BYTES];
    loop {
        match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(rustix::io::Errno::RANGE) => {
                let size = rustix::fs::fgetxattr_query(fd, name).map_err(io::Error::from)?;
                value = vec![0u8; size.max(value.len() * 2)];
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Whether an xattr belongs in a layer: `trusted.overlay.*` and `user.overlay.*` are
/// overlayfs internals and `security.selinux` is host policy, never image content.
pub fn is_content(name: &str) -> bool {
    !(name.is_empty()
        || name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name == "security.selinux")
}
