//! Log lines in the gateway's log, tagged with the plugin's name.
//!
//! Use the macros [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
//! [`warn!`](crate::warn) and [`error!`](crate::error), which format like `println!`.
//! Anything written to stdout or stderr also ends up in the log, one line at a time.

pub use crate::__bindings::edgewise::plugin::host::Level;

/// Writes one log line at `level`.
pub fn write(level: Level, message: &str) {
    crate::__bindings::edgewise::plugin::host::log(level, message);
}

macro_rules! level_macro {
    ($name:ident, $level:ident, $d:tt) => {
        #[doc = concat!("Logs a formatted line at `", stringify!($level), "` level.")]
        #[macro_export]
        macro_rules! $name {
                    ($d($d arg:tt)*) => {
                        $crate::log::write($crate::log::Level::$level, &::std::format!($d($d arg)*))
                    };
                }
    };
}

level_macro!(trace, Trace, $);
level_macro!(debug, Debug, $);
level_macro!(info, Info, $);
level_macro!(warn, Warn, $);
level_macro!(error, Error, $);
