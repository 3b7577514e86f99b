//! The dense engines a user would pick instead of ours, driven through `scripts/ort_run.py` in
//! the project's venv (installed by `scripts/setup-assets.sh`): onnxruntime, which is also the
//! reference our outputs are checked against, and OpenVINO's CPU plugin.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A dense engine that `scripts/ort_run.py` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// onnxruntime's CPU execution provider, in f32.
    Onnxruntime,
    /// OpenVINO's CPU plugin with the latency hint, at this inference precision ("f32" or
    /// "bf16"); `None`: the plugin's own choice (bf16 on CPUs with bf16 arithmetic, AMX or
    /// AVX512-BF16 as measured, else f32).
    Openvino(Option<&'static str>),
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Onnxruntime => "onnxruntime",
            Baseline::Openvino(_) => "openvino",
        }
    }

    fn args(self) -> Vec<&'static str> {
        let mut a = vec!["--engine", self.name()];
        if let Baseline::Openvino(Some(p)) = self {
            a.extend(["--precision", p]);
        }
        a
    }
}

pub struct BaselineRun {
    /// Outputs per frame, in the model's output order.
    pub frames: Vec<Vec<Tensor>>,
    pub ms_median: f64,
    /// The precision the engine ran in ("f32" or "bf16").
    pub precision: String,
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has the baseline engines: $REGIONDROP_PYTHON, else the project venv.
pub fn python() -> PathBuf {
    std::env::var_os("REGIONDROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join(".venv/bin/python"))
}

/// `scripts/ort_run.py` in `engine` on `model` with NCHW input of `shape` and `threads` threads;
/// the caller adds the mode's arguments.
fn helper(engine: Baseline, model: &Path, shape: [usize; 4], threads: usize) -> Result<Command> {
    let py = python();
    if !py.exists() {
        return Err(Error::Settings(format!(
            "{} is not installed: {} is missing (run scripts/setup-assets.sh)",
            engine.name(),
            py.display()
        )));
    }
    let mut c = Command::new(py);
    c.arg(project_root().join("scripts/ort_run.py"))
        .args(engine.args())
        .args(["--model".as_ref(), model.as_os_str()])
        .args(["--shape", &shape.map(|d| d.to_string()).join(",")])
        .args(["--threads", &threads.to_string()]);
    Ok(c)
}

/// The program a helper command runs, for errors.
fn program(c: &Command) -> String {
    Path::new(c.get_program()).display().to_string()
}

/// A baseline's session in a helper process that times one frame whenever asked, so that a
/// benchmark can interleave its runs with its own frame by frame (both then see the same machine).
///
/// Between frames the helper is stopped (SIGSTOP, SIGCONT before its next frame). The engines'
/// thread pools keep spinning after a run, and on two cores that slowed our dense frame beside
/// them from 16.5 to 26.4 ms (onnxruntime) and to 28.2 ms (OpenVINO). Our own pool may still spin
/// for a moment when the helper resumes; the baselines' times did not move measurably with the
/// change. The helper is killed when the thread that started it ends (Linux), so that a crash of
/// ours cannot leave it stopped.
pub struct BaselineTimer {
    pub engine: Baseline,
    /// The engine's version and the precision it runs in, as it reports them.
    pub version: String,
    pub precision: String,
    child: Child,
    /// Taken (closed) on drop: end of input ends the helper.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    frame_len: usize,
    bytes: Vec<u8>,
    line: String,
}

impl BaselineTimer {
    /// Loads `model` in `engine` for NCHW input of `shape` with `threads` threads.
    pub fn new(engine: Baseline, model: &Path, shape: [usize; 4], threads: usize) -> Result<Self> {
        let mut cmd = helper(engine, model, shape, threads)?;
        // Killed with us, should we die without dropping it (it may be stopped then).
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                })
            };
        }
        let mut child = cmd
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Settings(format!("cannot run {}: {e}", program(&cmd))))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut t = BaselineTimer {
            engine,
            version: String::new(),
            precision: String::new(),
            child,
            stdin,
            stdout,
            frame_len: shape.iter().product(),
            bytes: Vec::new(),
            line: String::new(),
        };
        let ready = t.read_line()?;
        let mut words = ready.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("ready"), Some(name), Some(version), Some(precision))
                if name == engine.name() =>
            {
                t.version = version.to_string();
                t.precision = precision.to_string();
                t.signal(Signal::Stop);
                Ok(t)
            }
            _ => Err(Error::Settings(format!(
                "{} helper did not start (said {ready:?})",
                engine.name()
            ))),
        }
    }

    fn read_line(&mut self) -> Result<String> {
        self.line.clear();
        let n = self
            .stdout
            .read_line(&mut self.line)
            .map_err(|e| Error::Settings(format!("{} helper: {e}", self.engine.name())))?;
        if n == 0 {
            let status = self.child.wait().ok();
            return Err(Error::Settings(format!(
                "{} helper exited ({status:?}); its error is above",
                self.engine.name()
            )));
        }
        Ok(self.line.trim().to_string())
    }

    /// Runs one NCHW frame; returns the engine's milliseconds for it.
    pub fn time(&mut self, nchw: &[f32]) -> Result<f64> {
        let name = self.engine.name();
        if nchw.len() != self.frame_len {
            return Err(Error::Settings(format!(
                "{name} frame of {} values, expected {}",
                nchw.len(),
                self.frame_len
            )));
        }
        self.bytes.clear();
        self.bytes.extend(nchw.iter().flat_map(|v| v.to_le_bytes()));
        let io = |e: std::io::Error| Error::Settings(format!("{name} helper: {e}"));
        self.signal(Signal::Continue);
        let stdin = self.stdin.as_mut().expect("open until drop");
        stdin.write_all(b"run\n").map_err(io)?;
        stdin.write_all(&self.bytes).map_err(io)?;
        stdin.flush().map_err(io)?;
        let reply = self.read_line()?;
        self.signal(Signal::Stop);
        reply
            .parse()
            .map_err(|_| Error::Settings(format!("{name} helper said {reply:?}")))
    }

    /// The helper's process id.
    pub fn helper_pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops or resumes the helper process (all its threads). A stop returns once every thread
    /// is stopped (or after a second), so that none runs beside ours. A helper that has exited
    /// gets no signal (its pid may belong to another process by then).
    fn signal(&mut self, signal: Signal) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        #[cfg(unix)]
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            let sig = match signal {
                Signal::Stop => libc::SIGSTOP,
                Signal::Continue => libc::SIGCONT,
            };
            // SAFETY: a plain system call on our own child, not yet reaped (checked above).
            unsafe { libc::kill(pid, sig) };
            if matches!(signal, Signal::Stop) {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
                while process_stopped(self.child.id()) == Some(false)
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
        }
    }
}

