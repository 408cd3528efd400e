//! The trainer's graph, run one position at a time: the forward ops of
//! [`crate::graph::build`] (the one description of a GPT block) lowered once into a
//! program over one position's activations, with a key/value cache per attention op.
//!
//! Lowering decides every buffer ahead of time, so a token allocates nothing: each
//! activation of the graph gets one row (its shape divided by B·T), each attention op
//! a (T, C) key and a (T, C) value cache and the decode scratch. The kernels:
//! LayerNorm, GELU, the residual adds and the embedding's add are the training JIT's
//! own kernels (the same `Step`s, compiled once for one row, with the full-width native
//! passes training uses); every linear layer and the head are the native
//! matrix–vector product (`gemm::matvec`, on every core of the caller's pool), which
//! reads each weight once — the whole cost of a token; attention over the cache runs
//! one head per task (`attention_decode_head`).

use cllm_kernels::attention::{DecodeCache, attention_decode_head, decode_scratch_len};
use cllm_kernels::bf16::Precision;
use cllm_kernels::gemm::matvec::matvec;
use cllm_kernels::ir::Step;
use cllm_kernels::jit::{Compiled, JitError, JitOptions, KernelFn};
use cllm_kernels::program::{self, KernelDesc};
use rayon::prelude::*;

use crate::graph::{Graph, OpKind, Role, TensorId};

/// Where one slot of a row kernel points, for one token.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Operand {
    /// An activation row: an index into [`Decoder::rows`].
    Row(usize),
    /// A whole parameter (a LayerNorm's weight or bias).
    Param(usize),
    /// Row `token` of the token embedding, `width` floats.
    TokenRow { param: usize, width: usize },
    /// Row `position` of the position embedding, `width` floats.
    PositionRow { param: usize, width: usize },
}

/// The most slots a row step has (LayerNorm's six).
const ROW_SLOTS: usize = 6;

/// One instruction: a forward op of the graph on one position.
enum Instr {
    /// A training step compiled for one row (LayerNorm, GELU, a residual add, and the
    /// embedding as the residual add of its two rows), bound to its operands by slot;
    /// `kernel` indexes the compiled row kernels.
    Row {
        step: Box<Step<Operand>>,
        kernel: usize,
    },
    /// y = W·x (+ b); activations are rows, `weight` and `bias` parameters.
    Linear {
        x: usize,
        weight: usize,
        bias: Option<usize>,
        out: usize,
    },
    /// Appends this position's k and v (the middle and last thirds of `qkv`) to cache
    /// `cache`, then attends to positions 0..=position.
    Attention {
        qkv: usize,
        out: usize,
        heads: usize,
        cache: usize,
    },
}

/// The decode program of one graph, its compiled row kernels, its one-position
/// activations and its caches.
pub struct Decoder {
    /// The arithmetic of the linear layers' products (`train.precision`).
    precision: Precision,
    program: Vec<Instr>,
    /// One function per distinct row step.
    compiled: Compiled,
    /// One position of every forward activation the program touches.
    rows: Vec<Vec<f32>>,
    /// Per attention op: keys and values of the positions so far, (T, C) each.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    /// Attention's scratch: per head, the scores and the head's sum.
    scratch: Vec<f64>,
    /// Floats of one head's scratch.
    head_scratch: usize,
    logits: usize,
    t_max: usize,
}

/// The row steps of a decode program, one compiled kernel each.
#[derive(Default)]
struct RowKernels(Vec<KernelDesc>);

impl RowKernels {
    /// `step` with the index of its kernel (its slots numbered in argument order),
    /// compiled on first use.
    fn of(&mut self, name: &str, step: Step<Operand>) -> Instr {
        let desc = KernelDesc {
            name: format!("decode_{name}"),
            steps: vec![step.clone().numbered()],
        };
        let kernel = self.0.iter().position(|d| *d == desc).unwrap_or_else(|| {
            self.0.push(desc);
            self.0.len() - 1
        });
        Instr::Row {
            step: Box::new(step),
            kernel,
        }
    }
}

