//! Where log lines go: stderr, through a writer that never fails.
//!
//! `tracing-subscriber` reports a failed write by printing to the same stderr, and `eprintln!`
//! panics when stderr is closed; so a daemon started as `pcsaga daemon 2>&1 | tee log` whose
//! `tee` went away panicked in whatever task logged next (the signal task among them, so
//! SIGTERM was ignored). This writer swallows the error and counts the line as dropped.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines that could not be written since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because stderr could not be written.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Makes [`Writer`]s for the subscriber.
#[derive(Debug, Clone, Copy)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Writer;

    fn make_writer(&'a self) -> Self::Writer {
        Writer { failed: false }
    }
}

/// One log line's writer: the first failed write drops the rest of the line.
#[derive(Debug)]
pub struct Writer {
    failed: bool,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failed && io::stderr().write_all(buf).is_err() {
            self.failed = true;
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}
