//! An OS error in the words a person reads: `Connection refused`, not Rust's
//! `Connection refused (os error 111)`.

/// `e`'s words, without the error number Rust's display appends to an OS error.
pub fn io_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_reads_without_its_number_and_others_as_they_are() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(refused.to_string().ends_with("(os error 111)"));
        assert_eq!(io_error(&refused), "Connection refused");
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_error(&missing), "No such file or directory");
        let own = std::io::Error::other("empty command");
        assert_eq!(io_error(&own), "empty command");
    }
}
