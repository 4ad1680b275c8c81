//! Payload masking (RFC 6455 5.3), eight bytes at a time.
//!
//! The key repeats every four bytes, so a `u64` holding it twice masks eight
//! payload bytes with one XOR. Chunks are taken from the start of the payload
//! (`as_chunks`), never from an aligned address, so the key phase is always
//! right; `from_ne_bytes`/`to_ne_bytes` on `[u8; 8]` compile to unaligned
//! loads and stores, correct at any address. The loops are simple enough for
//! LLVM to vectorise.

/// XORs `payload` with the repeating masking `key`, in place. Masking twice
/// unmasks.
#[inline]
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
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

/// Copies `source` into `destination` masked with `key`, in one pass: the
/// encoder's fused copy-and-mask. Processes `min(source.len(),
/// destination.len())` bytes.
#[inline]
pub fn mask_into(destination: &mut [u8], source: &[u8], key: [u8; 4]) {
    let len = destination.len().min(source.len());
    let (Some(destination), Some(source)) = (destination.get_mut(..len), source.get(..len)) else {
        return;
    };
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
                let dst_offset = (offset * 3) % 8;
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
