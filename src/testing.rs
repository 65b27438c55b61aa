//! Helpers for unit tests (compiled only for them).

use std::future::Future;
use std::task::Poll;

/// Runs `test` on a current-thread runtime whose only blocking-pool thread
/// is held busy meanwhile: work handed to the pool waits behind it, work
/// done on the worker does not. `test` gets a function that polls a future
/// once and says whether it finished then.
pub fn with_busy_blocking_pool<F, Fut>(test: F)
where
    F: FnOnce(std::sync::mpsc::Sender<()>) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (release, held) = std::sync::mpsc::channel::<()>();
    // First in the pool's queue: everything after it waits until released.
    let blocker = runtime.spawn_blocking(move || {
        let _ = held.recv();
    });
    runtime.block_on(test(release));
    runtime.block_on(blocker).expect("blocker");
}

/// Polls `fut` once: true if it finished at that first poll.
pub async fn ready_at_first_poll<F: Future>(fut: std::pin::Pin<&mut F>) -> bool {
    let mut fut = fut;
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
}
