//! regiondrop: region-sparse CNN inference for fixed cameras.
//!
//! frame → preprocess → change mask (once) → sparse network on the mask → detections → metadata.

pub mod analyzer;
pub mod backend;
pub mod baseline;
pub mod cpu_time;
pub mod detect;
pub mod draw;
pub mod engine;
pub mod error;
pub mod mask;
pub mod meta;
pub mod model;
pub mod overlay;
pub mod preprocess;
pub mod regiondrop;
pub mod rng;
pub mod simd;
pub mod spec;
pub mod tensor;
pub mod track;
pub mod video;

pub use error::{Error, Result};

fn plugin_init(plugin: &gst::Plugin) -> std::result::Result<(), gst::glib::BoolError> {
    regiondrop::register(plugin)?;
    overlay::register(plugin)
}

// Defines `plugin_register_static()` too, which tests and applications linking the crate call.
gst::plugin_define!(
    regiondrop,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
