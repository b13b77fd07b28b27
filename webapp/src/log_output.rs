//! Where log lines go: standard output, in batches. A `write` to standard output for each
//! request's line is a system call per request (about 4 % of the CPU time of a `POST /data`,
//! `BENCHMARKS.md`), so lines gather in a buffer and go out together: [`FLUSH_DELAY`] after
//! the first line of a batch (and the time the flushing thread takes to wake), as soon as the
//! buffer is full, at exit, and before a panic's report. While standard output blocks,
//! writers block as before.

use std::io::{self, BufWriter, Stdout, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the flushing thread waits, after the first line of a batch, before it writes
/// the batch out.
pub const FLUSH_DELAY: Duration = Duration::from_millis(100);
/// The buffer: a batch larger than this goes out at once, from the thread that fills it.
const CAPACITY: usize = 64 * 1024;

/// Standard output, written in batches by a thread of its own. Clones share the buffer.
#[derive(Clone)]
pub struct BatchedStdout(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// Signalled when a line arrives in an empty buffer.
    pending: Condvar,
}

struct State {
    out: BufWriter<Stdout>,
    /// Whether the buffer holds lines the flushing thread has not been woken for.
    dirty: bool,
}

impl BatchedStdout {
    /// Starts the thread that flushes the batches.
    pub fn start() -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                out: BufWriter::with_capacity(CAPACITY, io::stdout()),
                dirty: false,
            }),
            pending: Condvar::new(),
        });
        let flusher = Arc::clone(&shared);
        thread::Builder::new()
            .name("log-output".to_owned())
            .spawn(move || flusher.flush_batches())?;
        Ok(Self(shared))
    }

    /// Writes out every buffered line now, before exiting.
    pub fn flush(&self) {
        self.0.lock().flush();
    }

    /// Flushes the buffered lines before the report of any panic, which the process does
    /// not outlive (`panic = "abort"`). A panic of a thread that holds the buffer skips it:
    /// waiting for itself would hang the process instead of ending it.
    pub fn flush_on_panic(&self) {
        let output = self.clone();
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            match output.0.state.try_lock() {
                Ok(mut state) => state.flush(),
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().flush(),
                Err(TryLockError::WouldBlock) => {}
            }
            report(info);
        }));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A writer that panicked mid-line leaves at worst a partial line: keep logging.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn flush_batches(&self) {
        loop {
            let waiting = self.lock();
            let mut state = self
                .pending
                .wait_while(waiting, |state| !state.dirty)
                .unwrap_or_else(PoisonError::into_inner);
            drop(state);
            thread::sleep(FLUSH_DELAY);
            state = self.lock();
            state.flush();
        }
    }
}

impl State {
    fn flush(&mut self) {
        // Standard output gone leaves nowhere to report it.
        let _ = self.out.flush();
        self.dirty = false;
    }
}

/// The writer of one log event.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = self.0.lock();
        // Whole, under the lock: a line longer than the buffer goes straight out, and a
        // partial write returned to the caller would let another thread's line in.
        state.out.write_all(line)?;
        if !state.dirty {
            state.dirty = true;
            self.0.pending.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // A batch goes out on the flushing thread's schedule, not on each event's.
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}
