//! The CUDA backend (cudarc): caches in GPU memory, kernels from `cuda/*.cu` compiled by NVRTC.
//!
//! Everything that touches cudarc first checks that the shared libraries load (see
//! [`kernels::driver_loadable`] and [`kernels::nvrtc_loadable`]), so a machine without CUDA gets an
//! `Err` (and `backend=auto` falls back to the CPU) instead of a panic.

mod backend;
mod driver;
pub mod geometry;
pub mod kernels;
pub mod lanes;
pub mod layers;
mod pinned_frames;
mod profile;
pub mod ptx_cache;
pub mod select;
pub mod tail;

use std::sync::Arc;

pub use backend::{CudaBackend, CudaOptions, FusionTiming, LaneTiming, PipeMode};

use super::Backend;
use crate::error::{Error, Result};
use crate::model::Plan;

/// Whether a CUDA device and the driver library can be used, without panicking when they are absent.
pub fn available(device_id: usize) -> Result<()> {
    kernels::driver_loadable().map_err(Error::Backend)?;
    kernels::nvrtc_loadable().map_err(Error::Backend)?;
    let n = std::panic::catch_unwind(cudarc::driver::result::device::get_count)
        .map_err(|_| Error::Backend("cuDeviceGetCount panicked".into()))?
        .map_err(|e| Error::Backend(format!("cannot count CUDA devices: {e:?}")))?;
    if device_id >= n.max(0) as usize {
        return Err(Error::Backend(format!(
            "CUDA device {device_id} requested but {n} device(s) present"
        )));
    }
    Ok(())
}

/// Free memory on CUDA device `device_id`, in bytes (cuMemGetInfo in its primary context):
/// before and after building engines, what they took of the device, shared copies once.
pub fn device_free_bytes(device_id: usize) -> Result<usize> {
    available(device_id)?;
    // Not while a backend is built elsewhere in the process (its allocations and captures).
    let _setup = driver::setup_guard();
    let ctx = driver::primary_context(device_id)?;
    ctx.bind_to_thread().map_err(driver::drv("bind"))?;
    let (free, _total) =
        cudarc::driver::result::mem_get_info().map_err(driver::drv("cuMemGetInfo"))?;
    Ok(free)
}

pub fn create(
    plan: Arc<Plan>,
    tile: usize,
    device_id: usize,
    opts: CudaOptions,
) -> Result<Box<dyn Backend>> {
    available(device_id)?;
    Ok(Box::new(CudaBackend::with_options(
        plan, tile, device_id, opts,
    )?))
}
