//! Portable no_std, no-alloc core of the tether SDK.
#![no_std]

// Must come first: the logging macros are used by every module below.
#[macro_use]
mod fmt;

pub mod provisioning;
