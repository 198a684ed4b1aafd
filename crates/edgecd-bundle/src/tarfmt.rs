//! The deterministic tar framing of a bundle: fixed ustar headers (mode 0444, uid/gid 0,
//! mtime 0, no user names), 512-byte blocks, two zero blocks at the end.
pub const BLOCK: u64 = 512;

/// Bytes an entry of `size` data bytes takes in the archive (header + padded data).
pub fn entry_len(size: u64) -> u64 {
    BLOCK + size.div_ceil(BLOCK) * BLOCK
}

/// Length of the end-of-archive marker.
pub const TRAILER_LEN: u64 = 2 * BLOCK;

/// The header block of a regular file entry.
pub fn file_header(path: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .expect("bundle entry names are short ASCII");
    h.set_size(size);
    h.set_mode(0o444);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    *h.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_blocks() {
        assert_eq!(entry_len(0), 512);
        assert_eq!(entry_len(1), 1024);
        assert_eq!(entry_len(512), 1024);
        assert_eq!(entry_len(513), 1536);
    }

    #[test]
    fn headers_are_deterministic_and_parse() {
        let a = file_header("blobs/sha256/abc", 7);
        assert_eq!(a, file_header("blobs/sha256/abc", 7));
        let h = tar::Header::from_byte_slice(&a);
        assert_eq!(h.size().unwrap(), 7);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.path().unwrap().to_str(), Some("blobs/sha256/abc"));
    }
}
