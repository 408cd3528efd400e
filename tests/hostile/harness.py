#!/usr/bin/env python3
"""Hostile-input harness (issue 24): runs `cllm` on cases of the kinds a hostile or
unlucky user produces — run folders, checkpoints, data, weights, sample, plot,
export, signals, command lines — each under a 4 GiB address-space limit and a
timeout, and tallies the outcomes:

  clean     exit 0 where the case should work, exit 1 with a message where it should be refused
  panic     exit 101 or "panicked at"
  abort     SIGABRT / exit 134
  hang      still running at the timeout (then SIGKILLed)
  signal    ended by any other signal
  silent    exit 0 where the case must be refused (a silent wrong result)
  refused   exit 1 where the case should work (a case that is wrong, or a regression)
  mute      exit 1 with nothing on stderr
  outside   a file outside the case's folder was written (victims checked by hash)

Not part of `cargo test` (it takes minutes); run it by hand:
    cargo build --release && python3 tests/hostile/harness.py [--only SUBSTRING]
It prints one line per case that is not clean, then the table.
"""
import hashlib, os, shutil, signal, struct, subprocess, sys, tempfile, time, json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLLM = os.environ.get("CLLM_BIN") or os.path.join(REPO, "target", "release", "cllm")
LIMIT_KIB = 4 * 1024 * 1024
TIMEOUT = 60

TINY = """cllm 0.1
data {{ source = {source} }}
model gpt {{ context = 16 tokens  width = 16  layers = {layers}  heads = 2  vocab = {vocab} {extra} }}
train {{ steps = {steps}  batch = 2 seqs  schedule = constant }}
"""


def spec(d, source='addition(digits = 2)', vocab="bytes", layers=1, steps=4, extra="", name="s.cllm"):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(TINY.format(source=source, vocab=vocab, layers=layers, steps=steps, extra=extra))
    return path


def run(args, cwd, timeout=TIMEOUT, signal_after=None, env=None, stdout="pipe"):
    """(returncode or 'hang', stdout, stderr) of cllm args under the address-space limit;
    `env` adds variables; stdout "closed" is a pipe whose reader has gone, "full" is
    /dev/full."""
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_KIB * 1024, LIMIT_KIB * 1024))
    sink, close = subprocess.PIPE, None
    if stdout == "closed":
        reader, sink = os.pipe()
        os.close(reader)
        close = sink
    elif stdout == "full":
        sink = close = os.open("/dev/full", os.O_WRONLY)
    p = subprocess.Popen([CLLM] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=sink, stderr=subprocess.PIPE, preexec_fn=limit,
                         env=dict(os.environ, **(env or {})))
    if close is not None:
        os.close(close)
    try:
        if signal_after:
            delay, sigs = signal_after
            time.sleep(delay)
            for s in sigs:
                p.send_signal(s)
                time.sleep(0.05)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, (out or b"").decode("utf8", "replace"), err.decode("utf8", "replace")
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return "hang", "", ""


def trained(d, name="run", steps=4, source='addition(digits = 2)', vocab="bytes"):
    s = spec(d, source=source, vocab=vocab, steps=steps, name=name + ".cllm")
    out = os.path.join(d, name)
    rc, _, err = run(["run", s, "--quiet", "--out", out], d)
    assert rc == 0, err
    return out


