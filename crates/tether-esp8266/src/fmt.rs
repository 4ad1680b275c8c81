//! The one logging shim of the crate: `defmt` or `log`, chosen by feature,
//! or nothing at all. Modules log with `trace!`, `debug!`, `info!`, `warn!`
//! and `error!`; arguments must format under both back ends (plain `{}` and
//! `{:?}` placeholders).
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` of tether-esp8266 are mutually exclusive: enable one");

macro_rules! log_at {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::$level!($fmt $(, $arg)*);
        #[cfg(feature = "log")]
        ::log::$level!($fmt $(, $arg)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        {
            // Borrow the arguments so they count as used, without logging.
            let _ = ($fmt $(, &$arg)*);
        }
    }};
}

macro_rules! trace {
    ($($arg:tt)*) => { log_at!(trace, $($arg)*) };
}

macro_rules! debug {
    ($($arg:tt)*) => { log_at!(debug, $($arg)*) };
}

macro_rules! info {
    ($($arg:tt)*) => { log_at!(info, $($arg)*) };
}

macro_rules! warn {
    ($($arg:tt)*) => { log_at!(warn, $($arg)*) };
}

macro_rules! error {
    ($($arg:tt)*) => { log_at!(error, $($arg)*) };
}
