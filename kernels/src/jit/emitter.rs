//! The building blocks kernels are written with: arguments, constants, loads and
//! stores of f32 and F32X4, counted loops, loop-carried variables, horizontal
//! reductions. Loops are while-shaped (test at the top): in that shape Cranelift 0.135
//! folds the loads into the arithmetic, which it misses in a loop tested at the bottom
//! (measured on the kernels' machine code).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{FuncRef, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{DataDescription, Module};

/// Four f32 lanes: Cranelift's widest vector on x86-64.
pub const V4: Type = types::F32X4;

/// Vector width or scalar: elementwise kernels are written once for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lanes {
    Four,
    One,
}

impl Lanes {
    pub fn ty(self) -> Type {
        match self {
            Lanes::Four => V4,
            Lanes::One => types::F32,
        }
    }
    pub fn count(self) -> usize {
        match self {
            Lanes::Four => 4,
            Lanes::One => 1,
        }
    }
}

/// One kernel under construction.
pub struct Emitter<'a> {
    pub b: FunctionBuilder<'a>,
    args: Value,
    scalars: Value,
    imports: Vec<(&'static str, FuncRef)>,
    result: Option<Value>,
    native: bool,
    /// The module, for read-only tables the kernel embeds.
    module: &'a mut JITModule,
}

