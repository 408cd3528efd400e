//! One op of a plan → one call of a reference kernel, on slices of the arena and the
//! parameter region. The plan guarantees that the tensors of one op do not overlap;
//! `split_disjoint` checks it while handing out the slices.

use cllm_kernels::Real;
use cllm_kernels::attention::{AttentionShape, attention_backward, attention_forward};
use cllm_kernels::embedding::{embedding_backward, embedding_forward};
use cllm_kernels::gelu::{gelu_backward, gelu_forward};
use cllm_kernels::layernorm::{layernorm_backward, layernorm_forward};
use cllm_kernels::matmul::{matmul_backward, matmul_forward};
use cllm_kernels::residual::{residual_backward, residual_forward};
use cllm_kernels::softmax_xent::{softmax_xent_backward, softmax_xent_forward};

use super::{Place, Region};
use crate::graph::OpKind;
use crate::plan::Plan;

/// The memory one op of one shard sees.
pub(super) struct OpContext<'a, T> {
    pub plan: &'a Plan,
    pub places: &'a [Place],
    pub arena: &'a mut [T],
    pub params: &'a [T],
    pub mask: &'a [T],
    pub grads: &'a mut [T],
    pub tokens: &'a [u32],
    pub targets: &'a [u32],
}

/// Splits `buffer` into the given `(start, len)` ranges, returned in the given order.
/// Panics if two ranges overlap: that would be a bug in the memory plan.
fn split_disjoint<'a, T>(mut buffer: &'a mut [T], ranges: &[(usize, usize)]) -> Vec<&'a mut [T]> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let mut out: Vec<Option<&'a mut [T]>> = (0..ranges.len()).map(|_| None).collect();
    let mut base = 0;
    for i in order {
        let (start, len) = ranges[i];
        assert!(
            start >= base,
            "two tensors of one op overlap in the arena: the memory plan is wrong"
        );
        let rest = std::mem::take(&mut buffer);
        let (_, tail) = rest.split_at_mut(start - base);
        let (mine, tail) = tail.split_at_mut(len);
        out[i] = Some(mine);
        buffer = tail;
        base = start + len;
    }
    out.into_iter()
        .map(|s| s.expect("every range was split"))
        .collect()
}

/// Runs op `o` of kernel `k`; returns the loss sum for `SoftmaxXent`, else 0.
pub(super) fn run_op<T: Real>(
    it: &mut OpContext<'_, T>,
    k: usize,
    o: usize,
    loss_scale: f64,
) -> f64 {
    let OpContext {
        plan,
        arena,
        params,
        mask,
        grads,
        places,
        tokens,
        targets,
    } = it;
    let op = &plan.kernels[k].ops[o];
    let tensors: Vec<(Region, usize, usize)> = op
        .inputs
        .iter()
        .chain(&op.outputs)
        .map(|id| {
            let p = places[id.0];
            (p.region, p.offset, p.len)
        })
        .collect();
    let n_in = op.inputs.len();

    let arena_ranges: Vec<(usize, usize)> = tensors
        .iter()
        .filter(|p| p.0 == Region::Arena)
        .map(|p| (p.1, p.2))
        .collect();
    let grad_ranges: Vec<(usize, usize)> = tensors
        .iter()
        .filter(|p| p.0 == Region::Grads)
        .map(|p| (p.1, p.2))
        .collect();
    let mut arena_slices = split_disjoint(arena, &arena_ranges).into_iter();
    let mut grad_slices = split_disjoint(grads, &grad_ranges).into_iter();
    let mut ins: Vec<&[T]> = Vec::with_capacity(n_in);
    let mut outs: Vec<&mut [T]> = Vec::with_capacity(op.outputs.len());
    for (i, &(region, offset, len)) in tensors.iter().enumerate() {
        let slice: &mut [T] = match region {
            Region::Arena => arena_slices.next().expect("one slice per arena tensor"),
            Region::Grads => grad_slices.next().expect("one slice per gradient"),
            Region::Params => {
                debug_assert!(i < n_in, "parameters are only read by kernels");
                ins.push(&params[offset..offset + len]);
                continue;
            }
            Region::Mask => {
                ins.push(&mask[offset..offset + len]);
                continue;
            }
            Region::Tokens | Region::Targets => {
                ins.push(&[]);
                continue;
            }
        };
        if i < n_in {
            ins.push(slice)
        } else {
            outs.push(slice)
        }
    }

    let d = plan.graph.dims;
    let (t, c, rows) = (d.t, d.c, d.batch * d.t);
    let attention = |heads| AttentionShape {
        batch: d.batch,
        t_len: t,
        channels: c,
        heads,
    };
    let mut loss_sum = 0.0;
    match (op.kind, outs.as_mut_slice()) {
        (OpKind::Embedding, [x]) => embedding_forward(x, tokens, ins[1], ins[2], t, c),
        (OpKind::EmbeddingBackward, [dwte, dwpe]) => {
            embedding_backward(dwte, dwpe, ins[0], tokens, t, c)
        }
        (OpKind::LayerNorm { eps }, [y, mean, rstd]) => {
            layernorm_forward(y, mean, rstd, ins[0], ins[1], ins[2], c, eps)
        }
        (OpKind::LayerNormBackward, [dx, dw, db]) => {
            layernorm_backward(dx, dw, db, ins[0], ins[1], ins[2], ins[3], ins[4], c)
        }
        (OpKind::Matmul { bias }, [y]) => {
            let cin = ins[0].len() / rows;
            matmul_forward(
                y,
                ins[0],
                ins[1],
                bias.then(|| ins[2]),
                cin,
                ins[1].len() / cin,
            )
        }
        (OpKind::MatmulBackward { bias: false }, [dx, dw]) => {
            let cin = ins[1].len() / rows;
            matmul_backward(
                dx,
                dw,
                None,
                ins[0],
                ins[1],
                ins[2],
                cin,
                ins[2].len() / cin,
            )
        }
        (OpKind::MatmulBackward { bias: true }, [dx, dw, db]) => {
            let cin = ins[1].len() / rows;
            matmul_backward(
                dx,
                dw,
                Some(db),
                ins[0],
                ins[1],
                ins[2],
                cin,
                ins[2].len() / cin,
            )
        }
        (OpKind::Gelu, [y]) => gelu_forward(y, ins[0]),
        (OpKind::GeluBackward, [dx]) => gelu_backward(dx, ins[0], ins[1]),
        (OpKind::Residual, [y]) => residual_forward(y, ins[0], ins[1]),
        (OpKind::ResidualBackward, [da, db]) => residual_backward(da, db, ins[0]),
        (OpKind::Attention { heads }, [y, lse]) => {
            attention_forward(y, lse, ins[0], ins.get(1).copied(), attention(heads))
        }
        (OpKind::AttentionBackward { heads }, [dqkv]) => {
            attention_backward(dqkv, ins[0], ins[1], ins.get(4).copied(), attention(heads))
        }
        (OpKind::SoftmaxXent, [losses, probs]) => {
            loss_sum = softmax_xent_forward(losses, probs, ins[0], targets, d.vocab)
        }
        (OpKind::SoftmaxXentBackward, [dlogits]) => {
            softmax_xent_backward(dlogits, ins[0], targets, loss_scale, d.vocab)
        }
        (kind, outs) => unreachable!("{kind:?} with {} outputs", outs.len()),
    }
    loss_sum
}
