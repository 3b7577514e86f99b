//! An application reading regiondrop's detections: a pipeline with an `appsink` after
//! `regiondrop tracking=true`; each buffer's detections (and track ids) are read from its
//! region-of-interest metas with `gstregiondrop::meta::read_detections`, and the element's
//! `regiondrop-stats` messages from the bus.
//!
//! cargo run --release --example app_detections -- [VIDEO] [FRAMES] [LINE]
//!
//! Prints one line per frame: `frame N: K detections: person #3 0.85 [x,y wxh], ...`, and one per
//! stats message. With LINE (`x0,y0,x1,y1`, frame pixels) the element also counts the objects
//! crossing it (`count-lines`), and each `regiondrop-crossing` message is printed:
//! `crossing: person #7 line 0 forward at 3.600 s`. An application written in C or Python reads the same metas: each is a
//! GstVideoRegionOfInterestMeta with a `detection` parameter structure (class-id, label,
//! confidence, track-id).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstregiondrop::analyzer::default_video_path;
use gstregiondrop::draw::detection_label;
use gstregiondrop::meta::{read_detections, StatsReport, CROSSING_MESSAGE};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let video = args.next().map_or_else(default_video_path, Into::into);
    let frames: usize = match args.next().map(|n| n.parse()) {
        None => 50,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("FRAMES must be a number");
            return ExitCode::FAILURE;
        }
    };
    let line = args.next();
    match run(&video, frames, line.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("app_detections: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(video: &std::path::Path, frames: usize, line: Option<&str>) -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())?;
    // Linked into this program. Where GST_PLUGIN_PATH also holds the built plug-in, GStreamer
    // may have loaded it already; an application using the installed plug-in leaves this out.
    if gst::ElementFactory::find("regiondrop").is_none() {
        gstregiondrop::plugin_register_static().map_err(|e| e.to_string())?;
    }
    let lines = line.map_or(String::new(), |l| format!("count-lines=\"{l}\""));
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! \
         regiondrop tracking=true stats-interval=10 {lines} ! \
         appsink name=sink sync=false max-buffers=2",
        video.display()
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline".to_string())?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let result = if pipeline.set_state(gst::State::Playing).is_err() {
        // The element that failed says why on the bus.
        let why = bus
            .pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(error_text(e)),
                _ => None,
            });
        Err(why.unwrap_or_else(|| "the pipeline did not start".into()))
    } else {
        print_frames(&sink, &bus, frames)
    };
    pipeline
        .set_state(gst::State::Null)
        .map_err(|e| e.to_string())?;
    result
}

/// Prints the detections of up to `frames` frames and the stats messages, until the end of the
/// stream or an error.
fn print_frames(sink: &gst_app::AppSink, bus: &gst::Bus, frames: usize) -> Result<(), String> {
    const PATIENCE: Duration = Duration::from_secs(10);
    let mut n = 0;
    let mut waiting_since = Instant::now();
    while n < frames {
        // The bus first: an error ends the run with its message, wherever it happened.
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => return Err(error_text(e)),
                gst::MessageView::Element(e) => {
                    let Some(s) = e.structure() else { continue };
                    if let Some(r) = StatsReport::from_structure(s) {
                        println!(
                            "stats: {} frames, active {:.2}, {:.1} ms, {} backend",
                            r.frames, r.active_fraction, r.inference_ms, r.backend
                        );
                    } else if s.name() == CROSSING_MESSAGE {
                        println!(
                            "crossing: {} #{} line {} {} at {:.3} s",
                            s.get::<&str>("label").unwrap_or("?"),
                            s.get::<u64>("track-id").unwrap_or(0),
                            s.get::<u32>("line").unwrap_or(0),
                            s.get::<&str>("direction").unwrap_or("?"),
                            s.get::<gst::ClockTime>("pts")
                                .map_or(f64::NAN, |t| t.seconds_f64()),
                        );
                    }
                }
                _ => {}
            }
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            if sink.is_eos() {
                return Ok(());
            }
            if waiting_since.elapsed() > PATIENCE {
                return Err(format!("no frame for {} s", PATIENCE.as_secs()));
            }
            continue;
        };
        waiting_since = Instant::now();
        let Some(buffer) = sample.buffer() else {
            continue;
        };
        let listed: Vec<String> = read_detections(buffer)
            .iter()
            .map(|d| {
                let (x, y, w, h) = d.rect;
                let label = detection_label(&d.label, d.track_id, Some(d.confidence));
                format!("{label} [{x},{y} {w}x{h}]")
            })
            .collect();
        println!(
            "frame {n}: {} detections: {}",
            listed.len(),
            listed.join(", ")
        );
        n += 1;
    }
    Ok(())
}

/// An error message with GStreamer's details (the file, the element, the reason).
fn error_text(e: &gst::message::Error) -> String {
    match e.debug() {
        Some(d) => format!("{} ({d})", e.error()),
        None => e.error().to_string(),
    }
}
