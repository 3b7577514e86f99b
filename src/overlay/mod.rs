//! The `regiondropoverlay` element: draws the regions of interest attached to each frame (by
//! `regiondrop` or any other element) as labelled boxes on RGB-family video, so that a pipeline
//! can show what was detected: `video/x-raw,format=BGRx ! regiondrop ! regiondropoverlay !
//! videoconvert ! autovideosink` (no videoconvert between the two: on GStreamer 1.22 it drops
//! the regions' `detection` structures).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RegionDropOverlay(ObjectSubclass<imp::RegionDropOverlay>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "regiondropoverlay",
        gst::Rank::NONE,
        RegionDropOverlay::static_type(),
    )
}
