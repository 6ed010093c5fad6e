//! Large buffers between two processes on one host go through shared memory
//! (files in `/dev/shm`) instead of the sockets, and the controller forwards
//! a few bytes of metadata instead of the array. Which buffers moved, and
//! where, is listed in the message's metadata, which is signed.
//!
//! # Layout
//!
//! - this file: which peers share memory ([`host_id`]), and messages ↔
//!   files ([`export`], [`import`]).
//! - `pool`: the sender's side. Its files are kept and reused: a fresh
//!   tmpfs file faults in page by page at a fifth of memcpy's speed, a
//!   reused one is written at memcpy's. Each transfer is a hard link to a
//!   pool file, under a name one receiver opens once.
//! - `mapping`: the receiver's side. It maps what it received privately
//!   (copy-on-write, no copy) and holds a shared `flock` on the file while
//!   the mapping lives, which is how the sender knows when it may write
//!   the file again.
//!
//! Peers compare [`host_id`]s (host name, boot id and the `/dev/shm`
//! filesystem) to know they share `/dev/shm`; `RPARALLEL_SHM=0` turns the
//! path off.

mod mapping;
mod pool;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::Message;

pub use mapping::mapping_ptr;

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

/// Maps the first `len` bytes of `file` for reading and writing, shared
/// (`libc::MAP_SHARED`: the sender's pool) or private (`MAP_PRIVATE`: a
/// receiver's copy-on-write view). The caller unmaps it.
fn map_file(file: &std::fs::File, len: usize, sharing: libc::c_int) -> io::Result<*mut u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh mapping of a file we opened, of at most its size
    // (the callers check); checked for failure.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            sharing,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

/// Transfer names this process made that a receiver may not have taken
/// yet; removed by [`remove_leftovers`] when the process ends.
static WRITTEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Moves the buffers of `message` of at least [`MIN_SIZE`] bytes into
/// shared memory. On error nothing moved: the message can still go through
/// the sockets.
pub fn export(message: &mut Message) -> io::Result<()> {
    export_many(&mut [message])
}

/// [`export`] for messages that carry the same buffers to several
/// receivers (a broadcast): each large buffer is written once, and each
/// message names a link of its own to it.
pub fn export_many(messages: &mut [&mut Message]) -> io::Result<()> {
    let Some(first) = messages.first() else {
        return Ok(());
    };
    let mut moved: Vec<(usize, usize, Vec<PathBuf>)> = Vec::new();
    for (index, buffer) in first.buffers.iter().enumerate() {
        if buffer.len() < MIN_SIZE {
            continue;
        }
        match pool::write(buffer, messages.len()) {
            Ok(links) => {
                record(&links);
                moved.push((index, buffer.len(), links));
            }
            Err(e) => {
                for (_, _, links) in moved {
                    for path in links {
                        let _ = std::fs::remove_file(path);
                    }
                }
                return Err(e);
            }
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    for (which, message) in messages.iter_mut().enumerate() {
        let mut entries = Vec::new();
        for (index, len, links) in &moved {
            entries.push(json!({ "index": index, "path": links[which], "len": len }));
            message.buffers[*index] = Bytes::new();
        }
        if !message.metadata.is_object() {
            message.metadata = json!({});
        }
        message.metadata[KEY] = Value::Array(entries);
    }
    Ok(())
}

/// A fresh transfer name: one receiver opens it once.
fn transfer_name() -> PathBuf {
    Path::new(DIR).join(format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

fn record(paths: &[PathBuf]) {
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    // Names long taken by their receivers are gone: forget them.
    if written.len() >= 256 {
        written.retain(|p| p.exists());
    }
    written.extend_from_slice(paths);
}

/// Brings back the buffers [`export`] moved out.
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
        taken.push((index, mapping::take(path, len)?));
    }
    for (index, data) in taken {
        buffers[index] = data;
    }
    Ok(())
}

/// Only transfer names this scheme makes, directly in [`DIR`].
fn ours(path: &Path) -> bool {
    path.parent() == Some(Path::new(DIR))
        && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with(PREFIX) && !n.starts_with(pool::PREFIX) && !n.contains("..")
        })
}