/// Plain memory access to our own buffers: never trapping. Not `aligned`: four-lane
/// accesses start at any element, and the flag would allow folding them into
/// legacy-SSE instructions that fault on unaligned addresses.
fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl<'a> Emitter<'a> {
    pub(super) fn start(
        mut b: FunctionBuilder<'a>,
        _ptr: Type,
        imports: Vec<(&'static str, FuncRef)>,
        native: bool,
        module: &'a mut JITModule,
    ) -> Emitter<'a> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let (args, scalars) = (b.block_params(entry)[0], b.block_params(entry)[1]);
        Emitter {
            b,
            args,
            scalars,
            imports,
            result: None,
            native,
            module,
        }
    }

    pub(super) fn finish(mut self, config: TargetFrontendConfig) {
        let result = match self.result {
            Some(r) => r,
            None => self.b.ins().f64const(0.0),
        };
        self.b.ins().return_(&[result]);
        self.b.seal_all_blocks();
        self.b.finalize(config);
    }

    /// Whether native full-width kernels are called ([`super::JitOptions::native`]).
    pub fn native(&self) -> bool {
        self.native
    }

    /// The kernel's return value (a loss sum, in f64).
    pub fn set_result(&mut self, value: Value) {
        self.result = Some(value);
    }

    /// Base pointer of tensor argument `i`.
    pub fn arg(&mut self, i: usize) -> Value {
        let flags = MemFlagsData::trusted().with_readonly();
        self.b
            .ins()
            .load(types::I64, flags, self.args, (8 * i) as i32)
    }

    /// Run-time scalar `i` (f64).
    pub fn scalar(&mut self, i: usize) -> Value {
        let flags = MemFlagsData::trusted().with_readonly();
        self.b
            .ins()
            .load(types::F64, flags, self.scalars, (8 * i) as i32)
    }

    /// Whether this is a shard's first pass of the step (the scalar at
    /// [`super::FIRST_PASS`] is not 0), as a Cranelift boolean.
    pub fn first_pass(&mut self) -> Value {
        let flag = self.scalar(super::FIRST_PASS);
        let zero = self.b.ins().f64const(0.0);
        self.b.ins().fcmp(FloatCC::NotEqual, flag, zero)
    }

    /// Calls a Rust helper registered in `jit::helpers`; returns its result, if any.
    pub fn call(&mut self, symbol: &str, args: &[Value]) -> Option<Value> {
        let func = self
            .imports
            .iter()
            .find(|(s, _)| *s == symbol)
            .map(|(_, f)| *f)
            .expect("helper is registered in jit::helpers");
        let call = self.b.ins().call(func, args);
        self.b.inst_results(call).first().copied()
    }

    /// The address of a read-only table of `words`, defined in the module beside the
    /// kernel (the plan's attention tiles): it lives as long as the code.
    pub fn table(&mut self, words: &[u32]) -> Value {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut data = DataDescription::new();
        data.define(bytes.into_boxed_slice());
        data.set_align(8);
        let accepted = "an anonymous read-only table is always accepted";
        let id = (self.module.declare_anonymous_data(false, false)).expect(accepted);
        self.module.define_data(id, &data).expect(accepted);
        let global = self.module.declare_data_in_func(id, self.b.func);
        self.b.ins().symbol_value(types::I64, global)
    }

    pub fn int(&mut self, n: i64) -> Value {
        self.b.ins().iconst(types::I64, n)
    }

    /// An f32 constant, splatted for `Lanes::Four`.
    pub fn constant(&mut self, lanes: Lanes, x: f32) -> Value {
        let scalar = self.b.ins().f32const(x);
        match lanes {
            Lanes::One => scalar,
            Lanes::Four => self.b.ins().splat(V4, scalar),
        }
    }

    /// `base + 4·index` (byte address of f32 element `index`).
    pub fn element(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_u(index, 2);
        self.b.ins().iadd(base, bytes)
    }

    /// Loads `lanes` f32 at element `index + offset` of `base`.
    pub fn load(&mut self, lanes: Lanes, base: Value, index: Value, offset: i64) -> Value {
        let at = self.element(base, index);
        self.b
            .ins()
            .load(lanes.ty(), flags(), at, (4 * offset) as i32)
    }

    pub fn store(&mut self, value: Value, base: Value, index: Value, offset: i64) {
        let at = self.element(base, index);
        self.b.ins().store(flags(), value, at, (4 * offset) as i32);
    }

    /// Loads a u32 (a token id or target) at element `index` of `base`, as i64.
    pub fn load_u32(&mut self, base: Value, index: Value) -> Value {
        let at = self.element(base, index);
        let word = self.b.ins().load(types::I32, flags(), at, 0);
        self.b.ins().uextend(types::I64, word)
    }

    /// A loop-carried variable.
    pub fn var(&mut self, init: Value) -> Variable {
        let ty = self.b.func.dfg.value_type(init);
        let var = self.b.declare_var(ty);
        self.b.def_var(var, init);
        var
    }

    pub fn get(&mut self, var: Variable) -> Value {
        self.b.use_var(var)
    }

    pub fn set(&mut self, var: Variable, value: Value) {
        self.b.def_var(var, value);
    }

    /// `for i in (start..end).step_by(step) { body(i) }`, tested at the top.
    pub fn for_range(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        mut body: impl FnMut(&mut Self, Value),
    ) {
        let header = self.b.create_block();
        let looping = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(more, looping, &[], exit, &[]);
        self.b.switch_to_block(looping);
        self.b.seal_block(looping);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// `for_range` over constant bounds.
    pub fn for_n(&mut self, start: i64, end: i64, step: i64, body: impl FnMut(&mut Self, Value)) {
        if start >= end {
            return;
        }
        let (s, e) = (self.int(start), self.int(end));
        self.for_range(s, e, step, body);
    }

    /// Runs `body` over elements `0..n` of a row: four lanes at a time, then the
    /// ragged tail one by one. `body(e, lanes, index)`.
    pub fn lanes(&mut self, n: usize, mut body: impl FnMut(&mut Self, Lanes, Value)) {
        let vectors = (n / 4 * 4) as i64;
        self.for_n(0, vectors, 4, |e, i| body(e, Lanes::Four, i));
        self.for_n(vectors, n as i64, 1, |e, i| body(e, Lanes::One, i));
    }

    /// Σ of the four lanes, in a fixed order ((0 + 1) + (2 + 3)).
    pub fn sum_lanes(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4u8).map(|k| self.b.ins().extractlane(v, k)).collect();
        let a = self.b.ins().fadd(l[0], l[1]);
        let b = self.b.ins().fadd(l[2], l[3]);
        self.b.ins().fadd(a, b)
    }

    /// Maximum of the four lanes.
    pub fn max_lanes(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4u8).map(|k| self.b.ins().extractlane(v, k)).collect();
        let a = self.b.ins().fmax(l[0], l[1]);
        let b = self.b.ins().fmax(l[2], l[3]);
        self.b.ins().fmax(a, b)
    }

    /// `x` as a value of `lanes` width (splat when four).
    pub fn widen(&mut self, lanes: Lanes, x: Value) -> Value {
        match lanes {
            Lanes::Four => self.b.ins().splat(V4, x),
            Lanes::One => x,
        }
    }

    /// Σ x[i]·y[i] over `n` contiguous f32 (4-lane partial sums, then the tail).
    pub fn dot(&mut self, x: Value, y: Value, n: usize) -> Value {
        let zero4 = self.constant(Lanes::Four, 0.0);
        let zero1 = self.constant(Lanes::One, 0.0);
        let acc4 = self.var(zero4);
        let acc1 = self.var(zero1);
        self.lanes(n, |e, lanes, i| {
            let a = e.load(lanes, x, i, 0);
            let b = e.load(lanes, y, i, 0);
            let var = if lanes == Lanes::Four { acc4 } else { acc1 };
            let acc = e.get(var);
            let next = e.b.ins().fma(a, b, acc);
            e.set(var, next);
        });
        let v = self.get(acc4);
        let vector_sum = self.sum_lanes(v);
        let tail = self.get(acc1);
        self.b.ins().fadd(vector_sum, tail)
    }

    /// `y[i] += a · x[i]` over `n` contiguous f32.
    pub fn axpy(&mut self, a: Value, x: Value, y: Value, n: usize) {
        let a4 = self.b.ins().splat(V4, a);
        self.lanes(n, |e, lanes, i| {
            let scale = if lanes == Lanes::Four { a4 } else { a };
            let xv = e.load(lanes, x, i, 0);
            let yv = e.load(lanes, y, i, 0);
            let r = e.b.ins().fma(scale, xv, yv);
            e.store(r, y, i, 0);
        });
    }

    /// Pointer to row `row` (a value) of a matrix with `width` f32 per row.
    pub fn row(&mut self, base: Value, row: Value, width: usize) -> Value {
        let index = self.b.ins().imul_imm_s(row, width as i64);
        self.element(base, index)
    }
}
