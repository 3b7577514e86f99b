//! The `regiondrop` element: a region-sparse CNN detector for fixed cameras. Video passes through
//! unchanged; detections are attached as `GstVideoRegionOfInterestMeta` (see `crate::meta`).

use gst::glib;
use gst::prelude::*;

mod imp;
mod pool;
mod settings;

pub use settings::{BackendChoice, DecoderChoice, MetricChoice};

glib::wrapper! {
    pub struct RegionDrop(ObjectSubclass<imp::RegionDrop>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "regiondrop",
        gst::Rank::NONE,
        RegionDrop::static_type(),
    )
}
