//! Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
//! arXiv:2010.11929), laid out as torchvision's `VisionTransformer` so its weights load and
//! export under the same names.
//!
//! `x_0 = [cls; conv_proj(image) as tokens] + pos`, then `num_layers` pre-norm blocks
//! `x <- x + MSA(LN_1(x))`, `x <- x + MLP(LN_2(x))` with `MLP = Linear GELU Linear`, then a
//! final LayerNorm (eps 1e-6). The pooled feature is the class token or the mean of the patch
//! tokens. A `P x P` patch embedding of an `S x S` image gives `(S / P)^2` patch tokens; for
//! another image size the patch part of the position embedding is resized bicubically (DINO's
//! `interpolate_pos_encoding`), so multi-crop's small crops go through the same network.
//!
//! Presets: ViT-Tiny/Small/Base (width 192/384/768, 12 layers, 3/6/12 heads, MLP 4x) and the
//! CIFAR ViT-Tiny with 4-pixel patches on 32 x 32 images.

use crate::transformer_ops::{
    gelu, layer_norm as fused_layer_norm, linear, multi_head_attention, residual_add,
};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use crate::error::Error;

/// How a [`Vit`] pools its tokens into one feature vector.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum VitPool {
    /// The class token after the final LayerNorm (torchvision, DINO).
    ClassToken,
    /// The mean of the patch tokens after the final LayerNorm (I-JEPA's evaluation, MAE's
    /// fine-tuning).
    MeanPatch,
}

/// Configuration of a [`Vit`].
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Side of the images the position embedding is made for.
    pub image_size: usize,
    /// Side of a patch.
    pub patch_size: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Attention heads (must divide `hidden_dim`).
    pub num_heads: usize,
    /// Token width `D`.
    pub hidden_dim: usize,
    /// Hidden width of each block's MLP.
    pub mlp_dim: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
    /// Image channels.
    #[config(default = 3)]
    pub input_channels: usize,
    /// The pooled feature.
    #[config(default = "VitPool::ClassToken")]
    pub pool: VitPool,
}

impl VitConfig {
    /// ViT-Tiny: width 192, 12 layers, 3 heads, MLP 768.
    pub fn tiny(image_size: usize, patch_size: usize) -> Self {
        Self::new(image_size, patch_size, 12, 3, 192, 768)
    }

    /// ViT-Small: width 384, 12 layers, 6 heads, MLP 1536.
    pub fn small(image_size: usize, patch_size: usize) -> Self {
        Self::new(image_size, patch_size, 12, 6, 384, 1536)
    }

    /// ViT-Base: width 768, 12 layers, 12 heads, MLP 3072.
    pub fn base(image_size: usize, patch_size: usize) -> Self {
        Self::new(image_size, patch_size, 12, 12, 768, 3072)
    }

    /// The CIFAR ViT-Tiny: 4-pixel patches on 32 x 32 images (64 patch tokens).
    pub fn cifar_tiny() -> Self {
        Self::tiny(32, 4)
    }

    /// Dimension of the pooled features (the token width).
    pub fn feature_dim(&self) -> usize {
        self.hidden_dim
    }

