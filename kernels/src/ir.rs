//! The kernel IR: what leaves the plan. A [`Step`] is one piece of work with its exact
//! shapes and its tensors, each bound to a *named* argument slot. Both back ends consume
//! it — the JIT ([`crate::program::compile`]) and the reference kernels
//! ([`crate::reference::run_step`]) — and both take it apart by name; nothing in cllm
//! counts slot positions.
//!
//! A step is generic over what a slot holds: a planned tensor in the plan, an index
//! into a kernel's argument table in a kernel description (`Step<usize>`), a Cranelift
//! value while emitting, a slice in the reference. Each variant's slots are declared
//! once, in [`steps!`]'s table below, with whether the step writes or only reads them:
//! the enum, [`Step::visit`], [`Step::map`] and the slot order are generated from it.
//! This file knows nothing of Cranelift.

use crate::attention::{AttentionShape, BlockLists};
use crate::bf16::Precision;

/// One argument slot of a step: its name, whether the step writes it (the others it
/// only reads) and whether it holds token ids (u32) rather than floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Slot {
    pub name: &'static str,
    pub writes: bool,
    pub ids: bool,
}

/// A slot's field type: `W` (written), `R` (read) or `I` (token ids, read) one tensor,
/// `Option<_>` a tensor that may be absent, `Vec<_>` any number of them.
macro_rules! slot_type {
    ($s:ident; W) => { $s };
    ($s:ident; R) => { $s };
    ($s:ident; I) => { $s };
    ($s:ident; Option<$a:ident>) => { Option<$s> };
    ($s:ident; Vec<$a:ident>) => { Vec<$s> };
}

/// Whether a slot of the given access is written.
macro_rules! slot_writes {
    (W) => {
        true
    };
    (R) => {
        false
    };
    (I) => {
        false
    };
    (Option<$a:tt>) => {
        slot_writes!($a)
    };
    (Vec<$a:tt>) => {
        slot_writes!($a)
    };
}

/// Whether a slot of the given access holds token ids.
macro_rules! slot_ids {
    (I) => {
        true
    };
    ($a:ident) => {
        false
    };
    ($w:ident<$a:tt>) => {
        slot_ids!($a)
    };
}

/// Calls `$f(slot, x)` for each tensor `x` of the field, by reference.
macro_rules! slot_visit {
    ($f:ident, $slot:expr, $x:ident; W) => {
        $f($slot, $x)
    };
    ($f:ident, $slot:expr, $x:ident; R) => {
        $f($slot, $x)
    };
    ($f:ident, $slot:expr, $x:ident; I) => {
        $f($slot, $x)
    };
    ($f:ident, $slot:expr, $x:ident; Option<$a:ident>) => {
        if let Some(x) = $x {
            $f($slot, x)
        }
    };
    ($f:ident, $slot:expr, $x:ident; Vec<$a:ident>) => {
        for x in $x {
            $f($slot, x)
        }
    };
}

/// The field with `$f(slot, x)` applied to each of its tensors.
macro_rules! slot_map {
    ($f:ident, $slot:expr, $x:ident; W) => {
        $f($slot, $x)
    };
    ($f:ident, $slot:expr, $x:ident; R) => {
        $f($slot, $x)
    };
    ($f:ident, $slot:expr, $x:ident; I) => {
        $f($slot, $x)
    };
    ($f:ident, $slot:expr, $x:ident; Option<$a:ident>) => {
        $x.map(|x| $f($slot, x))
    };
    ($f:ident, $slot:expr, $x:ident; Vec<$a:ident>) => {
        $x.into_iter().map(|x| $f($slot, x)).collect()
    };
}

