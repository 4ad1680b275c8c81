//! The typed messages that tether devices, relay servers and receivers speak.
#![no_std]
