//! Payload masking (RFC 6455 5.3), eight bytes at a time.
//!
//! The key repeats every four bytes, so a `u64` holding it twice masks eight
//! payload bytes with one XOR. Long payloads first take up to 15 bytes one by
//! one so that the written bytes continue at a 16-byte boundary, with the key
//! rotated to match; the rest goes in `[u8; 8]` chunks (`as_chunks`), whose
//! `from_ne_bytes`/`to_ne_bytes` compile to unaligned loads and stores,
//! correct at any address. No `unsafe`. The loops are simple enough for LLVM
//! to vectorise.

/// XORs `payload` with the repeating masking `key`, in place. Masking twice
/// unmasks.
#[inline]
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    let head = head_len(payload.as_ptr().addr(), payload.len());
    let (head, body) = payload.split_at_mut(head);
    for (byte, k) in head.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
    let key = rotate(key, head.len());
    let word = key_word(key);
    let (chunks, tail) = body.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ word).to_ne_bytes();
    }
    // The tail starts at a multiple of eight, so the key starts at byte 0.
    for (byte, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Copies `source` into `destination` masked with `key`, in one pass: the
/// encoder's fused copy-and-mask. Processes `min(source.len(),
/// destination.len())` bytes.
#[inline]
pub fn mask_into(destination: &mut [u8], source: &[u8], key: [u8; 4]) {
    let len = destination.len().min(source.len());
    let (Some(destination), Some(source)) = (destination.get_mut(..len), source.get(..len)) else {
        return;
    };
    let head = head_len(destination.as_ptr().addr(), len);
    let (dst_head, destination) = destination.split_at_mut(head);
    let (src_head, source) = source.split_at(head);
    for ((dst, src), k) in dst_head.iter_mut().zip(src_head).zip(key.iter().cycle()) {
        *dst = src ^ k;
    }
    let key = rotate(key, head);
    let word = key_word(key);
    let (dst_chunks, dst_tail) = destination.as_chunks_mut::<8>();
    let (src_chunks, src_tail) = source.as_chunks::<8>();
    for (dst, src) in dst_chunks.iter_mut().zip(src_chunks) {
        *dst = (u64::from_ne_bytes(*src) ^ word).to_ne_bytes();
    }
    for ((dst, src), k) in dst_tail.iter_mut().zip(src_tail).zip(key.iter().cycle()) {
        *dst = src ^ k;
    }
}

/// How many bytes to handle one by one so that the written slice continues
/// at a 16-byte boundary: vector stores that straddle cache lines cost up to
/// a third of the throughput on long payloads. Short payloads skip it.
#[inline]
fn head_len(address: usize, len: usize) -> usize {
    if len < 64 {
        0
    } else {
        address.wrapping_neg() % 16
    }
}

/// The key as seen from payload byte `offset`.
#[inline]
fn rotate(mut key: [u8; 4], offset: usize) -> [u8; 4] {
    key.rotate_left(offset % 4);
    key
}

#[inline]
fn key_word(key: [u8; 4]) -> u64 {
    let [a, b, c, d] = key;
    u64::from_ne_bytes([a, b, c, d, a, b, c, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_bytewise(payload: &mut [u8], key: [u8; 4]) {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }

    #[test]
    fn rfc_example() {
        // RFC 6455 5.7: masked "Hello".
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn matches_bytewise_at_every_alignment_and_length() {
        let key = [0x12, 0x9e, 0x4c, 0xf1];
        let source: [u8; 160] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for offset in 0..16 {
            for len in 0..(source.len() - offset) {
                let mut fast = source;
                let mut slow = source;
                apply_mask(&mut fast[offset..offset + len], key);
                mask_bytewise(&mut slow[offset..offset + len], key);
                assert_eq!(fast, slow, "apply_mask offset {offset} len {len}");

                let mut copied = [0u8; 176];
                let mut expected = [0u8; 176];
                // Destination at a different alignment than the source.
                let dst_offset = (offset * 5) % 16;
                let src = &source[offset..offset + len];
                mask_into(&mut copied[dst_offset..dst_offset + len], src, key);
                expected[dst_offset..dst_offset + len].copy_from_slice(src);
                mask_bytewise(&mut expected[dst_offset..dst_offset + len], key);
                assert_eq!(copied, expected, "mask_into offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn mask_into_stops_at_the_shorter_slice() {
        let mut dst = [0u8; 4];
        mask_into(&mut dst, &[1, 2, 3, 4, 5, 6, 7, 8, 9], [0; 4]);
        assert_eq!(dst, [1, 2, 3, 4]);
        let mut dst = [0u8; 12];
        mask_into(&mut dst, &[1, 2, 3], [1, 1, 1, 1]);
        assert_eq!(dst, [0, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
