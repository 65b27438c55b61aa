//! Reading a child's pipes without waiting and without holding a buffer
//! while idle: wait for readiness first, then read what is there.

use bytes::{BufMut, BytesMut};
use tokio::net::unix::pipe;

/// Reads what is available into `buf`; true at end of file (or error).
/// Never waits: tokio answers "nothing yet" until its reactor has seen the
/// pipe become readable.
pub fn read_into(pipe: &pipe::Receiver, buf: &mut BytesMut) -> bool {
    ended(pipe.try_read_buf(buf))
}

/// Like [`read_into`], but asks the kernel even when tokio has not yet
/// seen the pipe become readable. tokio's `try_read` answers `WouldBlock`
/// without a system call until a reactor turn reports readiness, so bytes
/// the child wrote a moment ago can look absent. Reading behind tokio's back
/// is sound: a pipe this drains is reported readable later only if new
/// bytes arrive, and a stale readiness costs one empty read.
pub fn read_through(pipe: &pipe::Receiver, buf: &mut BytesMut) -> bool {
    use std::os::fd::AsRawFd;
    let dst = buf.chunk_mut();
    // SAFETY: read(2) writes at most `dst.len()` bytes into `dst`, which is
    // spare capacity of `buf`; the fd stays open while `pipe` is borrowed.
    let n = unsafe { libc::read(pipe.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
    let read = usize::try_from(n).map_err(|_| std::io::Error::last_os_error());
    if let Ok(n) = read {
        // SAFETY: the kernel initialised the first `n` bytes of `dst`.
        unsafe { buf.advance_mut(n) };
    }
    ended(read)
}

/// True when a read says the pipe is done: end of file or a real error
/// (not "nothing yet", not an interrupted call).
fn ended(read: std::io::Result<usize>) -> bool {
    match read {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

/// Resolves once `pipe` is readable; never, when there is no pipe.
pub async fn readable(pipe: Option<&pipe::Receiver>) {
    match pipe {
        Some(pipe) => {
            let _ = pipe.readable().await;
        }
        None => std::future::pending().await,
    }
}