/// Whether every thread of a process is stopped (from /proc); `None` where it cannot be read.
pub fn process_stopped(pid: u32) -> Option<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut all = true;
    for task in tasks {
        let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        // T: stopped by a signal; t: stopped by a tracer; Z, X: gone.
        all &= matches!(state, 'T' | 't' | 'Z' | 'X');
    }
    Some(all)
}

/// What [`BaselineTimer::signal`] sends.
#[derive(Clone, Copy)]
enum Signal {
    Stop,
    Continue,
}

impl Drop for BaselineTimer {
    fn drop(&mut self) {
        // Resumed, it reads the end of its input and exits.
        self.signal(Signal::Continue);
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs `model` in onnxruntime on NCHW frames of `shape`, each `repeat` times, with `threads`
/// intra-op threads.
pub fn run(
    model: &Path,
    frames: &[Vec<f32>],
    shape: [usize; 4],
    threads: usize,
    repeat: usize,
) -> Result<BaselineRun> {
    run_in(Baseline::Onnxruntime, model, frames, shape, threads, repeat)
}

/// [`run`] in any baseline engine.
pub fn run_in(
    engine: Baseline,
    model: &Path,
    frames: &[Vec<f32>],
    shape: [usize; 4],
    threads: usize,
    repeat: usize,
) -> Result<BaselineRun> {
    let name = engine.name();
    let mut cmd = helper(engine, model, shape, threads)?;
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
    let out = cmd
        .args(["--input".as_ref(), input.as_os_str()])
        .args(["--repeat", &repeat.to_string()])
        .args(["--out".as_ref(), dir.as_os_str()])
        .output()
        .map_err(|e| Error::Settings(format!("cannot run {}: {e}", program(&cmd))))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(Error::Settings(format!(
            "{name} failed: {}",
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
    Ok(BaselineRun {
        frames: result,
        ms_median: meta["ms_median"].as_f64().unwrap_or(f64::NAN),
        precision: meta["precision"].as_str().unwrap_or("?").to_string(),
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
