//! Which tiles attention visits: a pattern's key blocks per query block
//! ([`BlockLists`], decided by the planner), and the flat table of chunks the kernels
//! walk at run time (embedded beside the JIT's code, so a step allocates nothing).

/// Key columns one pass over a query block covers at most: a 64 × 256 tile of scores
/// is 64 KiB, in L2 beside the head's keys and values.
pub const CHUNK: usize = 256;

/// A pattern's block lists: `lists[qb]` are the key blocks of query block qb,
/// ascending, each ≤ qb, the diagonal always included.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockLists {
    pub block: usize,
    pub lists: Vec<Vec<usize>>,
}

impl BlockLists {
    /// The causal triangle in `block`-sized tiles: query block qb sees 0..=qb.
    pub fn causal(t_len: usize, block: usize) -> BlockLists {
        BlockLists {
            block,
            lists: (0..t_len.div_ceil(block))
                .map(|qb| (0..=qb).collect())
                .collect(),
        }
    }

    /// Whether these are the causal triangle's tiles (every block up to the diagonal).
    pub fn is_causal(&self) -> bool {
        (self.lists.iter().enumerate()).all(|(qb, list)| list.iter().copied().eq(0..=qb))
    }

    /// Cells of the T×T square the tiles cover (ragged last blocks at their size).
    pub fn area(&self, t_len: usize) -> usize {
        let size = |b: usize| self.block.min(t_len - b * self.block);
        (self.lists.iter().enumerate())
            .map(|(qb, list)| size(qb) * list.iter().map(|&kb| size(kb)).sum::<usize>())
            .sum()
    }

    /// The fraction of the T×T square the tiles cover.
    pub fn fraction(&self, t_len: usize) -> f64 {
        self.area(t_len) as f64 / (t_len * t_len) as f64
    }

    /// (first column, columns) of each chunk query block `qb` visits: runs of
    /// consecutive listed blocks, cut into pieces of at most [`CHUNK`] columns.
    pub fn chunks(&self, t_len: usize, qb: usize) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &kb in &self.lists[qb] {
            let start = kb * self.block;
            let len = self.block.min(t_len - start);
            match runs.last_mut() {
                Some((s, l)) if *s + *l == start && *l + len <= CHUNK.max(self.block) => *l += len,
                _ => runs.push((start, len)),
            }
        }
        runs
    }

    /// The table the kernels walk, built once by the plan and embedded in the JIT's
    /// code: `[block, query blocks, then per query block: chunks, (start, columns)…]`.
    pub fn table(&self, t_len: usize) -> Vec<u32> {
        let mut table = vec![self.block as u32, self.lists.len() as u32];
        for qb in 0..self.lists.len() {
            let chunks = self.chunks(t_len, qb);
            table.push(chunks.len() as u32);
            table.extend(chunks.iter().flat_map(|&(c0, n)| [c0 as u32, n as u32]));
        }
        table
    }
}

/// One query block of a table: its first row, rows, and chunks.
pub(crate) struct QueryBlock<'t> {
    pub r0: usize,
    pub rows: usize,
    chunks: &'t [u32],
}

impl QueryBlock<'_> {
    pub fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (self.chunks.chunks_exact(2)).map(|c| (c[0] as usize, c[1] as usize))
    }
}

/// The block size and query blocks of a [`BlockLists::table`], in order (walked in
/// place: a step allocates nothing).
pub(crate) fn query_blocks(
    table: &[u32],
    t_len: usize,
) -> (usize, impl Iterator<Item = QueryBlock<'_>> + Clone) {
    let (block, count) = (table[0] as usize, table[1] as usize);
    let blocks = (0..count).scan(2, move |at, qb| {
        let n = table[*at] as usize;
        let chunks = &table[*at + 1..*at + 1 + 2 * n];
        *at += 1 + 2 * n;
        let r0 = qb * block;
        Some(QueryBlock {
            r0,
            rows: block.min(t_len - r0),
            chunks,
        })
    });
    (block, blocks)
}

/// Length of a table (for reading one back from a raw pointer).
pub(crate) unsafe fn table_len(table: *const u32) -> usize {
    // SAFETY: the caller passes a table built by `BlockLists::table`.
    unsafe {
        let count = *table.add(1) as usize;
        let mut at = 2;
        for _ in 0..count {
            at += 1 + 2 * *table.add(at) as usize;
        }
        at
    }
}