impl Decoder {
    /// Lowers the forward ops of `graph` up to its logits (the loss is not decoded) and
    /// compiles its row kernels.
    pub fn new(
        graph: &Graph,
        options: JitOptions,
        precision: Precision,
    ) -> Result<Decoder, JitError> {
        let d = graph.dims;
        let positions = d.rows();
        let mut rows: Vec<Vec<f32>> = Vec::new();
        let mut row_of = vec![usize::MAX; graph.tensors.len()];
        let mut row = |id: TensorId| {
            if row_of[id.0] == usize::MAX {
                let tensor = graph.tensor(id);
                debug_assert_eq!(tensor.len() % positions, 0, "{} per position", tensor.name);
                row_of[id.0] = rows.len();
                rows.push(vec![0.0; tensor.len() / positions]);
            }
            row_of[id.0]
        };
        let param = |id: TensorId| match graph.tensor(id).role {
            Role::Param(i) => i,
            role => unreachable!("{} is a {role:?}, not a parameter", graph.tensor(id).name),
        };
        let width = |id: TensorId| graph.tensor(id).len() / positions;
        let mut kernels = RowKernels::default();
        let mut program = Vec::with_capacity(graph.forward.len());
        let mut caches = 0;
        let (mut head_scratch, mut most_heads) = (0, 0);
        for op in &graph.forward {
            let (i, o) = (&op.inputs, &op.outputs);
            program.push(match op.kind {
                OpKind::Embedding => {
                    let width = width(o[0]);
                    let step = Step::Residual {
                        n: width,
                        out: Operand::Row(row(o[0])),
                        a: Operand::TokenRow {
                            param: param(i[1]),
                            width,
                        },
                        b: Operand::PositionRow {
                            param: param(i[2]),
                            width,
                        },
                    };
                    kernels.of("residual", step)
                }
                OpKind::LayerNorm { eps } => kernels.of(
                    "layernorm",
                    Step::LayerNorm {
                        rows: 1,
                        c: width(o[0]),
                        eps,
                        out: Operand::Row(row(o[0])),
                        mean: Operand::Row(row(o[1])),
                        rstd: Operand::Row(row(o[2])),
                        inp: Operand::Row(row(i[0])),
                        weight: Operand::Param(param(i[1])),
                        bias: Operand::Param(param(i[2])),
                    },
                ),
                OpKind::Matmul { bias } => Instr::Linear {
                    x: row(i[0]),
                    weight: param(i[1]),
                    bias: bias.then(|| param(i[2])),
                    out: row(o[0]),
                },
                OpKind::Gelu => kernels.of(
                    "gelu",
                    Step::Gelu {
                        n: width(o[0]),
                        out: Operand::Row(row(o[0])),
                        inp: Operand::Row(row(i[0])),
                    },
                ),
                OpKind::Residual => kernels.of(
                    "residual",
                    Step::Residual {
                        n: width(o[0]),
                        out: Operand::Row(row(o[0])),
                        a: Operand::Row(row(i[0])),
                        b: Operand::Row(row(i[1])),
                    },
                ),
                OpKind::Attention { heads } => {
                    caches += 1;
                    head_scratch = head_scratch.max(decode_scratch_len(d.t, d.c, heads));
                    most_heads = most_heads.max(heads);
                    Instr::Attention {
                        qkv: row(i[0]),
                        out: row(o[0]),
                        heads,
                        cache: caches - 1,
                    }
                }
                // The loss: sampling wants the logits.
                OpKind::SoftmaxXent => continue,
                crate::graph::backward_kinds!() => {
                    unreachable!("{} is not a forward op", op.kind.name())
                }
            });
        }
        let logits = row(graph.logits);
        Ok(Decoder {
            precision,
            program,
            compiled: program::compile(&kernels.0, options)?,
            rows,
            k_cache: vec![vec![0.0; d.t * d.c]; caches],
            v_cache: vec![vec![0.0; d.t * d.c]; caches],
            scratch: vec![0.0; head_scratch * most_heads],
            head_scratch,
            logits,
            t_max: d.t,
        })
    }

