//! `--annotate DIR`: frames with the change mask tinted and the sparse detections drawn, as a few
//! PNGs, one picture of the change mask on the network input, and an MJPEG Matroska video encoded
//! by GStreamer (appsrc ! videoconvert ! jpegenc ! matroskamux, all in base/good).

use std::path::{Path, PathBuf};

use gst::prelude::*;
use gstregiondrop::detect::Detection;
use gstregiondrop::mask::{RegionMask, TileGrid};
use gstregiondrop::preprocess::Letterbox;
use gstregiondrop::video::RgbFrame;

use gstregiondrop::draw::{
    class_colour, detection_label, text_width, Image, Rgb, BLACK, GLYPH_H, WHITE,
};

const TINT: Rgb = [255, 60, 0];

pub struct Annotation<'a> {
    pub dir: &'a Path,
    pub frames: &'a [RgbFrame],
    /// Letterboxed network inputs, packed RGB.
    pub net: &'a [Vec<u8>],
    pub net_w: usize,
    pub net_h: usize,
    pub lb: Letterbox,
    pub grid: TileGrid,
    /// Per frame: the sparse engine's change mask and its detections (network-input pixels).
    pub masks: &'a [RegionMask],
    pub dets: &'a [Vec<Detection>],
    /// Per frame, the track id of each detection.
    pub track_ids: &'a [Vec<Option<u64>>],
    pub labels: &'a [String],
    pub fps: i32,
}

/// Frames that get a PNG: every 50th after the first (the first is a full dense frame), or the
/// last one for short runs.
pub fn png_frames(n: usize) -> Vec<usize> {
    let v: Vec<usize> = (1..).map(|k| k * 50).take_while(|&i| i < n).collect();
    if v.is_empty() {
        vec![n.saturating_sub(1)]
    } else {
        v
    }
}

/// Writes everything; returns the files written.
pub fn write(a: &Annotation) -> Result<Vec<PathBuf>, String> {
    let n = a.frames.len();
    let pngs = png_frames(n);
    let mut written = Vec::new();

    let video = a.dir.join("annotated.mkv");
    let mut enc = MkvWriter::start(&video, a.frames[0].width, a.frames[0].height, a.fps)?;
    for i in 0..n {
        let img = annotate_frame(a, i);
        if pngs.contains(&i) {
            let p = a.dir.join(format!("frame_{i:04}.png"));
            img.save_png(&p)?;
            written.push(p);
        }
        enc.push(&img, i)?;
    }
    enc.finish()?;
    written.push(video);

    let m = mask_picture(a, pngs[0]);
    let p = a.dir.join("mask.png");
    m.save_png(&p)?;
    written.push(p);
    Ok(written)
}

fn label_of(a: &Annotation, class: u32) -> String {
    a.labels
        .get(class as usize)
        .filter(|l| !l.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("class {class}"))
}

/// The video frame with changed tiles tinted and boxes + labels drawn.
fn annotate_frame(a: &Annotation, i: usize) -> Image {
    let f = &a.frames[i];
    let mut c = Image::from_rgb(f.width, f.height, &f.data);
    let mask = &a.masks[i];
    for t in 0..a.grid.len() {
        if !mask.get(t) {
            continue;
        }
        let (x0, y0, x1, y1) = a.grid.rect(t, 1, a.net_w, a.net_h);
        let (fx0, fy0) = a.lb.to_frame(x0 as f32, y0 as f32);
        let (fx1, fy1) = a.lb.to_frame(x1 as f32, y1 as f32);
        c.blend_rect(
            fx0 as i64,
            fy0 as i64,
            fx1.ceil() as i64,
            fy1.ceil() as i64,
            TINT,
            0.30,
        );
    }
    let scale = if f.width >= 1280 { 2 } else { 1 };
    for (d, id) in a.dets[i].iter().zip(&a.track_ids[i]) {
        let (x0, y0) = a.lb.to_frame(d.bbox[0], d.bbox[1]);
        let (x1, y1) = a.lb.to_frame(d.bbox[2], d.bbox[3]);
        let (x0, y0, x1, y1) = (x0 as i64, y0 as i64, x1.ceil() as i64, y1.ceil() as i64);
        let text = detection_label(&label_of(a, d.class_id), *id, Some(d.confidence as f64));
        c.labelled_box(x0, y0, x1, y1, class_colour(d.class_id), 2, &text, scale);
    }
    let scale = if f.width >= 640 { 2 } else { 1 };
    let status = format!(
        "frame {i}  active {:.1}%  {} objects",
        mask.fraction() * 100.0,
        a.dets[i].len()
    );
    c.fill_rect(
        0,
        0,
        text_width(&status, scale) + 4 * scale,
        (GLYPH_H + 4) * scale,
        BLACK,
    );
    c.text(2 * scale, 2 * scale, &status, WHITE, scale);
    c
}

