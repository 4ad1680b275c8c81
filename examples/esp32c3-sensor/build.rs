//! Links with esp-hal's linker script, and embeds the relay's CA
//! certificate (DER) named by `TETHER_CA_DER` (empty when unset: the
//! firmware then refuses `wss://` and says so).

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-link-arg=-Tlinkall.x");
    println!("cargo:rerun-if-env-changed=TETHER_CA_DER");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ca = match std::env::var_os("TETHER_CA_DER") {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&path).display());
            std::fs::read(&path).expect("read the CA certificate named by TETHER_CA_DER")
        }
        None => Vec::new(),
    };
    std::fs::write(out.join("ca.der"), ca).expect("write ca.der");
}
