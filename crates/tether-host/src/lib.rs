//! The tether SDK on a PC.
pub mod portal;
