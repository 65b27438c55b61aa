//! Client messages to a shared child's stdin: one bounded queue per child,
//! which every client posts to without waiting, and one writer that owns
//! stdin and empties the queue as fast as the child reads.
//!
//! A client message that finds the queue full (the child reads slower than
//! its clients write, or not at all) is dropped and counted: waiting would
//! hold up the sender's session, and an unbounded queue would let clients
//! fill the server's memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use crate::mailbox::{mailbox_weighed, Bound, Mailbox, PostError, Poster};

/// What a child's input queue holds before client messages are dropped:
/// as a channel member's queue, far more than a burst outruns a child that
/// keeps reading by.
pub(super) const INPUT_QUEUE: Bound = Bound {
    items: 1024,
    bytes: 1 << 20,
};

/// Queued messages gathered into one write, up to this many bytes: a burst
/// from many clients reaches the child in few system calls.
const BATCH: usize = 16 * 1024;

/// The posting side of a child's input queue.
#[derive(Debug)]
pub(super) struct Input {
    queue: Poster<Bytes>,
    /// Dropped from this child's queue.
    dropped: AtomicU64,
    /// Dropped from every child's, since start.
    total: Arc<AtomicU64>,
    /// The first drop is logged; the rest only counted.
    warned: AtomicBool,
}

impl Input {
    /// A queue and its posting side; `total` counts drops server-wide.
    pub(super) fn new(total: Arc<AtomicU64>) -> (Input, Mailbox<Bytes>) {
        let (queue, mailbox) = mailbox_weighed(INPUT_QUEUE.items, |b: &Bytes| b.len());
        let input = Input {
            queue,
            dropped: AtomicU64::new(0),
            total,
            warned: AtomicBool::new(false),
        };
        (input, mailbox)
    }

    /// Queues one client message for the child, or drops and counts it if
    /// the queue is full. Never waits.
    pub(super) fn take(&self, data: Bytes) {
        match self.queue.post_within(data, INPUT_QUEUE) {
            Ok(()) => {}
            Err(PostError::Full) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.total.fetch_add(1, Ordering::Relaxed);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "a shared child is not reading its stdin fast enough: client messages are dropped"
                    );
                }
            }
            // The child closed its stdin (or is ending): nobody to give it
            // to, as for a per-connection child.
            Err(PostError::Closed) => {}
        }
    }

    /// Messages dropped from this child's queue.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes queued messages to the child's stdin, one line each, until
/// `stop` is cancelled or the child stops reading. Owns stdin: returning
/// closes it (and drops the queue, so later posts go nowhere).
pub(super) async fn write(
    mut stdin: pipe::Sender,
    mut queue: Mailbox<Bytes>,
    stop: &CancellationToken,
) {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let first = tokio::select! {
            message = queue.recv() => message,
            () = stop.cancelled() => return,
        };
        line_into(&mut batch, &first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Some(message) => line_into(&mut batch, &message),
                None => break,
            }
        }
        let written = tokio::select! {
            written = stdin.write_all(&batch) => written,
            () = stop.cancelled() => return,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "shared child stopped reading stdin");
            return;
        }
        batch.clear();
        if batch.capacity() > BATCH {
            // Keep an idle writer small after a big message.
            batch = Vec::new();
        }
    }
}

/// A message as the child reads it in text mode: itself and a newline.
fn line_into(batch: &mut Vec<u8>, message: &[u8]) {
    batch.extend_from_slice(message);
    batch.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_never_grows() {
        let total = Arc::new(AtomicU64::new(0));
        let (input, mut queue) = Input::new(total.clone());
        for i in 0..INPUT_QUEUE.items + 5 {
            input.take(Bytes::from(i.to_string()));
        }
        assert_eq!(queue.len(), INPUT_QUEUE.items);
        assert_eq!((input.dropped(), total.load(Ordering::Relaxed)), (5, 5));
        assert_eq!(
            queue.try_recv().as_deref(),
            Some(&b"0"[..]),
            "the oldest kept"
        );
        // Room again: the next one is taken.
        input.take(Bytes::from_static(b"later"));
        assert_eq!(input.dropped(), 5);
    }

    #[test]
    fn big_messages_are_bounded_by_bytes() {
        let (input, queue) = Input::new(Arc::default());
        let big = Bytes::from(vec![b'x'; 300 * 1024]);
        for _ in 0..5 {
            input.take(big.clone());
        }
        assert_eq!(queue.len(), 3, "1 MiB holds three of 300 KiB");
        assert_eq!(input.dropped(), 2);
    }

    #[test]
    fn a_closed_queue_drops_without_counting() {
        let (input, queue) = Input::new(Arc::default());
        drop(queue);
        input.take(Bytes::from_static(b"x"));
        assert_eq!(input.dropped(), 0);
    }

    #[tokio::test]
    async fn the_writer_writes_lines_in_order_and_stops_when_told() {
        use tokio::io::AsyncReadExt;
        let (input, queue) = Input::new(Arc::default());
        let (read, write_end) = nix::unistd::pipe().expect("pipe");
        let stdin = pipe::Sender::from_owned_fd(write_end).expect("sender");
        let mut child = pipe::Receiver::from_owned_fd(read).expect("receiver");
        let stop = CancellationToken::new();
        for m in ["one", "two", "three"] {
            input.take(Bytes::from(m));
        }
        let writer = tokio::spawn({
            let stop = stop.clone();
            async move { write(stdin, queue, &stop).await }
        });
        let mut got = vec![0u8; 14];
        child.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"one\ntwo\nthree\n");
        stop.cancel();
        writer.await.expect("writer ends");
        let mut rest = Vec::new();
        child
            .read_to_end(&mut rest)
            .await
            .expect("eof: stdin closed");
        assert!(rest.is_empty());
    }
}