    /// Checks every size, naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let ranges = [
            ("backbone.image_size", self.image_size, 1, 4096),
            ("backbone.patch_size", self.patch_size, 1, 256),
            ("backbone.num_layers", self.num_layers, 1, 256),
            ("backbone.num_heads", self.num_heads, 1, 256),
            ("backbone.hidden_dim", self.hidden_dim, 1, 16384),
            ("backbone.mlp_dim", self.mlp_dim, 1, 65536),
            ("backbone.input_channels", self.input_channels, 1, 64),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(Error::invalid_config(
                    field,
                    value,
                    format!("in {min}..={max}"),
                ));
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::invalid_config(
                "backbone.patch_size",
                self.patch_size,
                format!("a divisor of image_size {}", self.image_size),
            ));
        }
        if !self.hidden_dim.is_multiple_of(self.num_heads) {
            return Err(Error::invalid_config(
                "backbone.num_heads",
                self.num_heads,
                format!("a divisor of hidden_dim {}", self.hidden_dim),
            ));
        }
        crate::check::ensure(
            "backbone.layer_norm_eps",
            self.layer_norm_eps,
            self.layer_norm_eps > 0.0,
            "a finite value > 0",
        )
    }

    /// Creates the network on `device` with torchvision's initialisation.
    pub fn init(&self, device: &Device) -> crate::Result<Vit> {
        self.validate()?;
        let d = self.hidden_dim;
        let fan_in = self.input_channels * self.patch_size * self.patch_size;
        let conv_proj = Conv2dConfig::new([self.input_channels, d], [self.patch_size; 2])
            .with_stride([self.patch_size; 2])
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: (1.0 / fan_in as f64).sqrt(),
            })
            .init(device);
        // torchvision zeroes the patch embedding's bias.
        let conv_proj = Conv2d {
            bias: Some(Param::from_tensor(Tensor::zeros([d], device))),
            ..conv_proj
        };
        let grid = self.image_size / self.patch_size;
        let pos_embedding = Tensor::random(
            [1, grid * grid + 1, d],
            Distribution::Normal(0.0, 0.02),
            device,
        );
        let layers = (0..self.num_layers)
            .map(|_| {
                EncoderBlock::new(
                    d,
                    self.num_heads,
                    self.mlp_dim,
                    self.layer_norm_eps,
                    BlockInit::Torchvision,
                    device,
                )
            })
            .collect();
        Ok(Vit {
            conv_proj,
            class_token: Param::from_tensor(Tensor::zeros([1, 1, d], device)),
            encoder: VitEncoder {
                pos_embedding: Param::from_tensor(pos_embedding),
                layers,
                ln: layer_norm(d, self.layer_norm_eps, device),
                layer_norm_eps: self.layer_norm_eps,
            },
            patch_size: self.patch_size,
            pool: self.pool,
        })
    }
}

fn layer_norm(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// `U(-a, a)` with Xavier's `a = sqrt(6 / (fan_in + fan_out))` for a `[out, in]` weight.
fn xavier_uniform(out_dim: usize, in_dim: usize, device: &Device) -> Tensor<2> {
    let a = (6.0 / (in_dim + out_dim) as f64).sqrt();
    Tensor::random([out_dim, in_dim], Distribution::Uniform(-a, a), device)
}

/// A linear layer stored as PyTorch stores it (`weight` `[out, in]`), so names and shapes
/// equal torchvision's.
#[derive(Module, Debug)]
pub struct TorchLinear {
    /// `[out, in]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl TorchLinear {
    /// Xavier-uniform weights and a bias from `N(0, bias_std)` (zeros when 0).
    pub fn xavier(in_dim: usize, out_dim: usize, bias_std: f64, device: &Device) -> Self {
        let bias = if bias_std > 0.0 {
            Tensor::random([out_dim], Distribution::Normal(0.0, bias_std), device)
        } else {
            Tensor::zeros([out_dim], device)
        };
        Self {
            weight: Param::from_tensor(xavier_uniform(out_dim, in_dim, device)),
            bias: Param::from_tensor(bias),
        }
    }

    /// PyTorch's `nn.Linear` default weight (`U(-1/sqrt(in), 1/sqrt(in))`, Kaiming-uniform
    /// with `a = sqrt(5)`) and a zero bias: what `nn.MultiheadAttention` leaves in its
    /// `out_proj` (its `_reset_parameters` only zeroes the bias).
    pub fn pytorch_default(in_dim: usize, out_dim: usize, device: &Device) -> Self {
        let bound = 1.0 / (in_dim as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [out_dim, in_dim],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([out_dim], device)),
        }
    }

    /// `x W^T + b` for `x` `[rows, in]` ([`linear`]: one fused kernel on the CPU).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        linear(x, self.weight.val(), self.bias.val())
    }
}

