//! Write [Paddock](https://example.invalid/paddock) apps in Rust.
//!
//! An app is a type implementing [`App`], exported with [`export_app!`] and
//! built with `cargo build --target wasm32-wasip2 --release`. Paddock runs a
//! fresh instance per event and calls the hook for that event; everything the
//! hook writes through the capability modules ([`tags`], [`channels`],
//! [`ui`], [`connection`], [`notifications`]) is committed atomically when the
//! hook returns `Ok`, and discarded when it returns an error or traps.
//!
//! ```no_run
//! use paddock_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema, Default)]
//! struct Config {
//!     /// Alarm below this level, in percent.
//!     #[serde(default)]
//!     threshold: f64,
//! }
//!
//! #[derive(Default)]
//! struct Counter;
//!
//! impl App for Counter {
//!     type Config = Config;
//!     const HOOKS: &'static [Hook] = &[Hook::MessageCreate];
//!
//!     fn on_message_create(&mut self, ctx: &Context<Config>, ev: &MessageCreate) -> Result<(), AppError> {
//!         let n: u64 = tags::get("count")?.unwrap_or(0);
//!         tags::set("count", &(n + 1))?;
//!         paddock_sdk::info!("message {} on {}", ev.message.id, ev.message.channel.name);
//!         Ok(())
//!     }
//! }
//!
//! paddock_sdk::export_app!(Counter);
//! ```

pub mod agents;
pub mod channels;
pub mod connection;
mod context;
mod error;
mod event;
pub mod http;
pub mod log;
pub mod notifications;
pub mod tags;
pub mod ui;

#[doc(hidden)]
pub mod __rt;

/// The raw WIT bindings. Apps do not need these; [`export_app!`] uses them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "paddock:app/app",
        pub_export_macro: true,
        export_macro_name: "__export_paddock_app",
        default_bindings_module: "paddock_sdk::bindings",
    });
}

pub use context::{Context, OauthInfo};
pub use error::{AppError, Error};
pub use event::{
    Aggregate, AggregateUpdate, ChannelRef, Deployment, Event, Hook, Ingestion, ManualInvoke, Message, MessageCreate,
    OauthCallback, Schedule,
};
pub use schemars::JsonSchema;
pub use serde_json::{Map, Value, json};

/// Everything an app usually needs, in one import.
pub mod prelude {
    pub use crate::{
        AggregateUpdate, App, AppError, Context, Deployment, Error, Event, Hook, Ingestion, JsonSchema, ManualInvoke,
        Map, Message, MessageCreate, OauthCallback, Schedule, Value, agents, channels, connection, http, json,
        notifications, tags, ui,
    };
    pub use serde::{Deserialize, Serialize};
}

/// A Paddock app. Implement the hooks you need, list them in
/// [`HOOKS`](App::HOOKS) and export the type with [`export_app!`].
///
/// Per event, Paddock creates the app with `Default`, runs
/// [`pre_hook_filter`](App::pre_hook_filter), [`setup`](App::setup), the hook
/// and [`close`](App::close), then drops the instance: no state survives
/// between events except what you store in tags and channels.
pub trait App: Default {
    /// The installation's configuration, deserialized from the validated
    /// deployment config. Its JSON Schema is exported for the manifest.
    type Config: serde::de::DeserializeOwned + JsonSchema;

    /// The hooks this app implements. Paddock never instantiates the app
    /// for events of other kinds.
    const HOOKS: &'static [Hook];

    /// A cheap early filter on the event alone; `false` skips the event.
    fn pre_hook_filter(&self, _event: &Event) -> bool {
        true
    }

    /// Runs before the hook.
    fn setup(&mut self, _ctx: &Context<Self::Config>) -> Result<(), AppError> {
        Ok(())
    }

    /// Runs after the hook, whatever it returned.
    fn close(&mut self, _ctx: &Context<Self::Config>) {}

    /// A message was created on a subscribed channel.
    fn on_message_create(&mut self, _ctx: &Context<Self::Config>, _event: &MessageCreate) -> Result<(), AppError> {
        Ok(())
    }

    /// A subscribed channel's aggregate changed.
    fn on_aggregate_update(&mut self, _ctx: &Context<Self::Config>, _event: &AggregateUpdate) -> Result<(), AppError> {
        Ok(())
    }

    /// The installation was created, reconfigured or upgraded.
    fn on_deployment(&mut self, _ctx: &Context<Self::Config>, _event: &Deployment) -> Result<(), AppError> {
        Ok(())
    }

    /// A schedule fired.
    fn on_schedule(&mut self, _ctx: &Context<Self::Config>, _event: &Schedule) -> Result<(), AppError> {
        Ok(())
    }

    /// An external system posted to the installation's ingestion endpoint.
    fn on_ingestion_endpoint(&mut self, _ctx: &Context<Self::Config>, _event: &Ingestion) -> Result<(), AppError> {
        Ok(())
    }

    /// A user invoked the app by hand.
    fn on_manual_invoke(&mut self, _ctx: &Context<Self::Config>, _event: &ManualInvoke) -> Result<(), AppError> {
        Ok(())
    }

    /// An OAuth2 provider redirected back with a code.
    fn on_oauth_callback(&mut self, _ctx: &Context<Self::Config>, _event: &OauthCallback) -> Result<(), AppError> {
        Ok(())
    }
}

/// Export an [`App`] as the component's `handler`.
///
/// ```ignore
/// paddock_sdk::export_app!(MyApp);
/// ```
#[macro_export]
macro_rules! export_app {
    ($app:ty) => {
        #[doc(hidden)]
        pub struct __PaddockGuest;

        impl $crate::bindings::exports::paddock::app::handler::Guest for __PaddockGuest {
            fn hooks() -> ::std::vec::Vec<$crate::bindings::paddock::app::types::Hook> {
                $crate::__rt::hooks::<$app>()
            }
            fn config_schema() -> ::std::option::Option<::std::string::String> {
                $crate::__rt::config_schema::<$app>()
            }
            fn handle(
                ctx: $crate::bindings::paddock::app::types::Context,
                event: $crate::bindings::paddock::app::types::Event,
            ) -> ::std::result::Result<(), $crate::bindings::exports::paddock::app::handler::AppError> {
                $crate::__rt::handle::<$app>(ctx, event)
            }
        }

        $crate::bindings::__export_paddock_app!(__PaddockGuest with_types_in $crate::bindings);
    };
}
