//! Token + position embedding.
//!
//! Forward:  `out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :]`
//! Backward: `dwte[tokens[b,t], :] += dout[b,t,:]`, `dwpe[t, :] += dout[b,t,:]`
//!
//! Shapes: tokens (B,T); wte (V,C); wpe (T_max,C); out (B,T,C).

use crate::real::Real;

/// Gathers the token and position embeddings of a batch of `bt = B·T` positions.
pub fn embedding_forward<T: Real>(
    out: &mut [T],
    tokens: &[u32],
    wte: &[T],
    wpe: &[T],
    t_len: usize,
    c: usize,
) {
    for (n, &token) in tokens.iter().enumerate() {
        let t = n % t_len;
        let (token_row, pos_row) = (token as usize * c, t * c);
        let out_row = &mut out[n * c..(n + 1) * c];
        for i in 0..c {
            out_row[i] = T::from_f64(wte[token_row + i].to_f64() + wpe[pos_row + i].to_f64());
        }
    }
}

/// Scatter-adds the gradient of every position into its token's and position's rows.
pub fn embedding_backward<T: Real>(
    dwte: &mut [T],
    dwpe: &mut [T],
    dout: &[T],
    tokens: &[u32],
    t_len: usize,
    c: usize,
) {
    for (n, &token) in tokens.iter().enumerate() {
        let t = n % t_len;
        let d = &dout[n * c..(n + 1) * c];
        let token_row = &mut dwte[token as usize * c..(token as usize + 1) * c];
        for i in 0..c {
            token_row[i] = T::from_f64(token_row[i].to_f64() + d[i].to_f64());
        }
        let pos_row = &mut dwpe[t * c..(t + 1) * c];
        for i in 0..c {
            pos_row[i] = T::from_f64(pos_row[i].to_f64() + d[i].to_f64());
        }
    }
}
