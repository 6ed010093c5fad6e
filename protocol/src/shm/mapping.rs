//! The receiver's side: a received file mapped privately.
//!
//! The mapping's pages are the file's until written (copy-on-write), so
//! nothing is copied or zeroed. A file that is also in its sender's pool
//! (more than one link) must not be written while mapped: the receiver
//! holds a shared `flock` on it for as long as the mapping lives, and the
//! sender writes only files nobody locks. Each such lock keeps a file
//! descriptor open, so past [`MAX_HELD`] of them a pooled file is copied
//! instead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

/// At most this many received pooled files held mapped (each an open file).
const MAX_HELD: usize = 256;
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Takes the file a sender named: opens it, removes the name, and returns
/// its first `len` bytes, mapped.
pub(super) fn take(path: &Path, len: usize) -> io::Result<Bytes> {
    // Not through a symlink, and only a regular file of our own user: a
    // name under /dev/shm proves nothing about who made it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: not a regular file of this user", path.display()),
        ));
    }
    if meta.len() < len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: {} of {len} bytes", path.display(), meta.len()),
        ));
    }
    let pooled = meta.nlink() > 1;
    if len == 0 {
        let _ = std::fs::remove_file(path);
        return Ok(Bytes::new());
    }
    if pooled && HELD.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
        HELD.fetch_sub(1, Ordering::Relaxed);
        let mut copy = vec![0u8; len];
        let read = file.read_exact_at(&mut copy, 0);
        let _ = std::fs::remove_file(path);
        read?;
        return Ok(Bytes::from(copy));
    }
    if pooled {
        // SAFETY: flock on the file we opened. Before the name goes, so
        // the sender never sees the file free while we still map it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } != 0 {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::last_os_error());
        }
    }
    let _ = std::fs::remove_file(path);
    // Unmapped once by Mapping's Drop.
    let ptr = match super::map_file(&file, len, libc::MAP_PRIVATE) {
        Ok(ptr) => ptr,
        Err(e) => {
            if pooled {
                HELD.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(e);
        }
    };
    live().insert(ptr as usize, len);
    Ok(Bytes::from_owner(Mapping {
        ptr,
        len,
        locked: pooled.then_some(file),
    }))
}

/// A private mapping made by [`take`]; unmapped when the last `Bytes` of
/// it goes.
struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// The pooled file whose shared lock this mapping holds.
    locked: Option<File>,
}

// SAFETY: the mapping is plain memory owned by this value; it is only read
// through `Bytes`, or written through [`mapping_ptr`] by its only holder.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping (see take).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        live().remove(&(self.ptr as usize));
        // SAFETY: unmapping exactly what take mapped, once; the lock goes
        // after, with the file.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        if self.locked.take().is_some() {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Live private mappings: start address → length.
fn live() -> MutexGuard<'static, HashMap<usize, usize>> {
    static LIVE: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// If `bytes` is a whole mapping made by [`super::import`], a pointer
/// through which it may be written in place: the mapping is private, so the
/// writes go nowhere else. Only for a caller that holds the only reference
/// to it (the engine's request buffers); lets a received array be writable
/// without a copy.
pub fn mapping_ptr(bytes: &Bytes) -> Option<*mut u8> {
    if bytes.is_empty() {
        return None;
    }
    let start = bytes.as_ptr() as usize;
    (live().get(&start) == Some(&bytes.len())).then_some(start as *mut u8)
}
