//! The provisioning record decoder: no panic, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::provisioning::record::{ProvisioningRecord, RECORD_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok((record, used)) = ProvisioningRecord::decode_with_len(data) {
        let mut buf = [0u8; RECORD_MAX_LEN];
        let n = record.encode(&mut buf).expect("a decoded record fits");
        assert_eq!(&buf[..n], &data[..used]);
    }
});
