//! Text generation with a key/value cache: each new token runs the model on one
//! position, attending to the cached keys and values of the earlier ones, so it costs
//! O(T) rather than a whole O(T²) forward. The model is the trainer's graph, lowered to
//! one position by [`Decoder`]; nothing is allocated per token.

use cllm_kernels::jit::JitError;

use super::decoder::Decoder;
use crate::codegen::Checks;
use crate::graph::Graph;
use crate::rng::Rng;
use crate::spec::Gemm;
use cllm_kernels::bf16::Precision;

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

/// A model's weights, its decoder and the tokens in its cache.
pub struct Sampler<'a> {
    params: Vec<&'a [f32]>,
    decoder: Decoder,
    /// Tokens in the cache, in order (to rebuild it when the context is full).
    history: Vec<u32>,
    /// The attention pattern's (T,T) mask; none for dense attention.
    keep: Option<Vec<f32>>,
    /// The picker's buffers, sized to the vocabulary once.
    picks: Picks,
}

impl<'a> Sampler<'a> {
    /// `params[i]` holds the values of `graph.params[i]`; compiles the decoder's row
    /// kernels with the spec's choice of GEMM (`plan.gemm`) and its products in the
    /// run's `precision` (`train.precision`), as training does.
    pub fn new(
        graph: &Graph,
        (gemm, precision): (Gemm, Precision),
        params: Vec<&'a [f32]>,
    ) -> Result<Sampler<'a>, JitError> {
        let options = crate::codegen::jit_options(gemm, Checks::default());
        let decoder = Decoder::new(graph, options, precision)?;
        Ok(Sampler {
            params,
            history: Vec::with_capacity(decoder.context()),
            decoder,
            keep: None,
            picks: Picks::new(graph.dims.vocab),
        })
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
        let t_max = self.decoder.context();
        if self.history.len() == t_max {
            // The context is full: keep the newest half and rebuild the cache from it
            // (in place: the kept tokens move to the front, then run again).
            let half = t_max / 2;
            self.history.drain(..half);
            for position in 0..self.history.len() {
                self.step(self.history[position], position);
            }
        }
        self.step(token, self.history.len());
        self.history.push(token);
        self.decoder.logits()
    }

    fn step(&mut self, token: u32, position: usize) {
        let t_max = self.decoder.context();
        let keep = self
            .keep
            .as_ref()
            .map(|m| &m[position * t_max..][..position + 1]);
        self.decoder.step(&self.params, token, position, keep);
    }

    /// Picks the next token from the logits of the last token fed.
    pub fn next(&mut self, sampling: Sampling, rng: &mut Rng) -> u32 {
        self.picks.pick(self.decoder.logits(), sampling, rng)
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
        // Grown as tokens come: a huge count must not be allocated up front.
        let mut out = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let next = self.next(sampling, rng);
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
    Picks::new(logits.len()).pick(logits, sampling, rng)
}

/// The buffers of [`pick`], allocated once for a vocabulary.
struct Picks {
    order: Vec<usize>,
    probs: Vec<f64>,
}

impl Picks {
    fn new(vocab: usize) -> Picks {
        Picks {
            order: Vec::with_capacity(vocab),
            probs: Vec::with_capacity(vocab),
        }
    }

    fn pick(&mut self, logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
        if sampling.temperature == 0.0 {
            let mut best = 0;
            for (i, &l) in logits.iter().enumerate() {
                if l > logits[best] {
                    best = i;
                }
            }
            return best as u32;
        }
        let Picks { order, probs } = self;
        order.clear();
        order.extend(0..logits.len());
        // A total order (ties broken by index), so the unstable sort, which allocates
        // nothing, gives the stable sort's order.
        order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(sampling.top_k.unwrap_or(logits.len()).max(1));
        let max = logits[order[0]] as f64;
        probs.clear();
        probs.extend(
            order
                .iter()
                .map(|&i| ((logits[i] as f64 - max) / sampling.temperature).exp()),
        );
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
}
