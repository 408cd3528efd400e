//! What cllm prints for its user, on stdout and stderr, without ever stopping for it.
//!
//! `println!` panics when its write fails: `cllm run spec.cllm | head -3` would end the
//! run at its fourth line with a backtrace and no checkpoint, and so would a log file
//! on a full disk. Here a stream whose write fails is closed for the rest of the
//! process and nothing more is written to it; the work goes on (a run trains to its
//! end and saves, as it does when `metrics.jsonl` cannot be written). A reader that
//! went away (a broken pipe) chose to stop reading, and the exit status stays the
//! work's own; any other failure (a full disk) lost output nobody chose to drop, and
//! [`lost_output`] says so for `main` to exit 1 once the work is done. The
//! [`outln!`](crate::outln), [`out!`](crate::out) and [`errln!`](crate::errln) macros
//! and [`write_bytes`] are the crate's only way to print.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first failed write that was not a broken pipe: the stream and what failed.
static LOST: OnceLock<(Stream, String)> = OnceLock::new();

impl Stream {
    fn closed(self) -> &'static AtomicBool {
        match self {
            Stream::Stdout => &STDOUT_CLOSED,
            Stream::Stderr => &STDERR_CLOSED,
        }
    }

    /// Whether an earlier write to this stream failed (and this one writes nothing).
    pub fn is_closed(self) -> bool {
        self.closed().load(Ordering::Relaxed)
    }
}

/// Writes `args` to `stream` and flushes it; on failure (a closed pipe, a full disk)
/// the stream is closed for the rest of the process.
pub fn write(stream: Stream, args: fmt::Arguments) {
    write_with(stream, |sink| sink.write_fmt(args));
}

/// Writes `bytes` (a token's, which need not be whole UTF-8) as [`write`] does;
/// returns whether the stream is still open.
pub fn write_bytes(stream: Stream, bytes: &[u8]) -> bool {
    write_with(stream, |sink| sink.write_all(bytes));
    !stream.is_closed()
}

fn write_with(stream: Stream, put: impl FnOnce(&mut dyn Write) -> io::Result<()>) {
    if stream.is_closed() {
        return;
    }
    let written = match stream {
        Stream::Stdout => flushed(&mut io::stdout().lock(), put),
        Stream::Stderr => flushed(&mut io::stderr().lock(), put),
    };
    if let Err(error) = written {
        stream.closed().store(true, Ordering::Relaxed);
        if error.kind() != io::ErrorKind::BrokenPipe {
            let _ = LOST.set((stream, error.to_string()));
        }
    }
}

fn flushed(
    sink: &mut dyn Write,
    put: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    put(sink)?;
    sink.flush()
}

/// Why output was lost, when a write failed for a reason other than a broken pipe:
/// `main` reports it and exits 1 after the work.
pub fn lost_output() -> Option<String> {
    LOST.get().map(|(stream, error)| {
        let name = match stream {
            Stream::Stdout => "standard output",
            Stream::Stderr => "standard error",
        };
        format!("writing to {name} failed ({error}): what cllm printed there is incomplete")
    })
}

/// `println!` that never panics: a line on stdout, or nothing once stdout is closed.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::write($crate::console::Stream::Stdout, format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::write($crate::console::Stream::Stdout, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::console::write($crate::console::Stream::Stdout, format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::write($crate::console::Stream::Stderr, format_args!("{}\n", format_args!($($arg)*)))
    };
}
