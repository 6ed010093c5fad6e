//! Large buffers between two processes on one host go through shared memory
//! (a file in `/dev/shm`) instead of the sockets: the sender writes it once,
//! the receiver reads it once and removes it, and the controller forwards a
//! few bytes of metadata instead of the array. Which buffers moved, and
//! where, is listed in the message's metadata, which is signed.
//!
//! Peers compare [`host_id`]s (host name, boot id and the `/dev/shm`
//! filesystem) to know they share `/dev/shm`; `RPARALLEL_SHM=0` turns the
//! path off.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::Message;

/// Buffers smaller than this stay in the message: a file costs more than
/// copying them through the sockets.
pub const MIN_SIZE: usize = 1 << 20;
/// Where the files live, and how their names start.
const DIR: &str = "/dev/shm";
const PREFIX: &str = "rparallel-";
/// The metadata key listing moved buffers: `[{index, path, len}]`.
pub const KEY: &str = "rparallel_shm";
/// The metadata key a client sets to its host id, so an engine on the same
/// host answers through shared memory too.
pub const HOST_KEY: &str = "rparallel_host";

/// This host as peers compare it: host name, boot id, and the `/dev/shm`
/// filesystem itself (its device and inode), so processes that share a
/// kernel but not `/dev/shm` (containers, a lab's network namespaces with
/// private mounts) never count as one host.
pub fn host_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}/{}/{}",
            read("/proc/sys/kernel/hostname").trim(),
            read("/proc/sys/kernel/random/boot_id").trim(),
            shm_identity()
        )
    })
}

/// `device:inode` of `/dev/shm` as this process sees it.
fn shm_identity() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(DIR) {
        Ok(m) => format!("{}:{}", m.dev(), m.ino()),
        Err(_) => "-".into(),
    }
}

/// Whether this process may use shared memory at all.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var("RPARALLEL_SHM").map_or(true, |v| v != "0") && Path::new(DIR).is_dir()
    })
}

/// Whether a peer with `peer_host` shares this host's memory.
pub fn is_local(peer_host: Option<&str>) -> bool {
    enabled() && peer_host == Some(host_id())
}

