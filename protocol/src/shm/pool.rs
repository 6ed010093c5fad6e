//! The sender's files, kept between transfers.
//!
//! Allocating tmpfs pages is what a transfer through a fresh file mostly
//! costs (100 MB here: 50 ms to write a new file, 10 ms to copy into one
//! whose pages exist). So a sender keeps its files mapped and writes the
//! next buffer into one no receiver still holds. A file is free when no
//! transfer name links to it any more (its link count is 1: every receiver
//! took its name) and nobody holds a shared `flock` on it (every receiver's
//! mapping is gone; the lock goes with a receiver that dies).
//!
//! Bounds: at most [`MAX_FILES`] files (beyond that a transfer gets a file
//! of its own, not kept), none larger than [`MAX_FILE_BYTES`]; making a
//! new file first gives back free ones beyond [`MAX_FREE_BYTES`]; a file
//! free for [`IDLE_RELEASE`] is removed by a thread that runs only while
//! the pool holds files; the pool's names are removed when the process ends, and a
//! killed process's by the next process that starts a pool or ends.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{transfer_name, DIR};

/// How pool files' names start: `rparallel-pool-<pid>-<uuid>`. Never a
/// transfer name: receivers refuse them.
pub(super) const PREFIX: &str = "rparallel-pool-";
/// At most this many files in the pool, in use or free.
const MAX_FILES: usize = 64;
/// At most this many bytes in free files (in-use files are memory the
/// receivers use anyway).
const MAX_FREE_BYTES: usize = 512 << 20;
/// No file larger than this is kept.
const MAX_FILE_BYTES: usize = 1 << 30;
/// A file nobody used for this long is given back to the system.
const IDLE_RELEASE: Duration = Duration::from_secs(10);
/// How often the pool's thread looks for files to give back.
const RELEASE_CHECK: Duration = Duration::from_secs(2);
/// File sizes are rounded up to this, so that similar sizes share files.
const GRAIN: usize = 1 << 20;

/// A file of the pool.
struct PoolFile {
    /// Names it among the pool's files for the mapping thread.
    id: u64,
    path: PathBuf,
    file: File,
    capacity: usize,
    /// A shared mapping, its pages faulted in writable, once the pool's
    /// thread made it: then a write is a memcpy (10 ms for 100 MB here),
    /// before it a `pwrite` (20 ms).
    mapped: Option<Mapped>,
    /// When it was last seen free (None: in use, or not yet looked at).
    free_since: Option<Instant>,
}