/// Multi-head self-attention with PyTorch's packed input projection (`in_proj_weight`
/// `[3D, D]`: queries, keys, values) and `out_proj`.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Packed query / key / value projection, `[3D, D]`.
    pub in_proj_weight: Param<Tensor<2>>,
    /// Its bias, `[3D]`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// Output projection.
    pub out_proj: TorchLinear,
    /// Heads.
    pub num_heads: usize,
}

impl SelfAttention {
    fn new(d: usize, num_heads: usize, init: BlockInit, device: &Device) -> Self {
        let out_proj = match init {
            BlockInit::Torchvision => TorchLinear::pytorch_default(d, d, device),
            BlockInit::Xavier => TorchLinear::xavier(d, d, 0.0, device),
        };
        Self {
            in_proj_weight: Param::from_tensor(xavier_uniform(3 * d, d, device)),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * d], device)),
            out_proj,
            num_heads,
        }
    }

    /// `softmax(Q K^T / sqrt(d_head)) V` per head, for tokens `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let qkv = linear(
            x.reshape([b * n, d]),
            self.in_proj_weight.val(),
            self.in_proj_bias.val(),
        );
        let context = multi_head_attention(qkv, b, self.num_heads);
        self.out_proj.forward(context).reshape([b, n, d])
    }
}

/// A block's MLP, `Linear(D, mlp) GELU Linear(mlp, D)` (torchvision's `mlp.0` and `mlp.3`).
#[derive(Module, Debug)]
pub struct VitMlp {
    /// First layer (`mlp.0`).
    pub linear_1: TorchLinear,
    /// Second layer (`mlp.3`).
    pub linear_2: TorchLinear,
}

/// A pre-norm transformer block.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Multi-head self-attention.
    pub self_attention: SelfAttention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// The MLP.
    pub mlp: VitMlp,
    /// The epsilon `ln_1` and `ln_2` were configured with (burn keeps a `LayerNorm`'s own
    /// private; the fused CPU kernels take it from here, other devices from the layers).
    pub layer_norm_eps: f64,
}

/// How an [`EncoderBlock`]'s weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockInit {
    /// torchvision's `EncoderBlock`: Xavier-uniform `in_proj_weight` and MLP weights, MLP biases
    /// from `N(0, 1e-6)`, and the attention's `out_proj` left at `nn.Linear`'s default
    /// (`U(+-1/sqrt(d))`, which `nn.MultiheadAttention` does not re-initialise).
    Torchvision,
    /// MAE's `_init_weights` (also used for I-JEPA's predictor here): every linear layer,
    /// `out_proj` included, Xavier-uniform with a zero bias.
    Xavier,
}

impl EncoderBlock {
    /// A block of width `d` with the `init` scheme's weights.
    pub fn new(
        d: usize,
        num_heads: usize,
        mlp_dim: usize,
        eps: f64,
        init: BlockInit,
        device: &Device,
    ) -> Self {
        let mlp_bias_std = match init {
            BlockInit::Torchvision => 1e-6,
            BlockInit::Xavier => 0.0,
        };
        Self {
            ln_1: layer_norm(d, eps, device),
            self_attention: SelfAttention::new(d, num_heads, init, device),
            ln_2: layer_norm(d, eps, device),
            mlp: VitMlp {
                linear_1: TorchLinear::xavier(d, mlp_dim, mlp_bias_std, device),
                linear_2: TorchLinear::xavier(mlp_dim, d, mlp_bias_std, device),
            },
            layer_norm_eps: eps,
        }
    }

    /// `x + MSA(LN_1(x))`, then `+ MLP(LN_2(.))`, for tokens `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let eps = self.layer_norm_eps;
        let attended = self
            .self_attention
            .forward(fused_layer_norm(&self.ln_1, x.clone(), eps));
        let x = residual_add(x, attended);
        let [b, n, d] = x.dims();
        let hidden = fused_layer_norm(&self.ln_2, x.clone(), eps).reshape([b * n, d]);
        let hidden = gelu(self.mlp.linear_1.forward(hidden));
        residual_add(x, self.mlp.linear_2.forward(hidden).reshape([b, n, d]))
    }
}

