//! Parameter tensors by stable name: creating them from the graph's initialisers
//! (`fnetc init`), and checking a loaded weights file against the graph.

use super::error::RunError;
use crate::init::{self, FanMode as InitFan, InitRng};
use crate::ir::graph::Graph;
use crate::ir::op::{FanMode, Init, Op, ParamRole};
use crate::tensor::{Scalar, Tensor};
use std::collections::BTreeMap;

/// Named tensors: every trainable, frozen and shared parameter and every buffer.
pub type ParamStore<T> = BTreeMap<String, Tensor<T>>;

/// The concrete shape of a parameter node (parameters never have symbolic sizes).
pub fn param_shape(graph: &Graph, name: &str) -> Option<Vec<usize>> {
    graph
        .params()
        .find(|(_, n, _)| n.name == name)
        .and_then(|(_, n, _)| {
            n.ty.shape
                .iter()
                .map(|d| d.known().map(|v| v as usize))
                .collect()
        })
}

/// 64-bit FNV-1a: a stable hash (unlike `DefaultHasher`) for deriving per-tensor seeds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The seed of a tensor's random stream: its own `seed`, else the model seed mixed
/// with its name, so adding a layer never changes the other layers' values.
pub fn tensor_seed(model_seed: u64, name: &str, explicit: Option<u64>) -> u64 {
    explicit
        .unwrap_or_else(|| fnv1a(name.as_bytes()) ^ model_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Initialises every parameter and buffer of `graph` with its declared initialiser.
/// The same graph and seed give the same bytes.
pub fn initialise<T: Scalar>(graph: &Graph, seed: u64) -> Result<ParamStore<T>, RunError> {
    let mut store = ParamStore::new();
    let params: Vec<(String, Vec<usize>, Init, Option<u64>)> = graph
        .params()
        .map(|(_, n, _)| {
            let Op::Param { init, seed, .. } = &n.op else {
                unreachable!("params() yields params")
            };
            let shape =
                n.ty.shape
                    .iter()
                    .map(|d| d.known().unwrap_or(0) as usize)
                    .collect();
            (n.name.clone(), shape, init.clone(), *seed)
        })
        .collect();
    // MAGNet sine weights scale by their γ, so they come after everything else.
    let (late, early): (Vec<_>, Vec<_>) = params
        .into_iter()
        .partition(|p| matches!(p.2, Init::MagnetSine { .. }));
    for (name, shape, init, explicit) in early.into_iter().chain(late) {
        let mut rng = init::seeded(tensor_seed(seed, &name, explicit));
        let t = init_one::<T>(&mut rng, &name, &shape, &init, &store, seed)?;
        store.insert(name, t);
    }
    Ok(store)
}

/// Initialises the one parameter `name` exactly as `initialise(graph, seed)` would (each
/// tensor has its own random stream), for passes that need a single seeded value.
pub fn initialise_param<T: Scalar>(
    graph: &Graph,
    seed: u64,
    name: &str,
) -> Result<Tensor<T>, RunError> {
    let Some((_, node, _)) = graph.params().find(|(_, n, _)| n.name == name) else {
        return Err(RunError::new(format!("no parameter `{name}` in the graph")));
    };
    let Op::Param {
        init, seed: own, ..
    } = &node.op
    else {
        unreachable!("params() yields params")
    };
    let shape: Vec<usize> = node
        .ty
        .shape
        .iter()
        .map(|d| d.known().unwrap_or(0) as usize)
        .collect();
    // A MAGNet sine weight scales by its γ, which must exist first.
    let mut done = ParamStore::new();
    if let Init::MagnetSine { gamma, .. } = init {
        done.insert(gamma.clone(), initialise_param::<T>(graph, seed, gamma)?);
    }
    let mut rng = init::seeded(tensor_seed(seed, name, *own));
    init_one::<T>(&mut rng, name, &shape, init, &done, seed)
}

fn init_one<T: Scalar>(
    rng: &mut InitRng,
    name: &str,
    shape: &[usize],
    init: &Init,
    done: &ParamStore<T>,
    seed: u64,
) -> Result<Tensor<T>, RunError> {
    let bound = |fan: u64| 1.0 / (fan.max(1) as f64).sqrt();
    Ok(match init {
        Init::Zeros => init::zeros(shape),
        Init::Ones => init::ones(shape),
        Init::Const(v) => init::constant(shape, *v),
        Init::KaimingUniform { fan_in } => {
            init::uniform(rng, shape, -bound(*fan_in), bound(*fan_in))
        }
        Init::KaimingNormal { fan, gain, .. } => init::normal(rng, shape, 0.0, gain * bound(*fan))?,
        Init::Uniform { low, high } => init::uniform(rng, shape, *low, *high),
        Init::Normal { mean, std } => init::normal(rng, shape, *mean, *std)?,
        Init::Gamma { alpha, beta } => init::gamma(rng, shape, *alpha, *beta)?,
        Init::Orthogonal { part, parts } => {
            // All parts of one basis come from one orthogonal matrix, drawn from a
            // stream keyed by the basis (the name without `.{part}.weight`).
            let group = name.rsplitn(3, '.').nth(2).unwrap_or(name);
            let mut group_rng = init::seeded(tensor_seed(seed, group, None));
            let rows = shape.first().copied().unwrap_or(0);
            let mut full_shape = shape.to_vec();
            full_shape[0] = rows * *parts as usize;
            let full: Tensor<T> = init::orthogonal(&mut group_rng, &full_shape, 1.0)?;
            let per = full.numel() / *parts as usize;
            let start = *part as usize * per;
            Tensor::from_vec(shape.to_vec(), full.data[start..start + per].to_vec())?
        }
        Init::MagnetSine {
            fan_in,
            scale,
            gamma,
        } => {
            let g = done.get(gamma).ok_or_else(|| {
                RunError::new(format!(
                    "`{name}` needs `{gamma}`, which is not initialised"
                ))
            })?;
            let w: Tensor<T> = init::uniform(rng, shape, -bound(*fan_in), bound(*fan_in));
            if g.shape != w.shape {
                return Err(RunError::new(format!(
                    "`{name}` {:?} and `{gamma}` {:?} differ in shape",
                    w.shape, g.shape
                )));
            }
            let s = T::from_f64(*scale);
            Tensor::from_vec(
                w.shape.clone(),
                w.data
                    .iter()
                    .zip(&g.data)
                    .map(|(&w, &g)| w * s * g)
                    .collect(),
            )?
        }
        Init::GaussMask { mean, sigma } => {
            let rows = shape.first().copied().unwrap_or(0);
            let data = (0..rows)
                .flat_map(|_| [T::from_f64(*mean), T::from_f64(*sigma)])
                .collect();
            Tensor::from_vec(shape.to_vec(), data)?
        }
    })
}

/// Unused-import guard: the init module's fan enum mirrors the IR's.
pub fn fan_mode(m: FanMode) -> InitFan {
    match m {
        FanMode::In => InitFan::FanIn,
        FanMode::Out => InitFan::FanOut,
    }
}

/// Checks that `store` holds exactly the graph's tensors with the right shapes, and
/// names every problem at once.
pub fn check_store<T>(graph: &Graph, store: &ParamStore<T>, file: &str) -> Result<(), RunError>
where
    T: Scalar,
{
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (_, node, role) in graph.params() {
        let want: Vec<usize> = node
            .ty
            .shape
            .iter()
            .map(|d| d.known().unwrap_or(0) as usize)
            .collect();
        match store.get(&node.name) {
            None => missing.push(format!("{} {:?} ({})", node.name, want, role.name())),
            Some(t) if t.shape != want => misshaped.push(format!(
                "{}: expected {:?}, found {:?}",
                node.name, want, t.shape
            )),
            Some(_) => {}
        }
    }
    let known: std::collections::BTreeSet<&str> =
        graph.params().map(|(_, n, _)| n.name.as_str()).collect();
    let extra: Vec<&str> = store
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if missing.is_empty() && misshaped.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "weights file `{file}` does not match model `{}`",
        graph.name
    );
    let list = |title: &str, items: &[String]| {
        let shown: Vec<&str> = items.iter().take(20).map(String::as_str).collect();
        let more = if items.len() > 20 {
            format!("\n    ... and {} more", items.len() - 20)
        } else {
            String::new()
        };
        format!(
            "\n  {title} ({}):\n    {}{more}",
            items.len(),
            shown.join("\n    ")
        )
    };
    if !missing.is_empty() {
        msg += &list("missing tensors", &missing);
    }
    if !misshaped.is_empty() {
        msg += &list("tensors with the wrong shape", &misshaped);
    }
    if !extra.is_empty() {
        msg += &list(
            "tensors the model does not have",
            &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
    }
    Err(RunError::new(msg).hint("create matching weights with `fnetc init MODEL -o FILE`, or check the model and `--config`/`--set` options"))
}

/// Roles by name, for reports.
pub fn roles(graph: &Graph) -> BTreeMap<String, ParamRole> {
    graph
        .params()
        .map(|(_, n, r)| (n.name.clone(), r))
        .collect()
}
