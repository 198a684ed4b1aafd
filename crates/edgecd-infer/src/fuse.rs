//! Graph rewrites applied to a decluttered model before tract optimizes it.
//!
//! Exporters such as Paddle write hard-swish as `x * Clip(x + 3, 0, 6) / 6` (Add, Clip, Mul,
//! Div). tract 0.23 keeps that as two elementwise passes per activation (`Add+Max+Min`, then
//! `Mul+Mul`), the first on a copy of `x` because `x` has two readers; it was 31% of the PP-OCR
//! classifier's single-thread time and about 12–20% of det/rec. [`fuse_hard_swish`] replaces the
//! pattern by tract's own `HardSwish` (one in-place SIMD pass), which leaves the convolution's
//! output with a single reader. Where tract's declutter already folded the `1/6` into a following
//! scale (PP-OCRv4 det: `* 0.0794`), the scale that remains becomes a multiplication after the
//! `HardSwish`, which tract then fuses into the next elementwise chain.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::math::{Add, Div, Max, Min, Mul};
use tract_onnx::tract_core::ops::nn::hard_swish;

/// Replaces every `x * min(max(x + 3, 0), 6) * s` (max/min in either order, commuted operands,
/// `* s` or `/ d` with constant scalars) on f32 tensors by `HardSwish(x)`, followed by `* 6s` when
/// `6s` is not 1. Returns how many it replaced.
pub fn fuse_hard_swish(model: &mut TypedModel) -> TractResult<usize> {
    patch_each(model, hard_swish_at)
}

/// Applies `patch_at(model, node)`'s patch, when it has one, at each node in evaluation order,
/// then compacts the model if anything changed. Returns how many patches it applied.
pub(crate) fn patch_each(
    model: &mut TypedModel,
    patch_at: impl Fn(&TypedModel, usize) -> TractResult<Option<TypedModelPatch>>,
) -> TractResult<usize> {
    let mut applied = 0;
    for id in model.eval_order()? {
        if let Some(patch) = patch_at(model, id)? {
            patch.apply(model)?;
            applied += 1;
        }
    }
    if applied > 0 {
        model.compact()?;
    }
    Ok(applied)
}

/// A patch that replaces `node` by `op` on the same inputs, after `change` has had its say on
/// them (in the patch: e.g. one input swapped for a new constant).
pub(crate) fn replace_node(
    model: &TypedModel,
    node: &TypedNode,
    op: impl Into<Box<dyn TypedOp>>,
    change: impl FnOnce(&mut TypedModelPatch, &mut TVec<OutletId>) -> TractResult<()>,
) -> TractResult<TypedModelPatch> {
    replace_node_reading(model, node, &node.inputs, op, change)
}

/// [`replace_node`] with `op` reading `inputs` instead of `node`'s own (e.g. the inputs of
/// the node before, folded into this one).
pub(crate) fn replace_node_reading(
    model: &TypedModel,
    node: &TypedNode,
    inputs: &[OutletId],
    op: impl Into<Box<dyn TypedOp>>,
    change: impl FnOnce(&mut TypedModelPatch, &mut TVec<OutletId>) -> TractResult<()>,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::default();
    let mut taps = inputs
        .iter()
        .map(|i| patch.tap_model(model, *i))
        .collect::<TractResult<TVec<_>>>()?;
    change(&mut patch, &mut taps)?;
    let out = patch.wire_node(&node.name, op, &taps)?;
    patch.shunt_outside(model, OutletId::new(node.id, 0), out[0])?;
    Ok(patch)
}

/// `Some((other input, constant))` when `node` is the binary op `K` with one input a uniform f32
/// constant. With `const_second`, only a constant in second position counts (non-commutative).
fn bin_with_const<K: BinMiniOp>(
    model: &TypedModel,
    node: &TypedNode,
    const_second: bool,
) -> Option<(OutletId, f32)> {
    let op = node.op_as::<TypedBinOp>()?;
    if !op.0.is::<K>() || node.inputs.len() != 2 {
        return None;
    }
    let sides: &[(usize, usize)] = if const_second {
        &[(1, 0)]
    } else {
        &[(1, 0), (0, 1)]
    };
    sides.iter().find_map(|&(c, other)| {
        let k = model.outlet_fact(node.inputs[c]).ok()?.konst.as_ref()?;
        Some((node.inputs[other], uniform_f32(k)?))
    })
}

