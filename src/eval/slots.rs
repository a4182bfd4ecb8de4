//! Pooling slots (Balanced Mixture of SuperNets, docs/papers.md §4): a family declares N
//! places where downsampling may happen and how many (K) do; a configuration picks
//! which. The graph is specialised for one configuration at a time.

use super::args::{opt, req, ParamSpec, Ty};
use super::builtins::BuiltinCall;
use super::elab::Elab;
use super::layers::pool_spec;
use super::value::{Callee, LayerValue, Spanned, Value};
use crate::diag::{Diagnostic, Span};
use crate::ir::graph::SlotFamily;
use crate::ir::op::{Op, PoolKind};
use petgraph::stable_graph::NodeIndex;

/// Most slots one family may declare.
pub const MAX_SLOTS: u64 = 1024;

pub fn params() -> Vec<ParamSpec> {
    vec![
        req("count", Ty::Int),
        req("active", Ty::Int),
        opt("pool", Ty::LayerOrNone, Value::Word("none".into())),
        opt("default", Ty::List, Value::Word("none".into())),
    ]
}

#[derive(Debug)]
pub struct SlotState {
    pub name: String,
    pub span: Span,
    pub pool: Option<(PoolKind, super::args::Bound)>,
    pub family: usize,
}

/// Number of ways to choose `k` of `n`, saturating.
pub fn choose(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    (0..k).fold(1u64, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

/// Checks a configuration: `active` distinct slots in 1..=count. The error is a
/// message naming the first problem and a hint describing the valid choices.
pub fn validate_config(config: &[u64], count: u64, active: u64) -> Result<(), (String, String)> {
    let problem = if let Some(bad) = config.iter().find(|s| !(1..=count).contains(*s)) {
        Some(format!(
            "slot {bad} does not exist; slots are numbered 1 to {count}"
        ))
    } else if let Some((_, dup)) = config
        .iter()
        .enumerate()
        .find(|(i, s)| config[..*i].contains(s))
    {
        Some(format!("slot {dup} is listed twice"))
    } else if config.len() as u64 != active {
        Some(format!(
            "the configuration names {} slot(s), but `active` is {active}",
            config.len()
        ))
    } else {
        None
    };
    let Some(problem) = problem else {
        return Ok(());
    };
    let example: Vec<String> = (1..=active.min(count)).map(|i| i.to_string()).collect();
    Err((
        format!("invalid slot configuration {config:?}: {problem}"),
        format!(
            "choose {active} distinct slots from 1 to {count} ({} configurations), e.g. [{}]",
            choose(count, active),
            example.join(", ")
        ),
    ))
}

impl Elab<'_> {
    /// `slots NAME = pool_slots(...)`.
    pub(crate) fn declare_slots(
        &mut self,
        name: &str,
        spec: &Spanned,
        span: Span,
    ) -> Result<usize, Diagnostic> {
        let s = match &spec.value {
            Value::Spec(s) if s.kind == "pool_slots" => s.clone(),
            other => {
                return Err(Diagnostic::at(
                    "E0202",
                    spec.span,
                    format!(
                        "`slots {name}` needs `pool_slots(...)`, got {}",
                        other.type_name()
                    ),
                    "not a slot family",
                )
                .hint("declare it as `slots NAME = pool_slots(count: N, active: K)`"))
            }
        };
        let a = &s.args;
        let count = a.positive("count")?;
        if count > MAX_SLOTS {
            return Err(Diagnostic::at(
                "E0204",
                a.span("count"),
                format!("a slot family has at most {MAX_SLOTS} slots, got {count}"),
                "too many slots",
            )
            .hint("each slot is one `slot(...)` use in the model; real supernets have a few"));
        }
        let active = u64::try_from(a.int("active"))
            .ok()
            .filter(|k| *k <= count)
            .ok_or_else(|| {
                Diagnostic::at(
                    "E0204",
                    a.span("active"),
                    format!("`active` must be between 0 and count = {count}"),
                    "out of range",
                )
                .hint("`active` is how many of the slots downsample")
            })?;
        let pool = match a.value("pool") {
            Value::Layer(l) => match &**l {
                LayerValue::Call {
                    callee: Callee::Builtin(b @ ("maxpool" | "avgpool")),
                    args,
                    span,
                    ..
                } => {
                    let builtin = super::builtins::lookup(b).expect("pool builtin");
                    let bound = super::args::bind(b, &(builtin.params)(), args, *span)?;
                    Some((
                        if *b == "maxpool" {
                            PoolKind::Max
                        } else {
                            PoolKind::Avg
                        },
                        bound,
                    ))
                }
                _ => {
                    return Err(Diagnostic::at(
                        "E0202",
                        a.span("pool"),
                        "a slot's pool must be `maxpool(...)` or `avgpool(...)`",
                        "not a pool",
                    )
                    .hint("e.g. `pool: maxpool(2)`"))
                }
            },
            _ => None,
        };
        let family_ix = self.graph.slots.len();
        let config = if let (Some(cfg), 0) = (&self.slot_config, family_ix) {
            validate_config(cfg, count, active).map_err(|(m, h)| {
                Diagnostic::at(
                    "E0501",
                    span,
                    format!("`--config`: {m}"),
                    "slot family declared here",
                )
                .hint(format!(
                    "{h}; pass them comma-separated, e.g. `--config 4,7`"
                ))
            })?;
            cfg.clone()
        } else {
            match a.value("default") {
                Value::List(items) => {
                    let mut cfg = Vec::new();
                    for it in items {
                        match it.value {
                            Value::Int(v) if v > 0 => cfg.push(v as u64),
                            _ => {
                                return Err(Diagnostic::at(
                                    "E0501",
                                    it.span,
                                    "slot numbers are positive ints",
                                    "not a slot number",
                                )
                                .hint(format!("slots are numbered 1 to {count}")))
                            }
                        }
                    }
                    validate_config(&cfg, count, active).map_err(|(m, h)| {
                        Diagnostic::at("E0501", a.span("default"), m, "invalid default").hint(h)
                    })?;
                    cfg
                }
                // Without a default, the first configuration in lexicographic order.
                _ => (1..=active).collect(),
            }
        };
        let mut sorted = config.clone();
        sorted.sort();
        self.graph.slots.push(SlotFamily {
            name: name.to_string(),
            count,
            active,
            config: sorted,
            placed: 0,
        });
        self.slot_states.push(SlotState {
            name: name.to_string(),
            span,
            pool,
            family: family_ix,
        });
        Ok(self.slot_states.len() - 1)
    }

    /// Every family must place exactly the slots it declares.
    pub(crate) fn check_slots_placed(&self) -> Result<(), Diagnostic> {
        for st in &self.slot_states {
            let f = &self.graph.slots[st.family];
            if f.placed != f.count {
                return Err(Diagnostic::at(
                    "E0502",
                    st.span,
                    format!(
                        "slot family `{}` declares {} slots but the model places {}",
                        st.name, f.count, f.placed
                    ),
                    "declared here",
                )
                .hint("every `slot(...)` use is one slot; make the count match"));
            }
        }
        Ok(())
    }
}

pub fn apply(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    let dims = e.spatial_dims(x, "slot", &[3, 4], c.span)?;
    let Value::Slots(ix) = c.args.value("family") else {
        unreachable!("typed as slots")
    };
    let st = &e.slot_states[*ix];
    let (name, fam) = (st.name.clone(), st.family);
    let pool = match &st.pool {
        Some((kind, bound)) => pool_spec(bound, *kind, dims)?,
        None => crate::ir::op::PoolSpec {
            kind: PoolKind::Max,
            kernel: vec![2; dims],
            stride: vec![2; dims],
            padding: vec![0; dims],
        },
    };
    let declared = e.slot_states[*ix].span;
    let f = &mut e.graph.slots[fam];
    f.placed += 1;
    let index = f.placed;
    if index > f.count {
        return Err(Diagnostic::at(
            "E0502",
            c.span,
            format!(
                "slot family `{name}` declares {} slots; this is slot {index}",
                f.count
            ),
            "one slot too many",
        )
        .label(declared, "declared here")
        .hint("every `slot(...)` use is one slot; raise `count` or place fewer slots"));
    }
    let active = f.config.contains(&index);
    e.op(
        Op::Slot {
            family: name,
            index,
            active,
            pool,
        },
        &[x],
        &c.path,
        c.span,
    )
}
