//! Drawing each frame's `GstVideoRegionOfInterestMeta` in place: the box outlined in its class
//! colour, and `label #track-id confidence` above it when the meta has regiondrop's `detection`
//! structure (the ROI type alone otherwise).

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use crate::draw::{class_colour, detection_label, Canvas, Rgb};
use crate::meta::DETECTION_PARAM;

/// Packed formats with 8-bit R, G and B samples: drawn on as they are.
const FORMATS: &[gst_video::VideoFormat] = &[
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
];

const DEFAULT_LINE_WIDTH: u32 = 2;
const DEFAULT_SHOW_LABELS: bool = true;

#[derive(Clone, Copy)]
struct Settings {
    line_width: u32,
    show_labels: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            line_width: DEFAULT_LINE_WIDTH,
            show_labels: DEFAULT_SHOW_LABELS,
        }
    }
}

/// One region as it is drawn: rectangle in frame pixels, colour and text.
struct Drawn {
    rect: (u32, u32, u32, u32),
    colour: Rgb,
    text: String,
}

#[derive(Default)]
pub struct RegionDropOverlay {
    settings: Mutex<Settings>,
}

#[glib::object_subclass]
impl ObjectSubclass for RegionDropOverlay {
    const NAME: &'static str = "GstRegionDropOverlay";
    type Type = super::RegionDropOverlay;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for RegionDropOverlay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let live = glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_PLAYING;
            vec![
                glib::ParamSpecUInt::builder("line-width")
                    .nick("Line width")
                    .blurb("Thickness of the box outlines, in pixels. May change while playing")
                    .minimum(1)
                    .maximum(64)
                    .default_value(DEFAULT_LINE_WIDTH)
                    .flags(live)
                    .build(),
                glib::ParamSpecBoolean::builder("show-labels")
                    .nick("Show labels")
                    .blurb("Write each region's label (and, for regiondrop's detections, track id and confidence) above its box. May change while playing")
                    .default_value(DEFAULT_SHOW_LABELS)
                    .flags(live)
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "line-width" => s.line_width = value.get().unwrap(),
            "show-labels" => s.show_labels = value.get().unwrap(),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "line-width" => s.line_width.to_value(),
            "show-labels" => s.show_labels.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for RegionDropOverlay {}

impl ElementImpl for RegionDropOverlay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RegionDrop overlay",
                "Filter/Effect/Video",
                "Draws the regions of interest attached to each frame (regiondrop's detections, with \
                 label, track id and confidence) as boxes on RGB video",
                "regiondrop developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS.iter().copied())
                .build();
            ["src", "sink"]
                .iter()
                .map(|&name| {
                    let dir = if name == "src" {
                        gst::PadDirection::Src
                    } else {
                        gst::PadDirection::Sink
                    };
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).unwrap()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for RegionDropOverlay {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;
}

impl VideoFilterImpl for RegionDropOverlay {
    fn transform_frame_ip(
        &self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = *self.settings.lock().unwrap();
        let regions = regions_of(frame.buffer(), settings.show_labels);
        if regions.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let info = frame.format_info();
        let (bpp, offsets) = (info.pixel_stride()[0] as usize, info.poffset());
        let rgb = [offsets[0], offsets[1], offsets[2]].map(|o| o as usize);
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let stride = frame.plane_stride()[0] as usize;
        let px = frame.plane_data_mut(0).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("Cannot access plane 0: {}", e)
            );
            gst::FlowError::Error
        })?;
        let mut canvas = Canvas {
            w,
            h,
            stride,
            bpp,
            rgb,
            px,
        };
        let scale = if w >= 1280 { 2 } else { 1 };
        let t = settings.line_width as i64;
        for r in &regions {
            let (x, y, rw, rh) = r.rect;
            // Empty regions (a detection in the letterbox's border) and regions off the frame
            // draw nothing; thin ones get outlines no thicker than themselves.
            if rw == 0 || rh == 0 || x as usize >= w || y as usize >= h {
                continue;
            }
            let (x0, y0) = (x as i64, y as i64);
            let (x1, y1) = (x0 + rw as i64, y0 + rh as i64);
            let t = t.min(rw as i64).min(rh as i64);
            canvas.labelled_box(x0, y0, x1, y1, r.colour, t, &r.text, scale);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

/// The regions attached to `buffer`, in attachment order, as they are drawn.
fn regions_of(buffer: &gst::BufferRef, labels: bool) -> Vec<Drawn> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let roi_type = m.roi_type().to_string();
            let detection = m.param(DETECTION_PARAM);
            let class_id = detection.and_then(|p| p.get::<u32>("class-id").ok());
            let colour = class_colour(class_id.unwrap_or_else(|| name_hash(&roi_type)));
            let text = match (labels, detection) {
                (false, _) => String::new(),
                (true, Some(p)) => detection_label(
                    &p.get::<String>("label").unwrap_or(roi_type),
                    p.get::<u64>("track-id").ok(),
                    p.get::<f64>("confidence").ok(),
                ),
                (true, None) => roi_type,
            };
            Drawn {
                rect: m.rect(),
                colour,
                text,
            }
        })
        .collect()
}

/// A stable number for a region type without a class id, so that each type keeps one colour.
fn name_hash(name: &str) -> u32 {
    name.bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619))
}
