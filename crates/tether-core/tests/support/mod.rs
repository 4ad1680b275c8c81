//! Test support: an in-memory duplex transport implementing
//! `embedded_io_async`, a single-threaded executor, and a seeded RNG.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // host-side test code
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Queue {
    bytes: VecDeque<u8>,
    closed: bool,
}

/// One end of an in-memory byte pipe. Reads return at most `chunk` bytes,
/// so frames arrive in pieces.
pub struct End {
    incoming: Rc<RefCell<Queue>>,
    outgoing: Rc<RefCell<Queue>>,
    chunk: usize,
}

/// Two connected ends.
pub fn pipe(chunk: usize) -> (End, End) {
    let a = Rc::new(RefCell::new(Queue::default()));
    let b = Rc::new(RefCell::new(Queue::default()));
    (
        End {
            incoming: a.clone(),
            outgoing: b.clone(),
            chunk,
        },
        End {
            incoming: b,
            outgoing: a,
            chunk,
        },
    )
}

impl End {
    /// Bytes written by the other end and not read yet.
    pub fn pending(&self) -> Vec<u8> {
        self.incoming.borrow().bytes.iter().copied().collect()
    }

    /// Queues raw bytes for the other end to read.
    pub fn inject(&self, bytes: &[u8]) {
        self.outgoing.borrow_mut().bytes.extend(bytes);
    }

    /// Signals end of stream to the other end.
    pub fn shutdown(&self) {
        self.outgoing.borrow_mut().closed = true;
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.outgoing.borrow_mut().closed = true;
    }
}

impl embedded_io_async::ErrorType for End {
    type Error = Infallible;
}

impl embedded_io_async::Read for End {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        std::future::poll_fn(|_| {
            let mut queue = self.incoming.borrow_mut();
            if queue.bytes.is_empty() {
                return if queue.closed {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            }
            let n = buf.len().min(queue.bytes.len()).min(self.chunk);
            for (dst, src) in buf.iter_mut().zip(queue.bytes.drain(..n)) {
                *dst = src;
            }
            Poll::Ready(Ok(n))
        })
        .await
    }
}

impl embedded_io_async::Write for End {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.outgoing.borrow_mut().bytes.extend(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Polls `future` until it is done. The in-memory pipe never needs a waker:
/// a pending read becomes ready once the other future has written.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    let mut spins = 0u64;
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        spins += 1;
        assert!(spins < 10_000_000, "deadlock: future never finished");
    }
}

/// A seeded RNG with the `rand_core` 0.9 traits tether-core uses.
pub fn rng(seed: u64) -> rand::rngs::SmallRng {
    use rand::SeedableRng;
    rand::rngs::SmallRng::seed_from_u64(seed)
}
