//! User input never panics the compiler and never makes it work for long. Every example
//! and every bad program in `tests/diagnostics/` seeds a deterministic generator of
//! broken variants (truncations, deletions, swaps, duplicated spans, garbage tokens,
//! extreme numbers, non-UTF-8 bytes); hand-written pathological programs (deep nesting,
//! long chains, huge repeats, huge channels and horizons) are added. Each goes through
//! `compile_bytes` under `catch_unwind`; each that passes goes on through the memory
//! check and, within its limit, the pass pipeline (`fnetc compile`) and the initialiser
//! (`fnetc init`, without writing a file), and is checked at a batch of 10^8
//! (`fnetc bench --batch`); a sample of those is lowered to a plan at batch 1 and
//! JIT-compiled (`fnetc bench --backend jit`). Panicking inputs are written to `target/no_panic/` for
//! reproduction.

use fnet::driver::compile_bytes;
use fnet::eval::{Module, Options};
use fnet::passes::pipeline::default_pipeline;
use fnet::passes::{CompileMode, PassContext};
use fnet::runtime::budget::{check, Limit, Need};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Random variants generated from the seeds.
const VARIANTS: usize = 30_000;
/// Inputs slower than this are listed on stderr (not failed: timing depends on load).
const SLOW: Duration = Duration::from_secs(3);

/// The memory limit of the downstream stages: what a small machine allows. Mutants
/// that need more are refused by the check, as `fnetc` would refuse them.
const LIMIT_BYTES: u64 = 256 << 20;

/// xorshift64*: tiny, deterministic, good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// A span `start..end` inside `len` bytes, at most `max` long.
    fn span(&mut self, len: usize, max: usize) -> (usize, usize) {
        let start = self.below(len + 1);
        let end = (start + self.below(max + 1)).min(len);
        (start, end)
    }
}

const TOKENS: &[&str] = &[
    "|>",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "+",
    "-",
    "*",
    "/",
    ".",
    "\"",
    "//",
    "/*",
    "*/",
    "#",
    "\n",
    " ",
    "repeat",
    "as",
    "model",
    "input",
    "def",
    "block",
    "return",
    "train",
    "seed",
    "basis",
    "slots",
    "true",
    "false",
    "none",
    "same",
    "-1",
    "0",
    "1",
    "99999999999999999999",
    "9223372036854775807",
    "1e308",
    "1e-308",
    "0.0",
    "1_0",
    "B",
    "f32",
    "f64",
    "f16",
    "conv1d",
    "conv2d",
    "linear",
    "batchnorm",
    "relu",
    "gelu",
    "dropout",
    "maxpool",
    "avgpool",
    "global_avg_pool",
    "flatten",
    "last",
    "add",
    "mul",
    "concat",
    "shortcut",
    "flexconv",
    "lc",
    "basis_conv",
    "slot",
    "magnet",
    "gauss",
    "shared_basis",
    "pool_slots",
    "x",
    "h",
    "y",
    "c",
    "stride:",
    "padding:",
    "kernel:",
    "horizon:",
    "causal: true",
    "part:",
    "default: [",
    "count:",
    "active:",
    "groups:",
    "match:",
    "optimizer:",
    "loss:",
    "epochs:",
    "regularizers:",
    "repeat 10000",
    "repeat 1000000000",
    "\u{e9}",
    "\u{1F600}",
    "\u{0}",
    "\r",
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "65",
    "10000",
    "10001",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999",
    "-9223372036854775807",
    "1e308",
    "1e-308",
    "1e309",
    "0.0",
    "-0.5",
    "3.5",
    "1_000_000",
];

const BAD_BYTES: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\x80\x80\x80",
];

fn seeds() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["examples", "tests/diagnostics"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("seed directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "fnet"))
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).expect("readable seed");
            out.push((p.display().to_string(), bytes));
        }
    }
    out
}

