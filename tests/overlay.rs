//! `regiondropoverlay`: regions of interest drawn on the frame, in every byte order it takes.

use std::sync::Once;

use gst::prelude::*;
use gstregiondrop::detect::Detection;
use gstregiondrop::draw::class_colour;
use gstregiondrop::meta::attach_detections;

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        if gst::ElementFactory::find("regiondropoverlay").is_none() {
            gstregiondrop::plugin_register_static().expect("register the regiondrop plugin");
        }
    });
}

const GREY: u8 = 77;
/// Odd, so that packed RGB rows are padded to 4 bytes.
const W: usize = 97;
const H: usize = 64;

/// One `W`×`H` grey frame of `format` through `regiondropoverlay PROPS`, with `decorate` adding
/// metas to it first; returns the frame that comes out and its row stride. The test keeps a
/// reference to the buffer it pushes, so the element sees it read-only and must draw on a copy;
/// that the kept buffer is still grey is checked here.
fn overlay(
    format: gst_video::VideoFormat,
    props: &str,
    decorate: impl FnOnce(&mut gst::BufferRef),
) -> (Vec<u8>, usize) {
    init();
    let info = gst_video::VideoInfo::builder(format, W as u32, H as u32)
        .fps(gst::Fraction::new(10, 1))
        .build()
        .unwrap();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! regiondropoverlay {props} ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    src.set_caps(Some(&info.to_caps().unwrap()));
    let mut buf = gst::Buffer::from_mut_slice(vec![GREY; info.size()]);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::ZERO);
        decorate(b);
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let kept = buf.clone();
    src.push_buffer(buf).unwrap();
    src.end_of_stream().unwrap();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(10))
        .expect("a frame out");
    let out = sample.buffer().unwrap().map_readable().unwrap().to_vec();
    pipeline.set_state(gst::State::Null).unwrap();
    let kept = kept.map_readable().unwrap();
    assert!(
        kept.iter().all(|&v| v == GREY),
        "{format:?}: drew on a buffer someone else holds"
    );
    (out, info.stride()[0] as usize)
}

/// A person-class detection (class 3 for its colour) with track id 7, and a foreign region.
fn decorate(b: &mut gst::BufferRef) {
    let det = Detection {
        class_id: 3,
        confidence: 0.9,
        bbox: [20.0, 30.0, 60.0, 60.0],
    };
    let labels = vec!["motorcycle".to_string(); 4];
    attach_detections(b, &[det], Some(&[Some(7)]), &labels, W as u32, H as u32);
    gst_video::VideoRegionOfInterestMeta::add(b, "face", (70, 40, 20, 20));
}

#[test]
fn boxes_and_labels_are_drawn_in_every_byte_order() {
    use gst_video::VideoFormat as F;
    init();
    for format in [F::Rgb, F::Bgr, F::Bgrx, F::Rgba, F::Argb, F::Xbgr] {
        let finfo = gst_video::VideoFormatInfo::from_format(format);
        let (bpp, off) = (finfo.pixel_stride()[0] as usize, finfo.poffset());
        let (out, stride) = overlay(format, "", decorate);
        let rgb = |x: usize, y: usize| -> [u8; 3] {
            let p = y * stride + x * bpp;
            [0, 1, 2].map(|c| out[p + off[c] as usize])
        };
        let grey = [GREY; 3];
        // The detection's outline (2 pixels thick, inwards) in its class colour.
        for (x, y) in [(20, 45), (21, 45), (59, 45), (40, 30), (40, 59)] {
            assert_eq!(
                rgb(x, y),
                class_colour(3),
                "{format:?} outline at ({x}, {y})"
            );
        }
        assert_eq!(rgb(40, 45), grey, "{format:?}: inside the box is untouched");
        assert_eq!(
            rgb(5, 5),
            grey,
            "{format:?}: away from the boxes is untouched"
        );
        // Its label strip above the box, with ink in it.
        let strip: Vec<[u8; 3]> = (20..40).map(|x| rgb(x, 25)).collect();
        assert!(
            strip.contains(&class_colour(3)),
            "{format:?}: no label strip"
        );
        assert!(
            strip.iter().any(|&p| p != class_colour(3)),
            "{format:?}: no text"
        );
        // The foreign region is outlined too.
        assert_ne!(rgb(70, 50), grey, "{format:?}: the foreign region");
        // Padding bytes keep what they were.
        if bpp == 4 {
            let pad = (0..4).find(|b| !off[..3].contains(&(*b as u32))).unwrap();
            assert_eq!(out[45 * stride + 20 * 4 + pad], GREY, "{format:?}");
        }
    }
}

#[test]
fn frames_without_regions_pass_unchanged_and_labels_can_be_off() {
    let (plain, _) = overlay(gst_video::VideoFormat::Rgb, "", |_| {});
    assert!(plain.iter().all(|&v| v == GREY));
    let (out, stride) = overlay(
        gst_video::VideoFormat::Rgb,
        "show-labels=false line-width=1",
        decorate,
    );
    let at = |x: usize, y: usize| &out[y * stride + x * 3..][..3];
    assert_eq!(at(20, 45), &class_colour(3));
    assert_eq!(at(21, 45), &[GREY; 3], "line-width=1");
    for x in 20..60 {
        assert_eq!(
            at(x, 25),
            &[GREY; 3],
            "show-labels=false drew a label at x {x}"
        );
    }
}

#[test]
fn empty_and_off_frame_regions_draw_nothing() {
    let (out, _) = overlay(gst_video::VideoFormat::Rgb, "line-width=4", |b| {
        gst_video::VideoRegionOfInterestMeta::add(b, "empty", (10, 20, 0, 20));
        gst_video::VideoRegionOfInterestMeta::add(b, "flat", (30, 20, 20, 0));
        gst_video::VideoRegionOfInterestMeta::add(b, "outside", (W as u32 + 5, 10, 20, 20));
    });
    let drawn = out.iter().filter(|&&v| v != GREY).count();
    assert_eq!(drawn, 0, "bytes drawn for regions with nothing to show");
}