/// Declares [`Step`] from one table: per variant its shape fields, then its slots in
/// argument order, each `name: W | R | I | Option<_> | Vec<_>`.
macro_rules! steps {
    ($(
        $(#[$doc:meta])*
        $variant:ident { $($field:ident: $fty:ty),* $(,)? }
            [ $($slot:ident: $access:ident $(<$inner:ident>)?),* $(,)? ]
    )*) => {
        /// One piece of work with its exact shapes and its slots; `S` is what a slot
        /// holds (see the module's documentation).
        pub enum Step<S = usize> {
            $(
                $(#[$doc])*
                $variant { $($field: $fty,)* $($slot: slot_type!(S; $access $(<$inner>)?),)* },
            )*
        }

        // Written out rather than derived: `derive` cannot see through `slot_type!`.
        impl<S: Clone> Clone for Step<S> {
            fn clone(&self) -> Self {
                match self {
                    $(Step::$variant { $($field,)* $($slot,)* } => Step::$variant {
                        $($field: $field.clone(),)* $($slot: $slot.clone(),)*
                    },)*
                }
            }
        }

        impl<S: std::fmt::Debug> std::fmt::Debug for Step<S> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $(Step::$variant { $($field,)* $($slot,)* } => f
                        .debug_struct(stringify!($variant))
                        $(.field(stringify!($field), $field))*
                        $(.field(stringify!($slot), $slot))*
                        .finish(),)*
                }
            }
        }

        impl<S: PartialEq> PartialEq for Step<S> {
            fn eq(&self, other: &Self) -> bool {
                match self {
                    $(Step::$variant { $($field,)* $($slot,)* } => {
                        $(
                            let Step::$variant { $field: theirs, .. } = other else {
                                return false;
                            };
                            if $field != theirs {
                                return false;
                            }
                        )*
                        $(
                            let Step::$variant { $slot: theirs, .. } = other else {
                                return false;
                            };
                            if $slot != theirs {
                                return false;
                            }
                        )*
                        true
                    })*
                }
            }
        }

        /// As `{"kind": "matmul", <shape fields>, "args": [{slot, writes, tensor}, …]}`.
        impl<S: serde::Serialize> serde::Serialize for Step<S> {
            fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
                use serde::ser::SerializeMap;
                let mut map = z.serialize_map(None)?;
                match self {
                    $(Step::$variant { $($field,)* .. } => {
                        map.serialize_entry("kind", &snake_case(stringify!($variant)))?;
                        $(map.serialize_entry(stringify!($field), $field)?;)*
                    })*
                }
                let mut args = Vec::new();
                self.visit(|slot, tensor| args.push(SlotArg { slot, tensor }));
                map.serialize_entry("args", &args)?;
                map.end()
            }
        }

        impl<S> Step<S> {
            /// Calls `f` on every tensor of the step, in argument order, with its slot.
            pub fn visit<'a>(&'a self, mut f: impl FnMut(Slot, &'a S)) {
                match self {
                    $(Step::$variant { $($slot,)* .. } => {
                        $(
                            let slot = Slot {
                                name: stringify!($slot),
                                writes: slot_writes!($access $(<$inner>)?),
                                ids: slot_ids!($access $(<$inner>)?),
                            };
                            slot_visit!(f, slot, $slot; $access $(<$inner>)?);
                        )*
                    })*
                }
            }

            /// The same step with `f` applied to every tensor, in argument order.
            pub fn map<U>(self, mut f: impl FnMut(Slot, S) -> U) -> Step<U> {
                match self {
                    $(Step::$variant { $($field,)* $($slot,)* } => Step::$variant {
                        $($field,)*
                        $($slot: {
                            let slot = Slot {
                                name: stringify!($slot),
                                writes: slot_writes!($access $(<$inner>)?),
                                ids: slot_ids!($access $(<$inner>)?),
                            };
                            slot_map!(f, slot, $slot; $access $(<$inner>)?)
                        },)*
                    },)*
                }
            }

            /// The step's kind, as serialized: `MatmulBackward` → `matmul_backward`.
            pub fn kind(&self) -> String {
                match self {
                    $(Step::$variant { .. } => snake_case(stringify!($variant)),)*
                }
            }

            /// The step's kind and shape fields, as `Kind { field: value, … }`.
            pub fn shape_text(&self) -> String {
                match self {
                    $(Step::$variant { $($field,)* .. } => {
                        let fields: Vec<String> =
                            vec![$(format!("{}: {:?}", stringify!($field), $field)),*];
                        if fields.is_empty() {
                            stringify!($variant).to_string()
                        } else {
                            format!("{} {{ {} }}", stringify!($variant), fields.join(", "))
                        }
                    })*
                }
            }
        }
    };
}

