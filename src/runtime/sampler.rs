//! Text generation with a key/value cache: each new token runs the model on one
//! position, attending to the cached keys and values of the earlier ones, so it costs
//! O(T) rather than a whole O(T²) forward. A token reads every weight once: the linear
//! layers are the native matrix–vector product (`gemm::matvec`, f32, on every core of
//! the caller's pool), LayerNorm and attention the reference kernels; nothing is
//! allocated per token.

use cllm_kernels::attention::attention_decode;
use cllm_kernels::gelu::gelu_forward;
use cllm_kernels::gemm::matvec::matvec;
use cllm_kernels::layernorm::layernorm_forward;
use cllm_kernels::residual::residual_forward;

use crate::graph::names::{self, Part};
use crate::graph::{Dims, Graph};
use crate::rng::Rng;

/// How to pick each next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy (argmax).
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: f64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: None,
        top_p: 1.0,
    };
}

struct Layer {
    ln_1: [usize; 2],
    c_attn: [usize; 2],
    c_proj: [usize; 2],
    ln_2: [usize; 2],
    c_fc: [usize; 2],
    mlp_proj: [usize; 2],
}

/// A model's weights plus a key/value cache.
pub struct Sampler<'a> {
    dims: Dims,
    eps: f64,
    params: Vec<&'a [f32]>,
    layers: Vec<Layer>,
    wte: usize,
    wpe: usize,
    ln_f: [usize; 2],
    head: usize,
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    /// Tokens in the cache, in order (to rebuild it when the context is full).
    history: Vec<u32>,
    logits: Vec<f32>,
    /// The attention pattern's (T,T) mask; none for dense attention.
    keep: Option<Vec<f32>>,
    /// One position's activations, reused for every token.
    scratch: Scratch,
}

/// The activations of one position.
struct Scratch {
    x: Vec<f32>,
    x1: Vec<f32>,
    ln: Vec<f32>,
    qkv: Vec<f32>,
    atty: Vec<f32>,
    proj: Vec<f32>,
    fch: Vec<f32>,
    gelu: Vec<f32>,
}

