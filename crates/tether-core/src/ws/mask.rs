//! Payload masking (RFC 6455 5.3), eight bytes at a time.
//!
//! The key repeats every four bytes, so a `u64` holding it twice masks eight
//! payload bytes with one XOR. Long payloads (4 KiB and up) first take up to
//! 15 bytes one by one so that the written bytes continue at a 16-byte
//! boundary, with the key rotated to match; the rest goes in `[u8; 8]` chunks (`as_chunks`), whose
//! `from_ne_bytes`/`to_ne_bytes` compile to unaligned loads and stores,
//! correct at any address. No `unsafe`. The loops are simple enough for LLVM
//! to vectorise.

/// XORs `payload` with the repeating masking `key`, in place. Masking twice
/// unmasks.
#[inline]
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    if !ALIGN || payload.len() < ALIGN_FROM {
        return mask_words_in_place(payload, key);
    }
    let head = payload.as_ptr().addr().wrapping_neg() % 16;
    let (head, body) = payload.split_at_mut(head);
    mask_words_in_place(head, key);
    mask_words_in_place(body, rotate(key, head.len()));
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
    if !ALIGN || len < ALIGN_FROM {
        return mask_words_into(destination, source, key);
    }
    let head = destination.as_ptr().addr().wrapping_neg() % 16;
    let (dst_head, destination) = destination.split_at_mut(head);
    let (src_head, source) = source.split_at(head);
    mask_words_into(dst_head, src_head, key);
    mask_words_into(destination, source, rotate(key, head));
}

/// Payloads at least this long first take up to 15 bytes on their own so
/// that the written bytes continue at a 16-byte boundary: once the data no
/// longer fits the L1 cache, vector stores that straddle cache lines cost up
/// to a third of the throughput. Shorter payloads skip it.
const ALIGN_FROM: usize = 4096;

/// Only 64-bit targets have the vector units and caches this pays off on; on
/// microcontrollers it would only add code.
const ALIGN: bool = cfg!(target_pointer_width = "64");

#[inline]
fn mask_words_in_place(payload: &mut [u8], key: [u8; 4]) {
    let word = key_word(key);
    let (chunks, tail) = payload.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ word).to_ne_bytes();
    }
    // The tail starts at a multiple of eight, so the key starts at byte 0.
    for (byte, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[inline]
fn mask_words_into(destination: &mut [u8], source: &[u8], key: [u8; 4]) {
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
#[allow(clippy::std_instead_of_alloc)]
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
    fn long_payloads_match_bytewise_at_every_alignment() {
        // Long enough for the aligning prologue.
        let key = [0xa5, 0x01, 0x7e, 0x33];
        let source: std::vec::Vec<u8> = (0..ALIGN_FROM + 64).map(|i| (i * 13 + 1) as u8).collect();
        for offset in 0..16 {
            for len in [ALIGN_FROM, ALIGN_FROM + 1, ALIGN_FROM + 7, ALIGN_FROM + 45] {
                let mut fast = source.clone();
                let mut slow = source.clone();
                apply_mask(&mut fast[offset..offset + len], key);
                mask_bytewise(&mut slow[offset..offset + len], key);
                assert_eq!(fast, slow, "apply_mask offset {offset} len {len}");

                let mut copied = std::vec![0u8; len + 16];
                let mut expected = copied.clone();
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
