//! Finding where the last N lines of a log file begin, reading backwards so that a
//! large log costs only as much as its tail.

use std::io::{Read, Seek, SeekFrom};

const TAIL_CHUNK: usize = 64 * 1024;

/// Byte offset where the last `lines` lines of `f` begin. A final newline ends the
/// last line rather than starting an empty one. Reads backwards in chunks, so a
/// large log costs only as much as its tail.
pub fn tail_offset<F: Read + Seek>(f: &mut F, lines: u64) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; TAIL_CHUNK];
    let mut pos = len;
    let mut seen = 0u64;
    while pos > 0 {
        let n = usize::try_from(pos).map_or(TAIL_CHUNK, |p| p.min(TAIL_CHUNK));
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            let after = pos + i as u64 + 1;
            if buf[i] == b'\n' && after != len {
                seen += 1;
                if seen == lines {
                    return Ok(after);
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::tail_offset;
    use std::io::Cursor;

    fn tail(text: &str, n: u64) -> &str {
        let off = tail_offset(&mut Cursor::new(text.as_bytes()), n).unwrap();
        &text[off as usize..]
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("\n\n", 1), "\n");
    }

    #[test]
    fn tail_crosses_chunks() {
        let line = "x".repeat(1000) + "\n";
        let text = line.repeat(200);
        assert_eq!(tail(&text, 3), line.repeat(3));
    }
}
