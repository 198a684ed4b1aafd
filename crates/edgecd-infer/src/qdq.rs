//! Keeps tract from folding a quantize/dequantize-wrapped Softmax into a lookup table.
//!
//! tract 0.23's `DequantizeLinearF32` declutter walks forward from a dequantization over every
//! operator whose axes mapping is "element-wise unary" up to the next `QuantizeLinear`, and
//! replaces the chain by a 256-entry lookup table computed by running the chain on the 256
//! possible int8/uint8 values. Softmax declares a natural (element-wise) axes mapping although
//! each output depends on its whole row, so an int8 `DequantizeLinear → Softmax →
//! QuantizeLinear` became a table of a softmax over those 256 values: a silent wrong answer
//! (every class near 0). [`guard_quantized_softmax`] runs on the typed graph before tract
//! declutters it and wraps each such Softmax in [`RowSoftmax`], which computes exactly tract's
//! float Softmax but declares no axes mapping, so the chain is not folded: the dequantized
//! values go through a float softmax and are quantized after it, as onnxruntime does.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::Softmax;
use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;

/// tract's float Softmax (or LogSoftmax), with no axes mapping: never folded into a lookup
/// table, never moved across axis changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowSoftmax(pub Softmax);

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        format!("EdgecdRow{}", self.0.name()).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.0.info()
    }

    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        EvalOp::eval(&self.0, ctx, inputs)
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

/// Is `id` fed, through single-input operators only, by a dequantization?
fn fed_by_dequantize(model: &TypedModel, mut id: usize) -> bool {
    for _ in 0..64 {
        let node = model.node(id);
        if node.op_is::<DequantizeLinearF32>() {
            return true;
        }
        match node.inputs.as_slice() {
            [one] => id = one.node,
            _ => return false,
        }
    }
    false
}

/// Wraps every float Softmax fed by a `DequantizeLinear` (see the module doc) in
/// [`RowSoftmax`].
pub fn guard_quantized_softmax(mut model: TypedModel) -> TractResult<TypedModel> {
    crate::fuse::patch_each(&mut model, |model, id| {
        let node = model.node(id);
        let Some(softmax) = node.op_as::<Softmax>() else {
            return Ok(None);
        };
        if softmax.quant_output_dt.is_some()
            || !model.outlet_fact(node.inputs[0])?.datum_type.is_float()
            || !fed_by_dequantize(model, node.inputs[0].node)
        {
            return Ok(None);
        }
        crate::fuse::replace_node(model, node, RowSoftmax(softmax.clone()), |_, _| Ok(())).map(Some)
    })?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_i8;

    /// `x → Q → DQ → Softmax → Q → DQ` (int8, scales 0.05 and 1/256; tract's quantize op
    /// takes 1/scale) when `quantized`, else a float `Softmax`.
    fn graph(quantized: bool) -> TypedModel {
        let mut m = TypedModel::default();
        let mut wire = tvec![m.add_source("x", f32::fact([2, 10])).unwrap()];
        let softmax = Softmax {
            axes: tvec![1],
            ..Softmax::default()
        };
        if quantized {
            wire = m
                .wire_node("q", quantize_linear_i8(1.0 / 0.05, 0), &wire)
                .unwrap();
            wire = m
                .wire_node("dq", DequantizeLinearF32::new(0.05, 0), &wire)
                .unwrap();
        }
        wire = m.wire_node("softmax", softmax, &wire).unwrap();
        if quantized {
            wire = m
                .wire_node("q2", quantize_linear_i8(256.0, -128), &wire)
                .unwrap();
            wire = m
                .wire_node("dq2", DequantizeLinearF32::new(1.0 / 256.0, -128), &wire)
                .unwrap();
        }
        m.select_output_outlets(&wire).unwrap();
        m
    }

    fn op_names(m: &TypedModel) -> Vec<String> {
        m.nodes().iter().map(|n| n.op.name().to_string()).collect()
    }

    fn run(m: TypedModel, x: &Tensor) -> Vec<f32> {
        let out = m
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
            .run(tvec![x.clone().into_tvalue()])
            .unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn wraps_only_a_softmax_fed_by_a_dequantization() {
        let guarded = guard_quantized_softmax(graph(true)).unwrap();
        assert!(
            op_names(&guarded).contains(&"EdgecdRowSoftmax".to_string()),
            "{:?}",
            op_names(&guarded)
        );
        let plain = guard_quantized_softmax(graph(false)).unwrap();
        assert!(
            op_names(&plain).contains(&"Softmax".to_string()),
            "{:?}",
            op_names(&plain)
        );
    }

    #[test]
    fn guarded_chain_computes_a_softmax_per_row() {
        let data: Vec<f32> = (0..20).map(|i| (i as f32 - 10.0) * 0.3).collect();
        let x = Tensor::from_shape(&[2, 10], &data).unwrap();
        let want = run(graph(false), &x);
        let got = run(guard_quantized_softmax(graph(true)).unwrap(), &x);
        for (g, w) in got.iter().zip(&want) {
            // The input step (0.05 · 0.3 grid) is exact; the output is quantized by 1/256.
            assert!((g - w).abs() <= 1.0 / 256.0, "{got:?} vs {want:?}");
        }
        // What tract alone does with the same chain: a lookup table, every value wrong.
        let unguarded = run(graph(true), &x);
        assert!(
            unguarded
                .iter()
                .zip(&want)
                .any(|(u, w)| (u - w).abs() > 0.1),
            "tract no longer folds the chain wrongly: {unguarded:?}"
        );
    }
}