    /// The longest run of positions the caches hold (the model's context).
    pub fn context(&self) -> usize {
        self.t_max
    }

    /// Runs `token` at `position` (0-based; positions before it are in the caches)
    /// and returns the logits of the next token. `keep` is the query's row of the
    /// pattern's mask (position + 1 entries), `None` for dense attention.
    pub fn step(
        &mut self,
        params: &[&[f32]],
        token: u32,
        position: usize,
        keep: Option<&[f32]>,
    ) -> &[f32] {
        assert!(
            position < self.t_max,
            "position {position} past the context"
        );
        for instr in &self.program {
            let rows = &mut self.rows;
            let function = |kernel: usize| self.compiled.functions[kernel];
            match *instr {
                Instr::Row { ref step, kernel } => {
                    let mut table = [std::ptr::null_mut::<u8>(); ROW_SLOTS];
                    let mut count = 0;
                    step.visit(|slot, &operand| {
                        table[count] = match operand {
                            Operand::Row(r) if slot.writes => written(&mut rows[r]),
                            Operand::Row(r) => read(&rows[r]),
                            Operand::Param(p) => read(params[p]),
                            Operand::TokenRow { param, width } => {
                                read(&params[param][token as usize * width..][..width])
                            }
                            Operand::PositionRow { param, width } => {
                                read(&params[param][position * width..][..width])
                            }
                        };
                        count += 1;
                    });
                    // SAFETY: the step was compiled for rows of these widths (LayerNorm:
                    // mean and rstd one float); a written row is none of the others.
                    unsafe { call(function(kernel), &table[..count]) };
                }
                Instr::Linear {
                    x,
                    weight,
                    bias,
                    out,
                } => {
                    // The output row is taken out while its input is read (a move).
                    let mut y = std::mem::take(&mut rows[out]);
                    let bias = bias.map(|b| params[b]);
                    matvec(&mut y, &rows[x], params[weight], bias, self.precision);
                    rows[out] = y;
                }
                Instr::Attention {
                    qkv,
                    out,
                    heads,
                    cache,
                } => {
                    let mut y = std::mem::take(&mut rows[out]);
                    let (qkv, c) = (&rows[qkv], y.len());
                    let at = position * c..(position + 1) * c;
                    self.k_cache[cache][at.clone()].copy_from_slice(&qkv[c..2 * c]);
                    self.v_cache[cache][at].copy_from_slice(&qkv[2 * c..]);
                    let cache = DecodeCache {
                        k: &self.k_cache[cache],
                        v: &self.v_cache[cache],
                        keep,
                        len: position + 1,
                    };
                    // Heads are independent: one per task, the same bits on any pool.
                    y.par_chunks_mut(c / heads)
                        .zip(self.scratch.par_chunks_mut(self.head_scratch))
                        .enumerate()
                        .for_each(|(h, (out, scratch))| {
                            let call = (heads, self.precision);
                            attention_decode_head(out, &qkv[..c], cache, call, h, scratch)
                        });
                    rows[out] = y;
                }
            }
        }
        &self.rows[self.logits]
    }

    /// The logits of the last step.
    pub fn logits(&self) -> &[f32] {
        &self.rows[self.logits]
    }
}

/// A row a kernel writes, as an argument.
fn written(values: &mut [f32]) -> *mut u8 {
    values.as_mut_ptr().cast()
}

/// A row or parameter a kernel only reads, as an argument.
fn read(values: &[f32]) -> *mut u8 {
    values.as_ptr().cast_mut().cast()
}

/// Calls a compiled row kernel with its argument table (row steps read no scalars).
///
/// # Safety
/// `args` holds, in its step's slot order, pointers to buffers of the lengths the step
/// was compiled for; a written one overlaps no other.
unsafe fn call(function: KernelFn, args: &[*mut u8]) {
    let scalars = [0.0f64];
    // SAFETY: forwarded.
    unsafe { function(args.as_ptr(), scalars.as_ptr()) };
}
