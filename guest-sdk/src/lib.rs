//! Write Edgewise plugins in plain Rust.
//!
//! A plugin is a type that implements [`Plugin`], exported with [`export_plugin!`] and built
//! with `cargo build --target wasm32-wasip2 --release`. The gateway creates it once with
//! [`Plugin::init`] and then calls [`Plugin::on_message`] for every MQTT message on the topics
//! its manifest subscribes to, one at a time, so the plugin may keep state in `self`.
//!
//! ```ignore
//! use edgewise_guest::{export_plugin, publish, Message, Plugin, Result};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn init() -> Result<Self> {
//!         Ok(Echo)
//!     }
//!
//!     fn on_message(&mut self, msg: Message) -> Result<()> {
//!         publish("echo/out", &msg.payload)?;
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(Echo);
//! ```
//!
//! Everything the gateway offers is here: [`publish`], [`config`], [`log`] (and the
//! [`info!`]-style macros), [`now_ms`], and inference through [`nn::Model`]. No wit-bindgen
//! knowledge is needed.

mod error;
mod host;
pub mod log;
mod message;
pub mod nn;

pub use error::{Error, Result};
#[cfg(feature = "json")]
pub use host::publish_json;
pub use host::{PublishError, config, now_ms, publish, setting};
pub use message::Message;

/// The code generated from `wit/` by wit-bindgen. Not part of the API.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod __bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_plugin_bindings",
        default_bindings_module: "edgewise_guest::__bindings",
    });
}

/// A plugin: state created by `init`, fed one message at a time.
pub trait Plugin: Sized + 'static {
    /// Creates the plugin: read settings with [`setting`], load models with
    /// [`nn::Model::by_name`]. An error stops the plugin from starting.
    fn init() -> Result<Self>;

    /// Handles one message. An error is logged by the gateway with the topic, and anything
    /// published during this call is discarded.
    fn on_message(&mut self, msg: Message) -> Result<()>;
}

/// Exports a [`Plugin`] type as the component's `edgewise:plugin/handler`.
///
/// Call it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct Export;

            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::__bindings::exports::edgewise::plugin::handler::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$plugin>(&INSTANCE)
                }

                fn on_message(
                    msg: $crate::__bindings::edgewise::plugin::types::Message,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::on_message::<$plugin>(&INSTANCE, msg)
                }
            }

    $crate::__bindings::__export_plugin_bindings!(Export with_types_in $crate::__bindings);
        };
    };
}

/// Glue called by [`export_plugin!`]. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::__bindings::edgewise::plugin::types;
    use crate::{Message, Plugin};

    type Slot<P> = LocalKey<RefCell<Option<P>>>;

    pub fn init<P: Plugin>(slot: &'static Slot<P>) -> Result<(), String> {
        let plugin = P::init().map_err(|e| e.to_string())?;
        slot.with(|s| *s.borrow_mut() = Some(plugin));
        Ok(())
    }

    pub fn on_message<P: Plugin>(
        slot: &'static Slot<P>,
        msg: types::Message,
    ) -> Result<(), String> {
        slot.with(|s| match s.borrow_mut().as_mut() {
            Some(plugin) => plugin
                .on_message(Message::from(msg))
                .map_err(|e| e.to_string()),
            None => Err("on-message called before a successful init".to_owned()),
        })
    }
}