/// Byte ranges of the decimal number literals in `src`.
fn number_spans(src: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let word_before = i > 0 && (src[i - 1].is_ascii_alphanumeric() || src[i - 1] == b'_');
        if src[i].is_ascii_digit() && !word_before {
            let start = i;
            while i < src.len() && (src[i].is_ascii_alphanumeric() || b"._".contains(&src[i])) {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

/// Applies one random mutation to `src`. The weights favour edits that keep the
/// program parseable (numbers, words, tokens), so most variants reach the elaborator.
fn mutate(rng: &mut Rng, src: &mut Vec<u8>) {
    let len = src.len();
    match rng.below(100) {
        0..=3 => src.truncate(rng.below(len + 1)),
        4..=13 => {
            let (a, b) = rng.span(len, 40);
            src.drain(a..b);
        }
        14..=21 => {
            // Swap two non-overlapping spans.
            let (a, b) = rng.span(len, 30);
            let (c, d) = rng.span(len, 30);
            let ((a, b), (c, d)) = if a <= c {
                ((a, b), (c, d))
            } else {
                ((c, d), (a, b))
            };
            if b <= c {
                let mut out = src[..a].to_vec();
                out.extend_from_slice(&src[c..d]);
                out.extend_from_slice(&src[b..c]);
                out.extend_from_slice(&src[a..b]);
                out.extend_from_slice(&src[d..]);
                *src = out;
            }
        }
        22..=31 => {
            let (a, b) = rng.span(len, 80);
            let piece = src[a..b].to_vec();
            let at = rng.below(len + 1);
            src.splice(at..at, piece);
        }
        32..=49 => {
            let at = rng.below(len + 1);
            let tok = rng.pick(TOKENS).as_bytes().to_vec();
            src.splice(at..at, tok);
        }
        50..=53 => {
            let at = rng.below(len + 1);
            let garbage: Vec<u8> = (0..1 + rng.below(8))
                .map(|_| b' ' + (rng.next() % 95) as u8)
                .collect();
            src.splice(at..at, garbage);
        }
        54..=55 => {
            let at = rng.below(len + 1);
            let garbage: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            src.splice(at..at, garbage);
        }
        56..=77 => {
            let spans = number_spans(src);
            if !spans.is_empty() {
                let (a, b) = *rng.pick(&spans);
                src.splice(a..b, rng.pick(NUMBERS).bytes());
            }
        }
        78..=79 => {
            let at = rng.below(len + 1);
            src.splice(at..at, rng.pick(BAD_BYTES).iter().copied());
        }
        _ => {
            // Replace a word with another token of the language.
            let (a, _) = rng.span(len, 0);
            let start = (0..a)
                .rev()
                .find(|&i| !src[i].is_ascii_alphanumeric())
                .map_or(0, |i| i + 1);
            let end = (a..len)
                .find(|&i| !src[i].is_ascii_alphanumeric())
                .unwrap_or(len);
            let words: Vec<&str> = TOKENS
                .iter()
                .copied()
                .filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .collect();
            src.splice(start..end, rng.pick(&words).bytes());
        }
    }
}

fn model(body: &str) -> String {
    format!("model m {{\n  input x: f32[B, 3, 32, 32]\n{body}\n}}\n")
}

/// Hand-written pathological programs: deep nesting, long chains, huge repeats.
fn pathological() -> Vec<(String, Vec<u8>)> {
    let n = 10_000;
    let mut out: Vec<(String, String)> = vec![
        ("parens".into(), model(&format!("  return x |> linear({}1{})", "(".repeat(n), ")".repeat(n)))),
        ("unclosed parens".into(), model(&format!("  return {}", "(".repeat(n)))),
        ("lists".into(), model(&format!("  y = {}1{}\n  return x", "[".repeat(n), "]".repeat(n)))),
        ("braces".into(), "{".repeat(n)),
        ("closers".into(), model(&")]}".repeat(n))),
        ("parens hidden by block comments".into(), model(&format!("  return x |> linear({}1{})", "( /* ) */ ".repeat(n), ")".repeat(n)))),
        ("parens after a quote in a block comment".into(), model(&format!("  return x |> linear(/* \" */ {}1{})", "(".repeat(n), ")".repeat(n)))),
        ("exactly the nesting limit".into(), model(&format!("  return x |> global_avg_pool |> linear({}10{})", "(".repeat(62), ")".repeat(62)))),
        ("long pipe".into(), model(&format!("  return x{}", " |> relu".repeat(100_000)))),
        ("long sum".into(), model(&format!("  c = 1{}\n  return x", " + 1".repeat(100_000)))),
        ("long product".into(), model(&format!("  c = 1{}\n  return x", " * 1".repeat(100_000)))),
        ("long list".into(), model(&format!("  c = [{}]\n  return x", "1, ".repeat(200_000)))),
        ("many args".into(), model(&format!("  return x |> relu({})", "1, ".repeat(100_000)))),
        ("many lets".into(), model(&format!("{}  return x", "  c = 1\n".repeat(100_000)))),
        ("long string".into(), model(&format!("  c = \"{}\"\n  return x", "a".repeat(1_000_000)))),
        ("long name".into(), model(&format!("  {} = 1\n  return x", "a".repeat(1_000_000)))),
        ("huge repeat".into(), model("  return x |> repeat 1000000000 relu")),
        ("nested repeats".into(), model("  return x |> repeat 10000 (relu |> repeat 10000 relu)")),
        ("nested repeats of nothing".into(), model("  return x |> repeat 10000 (shortcut(3) |> repeat 10000 (shortcut(3) |> repeat 10000 (shortcut(3) |> repeat 0 relu)))")),
        ("nested named repeats".into(), model("  return x |> repeat 10000 (shortcut(3) |> repeat 10000 shortcut(3) as r) as s")),
        ("nested repeats of a def".into(), model("  def id() = shortcut(3)\n  return x |> repeat 10000 (id |> repeat 10000 id)")),
        ("repeat of a wide layer".into(), model("  return x |> repeat 10000 conv2d(4096, 3, padding: 1)")),
        ("huge conv".into(), model("  return x |> conv2d(9223372036854775807, 9223372036854775807)")),
        ("huge dims".into(), "model m {\n  input x: f32[18446744073709551615, 18446744073709551615, 18446744073709551615, 18446744073709551615]\n  return x |> conv2d(8, 3) |> flatten |> linear(10)\n}\n".into()),
        ("huge stride".into(), model("  return x |> conv2d(8, 3, stride: 9223372036854775807, padding: 9223372036854775807, dilation: 9223372036854775807)")),
        ("huge pool".into(), model("  return x |> maxpool(9223372036854775807, stride: 9223372036854775807, padding: 4611686018427387903)")),
        ("huge flexconv".into(), model("  return x |> flexconv(9223372036854775807, horizon: 9223372036854775807)")),
        ("huge lc".into(), model("  return x |> lc(4611686018427387904, 3, expansion: 4)")),
        ("huge shortcut".into(), model("  return x |> shortcut(9223372036854775807, stride: 9223372036854775807)")),
        ("huge slots".into(), model("  slots s = pool_slots(count: 9223372036854775807, active: 4611686018427387903)\n  return x |> slot(s)")),
        ("huge basis".into(), model("  basis b = shared_basis(channels: 3, shared: 9223372036854775807, unique: 9223372036854775807)\n  return x |> basis_conv(b)")),
        ("huge arithmetic".into(), model("  c = 9223372036854775807 * 9223372036854775807 + 1e308 * 1e308\n  return x")),
        ("min int".into(), model("  c = -9223372036854775807 - 1\n  d = c / -1\n  return x")),
        ("huge concat dim".into(), model("  return concat(x, x, dim: -9223372036854775807)")),
        ("all defaults".into(), model("  return x |> flexconv(3) |> lc(3, 1) |> conv1d(3, 1)")),
        // Legal, but far beyond any machine: the memory check refuses them downstream.
        ("billions of channels".into(), model("  return x |> conv2d(1000000000, 3) |> relu")),
        ("two billion features".into(), model("  return x |> conv2d(30, 3) |> global_avg_pool |> linear(2147483648)")),
        ("ten million channels".into(), model("  return x |> conv2d(10000000, 3)")),
        ("horizon 100001".into(), model("  return x |> flexconv(4, horizon: 100001)")),
        ("wide input".into(), "model m {\n  input x: f32[B, 3, 32, 1000000000000]\n  return x |> flexconv(4, horizon: 33) |> conv2d(4, 3) |> relu\n}\n".into()),
    ];
    // Block and template call chains deeper than the call-depth limit.
    for kind in ["block", "def"] {
        let mut src = String::from("model m {\n  input x: f32[B, 3, 8, 8]\n");
        for i in 0..100 {
            let next = if i == 99 {
                "relu".to_string()
            } else {
                format!("f{}", i + 1)
            };
            if kind == "block" {
                src += &format!("  block f{i}() (h) {{\n    return h |> {next}\n  }}\n");
            } else {
                src += &format!("  def f{i}() = {next}\n");
            }
        }
        src += "  return x |> f0\n}\n";
        out.push((format!("100-deep {kind} chain"), src));
    }
    // As deep as the limits allow: these compile, and must fit a 2 MiB test thread.
    let chain = " |> relu".repeat(250);
    out.push((
        "pipe at the depth limit".into(),
        model(&format!("  return x{chain}")),
    ));
    out.push((
        "composition at the depth limit".into(),
        model(&format!(
            "  def f() = relu{chain}\n  return x |> repeat 2 f"
        )),
    ));
    let mut src = String::from("model m {\n  input x: f32[B, 3, 8, 8]\n");
    for i in 0..60 {
        let next = if i == 59 {
            "relu".to_string()
        } else {
            format!("f{}", i + 1)
        };
        src += &format!("  def f{i}() = relu{} |> {next}\n", " |> relu".repeat(200));
    }
    src += "  return x |> f0\n}\n";
    out.push(("60 defs with 200-deep bodies".into(), src));
    // Mutual recursion and self-reference through defaults.
    out.push((
        "mutual recursion".into(),
        model("  def p() = q\n  def q() = p\n  return x |> p"),
    ));
    out.push((
        "default refers to itself".into(),
        model("  def p(c = p) = relu\n  return x |> p"),
    ));
    let mut cases: Vec<(String, Vec<u8>)> =
        out.into_iter().map(|(n, s)| (n, s.into_bytes())).collect();
    let mut bytes = b"model m {\n  input x: f32[B, 3, 32, 32]\n  return x".to_vec();
    for _ in 0..10_000 {
        bytes.extend_from_slice(b" |> relu \xff");
    }
    cases.push(("long non-UTF-8".into(), bytes));
    cases.push(("only invalid bytes".into(), vec![0xff; 100_000]));
    cases.push(("empty".into(), Vec::new()));
    cases
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
    static CAPTURING: RefCell<bool> = const { RefCell::new(false) };
}

/// What a batch of inputs did.
struct Outcomes {
    /// (case, panic message, input) for each panic.
    panics: Vec<(String, String, Vec<u8>)>,
    slow: Vec<(String, Duration)>,
    /// How many inputs compiled (`ok`) or failed with each error code.
    codes: BTreeMap<&'static str, usize>,
    /// Of those that compiled, how many each downstream stage ran or refused.
    downstream: BTreeMap<&'static str, usize>,
    /// Time in `compile_bytes`, and in each stage after it.
    front: Duration,
    back: BTreeMap<&'static str, Duration>,
}

/// What happens to a checked module in `fnetc compile`, `init` and `bench`: the memory
/// check first, then (within the limit) the passes and the initialiser. Every outcome
/// is a clean success or refusal; a pass error is a compiler bug, so it panics.
fn downstream(
    module: &Module,
    tally: &mut BTreeMap<&'static str, usize>,
    times: &mut BTreeMap<&'static str, Duration>,
) {
    let limit = Limit::new(LIMIT_BYTES, "the fuzz test's");
    let mut count = |what: &'static str| *tally.entry(what).or_insert(0) += 1;
    let graph = &module.graph;
    let mut t = Instant::now();
    let mut lap = |stage: &'static str| {
        *times.entry(stage).or_default() += t.elapsed();
        t = Instant::now();
    };
    // `bench --batch 100000000`: refused by any model with an input.
    let big = check(graph, Need::Run { batch: 100_000_000 }, &limit);
    count(if big.is_ok() {
        "batch 1e8 fits"
    } else {
        "batch 1e8 refused"
    });
    lap("memory check");
    let mut compiled = None;
    if check(graph, Need::Compile, &limit).is_ok() {
        let mut g = graph.clone();
        let mut ctx = PassContext::new(CompileMode::Inference);
        if let Err(e) = default_pipeline(CompileMode::Inference).run(&mut g, &mut ctx, &mut |_| {})
        {
            panic!("the passes failed on a checked program: {e}");
        }
        count("compiled");
        compiled = Some(g);
    } else {
        count("compile refused");
    }
    lap("passes");
    let mut params = None;
    if check(graph, Need::Init, &limit).is_ok() {
        match fnet::runtime::initialise::<f32>(graph, graph.seed) {
            Ok(p) => {
                count("initialised");
                params = Some(p);
            }
            Err(_) => count("init failed cleanly"),
        }
    } else {
        count("init refused");
    }
    lap("init");
    if let (Some(g), Some(p)) = (compiled, params) {
        jit_compile(&g, &p, &limit, &mut count);
        lap("plan + JIT compile");
    }
}

/// At most this many checked variants per test are lowered and JIT-compiled (each
/// takes milliseconds; all 30 000 would take minutes).
const JIT_SAMPLE: usize = 150;

thread_local! {
    static JIT_LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(JIT_SAMPLE) };
    static JIT: fnet::jit::Compiler = fnet::jit::Compiler::new().expect("a JIT for this CPU");
}

/// What `fnetc bench --backend jit --batch 1` does before it runs: the memory check,
/// the plan for a batch of 1 (native conv steps included), and loading it on the JIT:
/// the compile of every kernel and the checks of every native step. Lowering may refuse
/// a program cleanly (an op it does not support); the JIT compiling a lowered plan
/// must not fail, since its kernels are type-checked.
fn jit_compile(
    g: &fnet::ir::Graph,
    params: &fnet::runtime::ParamStore<f32>,
    limit: &Limit,
    count: &mut dyn FnMut(&'static str),
) {
    let left = JIT_LEFT.with(|n| n.replace(n.get().saturating_sub(1)));
    if left == 0 {
        return;
    }
    if check(g, Need::Run { batch: 1 }, limit).is_err() {
        return count("plan refused (memory)");
    }
    let Ok(x) = fnet::cli::bench::bench_input(g, 1) else {
        return count("no single input to plan for");
    };
    let target = fnet::backend::JitBackend::default_target();
    match fnet::kernel_ir::plan::build_plan(g, params, std::slice::from_ref(&x.shape), target) {
        Ok(plan) => {
            // Loading compiles every kernel and checks every native step's geometry
            // and buffers against the micro-kernels' rules.
            if let Err(e) = JIT.with(|c| fnet::jit::JitExecutable::new(c, plan)) {
                panic!("the JIT failed on a lowered plan: {e}");
            }
            count("JIT-compiled");
        }
        Err(_) => count("plan refused cleanly"),
    }
}

/// Runs every case under `catch_unwind`, timing each.
fn run(cases: &[(String, Vec<u8>)]) -> Outcomes {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(|c| *c.borrow()) {
                LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
            } else {
                default(info);
            }
        }));
    });
    let mut panics = Vec::new();
    let mut slow = Vec::new();
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut tally = BTreeMap::new();
    let (mut front, mut back) = (Duration::ZERO, BTreeMap::new());
    for (name, bytes) in cases {
        if std::env::var_os("NO_PANIC_TRACE").is_some() {
            eprintln!("{name}");
        }
        let t = Instant::now();
        CAPTURING.with(|c| *c.borrow_mut() = true);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let checked = compile_bytes("fuzz.fnet", bytes, &Options::default());
            front += t.elapsed();
            match checked {
                Ok((_, module)) => {
                    downstream(&module, &mut tally, &mut back);
                    "ok"
                }
                Err(r) => {
                    // Rendering does span arithmetic on the (possibly broken) source.
                    assert!(r.render().starts_with("error["));
                    r.diagnostics[0].code
                }
            }
        }));
        CAPTURING.with(|c| *c.borrow_mut() = false);
        let took = t.elapsed();
        match result {
            Ok(code) => *outcomes.entry(code).or_insert(0) += 1,
            Err(_) => {
                let message = LAST_PANIC.with(|p| p.borrow().clone());
                panics.push((name.clone(), message, bytes.clone()));
            }
        }
        if took > SLOW {
            slow.push((name.clone(), took));
        }
    }
    Outcomes {
        panics,
        slow,
        codes: outcomes,
        downstream: tally,
        front,
        back,
    }
}

