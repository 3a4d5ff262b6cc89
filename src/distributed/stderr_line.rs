//! Whole lines on stderr, so the lines of different ranks never mix.

use std::io::Write;

/// Writes `line` and its newline to stderr in a single `write`.
///
/// `eprintln!` writes each formatted piece separately (Rust's stderr is unbuffered), so under
/// `mpirun`, which forwards every rank's stderr into one stream, one rank's message can be cut
/// in two by another's. A single write of at most `PIPE_BUF` bytes to a pipe is atomic (POSIX;
/// 4096 on Linux), so each line arrives whole.
pub fn eprint_line(line: &str) {
    let mut whole = String::with_capacity(line.len() + 1);
    whole.push_str(line);
    whole.push('\n');
    // Nothing useful can be done when stderr itself is gone; the caller's error or exit
    // status still reports the failure.
    let _ = std::io::stderr().lock().write_all(whole.as_bytes());
}
