//! Output written straight to file descriptors 1 and 2 — by C and Fortran
//! extensions, `os.system`, subprocesses — reaches the cell as stream text,
//! as in ipykernel. Each descriptor becomes the write end of a pipe; a
//! reader thread per pipe sends what arrives to the [`OutputSink`] of the
//! request running then. The process's own logs keep the original stderr
//! ([`log_writer`]), so they never land in a user's cell.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::output::{OutputEvent, OutputSink};

/// The stderr the process started with, once fd 2 is captured.
static ORIGINAL_STDERR: OnceLock<File> = OnceLock::new();
/// The pipes' read ends, and how many readers are handing text on now.
static CAPTURED: OnceLock<Captured> = OnceLock::new();

struct Captured {
    read_ends: Vec<RawFd>,
    busy: Arc<AtomicUsize>,
}

/// How long [`drain`] waits for output still in a pipe.
const DRAIN_LIMIT: Duration = Duration::from_millis(50);

/// Redirects fds 1 and 2 into `sink`. Once per process; later calls do
/// nothing.
pub fn capture(sink: Arc<dyn OutputSink>) -> io::Result<()> {
    if CAPTURED.get().is_some() {
        return Ok(());
    }
    let busy = Arc::new(AtomicUsize::new(0));
    let mut read_ends = Vec::new();
    for (fd, name) in [(1, "stdout"), (2, "stderr")] {
        // SAFETY: duplicating a descriptor has no memory effects.
        let original = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
        let mut ends = [0; 2];
        // SAFETY: `ends` has room for the two descriptors pipe2 writes.
        check(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
        let [read_end, write_end] = ends;
        // SAFETY: plain descriptor calls on descriptors we own.
        unsafe {
            check(libc::dup2(write_end, fd))?;
            libc::close(write_end);
        }
        if fd == 2 {
            // SAFETY: `original` is a fresh descriptor owned by nobody else.
            let _ = ORIGINAL_STDERR.set(unsafe { File::from_raw_fd(original) });
        } else {
            // SAFETY: as above; stdout's original is not needed.
            unsafe { libc::close(original) };
        }
        read_ends.push(read_end);
        // SAFETY: the read end is owned by its reader thread from now on.
        let pipe = unsafe { File::from_raw_fd(read_end) };
        let (sink, busy) = (sink.clone(), busy.clone());
        std::thread::Builder::new()
            .name(format!("rparallel-{name}"))
            .spawn(move || forward(pipe, name, &*sink, &busy))?;
    }
    let _ = CAPTURED.set(Captured { read_ends, busy });
    Ok(())
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reads a pipe until it closes, emitting whole UTF-8 text (a character
/// split between reads waits for its other half).
fn forward(mut pipe: File, name: &str, sink: &dyn OutputSink, busy: &AtomicUsize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        busy.fetch_add(1, Ordering::SeqCst);
        pending.extend_from_slice(&buf[..n]);
        let complete = complete_utf8_prefix(&pending);
        if complete > 0 {
            let text = String::from_utf8_lossy(&pending[..complete]).into_owned();
            pending.drain(..complete);
            sink.emit(OutputEvent::Stream {
                name: name.to_string(),
                text,
            });
        }
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How much of `bytes` can be decoded now: all of it, except an incomplete
/// UTF-8 sequence at the end (at most 3 bytes, and only if it can still
/// become valid).
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        // Invalid bytes are shown (as U+FFFD), not held back.
        Err(_) => bytes.len(),
    }
}

/// Waits (briefly) until output written to fds 1 and 2 so far has been
/// handed to the sink, so it is attributed to the request that wrote it and
/// precedes its reply. C stdio buffers are flushed first.
pub fn drain() {
    let Some(captured) = CAPTURED.get() else {
        return;
    };
    // SAFETY: fflush(NULL) flushes every C output stream.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let waiting: libc::c_int = captured
            .read_ends
            .iter()
            .map(|&fd| {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int.
                unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
                n
            })
            .sum();
        if waiting == 0 && captured.busy.load(Ordering::SeqCst) == 0 {
            return;
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Where the process's own logs go: the original stderr once fd 2 is
/// captured, else stderr.
pub fn log_writer() -> Box<dyn Write> {
    match ORIGINAL_STDERR.get().and_then(|f| f.try_clone().ok()) {
        Some(file) => Box::new(file),
        None => Box::new(io::stderr()),
    }
}

/// The original stderr for a child process's output (a controller started
/// from the kernel logs there, not into the cells), if fd 2 is captured.
pub fn original_stderr() -> Option<File> {
    ORIGINAL_STDERR.get().and_then(|f| f.try_clone().ok())
}

#[cfg(test)]
mod tests {
    use super::complete_utf8_prefix;

    #[test]
    fn split_characters_wait_for_their_other_half() {
        let e = "é".as_bytes();
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
        assert_eq!(complete_utf8_prefix(&[b'a', e[0]]), 1);
        assert_eq!(complete_utf8_prefix(&[b'a', e[0], e[1]]), 3);
        assert_eq!(complete_utf8_prefix(&[b'a', 0xff, b'b']), 3);
    }
}