fn report(what: &str, panics: &[(String, String, Vec<u8>)], slow: &[(String, Duration)]) {
    // Slow inputs are reported, not failed: wall-clock time depends on the machine's
    // load, and a real hang would hit the test harness's timeout instead.
    for (name, took) in slow.iter().take(8) {
        eprintln!("note: {what}: {name} took {took:?}");
    }
    if panics.is_empty() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/no_panic");
    std::fs::create_dir_all(&dir).expect("target/no_panic");
    let mut msg = format!(
        "{what}: {} panics, {} slow inputs\n",
        panics.len(),
        slow.len()
    );
    for (i, (name, message, bytes)) in panics.iter().enumerate() {
        let path = dir.join(format!("{}_{i}.fnet", what.replace(' ', "_")));
        std::fs::write(&path, bytes).expect("write reproducer");
        if i < 8 {
            msg += &format!("  panic on {name} ({}): {message}\n", path.display());
        }
    }
    panic!("{msg}");
}

#[test]
fn random_mutations_never_panic() {
    let seeds = seeds();
    assert!(
        seeds.len() >= 40,
        "examples and diagnostics seed the generator"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = Vec::with_capacity(VARIANTS);
    for i in 0..VARIANTS {
        let (name, seed) = &seeds[i % seeds.len()];
        let mut src = seed.clone();
        let rounds = 1 + rng.below(2);
        for _ in 0..rounds {
            mutate(&mut rng, &mut src);
        }
        cases.push((format!("variant {i} of {name}"), src));
    }
    assert!(cases.len() >= 10_000);
    let t = Instant::now();
    let out = run(&cases);
    eprintln!(
        "{} mutated programs in {:?} ({:?} checking; downstream {:?}): {:?}; downstream {:?}",
        cases.len(),
        t.elapsed(),
        out.front,
        out.back,
        out.codes,
        out.downstream
    );
    report("mutated", &out.panics, &out.slow);
    // The generator must reach past the parser: many variants should parse and fail
    // (or succeed) in the elaborator.
    let unparsed: usize = ["E0001", "E0003", "E0005"]
        .iter()
        .map(|c| out.codes.get(c).copied().unwrap_or(0))
        .sum();
    assert!(
        unparsed * 4 < cases.len() * 3,
        "{unparsed} of {} variants do not parse; the mutations are too blunt",
        cases.len()
    );
    // The sample reaches the JIT: mutants of working models still lower.
    let jitted = out.downstream.get("JIT-compiled").copied().unwrap_or(0);
    assert!(jitted >= 20, "only {jitted} variants were JIT-compiled");
}

#[test]
fn pathological_programs_never_panic_or_hang() {
    let cases = pathological();
    let t = Instant::now();
    let out = run(&cases);
    eprintln!(
        "{} pathological programs in {:?}; downstream {:?}",
        cases.len(),
        t.elapsed(),
        out.downstream
    );
    report("pathological", &out.panics, &out.slow);
    // The allocation cases pass `check`; the memory check refuses each downstream.
    for name in [
        "billions of channels",
        "two billion features",
        "ten million channels",
    ] {
        let (_, bytes) = cases.iter().find(|(n, _)| n == name).expect("case");
        let (_, module) = compile_bytes(name, bytes, &Options::default()).expect("checks");
        let limit = Limit::new(LIMIT_BYTES, "the test's");
        let err = check(&module.graph, Need::Init, &limit).expect_err(name);
        assert_eq!(err.code, "E0701", "{name}");
    }
    for name in ["horizon 100001", "wide input"] {
        let (_, bytes) = cases.iter().find(|(n, _)| n == name).expect("case");
        let (_, module) = compile_bytes(name, bytes, &Options::default()).expect("checks");
        let limit = Limit::new(LIMIT_BYTES, "the test's");
        assert!(check(&module.graph, Need::Init, &limit).is_ok(), "{name}");
        let err = check(&module.graph, Need::Run { batch: 1 }, &limit).expect_err(name);
        assert_eq!(err.code, "E0701", "{name}");
    }
}

#[test]
fn the_seeds_compile_or_fail_cleanly() {
    // The examples must compile; the mutations start from working programs.
    for (name, bytes) in seeds() {
        let result = compile_bytes(&name, &bytes, &Options::default());
        if name.starts_with(&format!("{}/examples", env!("CARGO_MANIFEST_DIR"))) {
            assert!(result.is_ok(), "{name} should compile");
        } else {
            assert!(result.is_err(), "{name} should fail");
        }
    }
}

/// What each pathological program must produce: an error code, or `ok`.
const EXPECTED: &[(&str, &str)] = &[
    ("parens", "E0003"),
    ("unclosed parens", "E0003"),
    ("lists", "E0003"),
    ("braces", "E0003"),
    ("closers", "E0001"),
    ("parens hidden by block comments", "E0003"),
    ("parens after a quote in a block comment", "E0003"),
    ("exactly the nesting limit", "ok"),
    ("long pipe", "E0003"),
    ("long sum", "E0003"),
    ("long product", "E0003"),
    ("long list", "ok"),
    ("many args", "E0206"),
    ("many lets", "ok"),
    ("long string", "ok"),
    ("long name", "ok"),
    ("huge repeat", "E0204"),
    ("nested repeats", "E0301"),
    ("nested repeats of nothing", "E0301"),
    ("nested named repeats", "E0301"),
    ("nested repeats of a def", "E0301"),
    ("repeat of a wide layer", "ok"),
    ("huge conv", "E0302"),
    ("huge dims", "E0302"),
    ("huge stride", "E0401"),
    ("huge pool", "ok"),
    ("huge flexconv", "E0302"),
    ("huge lc", "E0302"),
    ("huge shortcut", "ok"),
    ("huge slots", "E0204"),
    ("huge basis", "E0302"),
    ("huge arithmetic", "E0004"),
    ("min int", "E0004"),
    ("huge concat dim", "E0204"),
    ("all defaults", "E0401"),
    ("billions of channels", "ok"),
    ("two billion features", "ok"),
    ("ten million channels", "ok"),
    ("horizon 100001", "ok"),
    ("wide input", "ok"),
    ("100-deep block chain", "E0307"),
    ("100-deep def chain", "E0307"),
    ("pipe at the depth limit", "ok"),
    ("composition at the depth limit", "ok"),
    ("60 defs with 200-deep bodies", "ok"),
    ("mutual recursion", "E0307"),
    ("default refers to itself", "ok"),
    ("long non-UTF-8", "E0005"),
    ("only invalid bytes", "E0005"),
    ("empty", "E0001"),
];

#[test]
fn pathological_programs_get_the_expected_outcome() {
    let cases = pathological();
    assert_eq!(cases.len(), EXPECTED.len(), "every case has an expectation");
    for (name, bytes) in cases {
        let want = EXPECTED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no expectation for {name}"))
            .1;
        let got = match compile_bytes("p.fnet", &bytes, &Options::default()) {
            Ok(_) => "ok".to_string(),
            Err(report) => report.diagnostics[0].code.to_string(),
        };
        assert_eq!(got, want, "{name}");
    }
}
