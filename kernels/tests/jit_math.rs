//! The JIT's exp and tanh against libm over their whole range: the error bounds the
//! math module states.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::jit::{exp_max_relative_error, tanh_max_abs_error};

#[test]
fn exp_and_tanh_polynomials_meet_their_stated_bounds_over_the_whole_range() {
    let mut xs: Vec<f32> = Vec::new();
    let mut x = -87.0f32;
    while x <= 88.0 {
        xs.push(x);
        x += 1.0 / 1024.0;
    }
    let n = xs.len();
    let compiled = compile(2, |e, a| {
        e.lanes(n, |e, lanes, i| {
            let v = e.load(lanes, a[0], i, 0);
            let r = e.exp(lanes, v);
            e.store(r, a[1], i, 0);
        });
    });
    let mut out = vec![0.0f32; n];
    call(&compiled, &mut [ptr(&mut xs), ptr(&mut out)], &[]);
    let worst = xs
        .iter()
        .zip(&out)
        .map(|(x, y)| (*y as f64 / (*x as f64).exp() - 1.0).abs())
        .fold(0.0, f64::max);
    eprintln!("exp: worst relative error {worst:.2e} over {n} points in [-87, 88]");
    assert!(worst <= exp_max_relative_error(), "exp error {worst:e}");

    let mut ts: Vec<f32> = (0..200_001).map(|i| -100.0 + i as f32 * 1e-3).collect();
    ts.extend([f32::MAX, -f32::MAX, 1e-30, -1e-30, 0.0]);
    let n = ts.len();
    let compiled = compile(2, |e, a| {
        e.lanes(n, |e, lanes, i| {
            let v = e.load(lanes, a[0], i, 0);
            let r = e.tanh(lanes, v);
            e.store(r, a[1], i, 0);
        });
    });
    let mut out = vec![0.0f32; n];
    call(&compiled, &mut [ptr(&mut ts), ptr(&mut out)], &[]);
    let worst = ts
        .iter()
        .zip(&out)
        .map(|(x, y)| (*y as f64 - (*x as f64).tanh()).abs())
        .fold(0.0, f64::max);
    eprintln!("tanh: worst absolute error {worst:.2e} over {n} points");
    assert!(worst <= tanh_max_abs_error(), "tanh error {worst:e}");
}