impl<'a> Sampler<'a> {
    /// `params[i]` holds the values of `graph.params[i]`.
    pub fn new(graph: &Graph, eps: f64, params: Vec<&'a [f32]>) -> Sampler<'a> {
        let find = |name: &str| {
            graph
                .param_index(name)
                .unwrap_or_else(|| panic!("the GPT graph has `{name}`"))
        };
        let pair = |name: &str| {
            [
                find(&format!("{name}.weight")),
                find(&format!("{name}.bias")),
            ]
        };
        let layers = (0..graph.dims.layers)
            .map(|l| Layer {
                ln_1: pair(&names::part(l, Part::Ln1)),
                c_attn: pair(&names::part(l, Part::CAttn)),
                c_proj: pair(&names::part(l, Part::CProj)),
                ln_2: pair(&names::part(l, Part::Ln2)),
                c_fc: pair(&names::part(l, Part::CFc)),
                mlp_proj: pair(&names::part(l, Part::MlpProj)),
            })
            .collect();
        let d = graph.dims;
        let wte = find(names::WTE);
        Sampler {
            dims: d,
            eps,
            params,
            layers,
            wte,
            wpe: find(names::WPE),
            ln_f: pair(names::LN_F),
            head: graph.param_index(names::LM_HEAD).unwrap_or(wte),
            k_cache: vec![vec![0.0; d.t * d.c]; d.layers],
            v_cache: vec![vec![0.0; d.t * d.c]; d.layers],
            history: Vec::with_capacity(d.t),
            logits: vec![0.0; d.vocab],
            keep: None,
            scratch: Scratch {
                x: vec![0.0; d.c],
                x1: vec![0.0; d.c],
                ln: vec![0.0; d.c],
                qkv: vec![0.0; 3 * d.c],
                atty: vec![0.0; d.c],
                proj: vec![0.0; d.c],
                fch: vec![0.0; d.hidden],
                gelu: vec![0.0; d.hidden],
            },
        }
    }

    /// Attends only where the pattern's (T,T) `mask` is 1, as training did.
    pub fn with_mask(mut self, mask: Option<Vec<f32>>) -> Self {
        self.keep = mask;
        self
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// Appends `token` and returns the logits of the next one.
    pub fn feed(&mut self, token: u32) -> &[f32] {
        if self.history.len() == self.dims.t {
            // The context is full: keep the newest half and rebuild the cache from it.
            let keep = self.history.split_off(self.dims.t / 2);
            self.history.clear();
            for t in keep {
                self.step(t);
            }
        }
        self.step(token);
        &self.logits
    }

    fn step(&mut self, token: u32) {
        let (c, pos) = (self.dims.c, self.history.len());
        let p = &self.params;
        let Scratch {
            x,
            x1,
            ln,
            qkv,
            atty,
            proj,
            fch,
            gelu,
        } = &mut self.scratch;
        let (mut mean, mut rstd) = ([0.0f32], [0.0f32]);
        let wte_row = &p[self.wte][token as usize * c..][..c];
        let wpe_row = &p[self.wpe][pos * c..][..c];
        residual_forward(x, wte_row, wpe_row);
        let linear = |out: &mut [f32], inp: &[f32], [w, b]: [usize; 2]| {
            matvec(out, inp, p[w], Some(p[b]));
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let [w, b] = layer.ln_1.map(|i| p[i]);
            layernorm_forward(ln, &mut mean, &mut rstd, x, w, b, c, self.eps);
            linear(qkv, ln, layer.c_attn);
            self.k_cache[l][pos * c..(pos + 1) * c].copy_from_slice(&qkv[c..2 * c]);
            self.v_cache[l][pos * c..(pos + 1) * c].copy_from_slice(&qkv[2 * c..]);
            attention_decode(
                atty,
                &qkv[..c],
                &self.k_cache[l],
                &self.v_cache[l],
                self.keep
                    .as_ref()
                    .map(|m| &m[pos * self.dims.t..][..pos + 1]),
                pos + 1,
                self.dims.heads,
            );
            linear(proj, atty, layer.c_proj);
            residual_forward(x1, x, proj);
            let [w, b] = layer.ln_2.map(|i| p[i]);
            layernorm_forward(ln, &mut mean, &mut rstd, x1, w, b, c, self.eps);
            linear(fch, ln, layer.c_fc);
            gelu_forward(gelu, fch);
            linear(proj, gelu, layer.mlp_proj);
            residual_forward(x, x1, proj);
        }
        let [w, b] = self.ln_f.map(|i| p[i]);
        layernorm_forward(ln, &mut mean, &mut rstd, x, w, b, c, self.eps);
        matvec(&mut self.logits, ln, p[self.head], None);
        self.history.push(token);
    }

    /// Feeds `prompt`, then generates `count` tokens (fewer if `stop` returns true).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        count: usize,
        sampling: Sampling,
        rng: &mut Rng,
        mut stop: impl FnMut(u32) -> bool,
    ) -> Vec<u32> {
        self.reset();
        for &t in prompt {
            self.feed(t);
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let next = pick(&self.logits, sampling, rng);
            out.push(next);
            if stop(next) {
                break;
            }
            self.feed(next);
        }
        out
    }
}

/// Picks a token from logits: argmax at temperature 0, else a draw from the softmax
/// at that temperature, restricted to the top k and to the nucleus of mass top_p.
pub fn pick(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    if sampling.temperature == 0.0 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.truncate(sampling.top_k.unwrap_or(logits.len()).max(1));
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    let mut mass = 0.0;
    let mut keep = probs.len();
    for (i, p) in probs.iter_mut().enumerate() {
        *p /= total;
        mass += *p;
        if mass >= sampling.top_p {
            keep = i + 1;
            break;
        }
    }
    let kept_mass: f64 = probs[..keep].iter().sum();
    let mut u = rng.uniform() * kept_mass;
    for (i, p) in probs[..keep].iter().enumerate() {
        u -= p;
        if u < 0.0 {
            return order[i] as u32;
        }
    }
    order[keep - 1] as u32
}