/// Removes what this process put in `/dev/shm`: transfer names nobody took
/// (a receiver died) and its pool; and the pools of processes killed
/// before they could remove theirs.
pub fn remove_leftovers() {
    let written = std::mem::take(&mut *WRITTEN.lock().unwrap_or_else(|e| e.into_inner()));
    for path in written {
        let _ = std::fs::remove_file(path);
    }
    pool::clear();
    pool::remove_dead_pools();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Session;
    use std::os::unix::fs::MetadataExt;

    /// The pool is the process's: tests that watch it take turns.
    static POOL_TESTS: Mutex<()> = Mutex::new(());

    fn message_with(buffer: Bytes) -> Message {
        let mut m = Session::new(b"k", "t").message("apply_request", json!({}), None);
        m.buffers = vec![buffer];
        m
    }

    fn inode_of(m: &Message) -> u64 {
        let path = m.metadata[KEY][0]["path"].as_str().unwrap();
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_file_is_written_again_only_once_its_receiver_let_go() {
        if !enabled() {
            return;
        }
        let _turn = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let len = 3 * MIN_SIZE + 5;
        let mut first = message_with(Bytes::from(vec![1u8; len]));
        export(&mut first).unwrap();
        let first_inode = inode_of(&first);
        import(&mut first).unwrap();
        // The receiver still maps the first: the next goes elsewhere, and
        // the first keeps its bytes.
        let mut second = message_with(Bytes::from(vec![2u8; len]));
        export(&mut second).unwrap();
        assert_ne!(inode_of(&second), first_inode);
        import(&mut second).unwrap();
        assert!(first.buffers[0].iter().all(|&b| b == 1));
        assert!(second.buffers[0].iter().all(|&b| b == 2));
        // Once it let go, its file is written again: no new file.
        drop(first);
        let mut third = message_with(Bytes::from(vec![3u8; len - 7]));
        export(&mut third).unwrap();
        assert_eq!(inode_of(&third), first_inode);
        import(&mut third).unwrap();
        assert_eq!(third.buffers[0].len(), len - 7);
        assert!(third.buffers[0].iter().all(|&b| b == 3));
        assert!(second.buffers[0].iter().all(|&b| b == 2));
    }

    #[test]
    fn a_broadcast_writes_once_and_each_receiver_takes_its_own_name() {
        if !enabled() {
            return;
        }
        let _turn = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let big = Bytes::from((0..2 * MIN_SIZE).map(|i| i as u8).collect::<Vec<u8>>());
        let mut messages: Vec<Message> = (0..3).map(|_| message_with(big.clone())).collect();
        let mut refs: Vec<&mut Message> = messages.iter_mut().collect();
        export_many(&mut refs).unwrap();
        let paths: Vec<String> = messages
            .iter()
            .map(|m| m.metadata[KEY][0]["path"].as_str().unwrap().to_string())
            .collect();
        let inodes: Vec<u64> = messages.iter().map(inode_of).collect();
        assert!(
            inodes.iter().all(|&i| i == inodes[0]),
            "one file: {inodes:?}"
        );
        assert_eq!(
            paths.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
        for m in &mut messages {
            import(m).unwrap();
            assert_eq!(m.buffers[0], big);
        }
        assert!(paths.iter().all(|p| !Path::new(p).exists()));
        // A name is taken once: the same metadata again is an error.
        let mut again = vec![Bytes::new()];
        let metadata = json!({ KEY: [{ "index": 0, "path": paths[0], "len": big.len() }] });
        assert!(import_buffers(&metadata, &mut again).is_err());
    }

    #[test]
    fn pool_names_are_not_transfer_names() {
        let pool_name = format!("{DIR}/{}{}-abc", pool::PREFIX, std::process::id());
        assert!(!ours(Path::new(&pool_name)));
        assert!(ours(&transfer_name()));
    }

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
