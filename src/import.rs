//! Loading weights saved under torchvision's parameter names (a `state_dict` written as
//! safetensors, or any list of named tensors) into a backbone: the inverse of
//! [`export_safetensors`](crate::export::export_safetensors), through the same renaming
//! ([`torchvision_name`]).

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::export::{NamedTensor, torchvision_name};

struct Loader<'a> {
    path: Vec<String>,
    tensors: &'a HashMap<String, NamedTensor>,
    error: Option<String>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = torchvision_name(&self.path.join("."));
        let Some(source) = self.tensors.get(&name) else {
            self.error = Some(format!("no tensor named `{name}`"));
            return param;
        };
        let shape = param.lazy_shape().dims::<D>().to_vec();
        if source.shape != shape {
            self.error = Some(format!(
                "`{name}` has shape {:?}, the model expects {shape:?}",
                source.shape
            ));
            return param;
        }
        let data = TensorData::new(source.values.clone(), shape);
        let require_grad = param.is_require_grad();
        param
            .map(|t| Tensor::from_data(data, &t.device()))
            .set_require_grad(require_grad)
    }
}

/// `module` with every float tensor replaced by the tensor of the same torchvision name in
/// `tensors`. Every tensor of the module must be found with its shape; tensors the module
/// does not have (a classifier head) are ignored. `source` names the origin in errors.
pub fn load_torchvision<M: Module>(module: M, tensors: &[NamedTensor], source: &str) -> Result<M> {
    let by_name: HashMap<String, NamedTensor> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let mut loader = Loader {
        path: Vec::new(),
        tensors: &by_name,
        error: None,
    };
    let module = module.map(&mut loader);
    match loader.error {
        Some(reason) => Err(Error::Checkpoint {
            path: source.to_string(),
            reason,
        }),
        None => Ok(module),
    }
}

/// The float tensors of a safetensors file (f32, or f64 read as f32); integer buffers are
/// skipped.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Vec<NamedTensor>> {
    let path = path.as_ref();
    let bad = |reason: String| Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("safetensors: {e}")))?;
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        let values = match view.dtype() {
            safetensors::Dtype::F32 => decode(view.data(), 4, |b| {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }),
            safetensors::Dtype::F64 => decode(view.data(), 8, |b| {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }),
            other => {
                // Integer buffers (BatchNorm's `num_batches_tracked`) carry no weights.
                if matches!(other, safetensors::Dtype::I64 | safetensors::Dtype::I32) {
                    continue;
                }
                return Err(bad(format!(
                    "`{name}` has dtype {other:?}; expected f32 or f64"
                )));
            }
        };
        out.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            values,
        });
    }
    Ok(out)
}

fn decode(bytes: &[u8], width: usize, read: impl Fn(&[u8]) -> f32) -> Vec<f32> {
    bytes.chunks_exact(width).map(read).collect()
}

/// Loads a safetensors file with torchvision's names (what
/// [`export_safetensors`](crate::export::export_safetensors) writes, or a torchvision
/// `state_dict` saved with `safetensors.torch.save_file`) into `module`.
pub fn import_safetensors<M: Module>(module: M, path: impl AsRef<Path>) -> Result<M> {
    let path = path.as_ref();
    let tensors = read_safetensors(path)?;
    load_torchvision(module, &tensors, &path.display().to_string())
}
