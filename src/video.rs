//! Decoding a video file into packed RGB frames with GStreamer (for the benchmark and tests).

use gst::prelude::*;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Decodes up to `max_frames` frames of `path` at their native size, skipping the first `skip`.
pub fn decode_rgb(path: &std::path::Path, skip: usize, max_frames: usize) -> Result<Vec<RgbFrame>> {
    let bad = |m: String| Error::Settings(format!("{}: {m}", path.display()));
    if !path.is_file() {
        return Err(bad("no such video file".into()));
    }
    gst::init().map_err(|e| bad(format!("GStreamer init failed: {e}")))?;
    let desc = "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false";
    let pipeline = gst::parse::launch(desc)
        .map_err(|e| bad(format!("cannot build the decoding pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| bad("not a pipeline".into()))?;
    pipeline
        .by_name("src")
        .unwrap()
        .set_property("location", path.to_string_lossy().to_string());
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .map_err(|_| bad("no appsink".into()))?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| bad(format!("cannot play: {e}")))?;
    let mut frames = Vec::new();
    let mut seen = 0;
    let result = loop {
        if frames.len() >= max_frames {
            break Ok(());
        }
        // Poll, so that a pipeline error (which never reaches the appsink as EOS) ends the loop.
        let sample = match sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            Some(s) => s,
            None => {
                let bus = pipeline.bus().unwrap();
                if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                    if let gst::MessageView::Error(e) = msg.view() {
                        break if frames.is_empty() {
                            Err(bad(format!("cannot decode: {}", e.error())))
                        } else {
                            Ok(())
                        };
                    }
                }
                if sink.is_eos() {
                    break Ok(());
                }
                continue;
            }
        };
        seen += 1;
        if seen <= skip {
            continue;
        }
        let caps = sample
            .caps()
            .ok_or_else(|| bad("sample without caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(e.to_string()))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| bad("sample without buffer".into()))?;
        let map = buffer.map_readable().map_err(|e| bad(e.to_string()))?;
        let (w, h, stride) = (
            info.width() as usize,
            info.height() as usize,
            info.stride()[0] as usize,
        );
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            data.extend_from_slice(&map[y * stride..y * stride + w * 3]);
        }
        frames.push(RgbFrame {
            width: w,
            height: h,
            data,
        });
    };
    let _ = pipeline.set_state(gst::State::Null);
    result.map(|_| frames)
}

impl RgbFrame {
    pub fn source(&self) -> crate::preprocess::PackedFrame<'_> {
        crate::preprocess::PackedFrame {
            data: &self.data,
            width: self.width,
            height: self.height,
            stride: self.width * 3,
            bytes_per_px: 3,
            rgb_offsets: [0, 1, 2],
        }
    }
}
