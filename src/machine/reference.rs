//! The reference back end on a worker's memory: each step of the kernel IR a plan
//! kernel carries → `cllm_kernels::reference::run_step` on slices of the arena, the
//! parameter region, the shard's gradients, the mask and the token inputs. The plan
//! guarantees that the tensors of one step do not overlap; `split_disjoint` checks it
//! while handing out the slices.

use cllm_kernels::Real;
use cllm_kernels::reference::{Buf, Scalars, run_step};

use super::worker::Pass;
use super::{Place, Region};
use crate::plan::ir::StepCall;

/// The memory one step of one shard sees.
pub(super) struct StepContext<'a, T> {
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
            "two tensors of one step overlap in the arena: the memory plan is wrong"
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

/// Runs one step; returns the loss sum for `SoftmaxXent`, else 0.
pub(super) fn run<T: Real>(it: &mut StepContext<'_, T>, call: &StepCall, pass: Pass) -> f64 {
    let mut places = Vec::new();
    call.visit(|_, tensor| places.push(it.places[tensor.0]));
    let ranges = |region: Region| -> Vec<(usize, usize)> {
        (places.iter())
            .filter(|p| p.region == region)
            .map(|p| (p.offset, p.len))
            .collect()
    };
    let mut arena = split_disjoint(&mut *it.arena, &ranges(Region::Arena)).into_iter();
    let mut grads = split_disjoint(&mut *it.grads, &ranges(Region::Grads)).into_iter();
    // `map` visits the slots in the order `visit` did.
    let mut places = places.into_iter();
    let bufs = call.clone().map(|slot, _| {
        let p = places.next().expect("one place per slot");
        match p.region {
            Region::Arena => bind(
                arena.next().expect("one slice per arena tensor"),
                slot.writes,
            ),
            Region::Grads => bind(grads.next().expect("one slice per gradient"), slot.writes),
            Region::Params => {
                debug_assert!(!slot.writes, "parameters are only read by kernels");
                Buf::In(&it.params[p.offset..p.offset + p.len])
            }
            Region::Mask => Buf::In(&it.mask[p.offset..p.offset + p.len]),
            // The JIT's layout of a weight; the reference products read the weight.
            Region::Panels => Buf::In(&[]),
            Region::Tokens => Buf::Ids(it.tokens),
            Region::Targets => Buf::Ids(it.targets),
        }
    });
    let scalars = Scalars {
        loss_scale: pass.loss_scale,
        first_pass: pass.first,
        adamw: None,
    };
    run_step(bufs, &scalars)
}

/// A slice of the arena or the gradients as the slot wants it.
fn bind<T>(x: &mut [T], writes: bool) -> Buf<'_, T> {
    if writes { Buf::Out(x) } else { Buf::In(x) }
}