def safetensors(path, tensors, metadata=None, dtype="F32"):
    """Writes a safetensors file: tensors = {name: (shape, bytes)}."""
    header, offset, data = {}, 0, b""
    for name, (shape, raw) in tensors.items():
        header[name] = {"dtype": dtype if not isinstance(dtype, dict) else dtype.get(name, "F32"),
                        "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def gpt2_file(path, layers=1, width=16, vocab=256, context=16, fill=0.01, dtype_of=None, nan=None):
    t = {}
    def add(name, shape, value=fill):
        n = 1
        for s in shape:
            n *= s
        v = float("nan") if nan == name else value
        t[name] = (shape, struct.pack("<f", v) * n)
    add("wte.weight", [vocab, width]); add("wpe.weight", [context, width])
    for i in range(layers):
        p = f"h.{i}."
        add(p + "ln_1.weight", [width], 1.0); add(p + "ln_1.bias", [width], 0.0)
        add(p + "attn.c_attn.weight", [width, 3 * width]); add(p + "attn.c_attn.bias", [3 * width])
        add(p + "attn.c_proj.weight", [width, width]); add(p + "attn.c_proj.bias", [width])
        add(p + "ln_2.weight", [width], 1.0); add(p + "ln_2.bias", [width], 0.0)
        add(p + "mlp.c_fc.weight", [width, 4 * width]); add(p + "mlp.c_fc.bias", [4 * width])
        add(p + "mlp.c_proj.weight", [4 * width, width]); add(p + "mlp.c_proj.bias", [width])
    add("ln_f.weight", [width], 1.0); add("ln_f.bias", [width], 0.0)
    if dtype_of:
        name, dt = dtype_of
        shape, raw = t[name]
        t[name] = (shape, raw[: len(raw) // 2] if dt == "F16" else raw + raw)
        safetensors(path, t, {"format": "pt"}, dtype={name: dt})
    else:
        safetensors(path, t, {"format": "pt"})


def llmc(tokens, magic=20240520, version=1, count=None, endian="<"):
    header = [0] * 256
    header[0], header[1], header[2] = magic, version, len(tokens) if count is None else count
    return struct.pack(endian + "256i", *header) + struct.pack("<%dH" % len(tokens), *tokens)


CASES = []


def case(name, expect="refuse"):
    def register(f):
        CASES.append((name, expect, f))
        return f
    return register


# ---- command lines --------------------------------------------------------------------
for i, (args, expect) in enumerate([
    (["run"], "refuse"), (["run", "--out", "", "S"], "refuse"), (["run", "S", "--steps", "0"], "refuse"),
    (["run", "S", "--steps", "18446744073709551615"], "refuse"), (["run", "S", "--threads", "0"], "refuse"),
    (["run", "S", "--threads", "100000"], "refuse"), (["run", "S", "--backend", "gpu"], "refuse"),
    (["run", "S", "--set", "train.steps="], "refuse"), (["run", "S", "--set", "model.width=1e400"], "refuse"),
    (["run", "S", "--set", "nonsense"], "refuse"), (["run", "S", "--resume", "nowhere"], "refuse"),
    (["check", "S", "--set", "train.batch=0 seqs"], "refuse"), (["plan", "S", "--ranks", "0"], "refuse"),
    (["plan", "S", "--ranks", "1000000000"], "either"), (["bench", "S", "--steps", "0"], "either"),
    (["sample", ""], "refuse"), (["eval", ""], "refuse"), (["export", "X", "--hf", ""], "refuse"),
    (["plot"], "refuse"), (["plot", ""], "refuse"), (["run", "S", "--stop-at", "0", "--quiet", "--out", "o"], "ok"),
    (["run", "S", "--quiet", "--out", "o2", "--set", "train.seed=18446744073709551615"], "refuse"),
    (["run", "S", "--quiet", "--out", "o2", "--set", "train.seed=9007199254740992"], "ok"),
    (["check", "S", "--set", "model.context=4294967297 tokens"], "either"),
    (["run", "S", "--quiet", "--out", "o3", "--set", "plan.memory_budget=1 B"], "refuse"),
]):
    @case(f"cli-{i:02d} {' '.join(args)[:60]}", expect)
    def _(d, args=args):
        s = spec(d)
        return ["X" if a == "X" else s if a == "S" else a for a in args]

# ---- run folders ----------------------------------------------------------------------
for kind in ["file", "fifo", "devnull-link", "dir-link-ok", "readonly", "holds-run", "holds-run-overwrite",
             "lock-fifo", "lock-dir", "lock-link", "ckpt-link", "metrics-link", "metrics-fifo",
             "svg-link", "png-link", "tmp-link", "ckpt-dir"]:
    # A planted link is removed (--overwrite) or replaced by rename, never followed;
    # a lock file that is a link, FIFO or folder is refused.
    expect = "ok" if kind in ("dir-link-ok", "holds-run-overwrite", "ckpt-link", "svg-link", "png-link",
                              "tmp-link", "metrics-link", "metrics-fifo") else "refuse"
    if kind == "readonly" and os.geteuid() == 0:
        expect = "either"  # root writes into a 0500 folder

    @case(f"folder {kind}", expect)
    def _(d, kind=kind):
        s, out = spec(d), os.path.join(d, "out")
        victim = os.path.join(d, "..", "victim")
        extra = []
        if kind == "file":
            open(out, "w").write("x")
        elif kind == "fifo":
            os.mkfifo(out)
        elif kind == "devnull-link":
            os.symlink("/dev/null", out)
        elif kind == "dir-link-ok":
            os.mkdir(out + ".real"); os.symlink(out + ".real", out)
        elif kind == "readonly":
            os.mkdir(out); os.chmod(out, 0o500)
            if os.geteuid() == 0:
                open(os.path.join(out, "metrics.jsonl"), "w").write("")  # root writes anyway: a run holds it
        elif kind.startswith("holds-run"):
            trained(d, "out")
            if kind.endswith("overwrite"):
                extra = ["--overwrite"]
        else:
            os.mkdir(out)
            target = {"lock": "cllm.lock", "ckpt": "checkpoint.safetensors", "metrics": "metrics.jsonl",
                      "svg": "loss.svg", "png": "loss.png", "tmp": "checkpoint.safetensors.tmp"}[kind.split("-")[0]]
            p = os.path.join(out, target)
            how = kind.split("-")[1]
            if how == "fifo":
                os.mkfifo(p)
            elif how == "dir":
                os.mkdir(p)
            else:
                os.symlink(victim, p)
            if kind in ("ckpt-link", "svg-link", "png-link", "tmp-link", "metrics-link"):
                extra = ["--overwrite"] if kind in ("ckpt-link", "metrics-link") else []
        return ["run", s, "--quiet", "--out", out] + extra

# ---- checkpoints: truncated, flipped, rewritten -------------------------------------------
def damaged(d, how):
    run_dir = trained(d)
    path = os.path.join(run_dir, "checkpoint.safetensors")
    raw = bytearray(open(path, "rb").read())
    n = struct.unpack("<Q", raw[:8])[0]
    if how.startswith("cut"):
        raw = raw[: {"cut0": 0, "cut7": 7, "cut8": 8, "cut100": 100, "cuthalf": len(raw) // 2,
                     "cutlast": len(raw) - 1}[how]]
    elif how.startswith("flip"):
        at = {"fliphdr": 8 + n // 2, "flipdata": 8 + n + 5, "flipend": len(raw) - 3, "fliplen": 3}[how]
        raw[at] ^= 0x40
    elif how == "hugelen":
        raw[:8] = struct.pack("<Q", 2 ** 63)
    elif how == "zeros":
        raw = bytearray(len(raw))
    open(path, "wb").write(raw)
    return run_dir

for how in ["cut0", "cut7", "cut8", "cut100", "cuthalf", "cutlast", "fliphdr", "flipdata", "flipend",
            "fliplen", "hugelen", "zeros"]:
    for command in ["eval", "sample", "resume", "export"]:
        @case(f"checkpoint {how} {command}")
        def _(d, how=how, command=command):
            r = damaged(d, how)
            return {"eval": ["eval", r], "sample": ["sample", r], "resume": ["run", "--resume", r],
                    "export": ["export", r, "--hf", os.path.join(d, "hf")]}[command]

def rewritten(d, change):
    """A trained checkpoint rewritten by hand (no checksums), with `change` applied."""
    run_dir = trained(d)
    path = os.path.join(run_dir, "checkpoint.safetensors")
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    meta.pop("crc32", None)
    tensors = {k: (v["shape"], raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]])
               for k, v in header.items()}
    change(tensors, meta)
    safetensors(path, tensors, meta)
    return run_dir

CHANGES = {
    "nan": lambda t, m: t.update({"wte": (t["wte"][0], struct.pack("<f", float("nan")) * (len(t["wte"][1]) // 4))}),
    "inf-moment": lambda t, m: t.update({"adamw.v.wte": (t["wte"][0], struct.pack("<f", float("inf")) * (len(t["wte"][1]) // 4))}),
    "no-wte": lambda t, m: t.pop("wte"),
    "shape": lambda t, m: t.update({"wte": ([len(t["wte"][1]) // 4], t["wte"][1])}),
    "no-step": lambda t, m: m.pop("step"),
    "step-word": lambda t, m: m.update({"step": "many"}),
    "cursor": lambda t, m: m.update({"cursor": "{"}),
    "spec-json": lambda t, m: m.update({"spec_json": "[]"}),
    "no-spec": lambda t, m: m.pop("spec_json"),
    "spec-huge-layers": lambda t, m: m.update({"spec_json": m["spec_json"].replace('"layers":1', '"layers":100000000')}),
}
# `sample` reads the parameters and the spec only: damage elsewhere does not concern it.
SAMPLE_IGNORES = ("inf-moment", "no-step", "step-word", "cursor")
for change in CHANGES:
    for command in ["eval", "sample", "resume"]:
        ignores = command == "sample" and change in SAMPLE_IGNORES
        @case(f"rewritten {change} {command}", "ok" if ignores else "refuse")
        def _(d, change=change, command=command):
            r = rewritten(d, CHANGES[change])
            return {"eval": ["eval", r], "sample": ["sample", r], "resume": ["run", "--resume", r]}[command]

# ---- data ---------------------------------------------------------------------------------
DATA = {
    "empty-text": ("text(\"c.txt\")", "bytes", lambda d: open(os.path.join(d, "c.txt"), "w").close()),
    "one-byte": ("text(\"c.txt\")", "bytes", lambda d: open(os.path.join(d, "c.txt"), "w").write("a")),
    "bom-jsonl": ("jsonl(\"c.jsonl\")", "bytes", lambda d: open(os.path.join(d, "c.jsonl"), "wb").write(b"\xef\xbb\xbf" + b'{"text": "hello there"}\n' * 200)),
    "jsonl-garbage": ("jsonl(\"c.jsonl\")", "bytes", lambda d: open(os.path.join(d, "c.jsonl"), "w").write("not json\n" * 100)),
    "jsonl-no-key": ("jsonl(\"c.jsonl\")", "bytes", lambda d: open(os.path.join(d, "c.jsonl"), "w").write('{"body": "x"}\n' * 100)),
    "jsonl-number": ("jsonl(\"c.jsonl\")", "bytes", lambda d: open(os.path.join(d, "c.jsonl"), "w").write('{"text": 5}\n' * 100)),
    "jsonl-deep": ("jsonl(\"c.jsonl\")", "bytes", lambda d: open(os.path.join(d, "c.jsonl"), "w").write("[" * 100000 + "\n")),
    "tokens-odd": ("tokens(\"c.bin\")", "bytes", lambda d: open(os.path.join(d, "c.bin"), "wb").write(b"\x01\x00" * 100 + b"\x01")),
    "tokens-bigendian": ("tokens(\"c.bin\")", "gpt2", lambda d: open(os.path.join(d, "c.bin"), "wb").write(llmc([1] * 100, endian=">"))),
    "tokens-magic": ("tokens(\"c.bin\")", "gpt2", lambda d: open(os.path.join(d, "c.bin"), "wb").write(llmc([1] * 100, magic=20240801))),
    "tokens-version": ("tokens(\"c.bin\")", "gpt2", lambda d: open(os.path.join(d, "c.bin"), "wb").write(llmc([1] * 100, version=2))),
    "tokens-count": ("tokens(\"c.bin\")", "gpt2", lambda d: open(os.path.join(d, "c.bin"), "wb").write(llmc([1] * 100, count=1000))),
    "tokens-negcount": ("tokens(\"c.bin\")", "gpt2", lambda d: open(os.path.join(d, "c.bin"), "wb").write(llmc([1] * 100, count=-5))),
    "tokens-range": ("tokens(\"c.bin\")", "bytes", lambda d: open(os.path.join(d, "c.bin"), "wb").write(llmc([300] * 100))),
    "tokens-text": ("tokens(\"c.txt\")", "gpt2", lambda d: open(os.path.join(d, "c.txt"), "w").write("hello world, how are you? " * 100)),
    "tokens-empty-dir": ("tokens(\"dir\")", "gpt2", lambda d: os.mkdir(os.path.join(d, "dir"))),
    "tokens-fifo-only": ("tokens(\"dir\")", "gpt2", lambda d: (os.mkdir(os.path.join(d, "dir")), os.mkfifo(os.path.join(d, "dir", "a.bin")))),
    "tokens-fifo-among": ("tokens(\"dir\")", "gpt2", lambda d: (os.mkdir(os.path.join(d, "dir")), open(os.path.join(d, "dir", "a.bin"), "wb").write(llmc([1, 2, 3] * 100)), os.mkfifo(os.path.join(d, "dir", "b.bin")))),
    "tokens-zero-link": ("tokens(\"dir\")", "gpt2", lambda d: (os.mkdir(os.path.join(d, "dir")), open(os.path.join(d, "dir", "a.bin"), "wb").write(llmc([1, 2, 3] * 100)), os.symlink("/dev/zero", os.path.join(d, "dir", "b.bin")))),
    "tokens-dangling": ("tokens(\"dir\")", "gpt2", lambda d: (os.mkdir(os.path.join(d, "dir")), open(os.path.join(d, "dir", "a.bin"), "wb").write(llmc([1, 2, 3] * 100)), os.symlink("nowhere", os.path.join(d, "dir", "b.bin")))),
    "self-link": ("text(\"c.txt\")", "bytes", lambda d: os.symlink("c.txt", os.path.join(d, "c.txt"))),
    "sparse-text": ("text(\"big\")", "bytes", lambda d: (os.mkdir(os.path.join(d, "big")), os.truncate(open(os.path.join(d, "big", "a.txt"), "w").name, 8 << 30))),
    "text-fifo": ("text(\"c.txt\")", "bytes", lambda d: os.mkfifo(os.path.join(d, "c.txt"))),
    "text-dir-fifo": ("text(\"dir\")", "bytes", lambda d: (os.mkdir(os.path.join(d, "dir")), open(os.path.join(d, "dir", "a.txt"), "w").write("hello " * 500), os.mkfifo(os.path.join(d, "dir", "b.txt")))),
    "text-devzero": ("text(\"/dev/zero\")", "bytes", lambda d: None),
    "text-ok": ("text(\"c.txt\")", "bytes", lambda d: open(os.path.join(d, "c.txt"), "w").write("hello world " * 500)),
    "words-huge": ("text(\"c.txt\")", "words(size = 1000000000)", lambda d: open(os.path.join(d, "c.txt"), "w").write("hello world " * 500)),
    "nul-text": ("text(\"c.txt\")", "bytes", lambda d: open(os.path.join(d, "c.txt"), "wb").write(b"\x00" * 5000)),
}
for name, (source, vocab, make) in DATA.items():
    expect = "ok" if name in ("text-ok", "nul-text", "bom-jsonl") else "refuse"

    @case(f"data {name}", expect)
    def _(d, source=source, vocab=vocab, make=make):
        make(d)
        return ["run", spec(d, source=source, vocab=vocab), "--quiet", "--out", os.path.join(d, "out")]

# ---- weights ------------------------------------------------------------------------------
WEIGHTS = {
    "ok": lambda p: gpt2_file(p),
    "missing": lambda p: None,
    "folder": lambda p: os.mkdir(p),
    "fifo": lambda p: os.mkfifo(p),
    "devzero": lambda p: os.symlink("/dev/zero", p),
    "self-link": lambda p: os.symlink(os.path.basename(p), p),
    "nan": lambda p: gpt2_file(p, nan="h.0.mlp.c_fc.weight"),
    "nan-wpe": lambda p: gpt2_file(p, nan="wpe.weight"),
    "more-layers": lambda p: gpt2_file(p, layers=3),
    "wider": lambda p: gpt2_file(p, width=32),
    "i64-wte": lambda p: gpt2_file(p, dtype_of=("wte.weight", "I64")),
    "f16-wte": lambda p: gpt2_file(p, dtype_of=("wte.weight", "F16")),
    "empty": lambda p: open(p, "w").close(),
    "garbage": lambda p: open(p, "wb").write(os.urandom(5000)),
    "huge-header": lambda p: open(p, "wb").write(struct.pack("<Q", 2 ** 40) + b"{}"),
    "sparse-2.5G": lambda p: (gpt2_file(p), os.truncate(p, int(2.5 * 2 ** 30))),
}
for name, make in WEIGHTS.items():
    # F16 (like BF16 and F64) weights convert to fp32; I64 is not a weight.
    @case(f"weights {name}", "ok" if name in ("ok", "f16-wte") else "refuse")
    def _(d, make=make):
        make(os.path.join(d, "w.safetensors"))
        s = spec(d, extra='weights = "w.safetensors"')
        return ["run", s, "--quiet", "--out", os.path.join(d, "out")]

# ---- sample, plot, export -----------------------------------------------------------------
for args, expect in [(["--tokens", "18446744073709551615"], "refuse"), (["--tokens", "4000000000"], "refuse"),
                     (["--set", "sample.tokens=9007199254740992"], "refuse"), (["--tokens", "0"], "either"),
                     (["--temperature", "nan"], "refuse"), (["--temperature", "-1"], "refuse"),
                     (["--top-p", "0"], "refuse"), (["--top-p", "2"], "refuse"), (["--top-k", "0"], "either"),
                     (["--prompt", ""], "refuse"), (["--prompt", "9" * 5000, "--tokens", "5"], "ok"),
                     (["--seed", "18446744073709551615", "--tokens", "5"], "ok"), (["--tokens", "300"], "ok")]:
    @case(f"sample {' '.join(args)[:40]}", expect)
    def _(d, args=args):
        return ["sample", trained(d)] + args

PLOTS = {
    "huge-loss": '{"kind":"train","step":1,"loss":1e308,"lr":0.1}\n{"kind":"train","step":2,"loss":-1e308,"lr":0.1}\n',
    "huge-lr": '{"kind":"train","step":1,"loss":1,"lr":1.7e308}\n{"kind":"train","step":2,"loss":2,"lr":0.1}\n',
    "huge-step": '{"kind":"train","step":1e300,"loss":1,"lr":0.1}\n{"kind":"train","step":2,"loss":2,"lr":0.1}\n',
    "nan-string": '{"kind":"train","step":1,"loss":"NaN","lr":0.1}\n',
    "empty": "",
    "garbage": "\x00\x01garbage\n" * 100,
    "tiny-values": '{"kind":"train","step":1,"loss":1e-300,"lr":1e-310}\n{"kind":"train","step":2,"loss":2e-300,"lr":1e-310}\n',
    "one-row": '{"kind":"train","step":1,"loss":1,"lr":0.1}\n',
    "same-step": '{"kind":"train","step":5,"loss":1,"lr":0.1}\n{"kind":"train","step":5,"loss":3,"lr":0.1}\n',
    "negative-step": '{"kind":"train","step":-5,"loss":1,"lr":0.1}\n{"kind":"train","step":5,"loss":3,"lr":0.1}\n',
    "long-line": '{"kind":"train","step":1,"loss":1,"lr":0.1,"x":"' + "y" * 5_000_000 + '"}\n',
}
for name, text in PLOTS.items():
    @case(f"plot {name}", "refuse" if name in ("huge-loss", "nan-string", "empty", "garbage") else "ok")
    def _(d, text=text):
        os.mkdir(os.path.join(d, "r"))
        open(os.path.join(d, "r", "metrics.jsonl"), "w").write(text)
        return ["plot", os.path.join(d, "r")]

for kind in ["file", "fifo", "tmp-link", "model-link", "readonly-ok"]:
    @case(f"export --hf {kind}", "ok" if kind in ("tmp-link", "model-link") else "refuse")
    def _(d, kind=kind):
        r, hf = trained(d), os.path.join(d, "hf")
        victim = os.path.join(d, "..", "victim")
        if kind == "file":
            open(hf, "w").write("x")
        elif kind == "fifo":
            os.mkfifo(hf)
        elif kind == "readonly-ok":
            os.mkdir(hf); os.chmod(hf, 0o500)
            if os.geteuid() == 0:
                open(hf, "a") if False else None
                os.rmdir(hf); open(hf, "w").close()  # root writes anywhere: make it a file instead
        else:
            os.mkdir(hf)
            os.symlink(victim, os.path.join(hf, "model.safetensors.tmp" if kind == "tmp-link" else "model.safetensors"))
        return ["export", r, "--hf", hf]

# ---- signals ------------------------------------------------------------------------------
# One signal: save, exit 130. Two: exit 1 without saving, unless the second came while
# the save was being written (then it finishes: 130). Either way no temporary file is
# left, and 130 means the checkpoint is there.
for name, sigs in [("sigterm", [signal.SIGTERM]), ("sighup", [signal.SIGHUP]), ("sigint", [signal.SIGINT]),
                   ("sigint-twice", [signal.SIGINT, signal.SIGINT]),
                   ("sigterm-then-int", [signal.SIGTERM, signal.SIGINT])]:
    @case(f"signal {name}", "signal130" if len(sigs) == 1 else "signal")
    def _(d, sigs=sigs):
        s = spec(d, steps=1000000, extra="")
        return (["run", s, "--quiet", "--out", os.path.join(d, "out")], (2.0, sigs))


# ---- output nobody reads, and the environment -------------------------------------------
# A reader that went away stops the printing, never the work (exit 0, the run saved); a
# full disk under stdout fails the command after the work, saying so; a thread count
# rayon would try to start is refused before anything.
for i, (args, expect, options) in enumerate([
    (["run", "S", "--out", "o"], "ok", {"stdout": "closed"}),
    (["run", "S", "--out", "o"], "refuse", {"stdout": "full"}),
    (["ir", "S"], "ok", {"stdout": "closed"}),
    (["check", "--resolved", "S"], "ok", {"stdout": "closed"}),
    (["plan", "S"], "refuse", {"stdout": "full"}),
    (["run", "S", "--quiet", "--out", "o"], "refuse", {"env": {"RAYON_NUM_THREADS": "100000"}}),
    (["prepare", "S", "--out", "p"], "refuse", {"env": {"RAYON_NUM_THREADS": "100000"}}),
    (["check", "S"], "ok", {"env": {"RAYON_NUM_THREADS": "many"}}),
]):
    @case(f"out-{i:02d} {' '.join(args)[:40]} {options}", expect)
    def _(d, args=args, options=options):
        s = spec(d)
        return ([s if a == "S" else a for a in args], None, options)


def victims_state(root):
    """Hashes of every file outside the case folders (the planted links' targets)."""
    state = {}
    for base, _, files in os.walk(root):
        if os.path.basename(base).startswith("case-") or "/case-" in base:
            continue
        for f in files:
            p = os.path.join(base, f)
            state[p] = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else "?"
    return state


def main():
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    tally = {k: 0 for k in ["clean", "panic", "abort", "hang", "signal", "silent", "refused", "mute", "outside"]}
    root = tempfile.mkdtemp(prefix="cllm-hostile-")
    shutil.copy(os.path.join(REPO, "specs", "add.cllm"), root)
    victim = os.path.join(root, "victim")
    open(victim, "w").write("precious")
    cases = [c for c in CASES if only in c[0]]
    started = time.time()
    for i, (name, expect, make) in enumerate(cases):
        d = os.path.join(root, f"case-{i:03d}")
        os.mkdir(d)
        before = victims_state(root)
        try:
            made = make(d)
        except AssertionError as e:
            print(f"SETUP FAILED {name}: {e}"); continue
        made = made if isinstance(made, tuple) else (made, None)
        args, sig, options = (made + ({},))[:3]
        rc, out, err = run(args, d, signal_after=sig, **options)
        outcome = "clean"
        if rc == "hang":
            outcome = "hang"
        elif rc == 101 or "panicked at" in err:
            outcome = "panic"
        elif rc in (134, -signal.SIGABRT):
            outcome = "abort"
        elif isinstance(rc, int) and rc < 0:
            outcome = "signal"
        elif expect == "refuse" and rc == 0:
            outcome = "silent"
        elif expect == "ok" and rc != 0:
            outcome = "refused"
        elif expect.startswith("signal"):
            out_dir = os.path.join(d, "out")
            left = [f for f in os.listdir(out_dir) if ".tmp" in f] if os.path.isdir(out_dir) else []
            saved = os.path.isfile(os.path.join(out_dir, "checkpoint.safetensors"))
            allowed = (130,) if expect == "signal130" else (130, 1)
            if rc not in allowed or left or (rc == 130 and not saved):
                outcome = "silent"
                err += f" [left {left}, saved {saved}]"
        elif rc == 1 and not err.strip():
            outcome = "mute"
        if victims_state(root) != before:
            outcome = "outside"
        tally[outcome] += 1
        if outcome != "clean":
            print(f"{outcome:8} {name}: exit {rc}: {err.strip()[-300:]}")
        for base, dirs, _ in os.walk(d):
            for x in dirs:
                try:
                    os.chmod(os.path.join(base, x), 0o700)
                except OSError:
                    pass
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
    print(f"\n{len(cases)} cases in {time.time() - started:.0f} s on {cpu}, under a {LIMIT_KIB // 1024 // 1024} GiB address space, {TIMEOUT} s timeout")
    print("| outcome | cases |\n|---|---|")
    for k, v in tally.items():
        print(f"| {k} | {v} |")
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if tally["clean"] == len(cases) else 1)


if __name__ == "__main__":
    main()