/// Files this process wrote that a receiver may not have taken yet; removed
/// by [`remove_leftovers`] when the process ends.
static WRITTEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Moves the buffers of `message` of at least [`MIN_SIZE`] bytes into files.
/// On error nothing moved: the message can still go through the sockets.
pub fn export(message: &mut Message) -> io::Result<()> {
    let mut moved = Vec::new();
    for (index, buffer) in message.buffers.iter().enumerate() {
        if buffer.len() < MIN_SIZE {
            continue;
        }
        match write(buffer) {
            Ok(path) => moved.push((index, path)),
            Err(e) => {
                for (_, path) in moved {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::new();
    for (index, path) in moved {
        let len = message.buffers[index].len();
        record(&path);
        entries.push(json!({ "index": index, "path": path, "len": len }));
        message.buffers[index] = Bytes::new();
    }
    if !message.metadata.is_object() {
        message.metadata = json!({});
    }
    message.metadata[KEY] = Value::Array(entries);
    Ok(())
}

fn write(buffer: &[u8]) -> io::Result<PathBuf> {
    let path = Path::new(DIR).join(format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    if let Err(e) = file.write_all(buffer) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

fn record(path: &Path) {
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    // Files long taken by their receivers are gone: forget them.
    if written.len() >= 256 {
        written.retain(|p| p.exists());
    }
    written.push(path.to_path_buf());
}

/// Brings back the buffers [`export`] moved out, removing their files.
pub fn import(message: &mut Message) -> io::Result<()> {
    import_buffers(&message.metadata, &mut message.buffers)?;
    if let Some(metadata) = message.metadata.as_object_mut() {
        metadata.remove(KEY);
    }
    Ok(())
}

/// [`import`] for a message that is shared: fills `buffers` (a copy of its
/// buffers) from the files its `metadata` lists.
pub fn import_buffers(metadata: &Value, buffers: &mut [Bytes]) -> io::Result<()> {
    let Some(moved) = metadata.get(KEY).and_then(Value::as_array) else {
        return Ok(());
    };
    let mut taken = Vec::new();
    for entry in moved {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad shared-memory entry");
        let index = entry["index"].as_u64().ok_or_else(bad)? as usize;
        let len = entry["len"].as_u64().ok_or_else(bad)? as usize;
        let path = Path::new(entry["path"].as_str().ok_or_else(bad)?);
        if index >= buffers.len() || !ours(path) {
            return Err(bad());
        }
        taken.push((index, read(path, len)?));
    }
    for (index, data) in taken {
        buffers[index] = data;
    }
    Ok(())
}

/// Only files this scheme names, directly in [`DIR`].
fn ours(path: &Path) -> bool {
    path.parent() == Some(Path::new(DIR))
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX) && !n.contains(".."))
}

/// Maps a received file privately and removes it: its pages are the
/// file's until written (copy-on-write), so nothing is copied or zeroed.
fn read(path: &Path, len: usize) -> io::Result<Bytes> {
    // Not through a symlink, and only a regular file of our own user: a
    // name under /dev/shm proves nothing about who made it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: not a regular file of this user", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let size = meta.len();
    if size != len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: {size} of {len} bytes", path.display()),
        ));
    }
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: a fresh private mapping of a whole regular file we opened;
    // checked for failure; unmapped once by Mapping's Drop.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = ptr as *mut u8;
    live().insert(ptr as usize, len);
    Ok(Bytes::from_owner(Mapping { ptr, len }))
}

/// A private mapping made by [`read`]; unmapped when the last `Bytes` of it goes.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is only read
// through `Bytes`, or written through [`writable`] by its only holder.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping (see read).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        live().remove(&(self.ptr as usize));
        // SAFETY: unmapping exactly what read mapped, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Live private mappings: start address → length.
fn live() -> std::sync::MutexGuard<'static, std::collections::HashMap<usize, usize>> {
    static LIVE: OnceLock<Mutex<std::collections::HashMap<usize, usize>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// If `bytes` is a whole mapping made by [`import`], a pointer through which
/// it may be written in place: the mapping is private, so the writes go
/// nowhere else. Only for a caller that holds the only reference to it
/// (the engine's request buffers); lets a received array be writable
/// without a copy.
pub fn mapping_ptr(bytes: &Bytes) -> Option<*mut u8> {
    if bytes.is_empty() {
        return None;
    }
    let start = bytes.as_ptr() as usize;
    (live().get(&start) == Some(&bytes.len())).then_some(start as *mut u8)
}

/// Removes the files this process wrote that nobody took (a receiver died).
pub fn remove_leftovers() {
    let written = std::mem::take(&mut *WRITTEN.lock().unwrap_or_else(|e| e.into_inner()));
    for path in written {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Session;

    #[test]
    fn large_buffers_round_trip_and_leave_no_file() {
        if !enabled() {
            return;
        }
        let session = Session::new(b"k", "t");
        let mut m = session.message("apply_request", json!({}), None);
        let big = Bytes::from(vec![7u8; MIN_SIZE + 3]);
        m.buffers = vec![Bytes::from_static(b"small"), big.clone()];
        export(&mut m).unwrap();
        assert_eq!(m.buffers[1].len(), 0);
        let path = m.metadata[KEY][0]["path"].as_str().unwrap().to_string();
        assert!(Path::new(&path).exists());
        // The metadata is signed with the rest of the message.
        let mut back = session.decode(session.encode(&m)).unwrap();
        import(&mut back).unwrap();
        assert_eq!(back.buffers, vec![Bytes::from_static(b"small"), big]);
        // A received buffer is a mapping its holder may write in place.
        assert!(mapping_ptr(&back.buffers[1]).is_some());
        assert!(mapping_ptr(&back.buffers[1].slice(1..)).is_none());
        assert!(mapping_ptr(&back.buffers[0]).is_none());
        assert!(back.metadata.get(KEY).is_none());
        assert!(!Path::new(&path).exists());
    }

    #[test]
    fn entries_outside_the_scheme_are_refused() {
        let session = Session::new(b"k", "t");
        for path in ["/etc/passwd", "/dev/shm/../etc/passwd", "/dev/shm/other"] {
            let mut m = session.message("apply_request", json!({}), None);
            m.buffers = vec![Bytes::new()];
            m.metadata = json!({ KEY: [{ "index": 0, "path": path, "len": 4 }] });
            assert!(import(&mut m).is_err(), "{path}");
        }
    }

    #[test]
    fn host_ids_name_host_boot_and_shm() {
        use std::os::unix::fs::MetadataExt;
        let shm = std::fs::metadata(DIR).unwrap();
        let parts: Vec<&str> = host_id().split('/').collect();
        assert_eq!(parts.len(), 3, "{}", host_id());
        assert_eq!(parts[2], format!("{}:{}", shm.dev(), shm.ino()));
        // The same host name and boot, another /dev/shm: not this host.
        let other = format!("{}/{}/0:0", parts[0], parts[1]);
        assert!(!is_local(Some(&other)));
        assert!(!is_local(Some("elsewhere/0")));
        assert!(!is_local(None));
    }
}