steps! {
    /// Token plus position embedding.
    Embedding { batch: usize, t: usize, c: usize }
        [out: W, tokens: I, wte: R, wpe: R]
    EmbeddingBackward { batch: usize, t: usize, c: usize }
        [dwte: W, dwpe: W, dout: R, tokens: I]
    LayerNorm { rows: usize, c: usize, eps: f64 }
        [out: W, mean: W, rstd: W, inp: R, weight: R, bias: R]
    LayerNormBackward { rows: usize, c: usize }
        [dinp: W, dweight: W, dbias: W, dout: R, inp: R, weight: R, mean: R, rstd: R]
    /// `out = inp·weight (+ bias)`; with `gelu_out`, also `gelu_out = GELU(out)` in the
    /// GEMM's epilogue (the fused matmul + bias + GELU). `precision`: the product's
    /// arithmetic (`crate::bf16`); bias and GELU are fp32 either way. `panels`: the
    /// weight's bf16 panels (`WeightPanels`' `forward`), which a matrix unit reads
    /// instead of the weight.
    Matmul { rows: usize, c: usize, oc: usize, precision: Precision }
        [out: W, inp: R, weight: R, bias: Option<R>, gelu_out: Option<W>,
         panels: Option<R>]
    /// With `dpre`/`pre` (both or neither), `dinp` is the gradient of a GELU's output
    /// and its input's gradient follows in the dx product's epilogue:
    /// `dpre += dinp ⊙ gelu'(pre)` (the fused GELU backward). Both products in
    /// `precision`; `panels` (`WeightPanels`' `backward`) as for `Matmul`, read by the
    /// input gradient's product. `stores_dweight`: the step is its weight gradient's
    /// only writer, so in a shard's first pass of a step (the scalar at
    /// [`crate::jit::FIRST_PASS`] is 1) it writes `dweight` instead of adding to it, and
    /// the machine does not zero that gradient before the pass; in a later pass (a
    /// further micro-batch), or with that scalar 0, it adds as always. `stores_dinp`:
    /// the step is the first to write `dinp` (and `dpre`, when fused) in its kernel,
    /// which therefore does not zero them first (`Kernel::zero_first`): the input
    /// gradient's product stores, and `dpre = dinp ⊙ gelu'(pre) + 0`.
    MatmulBackward {
        rows: usize, c: usize, oc: usize, precision: Precision, stores_dweight: bool,
        stores_dinp: bool
    }
        [dinp: W, dweight: W, dbias: Option<W>, dout: R, inp: R, weight: R,
         dpre: Option<W>, pre: Option<R>, panels: Option<R>]
    /// A weight (oc, c) rounded to bf16 once, in the layouts the matrix units read it
    /// as a right operand: `forward` holds weightᵀ's panels (k = c, n = oc) for
    /// `Matmul`, `backward` weight's (k = oc, n = c) for `MatmulBackward`'s input
    /// gradient. The values are the products' own rounding of the weight; only where
    /// it happens differs. Written only when this CPU's bf16 unit reads panels; the
    /// reference writes nothing (its products round the weight themselves).
    WeightPanels { c: usize, oc: usize }
        [forward: W, backward: W, weight: R]
    Gelu { n: usize }
        [out: W, inp: R]
    GeluBackward { n: usize }
        [dinp: W, dout: R, inp: R]
    Residual { n: usize }
        [out: W, a: R, b: R]
    ResidualBackward { n: usize }
        [da: W, db: W, dout: R]
    /// With `keep`, a sparse pattern's (T,T) mask; only the listed (query block, key
    /// block) tiles are computed. `precision`: its products' (QKᵀ, P·V), as for `Matmul`.
    Attention { shape: AttentionShape, blocks: BlockLists, precision: Precision }
        [out: W, lse: W, qkv: R, keep: Option<R>]
    /// As for `Attention`; `out` and `lse` are the forward's, saved.
    AttentionBackward { shape: AttentionShape, blocks: BlockLists, precision: Precision }
        [dqkv: W, dout: R, qkv: R, out: R, lse: R, keep: Option<R>]
    /// The kernel returns Σ loss.
    SoftmaxXent { rows: usize, v: usize }
        [losses: W, probs: W, logits: R, targets: I]
    /// Scalar 0 is the loss scale.
    SoftmaxXentBackward { rows: usize, v: usize }
        [dlogits: W, probs: R, targets: I]
    /// `grads[0]` = the fixed-tree sum of every shard's gradient; the kernel returns
    /// Σ grads[0]².
    ShardGradSum { len: usize }
        [grads: Vec<W>]
    /// Segments are (offset, length, decayed); the scalars are `adamw::AdamWScalars`.
    AdamW { segments: Vec<(usize, usize, bool)> }
        [params: W, grads: R, m: W, v: W]
}

