//! onnxruntime as the reference implementation, driven through `scripts/ort_run.py` in the
//! project's venv (installed by `scripts/setup-assets.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub struct OrtRun {
    /// Outputs per frame, in the model's output order.
    pub frames: Vec<Vec<Tensor>>,
    pub ms_median: f64,
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has onnxruntime: $REGIONDROP_PYTHON, else the project venv.
pub fn python() -> PathBuf {
    std::env::var_os("REGIONDROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join(".venv/bin/python"))
}

/// Runs `model` on NCHW frames of `shape`, each `repeat` times, with `threads` intra-op threads.
pub fn run(
    model: &Path,
    frames: &[Vec<f32>],
    shape: [usize; 4],
    threads: usize,
    repeat: usize,
) -> Result<OrtRun> {
    let py = python();
    if !py.exists() {
        return Err(Error::Settings(format!(
            "onnxruntime is not installed: {} is missing (run scripts/setup-assets.sh)",
            py.display()
        )));
    }
    let dir = std::env::temp_dir().join(format!(
        "regiondrop-ort-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Settings(format!("{}: {e}", dir.display())))?;
    let input = dir.join("in.f32");
    let bytes: Vec<u8> = frames
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&input, bytes)
        .map_err(|e| Error::Settings(format!("{}: {e}", input.display())))?;
    let out = Command::new(&py)
        .arg(project_root().join("scripts/ort_run.py"))
        .args(["--model".as_ref(), model.as_os_str()])
        .args(["--input".as_ref(), input.as_os_str()])
        .args(["--shape", &shape.map(|d| d.to_string()).join(",")])
        .args([
            "--threads",
            &threads.to_string(),
            "--repeat",
            &repeat.to_string(),
        ])
        .args(["--out".as_ref(), dir.as_os_str()])
        .output()
        .map_err(|e| Error::Settings(format!("cannot run {}: {e}", py.display())))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(Error::Settings(format!(
            "onnxruntime failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("meta.json"))
            .map_err(|e| Error::Settings(format!("meta.json: {e}")))?,
    )
    .map_err(|e| Error::Settings(format!("meta.json: {e}")))?;
    let shapes: Vec<Vec<usize>> = meta["outputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    o["shape"]
                        .as_array()
                        .map(|s| s.iter().map(|d| d.as_u64().unwrap_or(0) as usize).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut result = Vec::new();
    for f in 0..frames.len() {
        let mut outs = Vec::new();
        for (i, shape) in shapes.iter().enumerate() {
            let name = if frames.len() == 1 {
                format!("out{i}.f32")
            } else {
                format!("out{i}_{f}.f32")
            };
            let raw = std::fs::read(dir.join(&name))
                .map_err(|e| Error::Settings(format!("{name}: {e}")))?;
            let data = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            outs.push(Tensor::new(shape.clone(), data));
        }
        result.push(outs);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(OrtRun {
        frames: result,
        ms_median: meta["ms_median"].as_f64().unwrap_or(f64::NAN),
    })
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// ||a - b|| / ||b|| over all outputs.
pub fn rel_l2(a: &[Tensor], b: &[Tensor]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (&p, &q) in x.data.iter().zip(&y.data) {
            num += ((p - q) as f64).powi(2);
            den += (q as f64).powi(2);
        }
    }
    (num / den.max(1e-30)).sqrt()
}
