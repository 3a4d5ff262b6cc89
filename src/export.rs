//! Exporting a trained backbone: safetensors with torchvision's parameter names (so
//! `torchvision.models.resnet18().load_state_dict(safetensors.torch.load_file(path),
//! strict=False)` loads a ResNet), and burn's own burnpack format.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// One exported tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dotted parameter path, e.g. `layer1.0.bn1.weight`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

struct Collector {
    path: Vec<String>,
    tensors: Vec<NamedTensor>,
    error: Option<String>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        match tensor.into_data().convert::<f32>().try_to_vec::<f32>() {
            Ok(values) => self.tensors.push(NamedTensor {
                name: self.path.join("."),
                shape,
                values,
            }),
            Err(e) => self.error = Some(format!("{}: {e:?}", self.path.join("."))),
        }
    }
}

/// Every float tensor of `module` (parameters and BatchNorm statistics) with burn's paths.
pub fn named_tensors<M: Module>(module: &M) -> Result<Vec<NamedTensor>> {
    let mut collector = Collector {
        path: Vec::new(),
        tensors: Vec::new(),
        error: None,
    };
    module.visit(&mut collector);
    match collector.error {
        Some(e) => Err(Error::Checkpoint {
            path: "export".into(),
            reason: format!("tensor could not be read: {e}"),
        }),
        None => Ok(collector.tensors),
    }
}

/// Renames burn's paths to torchvision's: BatchNorm and LayerNorm `gamma`/`beta` become
/// `weight`/`bias`; a ResNet's shortcut `downsample.conv`/`downsample.bn` become
/// `downsample.0`/`downsample.1`; a ViT's block `layers.i` becomes `layers.encoder_layer_i`
/// and its MLP's `linear_1`/`linear_2` become `0`/`3`. The enum wrapper of
/// [`Backbone`](crate::backbone::Backbone) (its variant name) is dropped.
pub fn torchvision_name(burn_path: &str) -> String {
    let parts: Vec<&str> = burn_path.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let parent = if i > 0 { parts[i - 1] } else { "" };
        let renamed = match (*part, last) {
            ("gamma", true) => "weight",
            ("beta", true) => "bias",
            ("conv", false) if parent == "downsample" => "0",
            ("bn", false) if parent == "downsample" => "1",
            ("linear_1", false) if parent == "mlp" => "0",
            ("linear_2", false) if parent == "mlp" => "3",
            (index, false) if parent == "layers" && index.parse::<usize>().is_ok() => {
                out.push(format!("encoder_layer_{index}"));
                continue;
            }
            ("ResNet" | "ConvNet" | "Vit", false) if i == 0 => continue,
            (p, _) => p,
        };
        out.push(renamed.to_string());
    }
    out.join(".")
}

/// Writes `module`'s tensors as a safetensors file with torchvision's names.
pub fn export_safetensors<M: Module>(module: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = named_tensors(module)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|t| {
            let data = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (torchvision_name(&t.name), t.shape, data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("safetensors: {e}"),
        })?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let out =
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("safetensors: {e}"),
        })?;
    write_file(path, &out)
}

/// Writes `module` in burn's burnpack format (load it with `Module::load_file`).
pub fn export_burn<M: Module>(module: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = module
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    write_file(path, &bytes)
}

/// Writes atomically: temporary file, then rename.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
