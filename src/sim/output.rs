//! Pure pieces of the agent's output path: UTF-8 hold-back and the firehose byte pattern.

/// Length of the prefix of `buf` that can be sent now: everything but a trailing incomplete
/// UTF-8 sequence (at most 3 bytes), which waits for the next read. Invalid bytes pass.
pub fn complete_utf8_prefix(buf: &[u8]) -> usize {
    let len = buf.len();
    // Look back at most 3 bytes for the lead byte of a sequence that runs past the end.
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead
        }
        let needed = if b & 0b1110_0000 == 0b1100_0000 {
            2
        } else if b & 0b1111_0000 == 0b1110_0000 {
            3
        } else if b & 0b1111_1000 == 0b1111_0000 {
            4
        } else {
            1
        };
        return if needed > back { len - back } else { len };
    }
    len
}

/// The firehose's deterministic byte at `offset` (a cheap, non-repeating-looking pattern that
/// makes a lost, duplicated or reordered chunk change the SHA-256).
pub fn firehose_byte(offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (offset as u8)
}

/// Fills `buf` with the firehose bytes starting at `offset`.
pub fn fill_firehose(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = firehose_byte(offset + i as u64);
    }
}

/// The first `len` firehose bytes (what a test compares against).
pub fn firehose_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_firehose(0, &mut v);
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn holds_back_incomplete_sequences_only() {
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
        let euro = "€".as_bytes(); // 3 bytes
        let mut buf = b"ab".to_vec();
        buf.extend_from_slice(&euro[..2]);
        assert_eq!(complete_utf8_prefix(&buf), 2);
        buf.push(euro[2]);
        assert_eq!(complete_utf8_prefix(&buf), 5);
        let mut emoji = b"x".to_vec();
        emoji.extend_from_slice(&"😀".as_bytes()[..3]);
        assert_eq!(complete_utf8_prefix(&emoji), 1);
        assert_eq!(complete_utf8_prefix(&[0xff, 0xfe]), 2);
        assert_eq!(complete_utf8_prefix(&[]), 0);
    }

    #[test]
    fn firehose_is_deterministic() {
        let mut a = vec![0u8; 10];
        fill_firehose(5, &mut a);
        assert_eq!(&firehose_bytes(15)[5..], &a[..]);
    }
}