/// The transformer part: position embedding, blocks, final LayerNorm.
#[derive(Module, Debug)]
pub struct VitEncoder {
    /// `[1, 1 + N, D]`: the class token's position, then the patch grid's, row-major.
    pub pos_embedding: Param<Tensor<3>>,
    /// The blocks (torchvision's `encoder_layer_i`).
    pub layers: Vec<EncoderBlock>,
    /// Final LayerNorm.
    pub ln: LayerNorm,
    /// The epsilon `ln` was configured with (as [`EncoderBlock::layer_norm_eps`]).
    pub layer_norm_eps: f64,
}

/// A Vision Transformer: see the [module docs](self).
#[derive(Module, Debug)]
pub struct Vit {
    /// Patch embedding: a convolution with kernel and stride `patch_size`.
    pub conv_proj: Conv2d,
    /// The learned class token, `[1, 1, D]`.
    pub class_token: Param<Tensor<3>>,
    /// Position embedding, blocks and final norm.
    pub encoder: VitEncoder,
    /// Side of a patch.
    pub patch_size: usize,
    /// The pooled feature.
    #[module(skip)]
    pub pool: VitPool,
}

impl Vit {
    /// Token width `D`.
    pub fn hidden_dim(&self) -> usize {
        self.class_token.dims()[2]
    }

    /// Channels the patch embedding expects.
    pub fn input_channels(&self) -> usize {
        self.conv_proj.weight.dims()[1]
    }

    /// Checks an image batch's shape `[B, C, H, W]`: `C` channels and sides of at least one
    /// patch. (Pixels beyond the last whole patch are ignored, as the strided patch
    /// convolution ignores them.)
    pub fn check_images(&self, dims: [usize; 4]) -> crate::Result<()> {
        let [b, c, h, w] = dims;
        let p = self.patch_size;
        if c != self.input_channels() || h < p || w < p {
            return Err(Error::ShapeMismatch {
                context: format!(
                    "ViT input: {} channels and sides of at least the patch size {p}",
                    self.input_channels()
                ),
                expected: vec![b, self.input_channels(), h.max(p), w.max(p)],
                found: dims.to_vec(),
            });
        }
        Ok(())
    }

    /// The position embedding of the patch tokens for a `grid`, `[1, rows * columns, D]`:
    /// the stored one, resized bicubically (as PyTorch's `align_corners=False`; see
    /// [`bicubic`](super::bicubic)) when the grid differs from the stored one.
    pub fn patch_positions(&self, grid: [usize; 2]) -> Tensor<3> {
        let pos = self.encoder.pos_embedding.val();
        let [_, tokens, d] = pos.dims();
        let patches = pos.narrow(1, 1, tokens - 1);
        let side = ((tokens - 1) as f64).sqrt().round() as usize;
        if grid == [side, side] {
            return patches;
        }
        super::bicubic::resize_grid(patches.reshape([side, side, d]), grid).reshape([
            1,
            grid[0] * grid[1],
            d,
        ])
    }

    /// The patch tokens with their positions, `[B, N, D]`, before any block.
    pub fn embed_patches(&self, images: Tensor<4>) -> Tensor<3> {
        let patches = crate::conv::conv2d(&self.conv_proj, images);
        let [b, d, rows, columns] = patches.dims();
        let tokens = patches.reshape([b, d, rows * columns]).swap_dims(1, 2);
        tokens + self.patch_positions([rows, columns])
    }

    /// The class token with its position, `[B, 1, D]`.
    pub fn class_token_embedding(&self, batch: usize) -> Tensor<3> {
        let d = self.hidden_dim();
        let cls = self.class_token.val() + self.encoder.pos_embedding.val().narrow(1, 0, 1);
        cls.expand([batch, 1, d])
    }

    /// Runs the blocks and the final LayerNorm on tokens `[B, N, D]`.
    pub fn transform(&self, tokens: Tensor<3>) -> Tensor<3> {
        let x = self
            .encoder
            .layers
            .iter()
            .fold(tokens, |x, block| block.forward(x));
        fused_layer_norm(&self.encoder.ln, x, self.encoder.layer_norm_eps)
    }