/// One slot and what it holds, as serialized.
#[derive(serde::Serialize)]
struct SlotArg<'a, S> {
    #[serde(flatten)]
    slot: Slot,
    tensor: &'a S,
}

/// `MatmulBackward` → `matmul_backward`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

impl<S> Step<S> {
    /// Every slot with its tensor, in argument order.
    pub fn slots(&self) -> Vec<(Slot, &S)> {
        let mut slots = Vec::new();
        self.visit(|slot, x| slots.push((slot, x)));
        slots
    }

    /// The step with its tensors numbered 0, 1, … in argument order: the argument table
    /// of a kernel that runs this step alone.
    pub fn numbered(self) -> Step<usize> {
        let mut next = 0;
        self.map(|_, _| {
            next += 1;
            next - 1
        })
    }

    /// Floating-point operations of one step, counting a multiply-add as 2.
    pub fn flops(&self) -> u64 {
        let u = |x: usize| x as u64;
        match self {
            Step::Matmul {
                rows,
                c,
                oc,
                gelu_out,
                ..
            } => {
                2 * u(rows * c * oc)
                    + if gelu_out.is_some() {
                        10 * u(rows * oc)
                    } else {
                        0
                    }
            }
            Step::MatmulBackward {
                rows, c, oc, dpre, ..
            } => {
                let gelu = if dpre.is_some() { 16 * u(rows * c) } else { 0 };
                4 * u(rows * c * oc) + u(rows * oc) + gelu
            }
            // QKᵀ and P·V over the tiles attention visits (the causal triangle, or a
            // block-sparse pattern's list); backward recomputes QKᵀ, then dO·Vᵀ, dS·K,
            // dSᵀ·Q and Pᵀ·dO: five products.
            Step::Attention { shape, blocks, .. } => attention_flops(4.0, shape, blocks),
            Step::AttentionBackward { shape, blocks, .. } => attention_flops(10.0, shape, blocks),
            Step::LayerNorm { rows, c, .. } => 8 * u(rows * c),
            Step::LayerNormBackward { rows, c, .. } => 12 * u(rows * c),
            Step::Gelu { n, .. } => 10 * u(*n),
            Step::GeluBackward { n, .. } => 16 * u(*n),
            Step::Residual { n, .. } => u(*n),
            Step::ResidualBackward { n, .. } => 2 * u(*n),
            Step::SoftmaxXent { rows, v, .. } => 5 * u(rows * v),
            Step::SoftmaxXentBackward { rows, v, .. } => 2 * u(rows * v),
            Step::Embedding { batch, t, c, .. } => u(batch * t * c),
            Step::EmbeddingBackward { batch, t, c, .. } => 2 * u(batch * t * c),
            // The adds of the tree and Σ g², and AdamW's ~12 per parameter (two moments,
            // the bias-corrected update, decay).
            Step::ShardGradSum { len, grads } => u(grads.len().saturating_sub(1) * len + 2 * len),
            Step::AdamW { segments, .. } => 12 * segments.iter().map(|s| u(s.1)).sum::<u64>(),
            // A rounding per element, in each of the two layouts.
            Step::WeightPanels { c, oc, .. } => 2 * u(c * oc),
        }
    }
}

fn attention_flops(products: f64, shape: &AttentionShape, blocks: &BlockLists) -> u64 {
    let t = shape.t_len;
    let square = (shape.batch * t * t * shape.channels) as f64;
    (products * square * blocks.fraction(t)) as u64
}
