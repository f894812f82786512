//! CONSOLE_WRITE, and the per-domain line buffer that keeps guest lines
//! whole and prefixed on the hypervisor console.

use alloc::vec;
use alloc::vec::Vec;

use pv_abi::{Error, Gpa};

use super::HypercallEnv;

/// CONSOLE_WRITE: copies at most `CONSOLE_WRITE_MAX` bytes (checked by the
/// decoder) out of guest memory.
pub fn write(env: &mut dyn HypercallEnv, buf: Gpa, len: u64) -> Result<u64, Error> {
    let Ok(n) = usize::try_from(len) else {
        return Err(Error::InvalidArgument);
    };
    let mut bytes = vec![0u8; n];
    env.memory().read(buf, &mut bytes)?;
    env.console(&bytes);
    Ok(len)
}

/// Longest line kept before it is printed anyway.
const MAX_LINE: usize = 512;

/// Collects a domain's console bytes and hands out whole lines, so that
/// lines of the hypervisor and of the guest never interleave mid-line.
/// Control characters other than tab are shown as `?`.
#[derive(Default)]
pub struct ConsoleBuffer {
    line: Vec<u8>,
}

impl ConsoleBuffer {
    /// Adds bytes; calls `emit` with every completed line (without `\n`).
    pub fn push(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        for &b in bytes {
            match b {
                b'\n' => self.flush(emit),
                b'\r' => {}
                b'\t' | 0x20..=0x7e => self.line.push(b),
                0x80..=0xff => self.line.push(b),
                _ => self.line.push(b'?'),
            }
            if self.line.len() >= MAX_LINE {
                self.flush(emit);
            }
        }
    }

    /// Emits a partial line, if any (at domain teardown).
    pub fn flush(&mut self, emit: &mut dyn FnMut(&str)) {
        if !self.line.is_empty() {
            emit(&alloc::string::String::from_utf8_lossy(&self.line));
            self.line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_out_whole() {
        let mut c = ConsoleBuffer::default();
        let mut out = Vec::new();
        c.push(b"hello ", &mut |l| out.push(l.to_string()));
        assert!(out.is_empty());
        c.push(b"world\r\nsecond\x07 line\nrest", &mut |l| {
            out.push(l.to_string())
        });
        assert_eq!(out, ["hello world", "second? line"]);
        c.flush(&mut |l| out.push(l.to_string()));
        assert_eq!(out.last().map(String::as_str), Some("rest"));
        let long = vec![b'x'; 2000];
        out.clear();
        c.push(&long, &mut |l| out.push(l.to_string()));
        assert_eq!(out.len(), 3);
    }
}
