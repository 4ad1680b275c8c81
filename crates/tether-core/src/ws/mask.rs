//! Payload masking (RFC 6455 5.3), eight bytes at a time.
//!
//! The key repeats every four bytes, so a `u64` holding it twice masks eight
//! payload bytes with one XOR. Long payloads (4 KiB and up) first take up to
//! 15 bytes one by one so that the written bytes continue at a 16-byte
//! boundary, with the key rotated to match; the rest goes in `[u8; 8]` chunks (`as_chunks`), whose
//! `from_ne_bytes`/`to_ne_bytes` compile to unaligned loads and stores,
//! correct at any address. No `unsafe`. The loops are simple enough for LLVM
//! to vectorise.
//!
//! On 32-bit targets (the ESP32s, the RP2040) masking is one byte loop:
//! their payloads are a few hundred bytes, and the word loops, their tails
//! and the key rotation were about 280 B of `.text` on the ESP32-C3, in
//! two copies (in place, and the encoder's copy-and-mask), against some 40
//! for the byte loops (`cargo xtask size`).

/// XORs `payload` with the repeating masking `key`, in place. Masking twice
/// unmasks.
#[inline]
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    if !WORDS {
        return mask_bytes_in_place(payload, key);
    }
    if payload.len() < ALIGN_FROM {
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
    if !WORDS {
        return mask_bytes_into(destination, source, key);
    }
    if len < ALIGN_FROM {
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

/// Whether masking goes eight bytes at a time, aligned for long payloads
/// (64-bit targets: they have the vector units and caches this pays off
/// on), or one byte at a time (32- and 16-bit targets, where code size
/// counts more).
const WORDS: bool = cfg!(target_pointer_width = "64");

/// The byte loop of 32-bit targets, in place.
#[inline]
fn mask_bytes_in_place(payload: &mut [u8], key: [u8; 4]) {
    let word = u32::from_le_bytes(key);
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key_byte(word, i);
    }
}

/// The byte loop of 32-bit targets, copying (`destination` no longer than
/// `source`).
#[inline]
fn mask_bytes_into(destination: &mut [u8], source: &[u8], key: [u8; 4]) {
    let word = u32::from_le_bytes(key);
    for (i, (dst, src)) in destination.iter_mut().zip(source).enumerate() {
        *dst = src ^ key_byte(word, i);
    }
}

/// Byte `i % 4` of the key (`word` is the key, little-endian): a shift, no
/// index.
#[inline]
fn key_byte(word: u32, i: usize) -> u8 {
    // `(i % 4) * 8` is at most 24; the cast keeps the low byte.
    (word >> ((i % 4) * 8)) as u8
}

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
    fn the_byte_loops_of_32_bit_targets_match_the_word_loops() {
        // The host runs the word loops; the byte loops are what the
        // microcontrollers run: the same bytes at every offset and length.
        let key = [0x12, 0x9e, 0x4c, 0xf1];
        let source: std::vec::Vec<u8> = (0..ALIGN_FROM + 40).map(|i| (i * 7 + 3) as u8).collect();
        for len in (0..64).chain([ALIGN_FROM - 1, ALIGN_FROM, ALIGN_FROM + 37]) {
            for offset in 0..3 {
                let src = &source[offset..offset + len];
                let mut bytes = src.to_vec();
                let mut words = src.to_vec();
                mask_bytes_in_place(&mut bytes, key);
                apply_mask(&mut words, key);
                assert_eq!(bytes, words, "in place, len {len}");
                let mut copied = std::vec![0u8; len];
                mask_bytes_into(&mut copied, src, key);
                assert_eq!(copied, words, "copying, len {len}");
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