/// A shared mapping of a whole pool file.
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping belongs to this value; it is only written under the
// pool's lock, while no receiver holds the file.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps `file` shared and faults its pages in writable without writing
    /// them (MADV_POPULATE_WRITE): receivers may map the file meanwhile.
    fn new(file: &File, len: usize) -> io::Result<Mapped> {
        // Unmapped once by Drop.
        let ptr = super::map_file(file, len, libc::MAP_SHARED)?;
        let mapped = Mapped { ptr, len };
        // SAFETY: advice on the mapping just made. Older kernels refuse
        // it: the pages then fault in on the first write instead.
        unsafe { libc::madvise(ptr.cast(), len, MADV_POPULATE_WRITE) };
        Ok(mapped)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new mapped, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Linux 5.14's `madvise` advice (not in every libc crate version).
const MADV_POPULATE_WRITE: libc::c_int = 23;

impl PoolFile {
    /// A new file holding `buffer`, of at least `capacity` bytes. Written
    /// with `write`: the kernel allocates the pages as it copies, at half
    /// the cost of faulting them into a mapping.
    fn create(id: u64, buffer: &[u8], capacity: usize) -> io::Result<PoolFile> {
        use std::io::Write;
        let path = Path::new(DIR).join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let written = file
            .write_all(buffer)
            .and_then(|()| file.set_len(capacity as u64));
        match written {
            Ok(()) => Ok(PoolFile {
                id,
                path,
                file,
                capacity,
                mapped: None,
                free_since: None,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Writes `buffer` at the start of the file. Only while it is free.
    fn write(&mut self, buffer: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match &self.mapped {
            Some(mapped) => {
                // SAFETY: the mapping has `capacity` ≥ len bytes, and no
                // receiver holds the file (the caller checked).
                unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr(), mapped.ptr, buffer.len()) };
                Ok(())
            }
            None => self.file.write_all_at(buffer, 0),
        }
    }

    /// No transfer name links to it and no receiver maps it.
    fn is_free(&self) -> bool {
        let unlinked = self.file.metadata().is_ok_and(|m| m.nlink() == 1);
        unlinked && {
            let fd = self.file.as_raw_fd();
            // SAFETY: flock on our own open file; the test lock is
            // released at once.
            unsafe {
                let free = libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0;
                if free {
                    libc::flock(fd, libc::LOCK_UN);
                }
                free
            }
        }
    }
}

impl Drop for PoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Pool {
    files: Vec<PoolFile>,
    /// The next file's id.
    next_id: u64,
    /// The pool's thread, while it runs: files it should map.
    thread: Option<mpsc::Sender<ToMap>>,
    /// Whether dead processes' pools were looked for.
    swept: bool,
}

/// A new file for the pool's thread to map (a second descriptor of it).
struct ToMap {
    id: u64,
    file: File,
    len: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    files: Vec::new(),
    next_id: 0,
    thread: None,
    swept: false,
});

fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `buffer` once and returns `links` fresh transfer names for it,
/// one per receiver.
pub(super) fn write(buffer: &[u8], links: usize) -> io::Result<Vec<PathBuf>> {
    let mut pool = pool();
    let index = match pool.free_file(buffer.len()) {
        Some(index) => {
            pool.files[index].write(buffer)?;
            index
        }
        None => match pool.new_file(buffer)? {
            Some(index) => index,
            None => {
                drop(pool);
                return write_alone(buffer, links);
            }
        },
    };
    let file = &mut pool.files[index];
    file.free_since = None;
    let mut names = Vec::with_capacity(links);
    for _ in 0..links {
        let name = transfer_name();
        if let Err(e) = std::fs::hard_link(&file.path, &name) {
            for made in names {
                let _ = std::fs::remove_file(made);
            }
            // Its name is gone (a sweep of another pid namespace?): drop it.
            if !file.path.exists() {
                pool.files.remove(index);
            }
            return Err(e);
        }
        names.push(name);
    }
    Ok(names)
}

/// A file of its own for a transfer the pool has no room for, linked once
/// per receiver; nobody writes it again.
fn write_alone(buffer: &[u8], links: usize) -> io::Result<Vec<PathBuf>> {
    use std::io::Write;
    let first = transfer_name();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&first)?;
    let mut names = vec![first];
    let mut linked = file.write_all(buffer);
    for _ in 1..links {
        if linked.is_err() {
            break;
        }
        let name = transfer_name();
        linked = std::fs::hard_link(&names[0], &name);
        names.push(name);
    }
    if let Err(e) = linked {
        for name in names {
            let _ = std::fs::remove_file(name);
        }
        return Err(e);
    }
    Ok(names)
}

impl Pool {
    /// The smallest free file that holds `len` bytes.
    fn free_file(&mut self, len: usize) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, file) in self.files.iter().enumerate() {
            if file.capacity >= len
                && best.is_none_or(|b| file.capacity < self.files[b].capacity)
                && file.is_free()
            {
                best = Some(i);
            }
        }
        best
    }

    /// A new file holding `buffer`, after making room by removing free
    /// files; None when the pool has no room for it.
    fn new_file(&mut self, buffer: &[u8]) -> io::Result<Option<usize>> {
        if !self.swept {
            self.swept = true;
            remove_dead_pools();
        }
        let capacity = buffer.len().div_ceil(GRAIN) * GRAIN;
        if capacity > MAX_FILE_BYTES {
            return Ok(None);
        }
        // None of the free files is large enough: give back the largest
        // while over the bounds.
        loop {
            let free: Vec<usize> = (0..self.files.len())
                .filter(|&i| self.files[i].is_free())
                .collect();
            let free_bytes: usize = free.iter().map(|&i| self.files[i].capacity).sum();
            if self.files.len() < MAX_FILES && free_bytes <= MAX_FREE_BYTES {
                break;
            }
            match free.into_iter().max_by_key(|&i| self.files[i].capacity) {
                Some(i) => drop(self.files.remove(i)),
                None => return Ok(None),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let file = PoolFile::create(id, buffer, capacity)?;
        // The pool's thread maps it, off this path; without the thread it
        // is written with pwrite.
        if let Ok(second) = file.file.try_clone() {
            self.hand_to_thread(ToMap {
                id,
                file: second,
                len: capacity,
            });
        }
        self.files.push(file);
        Ok(Some(self.files.len() - 1))
    }

    /// Hands `work` to the pool's thread, starting it if needed.
    fn hand_to_thread(&mut self, work: ToMap) {
        let work = match &self.thread {
            Some(thread) => match thread.send(work) {
                Ok(()) => return,
                Err(mpsc::SendError(work)) => work,
            },
            None => work,
        };
        let (tx, rx) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("rparallel-shm-pool".into())
            .spawn(move || pool_thread(rx));
        if started.is_ok() && tx.send(work).is_ok() {
            self.thread = Some(tx);
        }
    }
}

/// The pool's thread: maps new files (faulting their pages in takes as
/// long as a copy), and every [`RELEASE_CHECK`] removes files free for
/// [`IDLE_RELEASE`]. Ends when the pool is empty.
fn pool_thread(work: mpsc::Receiver<ToMap>) {
    // Mapping ahead is worth doing only with time to spare: the lowest
    // priority, so that it never slows the transfers themselves.
    // SAFETY: setpriority on this thread (tid 0 = the caller) only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    loop {
        match work.recv_timeout(RELEASE_CHECK) {
            Ok(ToMap { id, file, len }) => {
                let Ok(mapped) = Mapped::new(&file, len) else {
                    continue;
                };
                let mut pool = pool();
                if let Some(f) = pool.files.iter_mut().find(|f| f.id == id) {
                    f.mapped = Some(mapped);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut pool = pool();
                let now = Instant::now();
                pool.files.retain_mut(|file| {
                    if !file.is_free() {
                        file.free_since = None;
                        return true;
                    }
                    let since = *file.free_since.get_or_insert(now);
                    now.duration_since(since) < IDLE_RELEASE
                });
                if pool.files.is_empty() {
                    // Under the lock: a new file after this starts a new thread.
                    pool.thread = None;
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Removes the pool (at the end of the process).
pub(super) fn clear() {
    pool().files.clear();
}

/// Removes the pool files of processes that are gone (killed before they
/// could). Only pool names: no receiver opens them, so removing one can
/// lose nothing.
pub(super) fn remove_dead_pools() {
    let Ok(entries) = std::fs::read_dir(DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
