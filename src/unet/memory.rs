//! The memory plan of a U-Net pass: which tensors are alive when, and which
//! pooled buffer each one lives in. Planned once per (model, batch,
//! resolution, plan kind) on the host, before anything is allocated, so
//! `tweedie info` can print a plan's bytes without a GPU run, and a test checks
//! that the buffers a planned pass really creates add up to [`MemoryPlan::bytes`].
//!
//! # Liveness
//! The forward layers run at times 0..L, the backward of layer `i` at time
//! 2L - 1 - i. An activation lives from the layer that writes it to its last
//! reader: the last forward layer that reads it, or, in a forward + VJP plan,
//! the backward of a layer that needs it there (a GroupNorm's input and
//! scale-shift, an attention's qkv and output; a convolution's input gradient
//! needs only the weights and dy, so convolution inputs die in the forward
//! pass). A gradient lives from its first contribution (the backward of its
//! activation's last reader) to the backward of the layer that wrote the
//! activation.
//!
//! # Pooling
//! Image activations and gradients share a pool of buffers. Largest tensors
//! first, each takes the first buffer that holds no tensor alive at the same
//! time, else a new buffer of its size. The U-Net's tensor sizes come in few
//! distinct values, so the pool ends close to [`MemoryPlan::peak`], the most
//! bytes alive at once. Kernels bind whole
//! buffers and take their sizes from their parameters, so a tensor in a larger
//! buffer reads and writes only its own prefix.
//!
//! The input x, the output, the input gradient dx and the small tensors
//! (time-embedding vectors, GroupNorm statistics, attention log-sum-exps,
//! timesteps) have buffers of their own: callers read the first three, and the
//! rest would pin a large pooled buffer for a whole pass.
//!
//! # Residual gradients
//! Where a convolution adds a residual r with scale 1 and is the first (in
//! backward order) to contribute to r's gradient, that contribution is dy
//! itself: r's gradient takes over dy's buffer (which dies at that point) and
//! no dispatch runs for it ([`MemoryPlan::residual_alias`]).

use super::graph::{Act, ActId, Graph};
use super::layers::{Buffers, Dataflow, Sizes};
use crate::tensor::DType;

/// What a plan holds on to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanKind {
    /// The forward pass only: every activation dies after its last reader.
    Forward,
    /// The forward pass keeping what the input VJP needs, and the VJP's gradients.
    ForwardVjp,
}

/// One planned buffer outside the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnBuffer {
    pub label: String,
    pub bytes: u64,
}

impl OwnBuffer {
    /// A buffer asked for `bytes`, at the size the GPU gives it ([`buffer_bytes`]).
    pub fn new(label: impl Into<String>, bytes: u64) -> OwnBuffer {
        OwnBuffer {
            label: label.into(),
            bytes: buffer_bytes(bytes),
        }
    }
}

/// The memory plan of one U-Net pass (see the module docs).
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    pub kind: PlanKind,
    /// Bytes per element of activations and gradients.
    pub elem_bytes: usize,
    /// Size in bytes of each pooled buffer.
    pub slots: Vec<u64>,
    /// The pooled buffer of each activation; `None`: a buffer of its own.
    pub act_slot: Vec<Option<usize>>,
    /// [`PlanKind::ForwardVjp`]: the pooled buffer of each image activation's
    /// gradient; `None` for the output (the cotangent), the input (dx, a
    /// buffer of its own) and vectors (no gradient).
    pub grad_slot: Vec<Option<usize>>,
    /// Per layer: a residual convolution whose residual gradient is dy itself
    /// (shares its buffer; no dispatch).
    pub residual_alias: Vec<bool>,
    /// Every buffer outside the pool, in the order the planned pass creates them.
    pub own: Vec<OwnBuffer>,
    /// The most bytes of pooled tensors alive at any one time.
    pub peak: u64,
}

/// Bytes of a storage buffer asked for `bytes` ([`crate::Gpu::storage_buffer`] rounds
/// up to whole 4-byte words, and to at least one).
pub fn buffer_bytes(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(4) * 4
}

/// A tensor's interval [start, end] on the plan's timeline and its size.
#[derive(Clone, Copy)]
struct Interval {
    start: usize,
    end: usize,
    bytes: u64,
}