/// The network input with inactive tiles dimmed, active tiles tinted and the tile grid drawn,
/// enlarged 2× so the grid is easy to see.
fn mask_picture(a: &Annotation, i: usize) -> Image {
    let (w, h, z) = (a.net_w, a.net_h, 2usize);
    let src = &a.net[i];
    let mut c = Image::new(w * z, h * z + 24 * z, WHITE);
    let mask = &a.masks[i];
    for y in 0..h * z {
        for x in 0..w * z {
            let (sx, sy) = (x / z, y / z);
            let t = (sy / a.grid.tile) * a.grid.cols + sx / a.grid.tile;
            let p = (sy * w + sx) * 3;
            let mut v = [src[p], src[p + 1], src[p + 2]];
            if mask.get(t) {
                for (x, &tint) in v.iter_mut().zip(&TINT) {
                    *x = (*x as f32 * 0.55 + tint as f32 * 0.45) as u8;
                }
            } else {
                for x in v.iter_mut() {
                    *x = (*x as f32 * 0.45) as u8;
                }
            }
            c.put(x as i64, y as i64, v);
        }
    }
    let grid_col = [200, 200, 200];
    for gx in 0..=a.grid.cols {
        let x = ((gx * a.grid.tile).min(w) * z) as f64;
        c.line(x, 0.0, x, (h * z) as f64, grid_col, 1, 0);
    }
    for gy in 0..=a.grid.rows {
        let y = ((gy * a.grid.tile).min(h) * z) as f64;
        c.line(0.0, y, (w * z) as f64, y, grid_col, 1, 0);
    }
    let caption = format!(
        "frame {i}: {}/{} tiles changed ({:.1}%), tile {} px",
        mask.count(),
        mask.len(),
        mask.fraction() * 100.0,
        a.grid.tile
    );
    c.text(4, (h * z + 4) as i64, &caption, BLACK, 2);
    c
}

/// appsrc ! videoconvert ! jpegenc ! matroskamux ! filesink
struct MkvWriter {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    info: gst_video::VideoInfo,
    fps: i32,
    path: PathBuf,
}

impl MkvWriter {
    fn start(path: &Path, w: usize, h: usize, fps: i32) -> Result<Self, String> {
        let bad = |m: String| format!("{}: {m}", path.display());
        gst::init().map_err(|e| bad(format!("GStreamer init failed: {e}")))?;
        let pipeline = gst::parse::launch(
            "appsrc name=src format=time block=true max-bytes=33554432 ! videoconvert ! jpegenc quality=75 ! matroskamux ! filesink name=sink",
        )
        .map_err(|e| bad(format!("cannot build the encoding pipeline (jpegenc, matroskamux): {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| bad("not a pipeline".into()))?;
        pipeline
            .by_name("sink")
            .unwrap()
            .set_property("location", path.to_string_lossy().to_string());
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| bad("no appsrc".into()))?;
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w as u32, h as u32)
            .fps(gst::Fraction::new(fps, 1))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        src.set_caps(Some(&info.to_caps().map_err(|e| bad(e.to_string()))?));
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| bad(format!("cannot start encoding: {e}")))?;
        Ok(MkvWriter {
            pipeline,
            src,
            info,
            fps,
            path: path.to_path_buf(),
        })
    }

    fn push(&mut self, img: &Image, i: usize) -> Result<(), String> {
        let stride = self.info.stride()[0] as usize;
        let mut data = vec![0u8; self.info.size()];
        for y in 0..img.h {
            data[y * stride..y * stride + img.w * 3]
                .copy_from_slice(&img.px[y * img.w * 3..(y + 1) * img.w * 3]);
        }
        let mut buf = gst::Buffer::from_mut_slice(data);
        {
            let b = buf.get_mut().unwrap();
            let dur = gst::ClockTime::SECOND / self.fps as u64;
            b.set_pts(dur * i as u64);
            b.set_duration(dur);
        }
        self.src.push_buffer(buf).map(|_| ()).map_err(|e| {
            format!(
                "{}: encoding failed: {e:?}{}",
                self.path.display(),
                self.bus_error()
            )
        })
    }

    fn bus_error(&self) -> String {
        let bus = self.pipeline.bus().unwrap();
        let msg = bus.pop_filtered(&[gst::MessageType::Error]);
        msg.and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(format!(" ({})", e.error())),
            _ => None,
        })
        .unwrap_or_default()
    }

    fn finish(self) -> Result<(), String> {
        let _ = self.src.end_of_stream();
        let bus = self.pipeline.bus().unwrap();
        let r = match bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            Some(m) => match m.view() {
                gst::MessageView::Eos(_) => Ok(()),
                gst::MessageView::Error(e) => Err(format!(
                    "{}: encoding failed: {}",
                    self.path.display(),
                    e.error()
                )),
                _ => Ok(()),
            },
            None => Err(format!("{}: encoding did not finish", self.path.display())),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        r
    }
}
