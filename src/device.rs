//! Choosing the device: the CPU (burn's `flex`), a GPU through wgpu, or CUDA, by name, with a
//! clear error when the backend was not compiled in.

use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA if compiled in, else wgpu if compiled in, else the CPU.
    #[default]
    Auto,
    /// The CPU (burn's `flex` backend).
    Cpu,
    /// A GPU through wgpu (Vulkan, Metal, DX12; Mesa's lavapipe on CPU-only machines).
    Wgpu,
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
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::invalid_config(
                "device",
                other,
                "one of auto, cpu, wgpu, cuda",
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

/// The plain (non-autodiff) device for `choice`.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                select_device(DeviceChoice::Cuda)
            } else if cfg!(feature = "wgpu") {
                select_device(DeviceChoice::Wgpu)
            } else {
                select_device(DeviceChoice::Cpu)
            }
        }
        DeviceChoice::Cpu => cpu(),
        DeviceChoice::Wgpu => wgpu(),
        DeviceChoice::Cuda => cuda(),
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
fn wgpu() -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    Err(not_compiled("wgpu", "wgpu"))
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    Err(not_compiled("cuda", "cuda"))
}