impl MemoryPlan {
    /// Plans `kind` for `n` images of `h` x `w`. `own_input`: the pass makes
    /// its own x buffer (else it reads the caller's). The VJP's cotangent is
    /// the caller's (or the one [`crate::unet::UnetVjp::new`] makes) and is
    /// not part of the plan.
    ///
    /// `dtype` is the storage type of activations and gradients. Below f32,
    /// x, the output and dx keep an f32 twin for the caller (cast at the
    /// plan's edges), and the VJP an f32-to-`dtype` copy of the cotangent.
    pub fn new(g: &Graph, n: usize, h: usize, w: usize, kind: PlanKind, own_input: bool, dtype: DType) -> MemoryPlan {
        let elem = dtype.size_bytes();
        let half = dtype != DType::F32;
        let nl = g.layers.len();
        let na = g.acts.len();
        let act_bytes = |a: ActId| (g.act_shape(a, n, h, w).iter().product::<usize>() * elem) as u64;
        let vjp = kind == PlanKind::ForwardVjp;
        let tb = |li: usize| 2 * nl - 1 - li;
        let pooled = |a: ActId| a != g.input && a != g.output && matches!(g.acts[a], Act::Image { .. });

        // Forward activations.
        let mut def = vec![usize::MAX; na];
        let mut last = vec![0usize; na];
        let flows: Vec<Dataflow> = g.layers.iter().map(|l| l.kind().dataflow()).collect();
        for (li, l) in flows.iter().enumerate() {
            def[l.output] = li;
            last[l.output] = last[l.output].max(li);
            for &a in &l.inputs {
                last[a] = last[a].max(li);
            }
            if vjp {
                for &a in &l.saved_for_backward {
                    last[a] = last[a].max(tb(li));
                }
            }
        }

        // Gradients, with residual gradients merged into dy's where they alias:
        // group[a] is the representative of a's gradient buffer.
        let mut residual_alias = vec![false; nl];
        let mut group: Vec<ActId> = (0..na).collect();
        let mut gstart = vec![usize::MAX; na];
        let mut gend = vec![0usize; na];
        if vjp {
            let mut first_writer = vec![usize::MAX; na];
            for (li, l) in flows.iter().enumerate().rev() {
                for &a in &l.gradient_targets {
                    if first_writer[a] == usize::MAX {
                        first_writer[a] = li;
                    }
                }
            }
            for (li, l) in flows.iter().enumerate().rev() {
                let y = l.output;
                if let Some(r) = l.residual_passthrough {
                    if pooled(r) && pooled(y) && first_writer[r] == li {
                        residual_alias[li] = true;
                        group[r] = group[y];
                    }
                }
            }
            for a in 0..na {
                if pooled(a) && first_writer[a] != usize::MAX {
                    let root = group[a];
                    gstart[root] = gstart[root].min(tb(first_writer[a]));
                    gend[root] = gend[root].max(tb(def[a]));
                }
            }
        }

        // Pool: forward activations and gradient groups by start time.
        enum Owner {
            Act(ActId),
            Grad(ActId),
        }
        let mut items: Vec<(Interval, Owner)> = Vec::new();
        for a in (0..na).filter(|&a| pooled(a)) {
            items.push((
                Interval {
                    start: def[a],
                    end: last[a],
                    bytes: act_bytes(a),
                },
                Owner::Act(a),
            ));
        }
        for a in (0..na).filter(|&a| pooled(a) && group[a] == a && gstart[a] != usize::MAX) {
            let bytes = (0..na).filter(|&b| group[b] == a).map(act_bytes).max().unwrap_or(0);
            items.push((
                Interval {
                    start: gstart[a],
                    end: gend[a],
                    bytes,
                },
                Owner::Grad(a),
            ));
        }
        // Largest first: each tensor takes the first buffer none of whose
        // tensors is alive at the same time (every buffer made so far holds it),
        // else a buffer of its own size.
        items.sort_by(|(a, _), (b, _)| b.bytes.cmp(&a.bytes).then(a.start.cmp(&b.start)));
        let mut slots: Vec<u64> = Vec::new();
        let mut taken: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut act_slot = vec![None; na];
        let mut grad_root_slot = vec![None; na];
        for (iv, owner) in &items {
            let clear = |s: &Vec<(usize, usize)>| s.iter().all(|&(a, b)| b < iv.start || iv.end < a);
            let s = match taken.iter().position(clear) {
                Some(s) => s,
                None => {
                    slots.push(iv.bytes);
                    taken.push(Vec::new());
                    slots.len() - 1
                }
            };
            taken[s].push((iv.start, iv.end));
            match owner {
                Owner::Act(a) => act_slot[*a] = Some(s),
                Owner::Grad(a) => grad_root_slot[*a] = Some(s),
            }
        }
        let grad_slot = (0..na)
            .map(|a| grad_root_slot[group[a]].filter(|_| pooled(a)))
            .collect();
        let peak = (0..2 * nl)
            .map(|t| {
                items
                    .iter()
                    .filter(|(iv, _)| iv.start <= t && t <= iv.end)
                    .map(|(iv, _)| iv.bytes)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);

        // Buffers of their own, in the order the forward and VJP plans make them.
        let mut own = Vec::new();
        let mut push = |label: String, bytes: u64| own.push(OwnBuffer::new(label, bytes));
        let f32_bytes = |a: ActId| act_bytes(a) / elem as u64 * 4;
        for a in 0..na {
            if !pooled(a) && (a != g.input || own_input || half) {
                push(format!("activation {a}"), act_bytes(a));
            }
        }
        if half {
            if own_input {
                push("input (f32)".into(), f32_bytes(g.input));
            }
            push("output (f32)".into(), f32_bytes(g.output));
        }
        push("timesteps".into(), (n * 4) as u64);
        push("unused binding".into(), 16);
        let at = Sizes::of_graph(g, n, h, w);
        let buffers: Vec<Buffers> = g.layers.iter().map(|l| l.kind().buffers(&at)).collect();
        for b in &buffers {
            for o in &b.forward {
                push(o.label.clone(), o.bytes);
            }
            if let Some((label, dims)) = &b.saved {
                push(label.to_string(), (dims.iter().product::<usize>() * 4) as u64);
            }
        }
        if vjp {
            push("input gradient".into(), act_bytes(g.input));
            if half {
                push("input gradient (f32)".into(), f32_bytes(g.input));
                push("cotangent copy".into(), act_bytes(g.output));
            }
            push("bwd unused binding".into(), 16);
            for o in buffers.iter().flat_map(|b| &b.backward) {
                push(o.label.clone(), o.bytes);
            }
        }
        MemoryPlan {
            kind,
            elem_bytes: elem,
            slots,
            act_slot,
            grad_slot,
            residual_alias,
            own,
            peak,
        }
    }

    /// Bytes of the pooled buffers.
    pub fn pool_bytes(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// Every byte the plan allocates: the pool and the buffers of their own.
    pub fn bytes(&self) -> u64 {
        self.pool_bytes() + self.own.iter().map(|b| b.bytes).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::config::UnetConfig;

    /// Two tensors alive at the same time never share a buffer, each buffer
    /// holds its tensors, and the pool is no smaller than the peak.
    #[test]
    fn pooled_tensors_never_overlap() {
        let g = Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap();
        for kind in [PlanKind::Forward, PlanKind::ForwardVjp] {
            let m = MemoryPlan::new(&g, 2, 64, 96, kind, true, DType::F32);
            assert!(m.pool_bytes() >= m.peak);
            // Re-derive each tensor's interval from the plan's rules and check slot by slot.
            let nl = g.layers.len();
            let tb = |li: usize| 2 * nl - 1 - li;
            let mut iv: Vec<(usize, usize, usize, u64)> = Vec::new(); // (slot, start, end, bytes)
            let bytes = |a: ActId| (g.act_shape(a, 2, 64, 96).iter().product::<usize>() * 4) as u64;
            let flows: Vec<_> = g.layers.iter().map(|l| l.kind().dataflow()).collect();
            for (li, l) in flows.iter().enumerate() {
                let y = l.output;
                if let Some(s) = m.act_slot[y] {
                    let mut end = li;
                    for (lj, l2) in flows.iter().enumerate() {
                        if l2.inputs.contains(&y) {
                            end = end.max(lj);
                        }
                        if kind == PlanKind::ForwardVjp && l2.saved_for_backward.contains(&y) {
                            end = end.max(tb(lj));
                        }
                    }
                    iv.push((s, li, end, bytes(y)));
                }
                if let Some(s) = m.grad_slot[y] {
                    let first = flows.iter().rposition(|l2| l2.gradient_targets.contains(&y)).unwrap();
                    let aliased_into = flows
                        .iter()
                        .enumerate()
                        .any(|(lj, l2)| m.residual_alias[lj] && l2.residual_passthrough == Some(y));
                    // An aliased residual gradient starts inside dy's interval, which holds the slot already.
                    if !aliased_into {
                        iv.push((s, tb(first), tb(li), bytes(y)));
                    } else {
                        iv.push((s, tb(first) + 1, tb(li), bytes(y)));
                    }
                }
            }
            for (i, a) in iv.iter().enumerate() {
                assert!(m.slots[a.0] >= a.3, "{kind:?}: a tensor larger than its buffer");
                for b in &iv[i + 1..] {
                    if a.0 == b.0 {
                        assert!(
                            a.2 < b.1 || b.2 < a.1,
                            "{kind:?}: live tensors share slot {}: {a:?} {b:?}",
                            a.0
                        );
                    }
                }
            }
        }
    }
}
