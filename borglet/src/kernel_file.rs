//! Reading a file the kernel generates whole at each read (cgroupfs, procfs):
//! open, read, close. A read that does not fill the buffer got all of it, so
//! there is no `fstat` for a size (these files say 0) and no second read to
//! see the end, as `std::fs::read` makes. A few such files are read per start.

use std::io::{ErrorKind, Read};
use std::path::Path;

/// The whole of `path`.
pub(crate) fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    loop {
        let n = match f.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    Ok(buf)
}