    /// Every output token, `[B, 1 + N, D]`: the class token first, then the patches
    /// row-major.
    pub fn forward_tokens(&self, images: Tensor<4>) -> Tensor<3> {
        let b = images.dims()[0];
        let patches = self.embed_patches(images);
        let tokens = Tensor::cat(vec![self.class_token_embedding(b), patches], 1);
        self.transform(tokens)
    }

    /// The output tokens of the kept patches only (`keep`, `[B, K]` patch indices per image),
    /// with the class token first, `[B, 1 + K, D]`: the encoder never sees the other patches
    /// (MAE's encoder).
    pub fn forward_kept(
        &self,
        images: Tensor<4>,
        keep: Tensor<2, Int>,
    ) -> crate::Result<Tensor<3>> {
        let b = images.dims()[0];
        let patches = gather_tokens(self.embed_patches(images), keep)?;
        let tokens = Tensor::cat(vec![self.class_token_embedding(b), patches], 1);
        Ok(self.transform(tokens))
    }

    /// The pooled features `[B, D]`: see [`VitPool`].
    pub fn pool(&self, tokens: Tensor<3>) -> Tensor<2> {
        let [b, n, d] = tokens.dims();
        match self.pool {
            VitPool::ClassToken => tokens.narrow(1, 0, 1).reshape([b, d]),
            VitPool::MeanPatch => tokens.narrow(1, 1, n - 1).mean_dim(1).reshape([b, d]),
        }
    }

    /// The pooled features of images `[B, C, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.pool(self.forward_tokens(images))
    }
}

/// The rows `indices` (`[B, K]`) of each image's tokens (`[B, N, D]`), `[B, K, D]`.
///
/// A row selection on the flattened `[B * N, D]` tokens: whole rows copied forward and added
/// back in the backward pass, instead of an element-wise gather over an index expanded to
/// `[B, K, D]`.
pub fn gather_tokens(tokens: Tensor<3>, indices: Tensor<2, Int>) -> crate::Result<Tensor<3>> {
    let [b, n, d] = tokens.dims();
    let [ib, k] = indices.dims();
    if ib != b {
        return Err(Error::ShapeMismatch {
            context: "token indices: one row per image".into(),
            expected: vec![b, k],
            found: vec![ib, k],
        });
    }
    let rows = flat_token_rows(indices, n, true)?;
    Ok(tokens
        .reshape([b * n, d])
        .select(0, rows)
        .reshape([b, k, d]))
}

/// The rows `indices` (`[B, K]`) of one table of tokens shared by every image (`[N, D]`, such
/// as positional embeddings), `[B, K, D]`; the table is never copied per image.
pub fn select_shared_tokens(table: Tensor<2>, indices: Tensor<2, Int>) -> crate::Result<Tensor<3>> {
    let [n, d] = table.dims();
    let [b, k] = indices.dims();
    let rows = flat_token_rows(indices, n, false)?;
    Ok(table.select(0, rows).reshape([b, k, d]))
}

/// `indices` (`[B, K]`, each in `0..n`) as rows of a flattened `[B * n, D]` tensor when
/// `per_image`, else as rows of one `[n, D]` table, `[B * K]`.
fn flat_token_rows(
    indices: Tensor<2, Int>,
    n: usize,
    per_image: bool,
) -> crate::Result<Tensor<1, Int>> {
    let [b, k] = indices.dims();
    let device = indices.device();
    let values = indices
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| Error::invalid_config("token index", format!("{e:?}"), "integers"))?;
    if let Some(bad) = values.iter().find(|&&i| i < 0 || i as usize >= n) {
        return Err(Error::invalid_config(
            "token index",
            bad,
            format!("in 0..{n}"),
        ));
    }
    let rows: Vec<i64> = values
        .chunks(k.max(1))
        .enumerate()
        .flat_map(|(image, row)| {
            let offset = if per_image { (image * n) as i64 } else { 0 };
            row.iter().map(move |&i| i + offset)
        })
        .collect();
    Ok(Tensor::from_data(TensorData::new(rows, [b * k]), &device))
}
