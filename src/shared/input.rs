//! Client messages to a shared child's stdin: one bounded queue per child,
//! which every client posts to without waiting, and one writer that owns
//! stdin and empties the queue as fast as the child reads.
//!
//! A client message that finds the queue full (the child reads slower than
//! its clients write, or not at all) is dropped and counted: waiting would
//! hold up the sender's session, and an unbounded queue would let clients
//! fill the server's memory.
//!
//! The queue belongs to the endpoint, not to one child: with
//! `--shared-restart` what clients send while a child is being restarted
//! waits in it (bounded as ever) for the next one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use crate::config::Mode;
use crate::frames::{self, Kind};
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

/// One client message, as queued for the child: what kind it came as
/// matters in `--framed` mode only.
#[derive(Debug)]
pub(super) struct Piece {
    pub kind: Kind,
    pub data: Bytes,
}

/// The posting side of a child's input queue.
#[derive(Debug)]
pub(super) struct Input {
    queue: Poster<Piece>,
    /// Dropped from this child's queue.
    dropped: AtomicU64,
    /// Dropped from every child's, since start.
    total: Arc<AtomicU64>,
    /// The first drop is logged; the rest only counted.
    warned: AtomicBool,
}

impl Input {
    /// A queue and its posting side; `total` counts drops server-wide.
    pub(super) fn new(total: Arc<AtomicU64>) -> (Input, Mailbox<Piece>) {
        let (queue, mailbox) = mailbox_weighed(INPUT_QUEUE.items, |p: &Piece| p.data.len());
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
    pub(super) fn take(&self, kind: Kind, data: Bytes) {
        match self.queue.post_within(Piece { kind, data }, INPUT_QUEUE) {
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
            // The endpoint's child is ending for good: nobody to give it
            // to, as for a per-connection child.
            Err(PostError::Closed) => {}
        }
    }

    /// Messages dropped from this child's queue.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes `first` (lines the child must read before any client message),
/// then queued messages, framed as `mode` says, to the child's stdin until
/// `stop` is cancelled. A child that stops reading gets nothing more: what
/// clients send it is then taken and let go, as a per-connection child's
/// input is once it closes stdin. Owns stdin: returning closes it.
pub(super) async fn write(
    mut stdin: pipe::Sender,
    queue: &mut Mailbox<Piece>,
    first: Vec<u8>,
    mode: Mode,
    stop: &CancellationToken,
) {
    let mut batch = first;
    loop {
        if batch.is_empty() {
            let piece = tokio::select! {
                piece = queue.recv() => piece,
                () = stop.cancelled() => return,
            };
            piece_into(&mut batch, &piece, mode);
        }
        while batch.len() < BATCH {
            match queue.try_recv() {
                Some(piece) => piece_into(&mut batch, &piece, mode),
                None => break,
            }
        }
        let written = tokio::select! {
            written = stdin.write_all(&batch) => written,
            () = stop.cancelled() => return,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "shared child stopped reading stdin");
            drop(stdin);
            return discard(queue, stop).await;
        }
        batch.clear();
        if batch.capacity() > BATCH {
            // Keep an idle writer small after a big message.
            batch = Vec::new();
        }
    }
}

/// Takes client messages and lets them go until `stop`.
async fn discard(queue: &mut Mailbox<Piece>, stop: &CancellationToken) {
    loop {
        tokio::select! {
            _ = queue.recv() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A message as the child reads it: a line in text mode, the bytes alone
/// in binary mode, header and payload with `--framed`.
fn piece_into(batch: &mut Vec<u8>, piece: &Piece, mode: Mode) {
    if mode == Mode::Framed {
        batch.extend_from_slice(&frames::header(piece.kind, piece.data.len()));
    }
    batch.extend_from_slice(&piece.data);
    if mode == Mode::Text {
        batch.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_never_grows() {
        let total = Arc::new(AtomicU64::new(0));
        let (input, mut queue) = Input::new(total.clone());
        for i in 0..INPUT_QUEUE.items + 5 {
            input.take(Kind::Text, Bytes::from(i.to_string()));
        }
        assert_eq!(queue.len(), INPUT_QUEUE.items);
        assert_eq!((input.dropped(), total.load(Ordering::Relaxed)), (5, 5));
        let oldest = queue.try_recv().map(|p| p.data);
        assert_eq!(oldest.as_deref(), Some(&b"0"[..]), "the oldest kept");
        // Room again: the next one is taken.
        input.take(Kind::Text, Bytes::from_static(b"later"));
        assert_eq!(input.dropped(), 5);
    }

    #[test]
    fn big_messages_are_bounded_by_bytes() {
        let (input, queue) = Input::new(Arc::default());
        let big = Bytes::from(vec![b'x'; 300 * 1024]);
        for _ in 0..5 {
            input.take(Kind::Text, big.clone());
        }
        assert_eq!(queue.len(), 3, "1 MiB holds three of 300 KiB");
        assert_eq!(input.dropped(), 2);
    }

    #[test]
    fn a_closed_queue_drops_without_counting() {
        let (input, queue) = Input::new(Arc::default());
        drop(queue);
        input.take(Kind::Text, Bytes::from_static(b"x"));
        assert_eq!(input.dropped(), 0);
    }

    /// A pipe standing for a child's stdin: the writer's end, and ours.
    fn stdin_pipe() -> (pipe::Sender, pipe::Receiver) {
        let (read, write_end) = nix::unistd::pipe().expect("pipe");
        let stdin = pipe::Sender::from_owned_fd(write_end).expect("sender");
        let child = pipe::Receiver::from_owned_fd(read).expect("receiver");
        (stdin, child)
    }

    #[tokio::test]
    async fn the_writer_writes_lines_in_order_and_stops_when_told() {
        use tokio::io::AsyncReadExt;
        let (input, mut queue) = Input::new(Arc::default());
        let (stdin, mut child) = stdin_pipe();
        let stop = CancellationToken::new();
        for m in ["one", "two", "three"] {
            input.take(Kind::Text, Bytes::from(m));
        }
        let writer = tokio::spawn({
            let stop = stop.clone();
            async move {
                write(stdin, &mut queue, b"first\n".to_vec(), Mode::Text, &stop).await;
                queue
            }
        });
        let want = b"first\none\ntwo\nthree\n";
        let mut got = vec![0u8; want.len()];
        child.read_exact(&mut got).await.expect("read");
        assert_eq!(got, want);
        stop.cancel();
        let mut queue = writer.await.expect("writer ends");
        let mut rest = Vec::new();
        child
            .read_to_end(&mut rest)
            .await
            .expect("eof: stdin closed");
        assert!(rest.is_empty());
        // The queue outlives the writer: the next child's messages wait.
        input.take(Kind::Text, Bytes::from_static(b"later"));
        assert_eq!(
            queue.try_recv().map(|p| p.data).as_deref(),
            Some(&b"later"[..])
        );
    }

    #[test]
    fn each_mode_frames_messages_as_its_child_reads_them() {
        let text = Piece {
            kind: Kind::Text,
            data: Bytes::from_static(b"hi"),
        };
        let binary = Piece {
            kind: Kind::Binary,
            data: Bytes::from_static(b"\0\n"),
        };
        let framed = |mode| {
            let mut batch = Vec::new();
            piece_into(&mut batch, &text, mode);
            piece_into(&mut batch, &binary, mode);
            batch
        };
        assert_eq!(framed(Mode::Text), b"hi\n\0\n\n");
        assert_eq!(framed(Mode::Binary), b"hi\0\n");
        assert_eq!(framed(Mode::Framed), b"\x01\0\0\0\x02hi\x02\0\0\0\x02\0\n");
    }
}
