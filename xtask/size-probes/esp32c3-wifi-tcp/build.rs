//! Links with esp-hal's linker script.

fn main() {
    println!("cargo:rustc-link-arg=-Tlinkall.x");
}