/// The value of an f32 constant whose values are all the same.
pub(crate) fn uniform_f32(k: &Tensor) -> Option<f32> {
    if k.datum_type() != f32::datum_type() || !k.is_uniform() {
        return None;
    }
    k.as_uniform()?.cast_to_scalar::<f32>().ok()
}

/// The single reader of `node`'s only output, when it has exactly one and is not a model output.
pub(crate) fn only_successor<'m>(model: &'m TypedModel, node: &TypedNode) -> Option<&'m TypedNode> {
    let outlet = OutletId::new(node.id, 0);
    if node.outputs.len() != 1
        || node.outputs[0].successors.len() != 1
        || model.output_outlets().ok()?.contains(&outlet)
    {
        return None;
    }
    Some(model.node(node.outputs[0].successors[0].node))
}

fn hard_swish_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let add = model.node(id);
    let Some((x, 3.0)) = bin_with_const::<Add>(model, add, false) else {
        return Ok(None);
    };
    let x_fact = model.outlet_fact(x)?;
    if x_fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    // relu6: max(., 0) then min(., 6), or the other way round.
    let Some(first) = only_successor(model, add) else {
        return Ok(None);
    };
    let Some(second) = only_successor(model, first) else {
        return Ok(None);
    };
    let clamp = |a: &TypedNode, b: &TypedNode| {
        matches!(bin_with_const::<Max>(model, a, false), Some((i, 0.0)) if i == OutletId::new(add.id, 0))
            && matches!(bin_with_const::<Min>(model, b, false), Some((i, 6.0)) if i == OutletId::new(a.id, 0))
    };
    let flipped = |a: &TypedNode, b: &TypedNode| {
        matches!(bin_with_const::<Min>(model, a, false), Some((i, 6.0)) if i == OutletId::new(add.id, 0))
            && matches!(bin_with_const::<Max>(model, b, false), Some((i, 0.0)) if i == OutletId::new(a.id, 0))
    };
    if !clamp(first, second) && !flipped(first, second) {
        return Ok(None);
    }
    // x * relu6(x + 3)
    let Some(mul) = only_successor(model, second) else {
        return Ok(None);
    };
    let relu6 = OutletId::new(second.id, 0);
    let is_mul = mul.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<Mul>())
        && (mul.inputs[..] == [x, relu6] || mul.inputs[..] == [relu6, x]);
    if !is_mul {
        return Ok(None);
    }
    // ... / d, or * s: hard_swish(x) * 6s
    let Some(scale) = only_successor(model, mul) else {
        return Ok(None);
    };
    let product = OutletId::new(mul.id, 0);
    let factor = match bin_with_const::<Div>(model, scale, true) {
        Some((i, d)) if i == product && d != 0.0 => 6.0 / d,
        _ => match bin_with_const::<Mul>(model, scale, false) {
            Some((i, s)) if i == product => 6.0 * s,
            _ => return Ok(None),
        },
    };
    let out = OutletId::new(scale.id, 0);
    if !factor.is_finite() || model.outlet_fact(out)?.shape != x_fact.shape {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, x)?;
    let mut wire = patch.wire_node(format!("{}.hard_swish", add.name), hard_swish(), &[tap])?;
    if factor != 1.0 {
        let k = patch.add_const(
            format!("{}.hard_swish.scale", add.name),
            tensor0(factor)
                .broadcast_into_rank(x_fact.rank())?
                .into_arc_tensor(),
        )?;
        wire = patch.wire_node(
            format!("{}.hard_swish.scaled", add.name),
            TypedBinOp(Box::new(Mul), None),
            &[wire[0], k],
        )?;
    }
    patch.shunt_outside(model, out, wire[0])?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::binary::TypedBinOp;

    /// `x * clamp(x + 3, 0, 6) * s`, built from decluttered ops; `div` writes `/ (1/s)`.
    fn pattern(flip_clamp: bool, div: bool, s: f32, extra_reader: bool) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 4, 3, 5]))?;
        let k = |m: &mut TypedModel, name: &str, v: f32| {
            m.add_const(name, tensor4(&[[[[v]]]]).into_arc_tensor())
        };
        let bin = |m: &mut TypedModel,
                   name: &str,
                   op: Box<dyn BinMiniOp>,
                   a: OutletId,
                   b: OutletId|
         -> TractResult<OutletId> {
            Ok(m.wire_node(name, TypedBinOp(op, None), &[a, b])?[0])
        };
        let three = k(&mut m, "three", 3.0)?;
        let zero = k(&mut m, "zero", 0.0)?;
        let six = k(&mut m, "six", 6.0)?;
        let scale = k(&mut m, "s", if div { 1.0 / s } else { s })?;
        let a = bin(&mut m, "add", Box::new(Add), three, x)?;
        let c = if flip_clamp {
            let b = bin(&mut m, "min", Box::new(Min), a, six)?;
            bin(&mut m, "max", Box::new(Max), b, zero)?
        } else {
            let b = bin(&mut m, "max", Box::new(Max), a, zero)?;
            bin(&mut m, "min", Box::new(Min), b, six)?
        };
        let d = bin(&mut m, "mul", Box::new(Mul), x, c)?;
        let e = if div {
            bin(&mut m, "div", Box::new(Div), d, scale)?
        } else {
            bin(&mut m, "scale", Box::new(Mul), scale, d)?
        };
        let mut outputs = vec![e];
        if extra_reader {
            outputs.push(a);
        }
        m.select_output_outlets(&outputs)?;
        Ok(m)
    }

    fn run(m: TypedModel, x: &Tensor) -> TractResult<Vec<f32>> {
        let out = m.into_runnable()?.run(tvec!(x.clone().into()))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }

    fn ops(m: &TypedModel) -> Vec<String> {
        m.nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .filter(|n| n != "Const" && n != "Source")
            .collect()
    }

    #[test]
    fn fuses_every_spelling_and_keeps_values() -> TractResult<()> {
        let values: Vec<f32> = (0..60).map(|i| (i as f32 - 30.0) * 0.25).collect();
        let x = Tensor::from_shape(&[1, 4, 3, 5], &values)?;
        for (flip, div, s) in [
            (false, false, 1.0 / 6.0),
            (true, false, 1.0 / 6.0),
            (false, true, 1.0 / 6.0),
            (true, true, 1.0 / 6.0),
            (false, false, 0.0794),
            (true, true, -0.5),
        ] {
            let case = format!("flip {flip} div {div} s {s}");
            let reference = run(pattern(flip, div, s, false)?, &x)?;
            let mut m = pattern(flip, div, s, false)?;
            assert_eq!(fuse_hard_swish(&mut m)?, 1, "{case}");
            let want_ops: &[&str] = if s == 1.0 / 6.0 {
                &["HardSwish"]
            } else {
                &["HardSwish", "Mul"]
            };
            assert_eq!(ops(&m), want_ops, "{case}");
            let fused = run(m, &x)?;
            for (v, (r, f)) in values.iter().zip(reference.iter().zip(&fused)) {
                let want = v * (v + 3.0).clamp(0.0, 6.0) * s;
                let tol = 1e-6 * (1.0 + want.abs());
                assert!(
                    (r - want).abs() <= tol && (f - want).abs() <= tol,
                    "{case}, {v}: {r} {f}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn leaves_shared_intermediates_alone() -> TractResult<()> {
        // `x + 3` is also a model output: the pattern's nodes cannot go.
        let mut m = pattern(false, false, 1.0 / 6.0, true)?;
        assert_eq!(fuse_hard_swish(&mut m)?, 0);
        assert!(!ops(&m).contains(&"HardSwish".to_string()));
        Ok(())
    }
}
