//! Choosing the device: the CPU (burn's `flex`), a GPU through wgpu (or wgpu pinned to Vulkan
//! with the SPIR-V compiler), or CUDA, by name, with a clear error when the backend was not
//! compiled in.

use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA if compiled in and usable, else a real GPU through wgpu (discrete, integrated or
    /// virtual; never a software Vulkan device such as lavapipe, which is slower than the
    /// native CPU backend), else the CPU.
    #[default]
    Auto,
    /// The CPU (burn's `flex` backend).
    Cpu,
    /// A GPU through wgpu (Vulkan, Metal, DX12; Mesa's lavapipe on CPU-only machines).
    Wgpu,
    /// A GPU through wgpu on Vulkan, kernels compiled to SPIR-V by cubecl (feature `vulkan`).
    Vulkan,
    /// An NVIDIA GPU through CUDA (device 0).
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "vulkan" => Ok(Self::Vulkan),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::invalid_config(
                "device",
                other,
                "one of auto, cpu, wgpu, vulkan, cuda",
            )),
        }
    }
}

/// The backends compiled into this build, by name.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("cpu");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

fn not_compiled(name: &str, feature: &str) -> Error {
    Error::invalid_config(
        "device",
        name,
        format!(
            "a backend compiled into this build ({}); rebuild with `--features {feature}` for {name}",
            compiled_backends().join(", ")
        ),
    )
}

/// The plain (non-autodiff) device for `choice`. A GPU backend that was compiled in but finds
/// no usable adapter is an error; `Auto` then falls back to the next choice (cuda, a wgpu
/// GPU, the CPU; wgpu's software device only when the CPU backend was not compiled in).
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    select_device_at(choice, 0)
}

/// [`select_device`] with GPU number `gpu` of its kind: each rank of a data-parallel run on
/// one machine takes the GPU of its local rank
/// ([`World::local_rank`](crate::distributed::World::local_rank)). The CPU is shared.
pub fn select_device_at(choice: DeviceChoice, gpu: usize) -> Result<Device> {
    match choice {
        DeviceChoice::Auto => select_device_at(DeviceChoice::Cuda, gpu)
            .or_else(|_| wgpu_gpu(gpu, wgpu, "wgpu"))
            .or_else(|_| cpu())
            .or_else(|_| select_device_at(DeviceChoice::Wgpu, gpu)),
        DeviceChoice::Cpu => cpu(),
        DeviceChoice::Wgpu if gpu == 0 => {
            usable(wgpu(burn::tensor::DeviceKind::DefaultDevice)?, "wgpu")
        }
        DeviceChoice::Wgpu => wgpu_gpu(gpu, wgpu, "wgpu"),
        DeviceChoice::Vulkan if gpu == 0 => {
            usable(vulkan(burn::tensor::DeviceKind::DefaultDevice)?, "vulkan")
        }
        DeviceChoice::Vulkan => wgpu_gpu(gpu, vulkan, "vulkan"),
        DeviceChoice::Cuda => usable(cuda(gpu)?, "cuda"),
    }
}

/// The usable hardware GPU number `index` through `open` (wgpu or vulkan, called `name`):
/// discrete, integrated, then virtual.
fn wgpu_gpu(
    index: usize,
    open: fn(burn::tensor::DeviceKind) -> Result<Device>,
    name: &str,
) -> Result<Device> {
    use burn::tensor::DeviceKind;
    let mut last = not_compiled(name, name);
    for kind in [
        DeviceKind::DiscreteGpu(index),
        DeviceKind::IntegratedGpu(index),
        DeviceKind::VirtualGpu(index),
    ] {
        match open(kind).and_then(|d| usable(d, name)) {
            Ok(device) => return Ok(device),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs one tiny computation on `device`; backends report a missing adapter or driver by
/// panicking on first use, which becomes an error here (with the panic message kept quiet).
fn usable(device: Device, name: &str) -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = device.clone();
    let outcome = std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::ones([4], &probe)
            .sum()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map(|v| v.first().copied() == Some(4.0))
            .unwrap_or(false)
    });
    std::panic::set_hook(hook);
    match outcome {
        Ok(true) => Ok(device),
        Ok(false) => Err(Error::invalid_config(
            "device",
            name,
            "a device that computes correctly (a test sum came out wrong)",
        )),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(Error::invalid_config(
                "device",
                name,
                format!("a usable {name} adapter (initialisation failed: {message})"),
            ))
        }
    }
}

#[cfg(feature = "flex")]
fn cpu() -> Result<Device> {
    Ok(Device::flex())
}

#[cfg(not(feature = "flex"))]
fn cpu() -> Result<Device> {
    Err(not_compiled("cpu", "flex"))
}

#[cfg(feature = "wgpu")]
fn wgpu(kind: burn::tensor::DeviceKind) -> Result<Device> {
    Ok(Device::wgpu(kind))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_kind: burn::tensor::DeviceKind) -> Result<Device> {
    Err(not_compiled("wgpu", "wgpu"))
}

#[cfg(feature = "vulkan")]
fn vulkan(kind: burn::tensor::DeviceKind) -> Result<Device> {
    Ok(Device::vulkan(kind))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_kind: burn::tensor::DeviceKind) -> Result<Device> {
    Err(not_compiled("vulkan", "vulkan"))
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    Err(not_compiled("cuda", "cuda"))
}

/// Whether `device` (plain or autodiff) is the CPU, burn's flex backend.
pub fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        matches!(
            device.as_dispatch().clone().inner(),
            burn::backend::DispatchDevice::Flex(_)
        )
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}
