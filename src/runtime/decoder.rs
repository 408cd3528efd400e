//! The trainer's graph, run one position at a time: the forward ops of
//! [`crate::graph::build`] (the one description of a GPT block) lowered once into a
//! program over one position's activations, with a key/value cache per attention op.
//!
//! Lowering decides every buffer ahead of time, so a token allocates nothing: each
//! activation of the graph gets one row (its shape divided by B·T), each attention op
//! a (T, C) key and a (T, C) value cache and the decode scratch. The kernels are the
//! ones that run at memory speed for one row: the native matrix–vector product
//! (`gemm::matvec`, every core of the caller's pool) for every linear layer and the
//! head, which read each weight once; LayerNorm, GELU, residuals and attention over
//! the cache, whose cost is O(C) and O(len·C) a token.

use cllm_kernels::attention::{DecodeCache, attention_decode_head, decode_scratch_len};
use cllm_kernels::gelu::gelu_forward;
use cllm_kernels::gemm::matvec::matvec;
use cllm_kernels::layernorm::layernorm_forward;
use cllm_kernels::residual::residual_forward;

use rayon::prelude::*;

use crate::graph::{Graph, OpKind, Role, TensorId};

/// One instruction: a forward op of the graph on one position. Activations are indices
/// into [`Decoder::rows`], parameters into the parameter list.
enum Instr {
    /// x = wte[token] + wpe[position]
    Embedding {
        out: usize,
        wte: usize,
        wpe: usize,
    },
    LayerNorm {
        x: usize,
        weight: usize,
        bias: usize,
        out: [usize; 3],
        eps: f64,
    },
    /// y = W·x (+ b)
    Linear {
        x: usize,
        weight: usize,
        bias: Option<usize>,
        out: usize,
    },
    Gelu {
        x: usize,
        out: usize,
    },
    Residual {
        a: usize,
        b: usize,
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

/// The decode program of one graph, its one-position activations and its caches.
pub struct Decoder {
    program: Vec<Instr>,
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

impl Decoder {
    /// Lowers the forward ops of `graph` up to its logits (the loss is not decoded).
    pub fn new(graph: &Graph) -> Decoder {
        let d = graph.dims;
        let positions = d.batch * d.t;
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
        let mut program = Vec::with_capacity(graph.forward.len());
        let mut caches = 0;
        let (mut head_scratch, mut most_heads) = (0, 0);
        for op in &graph.forward {
            let (i, o) = (&op.inputs, &op.outputs);
            program.push(match op.kind {
                OpKind::Embedding => Instr::Embedding {
                    out: row(o[0]),
                    wte: param(i[1]),
                    wpe: param(i[2]),
                },
                OpKind::LayerNorm { eps } => Instr::LayerNorm {
                    x: row(i[0]),
                    weight: param(i[1]),
                    bias: param(i[2]),
                    out: [row(o[0]), row(o[1]), row(o[2])],
                    eps,
                },
                OpKind::Matmul { bias } => Instr::Linear {
                    x: row(i[0]),
                    weight: param(i[1]),
                    bias: bias.then(|| param(i[2])),
                    out: row(o[0]),
                },
                OpKind::Gelu => Instr::Gelu {
                    x: row(i[0]),
                    out: row(o[0]),
                },
                OpKind::Residual => Instr::Residual {
                    a: row(i[0]),
                    b: row(i[1]),
                    out: row(o[0]),
                },
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
                kind => unreachable!("{} is not a forward op", kind.name()),
            });
        }
        let logits = row(graph.logits);
        Decoder {
            program,
            rows,
            k_cache: vec![vec![0.0; d.t * d.c]; caches],
            v_cache: vec![vec![0.0; d.t * d.c]; caches],
            scratch: vec![0.0; head_scratch * most_heads],
            head_scratch,
            logits,
            t_max: d.t,
        }
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
            // The output row is taken out while its inputs are read (a move, not a copy).
            match *instr {
                Instr::Embedding { out, wte, wpe } => {
                    let mut y = std::mem::take(&mut self.rows[out]);
                    let c = y.len();
                    let wte_row = &params[wte][token as usize * c..][..c];
                    residual_forward(&mut y, wte_row, &params[wpe][position * c..][..c]);
                    self.rows[out] = y;
                }
                Instr::LayerNorm {
                    x,
                    weight,
                    bias,
                    out,
                    eps,
                } => {
                    let [mut y, mut mean, mut rstd] =
                        out.map(|r| std::mem::take(&mut self.rows[r]));
                    let (x, c) = (&self.rows[x], y.len());
                    let (w, b) = (params[weight], params[bias]);
                    layernorm_forward(&mut y, &mut mean, &mut rstd, x, w, b, c, eps);
                    for (r, v) in out.into_iter().zip([y, mean, rstd]) {
                        self.rows[r] = v;
                    }
                }
                Instr::Linear {
                    x,
                    weight,
                    bias,
                    out,
                } => {
                    let mut y = std::mem::take(&mut self.rows[out]);
                    matvec(
                        &mut y,
                        &self.rows[x],
                        params[weight],
                        bias.map(|b| params[b]),
                    );
                    self.rows[out] = y;
                }
                Instr::Gelu { x, out } => {
                    let mut y = std::mem::take(&mut self.rows[out]);
                    gelu_forward(&mut y, &self.rows[x]);
                    self.rows[out] = y;
                }
                Instr::Residual { a, b, out } => {
                    let mut y = std::mem::take(&mut self.rows[out]);
                    residual_forward(&mut y, &self.rows[a], &self.rows[b]);
                    self.rows[out] = y;
                }
                Instr::Attention {
                    qkv,
                    out,
                    heads,
                    cache,
                } => {
                    let mut y = std::mem::take(&mut self.rows[out]);
                    let (qkv, c) = (&self.rows[qkv], y.len());
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
                            attention_decode_head(out, &qkv[..c], cache, heads, h, scratch)
                        });
                    self.rows[out] = y;
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
